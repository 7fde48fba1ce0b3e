"""Tests of automl_deft.deft.report on hand-built results directories of the tiny workspace."""

from __future__ import annotations

import json
import shutil
import subprocess
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from automl_deft.deft.config import DeftConfig
from automl_deft.deft.report import (
    REPORT_FILE,
    SECTION_TITLES,
    render_report,
    report_html,
    report_path,
    write_report,
)
from automl_deft.deft.state import (
    COMPLETE,
    HARD_STOPPED,
    NEEDS_REVIEW,
    STATE_FILE,
    DeftState,
    append_log_line,
)
from automl_deft.errors import UserError
from automl_deft.kpi import (
    compute_kpi,
    drop_n_sensitivity,
    far_interval,
    format_far,
    format_threshold,
    read_inference_csv,
    threshold_setter,
)
from automl_deft.layout import RunLayout
from automl_deft.model.spec import load_spec
from automl_deft.model.zero_shot import zero_shot_frame
from automl_deft.records import (
    BestPointer,
    Deliverable,
    HoldoutScore,
    MiningSummary,
    PipelineSummary,
    RoutingRows,
    RoutingSummary,
    RunInputs,
    SDGSummary,
    TrajectoryStep,
)
from automl_deft.workspace import (
    SCORE_COLUMN,
    Workspace,
    is_pass,
    relative_image_dir,
    resolve_image_path,
)

TARGET = "FAR < 5% at recall=100%"
FINDING = "weak rows concentrate on boardname=D: 60% of weak rows vs 20% of all rows (lift 3.0)"

# --------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def scored(tiny_ws: Path) -> dict[str, pd.DataFrame]:
    """The KPI set scored zero-shot (baseline) and a slightly better copy (iter1)."""
    ws = Workspace.at(tiny_ws)
    kpi = pd.read_csv(ws.kpi_csv, dtype=str, keep_default_na=False)
    base = zero_shot_frame(kpi, ws.images_dir, load_spec(ws.spec_path))
    iter1 = base.copy()
    defect = ~iter1["label"].map(is_pass)
    rng = np.random.default_rng(0)
    iter1[SCORE_COLUMN] = np.where(
        defect, iter1[SCORE_COLUMN] * 1.15, iter1[SCORE_COLUMN] + rng.normal(0, 0.005, len(iter1))
    )
    return {"baseline": base, "iter1": iter1}


def _far(frame: pd.DataFrame) -> tuple[float, float]:
    result = compute_kpi(frame["label"], frame[SCORE_COLUMN])
    assert result.far_pct is not None and result.threshold is not None
    return result.far_pct, result.threshold


def _inputs(ws: Workspace) -> RunInputs:
    return RunInputs(
        workspace=str(ws.root),
        train_csv=str(ws.train_csv),
        val_csv=str(ws.val_csv),
        kpi_csv=str(ws.kpi_csv),
        pool_csv=str(ws.pool_csv),
        images_dir=str(ws.images_dir),
        spec=str(ws.spec_path),
    )


def _new_state(root: Path, ws_root: Path) -> DeftState:
    return DeftState.create(
        root,
        config=DeftConfig(kpi_target=TARGET, max_iterations=3),
        inputs=_inputs(Workspace.at(ws_root)),
    )


def _write_rca(root: Path, label: str, frame: pd.DataFrame, threshold: float) -> None:
    rca = root / label / "rca_results"
    rca.mkdir(parents=True)
    defects = frame[~frame["label"].map(is_pass)]
    pass_scores = frame.loc[frame["label"].map(is_pass), SCORE_COLUMN].to_numpy()
    gaps = pd.DataFrame(
        {
            "filepath": defects["input_path"],
            "object_name": defects["object_name"],
            "label": defects["label"],
            "siamese_score": defects[SCORE_COLUMN],
            "weakness": threshold - defects[SCORE_COLUMN],
            "forced_far_pct": [
                float((pass_scores >= s).mean() * 100) for s in defects[SCORE_COLUMN]
            ],
            "is_weak": defects[SCORE_COLUMN] < threshold + 0.05,
            "boardname": defects["boardname"],
        }
    )
    gaps.to_parquet(rca / "kpi_gaps.parquet")
    metrics = {
        "threshold": threshold,
        "per_label": [
            {"label": "PASS", "kind": "pass", "n": 138, "weak": 5, "fp_at_t": 5},
            {"label": "spur", "kind": "defect", "n": 2, "weak": 1, "max_forced_far_pct": 4.35},
        ],
        "findings": [FINDING],
    }
    (rca / "metrics.json").write_text(json.dumps(metrics))
    breakdown = {
        "boardname": [
            {"value": "D", "rows": 30, "pass": 27, "defects": 3, "false_alarms": 9,
             "far_pct": 33.3, "weak": 6, "row_share": 0.2, "weak_share": 0.6, "lift": 3.0},
            {"value": "A", "rows": 40, "pass": 38, "defects": 2, "false_alarms": 1,
             "far_pct": 2.6, "weak": 1, "row_share": 0.27, "weak_share": 0.1, "lift": 0.37},
        ]
    }  # fmt: skip
    (rca / "breakdown.json").write_text(json.dumps(breakdown))
    (rca / "rca_summary.md").write_text(f"# RCA {label}\n\nthreshold {threshold:.4f}\n")


def _copy_as_generated(root: Path, ws: Workspace, rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with their images copied into the run, named the way an SDG backend does.

    The images go under ``iter1/dataset/images/sdg/{ng,ok}`` and the rows name them
    relative to the workspace images root (``../…`` into the run directory).
    """
    naming = load_spec(ws.spec_path).naming()
    out = rows.copy()
    for column, kind in (("input_path", "ng"), ("golden_path", "ok")):
        folder = RunLayout(root).sdg_images("iter1") / kind
        folder.mkdir(parents=True, exist_ok=True)
        for rel, obj in zip(rows[column], rows["object_name"], strict=True):
            for light in naming.lights:
                src = resolve_image_path(ws.images_dir, rel, obj, light, naming.ext)
                shutil.copy2(src, folder / src.name)
        out[column] = relative_image_dir(ws.images_dir, folder)
    return out


def _write_provenance(root: Path, ws: Workspace) -> tuple[int, int, int]:
    """iter1's training set: base rows, 4 "sdg" rows (images in the run), 3 mined pool rows."""
    train = pd.read_csv(ws.train_csv, dtype=str, keep_default_na=False)
    pool = pd.read_csv(ws.pool_csv, dtype=str, keep_default_na=False)
    base = train.assign(source="base_train")
    sdg = _copy_as_generated(
        root,
        ws,
        train[~train["label"].map(is_pass)]
        .head(4)
        .assign(source="sdg", sdg_backend="procedural-pcb", sdg_source="test"),
    )
    mined = (
        pool[~pool["label"].map(is_pass)]
        .head(3)
        .assign(source="mining_pool", mined_for="kpi_000007", mined_similarity="0.9312")
    )
    prov = pd.concat([base, sdg, mined], ignore_index=True)
    out = root / "iter1" / "dataset"
    out.mkdir(parents=True, exist_ok=True)
    prov.drop(
        columns=[c for c in prov.columns if c.startswith(("source", "mined_", "sdg_"))]
    ).to_csv(out / "train_combined_iter1.csv", index=False)
    prov.to_csv(out / "train_combined_iter1_provenance.csv", index=False)
    return len(prov), len(sdg), len(mined)


def _make_run(root: Path, ws_root: Path, scored: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """A results directory after baseline + iteration 1 (every file the report reads)."""
    ws = Workspace.at(ws_root)
    state = _new_state(root, ws_root)
    facts: dict[str, Any] = {}
    for label, frame in scored.items():
        far, thr = _far(frame)
        facts[label] = (far, thr)
        (root / label / "inference").mkdir(parents=True)
        frame.to_csv(root / label / "inference" / "kpi_scores.csv", index=False)
        _write_rca(root, label, frame, thr)
    train_rows, sdg_rows, mined_rows = _write_provenance(root, ws)
    base_far, base_thr = facts["baseline"]
    state.commit(
        "baseline",
        "train",
        summary="baseline train skipped — reused Phase 1 winner",
        duration_sec=0,
        source="automl_phase1",
        best_ckpt_path="/ckpt/baseline.pt",
    )
    state.commit(
        "baseline",
        "evaluate",
        summary=f"FAR={base_far:.2f}%",
        duration_sec=12.5,
        far_pct=base_far,
        threshold=base_thr,
        train_rows=80,
    )
    state.commit(
        "baseline",
        "rca",
        summary="2 target labels",
        duration_sec=3.0,
        rca_target_defects=["short", "open", "exotic"],
        need={"short": 3, "open": 2, "exotic": 1},
        findings=[],  # the report falls back to metrics.json
    )
    far1, thr1 = facts["iter1"]
    for stage in ("routing", "sdg", "mining", "data_merge", "train", "evaluate", "rca"):
        state.commit("iter1", stage, summary=f"{stage} ok", duration_sec=61.0)
    state.update(
        "iter1",
        source="deft",
        far_pct=far1,
        threshold=thr1,
        train_rows=train_rows,
        sdg_rows=sdg_rows,
        mined_rows=mined_rows,
        added_rows=sdg_rows + mined_rows,
        best_ckpt_path="/ckpt/iter1.pt",
        best_ckpt_kind="best_val",
        candidates={"best_val": far1, "latest": far1 + 2.0},
        routing=RoutingSummary(
            mining=["short"],
            sdg=["open"],
            dropped=["exotic"],
            rows=RoutingRows(mining={"short": 3}, sdg={"open": 2}),
        ),
        sdg=SDGSummary(
            backend="procedural-pcb", requested={"open": 4}, generated={"open": sdg_rows}
        ),
        mining=MiningSummary(
            per_label={"short": {"targets": 2, "pool_rows": 40, "candidates": 5, "selected": 3}},
            warnings=["label 'exotic' has zero pool rows"],
        ),
    )
    state.best = BestPointer(
        label="iter1", far_pct=far1, threshold=thr1, best_ckpt_path="/ckpt/iter1.pt"
    )
    state.save()
    return {"facts": facts, "sdg_rows": sdg_rows, "mined_rows": mined_rows}


@pytest.fixture(scope="module")
def full_run(
    tiny_ws: Path, scored: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any], str]:
    root = tmp_path_factory.mktemp("report") / "run_20261126_140208"
    facts = _make_run(root, tiny_ws, scored)
    path = render_report(root)
    return root, facts, path.read_text(encoding="utf-8")


class _StrictParser(HTMLParser):
    """Fails on unbalanced or mis-nested non-void tags."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input", "source", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def _parse(html: str) -> _StrictParser:
    parser = _StrictParser()
    parser.feed(html)
    parser.close()
    assert not parser.errors, parser.errors[:5]
    assert not parser.stack, parser.stack
    return parser


def _section(html: str, title: str) -> str:
    start = html.index(f"<h2>{title}</h2>")
    end = html.find("<h2>", start + 1)
    return html[start : end if end != -1 else len(html)]


# ------------------------------------------------------------------------ tests


def test_full_report_has_every_section_in_order(full_run: tuple[Path, dict[str, Any], str]) -> None:
    root, _, html = full_run
    assert report_path(root) == root / REPORT_FILE
    assert (root / REPORT_FILE).is_file()
    positions = [html.index('id="kpi-banner"')]
    positions += [html.index(f"<h2>{title}</h2>") for title in SECTION_TITLES]
    assert positions == sorted(positions)
    assert html.index("<h1>DEFT loop report</h1>") < positions[0]
    assert escape(TARGET) in html and "1/3" in html


def test_progress_chart_and_iteration_table(full_run: tuple[Path, dict[str, Any], str]) -> None:
    _, run, html = full_run
    progress = _section(html, "Progress")
    assert 'id="progress-chart"' in progress and "data:image/png;base64," in progress
    table = _section(html, "Per-iteration results")
    (base_far, base_thr), (far1, _) = run["facts"]["baseline"], run["facts"]["iter1"]
    assert f"{base_far:.2f}%" in table and f"{far1:.2f}%" in table
    assert format_threshold(base_thr) in table
    assert f"{far1 - base_far:+.2f}" in table
    assert "iter1 ★" in table  # the best phase is marked
    assert "AutoML Phase 1 winner" in table and "best_val" in table


def test_augmentation_samples_and_rca(full_run: tuple[Path, dict[str, Any], str]) -> None:
    _, run, html = full_run
    aug = _section(html, "Augmentation")
    assert "exotic" in aug and "dropped" in aug
    samples = _section(html, "Sample of generated data")
    assert f"{run['sdg_rows']} synthetic and {run['mined_rows']} mined rows added" in samples
    shown = run["sdg_rows"] + run["mined_rows"]  # both under the per-iteration cap of 8
    assert samples.count("data:image/png;base64,") == shown
    assert "similarity 0.9312 to kpi_000007" in samples and "image missing" not in samples
    rca = _section(html, "RCA score distribution")
    assert 'id="recall-far-table"' in rca
    assert f"{run['facts']['iter1'][0]:.2f}%" in rca  # FAR @ recall 100% == the KPI
    assert rca.count("data:image/png;base64,") == 2
    defects = _section(html, "Defect-type analysis")
    assert FINDING in defects
    assert "spur (sets the threshold)" in defects  # from metrics.json per_label
    assert 'id="labels-baseline"' in defects and 'id="labels-iter1"' in defects
    recs = _section(html, "Recommendations")
    assert "exotic" in recs and "boardname=D" in recs
    details = _section(html, "Per-iteration details")
    assert "short (3)" in details and "open (2)" in details


def test_report_is_self_contained_and_well_formed(
    full_run: tuple[Path, dict[str, Any], str],
) -> None:
    _, _, html = full_run
    lowered = html.lower()
    assert html.startswith("<!DOCTYPE html>")
    for banned in ('src="http', "src='http", "<link", "<script", "@import", "url("):
        assert banned not in lowered, banned
    parser = _parse(html)
    images = [attrs for tag, attrs in parser.tags if tag == "img"]
    assert images
    assert all((a.get("src") or "").startswith("data:image/png;base64,") for a in images)


def test_rendering_reads_only_and_shows_bundle_and_log(
    tiny_ws: Path, scored: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    root = tmp_path / "run"
    facts = _make_run(root, tiny_ws, scored)["facts"]
    Deliverable(
        checkpoint="/ckpt/iter1.pt",
        threshold=0.41,
        far_pct=facts["iter1"][0],
        iteration="iter1",
        images_dir=str(Workspace.at(tiny_ws).images_dir),
        inference_spec=RunLayout.INFERENCE_SPEC,
    ).write(root / "best_model.json")
    append_log_line(
        root / "loop_log.jsonl",
        {"seq": 99, "ts": "t", "iter": "iter1", "stage": "loop_stop", "status": "ok",
         "summary": "complete: marker-summary", "duration_sec": 0},
    )  # fmt: skip
    # A state one log line ahead of loop_log.jsonl: DeftState.load would append it.
    state = json.loads((root / STATE_FILE).read_text())
    state["log"]["seq"] = 100
    (root / STATE_FILE).write_text(json.dumps(state))
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert write_report(root) == root / REPORT_FILE
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != REPORT_FILE}
    assert after == before
    html = (root / REPORT_FILE).read_text()
    assert "/ckpt/iter1.pt" in _section(html, "Final status")
    assert "&quot;threshold&quot;: 0.41" in _section(html, "Final status")
    assert "marker-summary" in _section(html, "Per-iteration details")


def test_state_only_renders_not_yet_available(tiny_ws: Path, tmp_path: Path) -> None:
    _new_state(tmp_path, tiny_ws)
    html = render_report(tmp_path).read_text()
    _parse(html)
    assert "KPI: IN PROGRESS" in html
    for title in ("Progress", "Per-iteration results", "RCA score distribution", "Final status"):
        assert "Not yet available" in _section(html, title) or "not yet available" in _section(
            html, title
        )
    # The dataset section still describes the KPI set from config.paths.kpi_csv.
    assert "150</b> rows" in _section(html, "KPI dataset characteristics")


def test_partial_and_corrupt_files_do_not_fail(
    tiny_ws: Path, scored: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    root = tmp_path / "run"
    _make_run(root, tiny_ws, scored)
    shutil.rmtree(root / "iter1" / "dataset")
    (root / "iter1" / "inference" / "kpi_scores.csv").write_text("label,siamese_score\nPASS,")
    (root / "baseline" / "rca_results" / "breakdown.json").write_text("{torn")
    (root / "baseline" / "rca_results" / "kpi_gaps.parquet").write_bytes(b"PAR1 torn")
    with open(root / "loop_log.jsonl", "a") as fh:
        fh.write('5\n{"seq": 99, "torn')
    state = json.loads((root / STATE_FILE).read_text())
    state["iterations"]["iter1"]["sdg"] = "not a dict"
    state["iterations"]["iter2"] = {"status": "in_progress", "stage_completed": "routing"}
    (root / STATE_FILE).write_text(json.dumps(state))
    html = render_report(root).read_text()
    _parse(html)
    assert "No provenance CSV" not in html  # wording: "(no provenance CSV)"
    assert "no provenance CSV" in _section(html, "Sample of generated data")
    assert "Problems reading the results directory" in html and "breakdown.json" in html


def test_reads_what_rca_writes(
    tiny_ws: Path, scored: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    from automl_deft.deft.rca import analyse, write_rca
    from automl_deft.kpi import parse_target

    state = _new_state(tmp_path, tiny_ws)
    frame = scored["baseline"]
    far, thr = _far(frame)
    result = analyse(frame, parse_target(TARGET))
    write_rca(result, tmp_path / "baseline" / "rca_results", title="baseline")
    state.update("baseline", status="complete", far_pct=far, threshold=thr)
    state.save()
    html = report_html(tmp_path)
    defects = _section(html, "Defect-type analysis")
    assert 'id="labels-baseline"' in defects and "could not be rendered" not in html
    stats = {s["label"]: s for s in result.label_stats}
    row = '<tr><td>PASS</td><td class="num">{n}</td><td class="num">{weak}</td>'
    assert row.format(**stats["PASS"]) in defects  # weak rows from metrics.json per_label
    assert "Problems reading" not in html


@pytest.mark.parametrize(
    ("status", "far", "reason", "expected"),
    [
        (COMPLETE, 3.0, "KPI met", "KPI: MET"),
        (COMPLETE, 12.34, "max_iterations reached", "KPI: 7.3 pp from target"),
        ("in_progress", 12.34, None, "KPI: IN PROGRESS"),
        (HARD_STOPPED, 12.34, "iter1 train: CUDA out of memory", "KPI: HARD STOPPED: iter1 train"),
        (NEEDS_REVIEW, 12.34, "2 regressions", "KPI: NEEDS REVIEW: 2 regressions"),
    ],
)
def test_banner_wording(
    tiny_ws: Path, tmp_path: Path, status: str, far: float, reason: str | None, expected: str
) -> None:
    state = _new_state(tmp_path, tiny_ws)
    state.status, state.stop_reason = status, reason
    # Only a phase with a checkpoint is ranked (records.rank_by_far).
    state.update(
        "baseline", status="complete", far_pct=far, threshold=0.4, best_ckpt_path="/ckpt/b.pt"
    )
    state.save()
    html = report_html(tmp_path)
    banner = html[html.index('id="kpi-banner"') : html.index("</div>", html.index("kpi-banner"))]
    assert expected in banner


def test_moved_run_directory_renders(
    tiny_ws: Path, scored: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    """Paths inside the run are relative; generated images are followed into the new place."""
    old, new = tmp_path / "old" / "run", tmp_path / "moved" / "run"
    run = _make_run(old, tiny_ws, scored)
    prov = pd.read_csv(old / "iter1" / "dataset" / "train_combined_iter1_provenance.csv")
    assert prov.loc[prov["source"] == "sdg", "input_path"].str.startswith("..").all()
    shutil.copytree(old, new)
    shutil.rmtree(old)
    html = render_report(new).read_text(encoding="utf-8")
    _parse(html)
    table = _section(html, "Per-iteration results")
    (base_far, _), (far1, thr1) = run["facts"]["baseline"], run["facts"]["iter1"]
    assert f"{base_far:.2f}%" in table and f"{far1:.2f}%" in table and "iter1 ★" in table
    assert format_threshold(thr1) in table
    samples = _section(html, "Sample of generated data")
    assert samples.count("data:image/png;base64,") == run["sdg_rows"] + run["mined_rows"]
    assert "image missing" not in samples
    assert f"{run['facts']['iter1'][0]:.2f}%" in _section(html, "RCA score distribution")
    assert str(new) in html and "Problems reading" not in html


def test_missing_or_corrupt_state_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^no deft_state\.json in .*; pass the results directory"):
        render_report(tmp_path)
    (tmp_path / STATE_FILE).write_text('{"version": 1, "iter')
    with pytest.raises(UserError, match=r"is not valid JSON \(JSONDecodeError\); restore it"):
        render_report(tmp_path)
    assert not (tmp_path / REPORT_FILE).exists()


def _chromium() -> str | None:
    return (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )


def test_renders_in_headless_chromium(
    full_run: tuple[Path, dict[str, Any], str], tmp_path: Path
) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium not installed")
    root, _, _ = full_run
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [
            browser,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1280,4000",
            f"--screenshot={shot}",
            (root / REPORT_FILE).resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 20_000
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1280, 4000)
        # Not a blank page: the rendered report has many distinct colours.
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50


# ------------------------------------------------- steering set, hold-out, sensitivity

NOTE = "the deliverable (iter1) scored 9.00% FAR on the validation set <worse> than zero-shot"
BECAUSE = "lowest FAR at 100% recall on the KPI (steering) set of 2 evaluated model(s)"


def _holdout(far: float, ci: list[float]) -> HoldoutScore:
    return HoldoutScore(
        rows=60,
        n_pass=55,
        n_defect=5,
        far_pct=far,
        ci95=ci,
        threshold=0.37,
        deployed_threshold=0.41,
        deployed_far_pct=3.64,
        deployed_recall=0.8,
        deployed_missed=1,
    )


def _fake_ci(far: float) -> list[float]:
    """A made-up steering interval around ``far`` (finalize's is a bootstrap)."""
    return [round(far * 0.5, 2), round(far * 1.5, 2)]


def _write_summary(root: Path, facts: dict[str, tuple[float, float]], ws: Workspace) -> None:
    """What finalize writes: a deliverable, intervals and hold-out scores per step."""
    best = Deliverable(
        checkpoint="/ckpt/iter1.pt",
        threshold=facts["iter1"][1],
        far_pct=facts["iter1"][0],
        iteration="iter1",
        images_dir=str(ws.images_dir),
        inference_spec=RunLayout.INFERENCE_SPEC,
        chosen_because=BECAUSE,
    )
    best.write(RunLayout(root).deliverable)
    steps = [
        TrajectoryStep(
            step=label,
            phase="deft",
            far_pct=far,
            threshold=threshold,
            far_pct_ci95=ci,
            val_far_pct=val,
            holdout=_holdout(held, held_ci),
        )
        for label, (far, threshold), val, held, held_ci in (
            ("baseline", facts["baseline"], 7.5, 19.34, [15.76, 23.43]),
            ("iter1", facts["iter1"], 9.0, 6.78, [4.32, 9.87]),
        )
        for ci in [_fake_ci(far)]
    ]
    PipelineSummary(
        results_dir=str(root),
        kpi_target=TARGET,
        deft_status=COMPLETE,
        deft_stop_reason="max_iterations reached",
        phase1=None,
        phase3=None,
        phase3_ran=False,
        phase3_failed=None,
        phase3_kept=False,
        trajectory=steps,
        best=best,
        far_pct_ci95=_fake_ci(facts["iter1"][0]),
        holdout=steps[1].holdout,
        kpi_met=False,
        kpi_gap_pp=1.78,
        notes=[NOTE, "hold-out FAR 6.78% is above the steering-set number"],
    ).write(RunLayout(root).summary)


def _headline(html: str) -> str:
    start = html.index('id="headline"')
    return html[start : html.index("<section>", start)]


def test_summary_with_holdout_shows_both_numbers_and_notes(
    tiny_ws: Path, scored: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    root = tmp_path / "run"
    facts = _make_run(root, tiny_ws, scored)["facts"]
    _write_summary(root, facts, Workspace.at(tiny_ws))
    html = render_report(root).read_text(encoding="utf-8")
    _parse(html)
    head = _headline(html)
    steering = head[head.index('id="steering-far"') : head.index('id="holdout-far"')]
    held = head[head.index('id="holdout-far"') :]
    assert "KPI (steering) set — chose the model" in steering
    far1, far0 = facts["iter1"][0], facts["baseline"][0]
    assert format_far(far1, _fake_ci(far1)) in steering
    assert "untouched hold-out — steered nothing" in held
    assert "6.78% [4.32–9.87]" in held and "60 rows (55 PASS, 5 defect)" in held
    assert "1 missed defect(s)" in held and "recall 80.0%" in held
    assert "No untouched number" not in html
    # The notes are a visible callout (escaped), not inside a collapsed <details>.
    notes = head[head.index('id="review-notes"') :]
    assert escape(NOTE) in notes and "<details" not in head
    assert "<worse>" not in html
    assert f"<b>Chosen because</b>: {escape(BECAUSE)}." in head
    verdict = head[head.index('id="kpi-verdict"') :]
    assert "not met on the KPI (steering) set: 1.78 pp above the bound" in verdict
    # The trajectory table: steering interval, validation FAR, hold-out FAR [interval].
    table = _section(html, "Per-iteration results")
    for far, cells in (
        (far0, ("7.50%", "19.34% [15.76–23.43]")),
        (far1, ("9.00%", "6.78% [4.32–9.87]")),
    ):
        low, high = _fake_ci(far)
        row = (f"{far:.2f}%", f"[{low:.2f}–{high:.2f}]", *cells)
        assert "".join(f'<td class="num">{c}</td>' for c in row) in table
    final = _section(html, "Final status")
    low, high = _fake_ci(far1)
    assert "6.78% [4.32–9.87]" in final and f"[{low:.2f}–{high:.2f}]" in final


def test_without_summary_says_no_untouched_number_exists(
    full_run: tuple[Path, dict[str, Any], str],
) -> None:
    root, run, html = full_run
    assert not RunLayout(root).summary.exists()
    head = _headline(html)
    held = head[head.index('id="holdout-far"') :]
    assert "No untouched number exists" in held and "pipeline_summary.json" in held
    assert 'id="review-notes"' not in head and 'id="kpi-verdict"' not in head
    # The steering interval is computed here with finalize's method and draws.
    frame = read_inference_csv(root / "iter1" / "inference" / "kpi_scores.csv")
    scores = frame[SCORE_COLUMN].to_numpy(dtype=np.float64)
    iv = far_interval(frame["label"], scores, n_resamples=1000, seed=0)
    far1 = run["facts"]["iter1"][0]
    assert format_far(far1, [iv.low, iv.high]) in head
    table = _section(html, "Per-iteration results")
    assert f'<td class="num">[{iv.low:.2f}–{iv.high:.2f}]</td>' in table
    assert "no untouched number" in _section(html, "Final status")


def test_summary_without_holdout_says_so(
    tiny_ws: Path, scored: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    root = tmp_path / "run"
    facts = _make_run(root, tiny_ws, scored)["facts"]
    _write_summary(root, facts, Workspace.at(tiny_ws))
    layout = RunLayout(root)
    summary = PipelineSummary.read(layout.summary)
    summary.replace(
        trajectory=[s.replace(holdout=None) for s in summary.trajectory],
        holdout=None,
        holdout_note="no kpi/holdout_set.csv",
        kpi_met=True,
        kpi_gap_pp=0.0,
    ).write(layout.summary)
    html = report_html(root)
    _parse(html)
    head = _headline(html)
    held = head[head.index('id="holdout-far"') :]
    assert "No untouched number exists (no kpi/holdout_set.csv)" in held
    assert "met on the KPI (steering) set" in head and "not met" not in head
    assert escape(NOTE) in head  # the notes are shown whatever the hold-out
    low, high = _fake_ci(facts["iter1"][0])
    table = _section(html, "Per-iteration results")
    assert f"[{low:.2f}–{high:.2f}]" in table and "6.78%" not in table
    # A torn summary costs its numbers, never the page.
    layout.summary.write_text('{"torn')
    html = report_html(root)
    _parse(html)
    assert "pipeline_summary.json could not be read" in _headline(html)
    assert "could not be rendered" not in html and "Problems reading" in html


def _cells(section: str, table_id: str) -> list[list[str]]:
    """The text of each body row of table ``table_id``."""
    start = section.index(f'id="{table_id}"')
    body = section[section.index("<tbody>", start) : section.index("</tbody>", start)]
    return [
        [cell.split(">", 1)[1] for cell in row.split("</td>")[:-1]]
        for row in body.split("<tr>")[1:]
    ]


def test_sensitivity_matches_drop_n_and_names_the_threshold_setter(
    full_run: tuple[Path, dict[str, Any], str],
) -> None:
    root, run, html = full_run
    section = _section(html, "Sensitivity of the KPI")
    assert "<details" not in section
    frame = read_inference_csv(root / "iter1" / "inference" / "kpi_scores.csv")
    scores = frame[SCORE_COLUMN].to_numpy(dtype=np.float64)
    drops = drop_n_sensitivity(frame["label"], scores, n_max=3, names=list(frame["object_name"]))
    assert len(drops) == 3
    rows = _cells(section, "drop-n-table")
    far1, thr1 = run["facts"]["iter1"]
    assert rows[0][:2] == ["0 (as measured)", f"{far1:.2f}%"]
    assert rows[0][3] == format_threshold(thr1)
    for row, d in zip(rows[1:], drops, strict=True):
        assert row[0] == str(d.n)
        assert row[1] == f"{d.far_pct:.2f}%"
        assert row[3] == format_threshold(d.threshold)
        assert [part.split(" (")[0] for part in row[4].split("; ")] == list(d.dropped)
    frame[SCORE_COLUMN] = scores
    setter = threshold_setter(frame)
    assert setter.object_name
    assert f"<b>{escape(setter.object_name)}</b>" in section
    assert "<td>" + escape(setter.label) + "</td>" in section
    assert f"<td>{format_threshold(setter.score)}</td>" in section
    assert drops[0].dropped[0] == setter.object_name
