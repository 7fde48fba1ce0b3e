"""Tests of automl_deft.deft.report on hand-built results directories of the tiny workspace."""

from __future__ import annotations

import json
import re
import shutil
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from automl_deft.deft.config import DeftConfig, HygieneConfig
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
    HygieneSummary,
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
    return scored_frames(tiny_ws)


def scored_frames(tiny_ws: Path) -> dict[str, pd.DataFrame]:
    """:func:`scored`'s frames (also used by ``tests/test_browser.py``)."""
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
    assert html.index("<h1>automl-deft run report</h1>") < positions[0]
    assert escape(TARGET) in html and "1/3" in html


def test_progress_chart_and_iteration_table(full_run: tuple[Path, dict[str, Any], str]) -> None:
    _, run, html = full_run
    progress = _section(html, "Progress")
    assert 'id="progress-chart"' in progress and "data:image/png;base64," in progress
    table = _section(html, "Results per step")
    (base_far, base_thr), (far1, _) = run["facts"]["baseline"], run["facts"]["iter1"]
    assert f"{base_far:.2f}%" in table and f"{far1:.2f}%" in table
    assert format_threshold(base_thr) in table
    assert f"{far1 - base_far:+.2f}" in table
    assert "DEFT iter 1 ★" in table  # the best step is marked, in a reader's words
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
    for title in ("Progress", "Results per step", "RCA score distribution", "Final status"):
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
    table = _section(html, "Results per step")
    (base_far, _), (far1, thr1) = run["facts"]["baseline"], run["facts"]["iter1"]
    assert f"{base_far:.2f}%" in table and f"{far1:.2f}%" in table and "DEFT iter 1 ★" in table
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


# ------------------------------------------------- steering set, hold-out, sensitivity

NOTE = "the deliverable (iter1) scored 9.00% FAR on the validation set <worse> than zero-shot"
NOTE_SHOWN = NOTE.replace("(iter1)", "(DEFT iter 1)")
"""The note as the page shows it: the label in a reader's words."""
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
    assert escape(NOTE_SHOWN) in notes and "<details" not in head
    assert "<worse>" not in html
    assert f"<b>Chosen because</b>: {escape(BECAUSE)}." in head
    verdict = head[head.index('id="kpi-verdict"') :]
    assert "not met on the KPI (steering) set: 1.78 pp above the bound" in verdict
    # The trajectory table: steering interval, validation FAR, hold-out FAR [interval].
    table = _section(html, "Results per step")
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
    table = _section(html, "Results per step")
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
    assert escape(NOTE_SHOWN) in head  # the notes are shown whatever the hold-out
    low, high = _fake_ci(facts["iter1"][0])
    table = _section(html, "Results per step")
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
        for row in re.split(r"<tr[^>]*>", body)[1:]
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


# ------------------------------------------------ the whole pipeline: Phase 1, Phase 3, finalize


def _search_result(folder: Path, winner: str, values: dict[str, float | None]) -> Any:
    """``automl_result.json`` of a search: ``values`` per trial (None = pruned), a lucky
    winner re-trained, the zero-shot guard beaten."""
    from automl_deft.hpo.guards import GuardReport, LuckyWinner, ZeroShotCheck
    from automl_deft.hpo.results import SearchBest, SearchResult, SearchTrial

    history = [
        SearchTrial(
            rec_id=name,
            params={"lr": 0.001},
            metric=value,
            status="complete" if value is not None else "pruned",
            pruned_at_epoch=None if value is not None else 2,
        )
        for name, value in values.items()
    ]
    lucky = min((v, n) for n, v in values.items() if v is not None)[1]
    guards = GuardReport(
        lucky_winner=LuckyWinner(
            rec_id=lucky,
            value=values[lucky] or 0.0,
            runner_up=winner,
            runner_up_value=values[winner] or 0.0,
            factor=2.0,
            reseed_rec_id=f"{lucky}-reseed",
            reseed_value=14.5,
            ranked_by=14.5,
        ),
        zero_shot=ZeroShotCheck(
            winner_far_pct=values[winner], zero_shot_far_pct=12.25, beaten=True
        ),
    )
    return SearchResult(
        results_dir=folder,
        best=SearchBest(
            rec_id=winner,
            specs={},
            metric_value=values[winner],
            far_pct=values[winner],
            val_loss=0.2,
            checkpoint=str(folder / "trials" / winner / "best_val.pt"),
            pred_counts={"PASS": 200, "defect": 40},
        ),
        history=history,
        algorithm="tpe",
        backend="optuna",
        metric="far_pct",
        guards=guards,
    )


def _write_search(folder: Path, winner: str, values: dict[str, float | None]) -> None:
    """A search folder as a search leaves it: its result and a real Optuna journal."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from automl_deft.layout import SearchLayout

    folder.mkdir(parents=True, exist_ok=True)
    _search_result(folder, winner, values).write(folder / SearchLayout.RESULT)
    storage = JournalStorage(JournalFileBackend(str(folder / SearchLayout.OPTUNA_JOURNAL)))
    study = optuna.create_study(study_name=SearchLayout(folder).study_name, storage=storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-2), n_trials=len(values))


def _holdout_from(frame: pd.DataFrame) -> pd.DataFrame:
    """A stand-in hold-out score file: the KPI rows, scores pushed down for defects of one
    board, so the hold-out tells a different story than the steering set."""
    out = frame.copy()
    worse = (~out["label"].map(is_pass)) & (out["boardname"] == out["boardname"].iloc[0])
    out.loc[worse, SCORE_COLUMN] = out.loc[worse, SCORE_COLUMN] * 0.5
    return out


def _make_pipeline_run(
    root: Path, ws_root: Path, scored: dict[str, pd.DataFrame], *, phase3_wins: bool
) -> dict[str, Any]:
    """Phase 1 → baseline + iter1 → Phase 3 (warm from iter1) → finalize, on disk."""
    from automl_deft.handoff import register_final_automl
    from automl_deft.kpi import compute_kpi as kpi_of
    from automl_deft.records import KPISummary

    facts = _make_run(root, ws_root, scored)["facts"]
    layout = RunLayout(root)
    trials1 = {"trial-0000": 20.0, "trial-0001": 3.5, "trial-0002": 9.8, "trial-0003": None}
    _write_search(root / "automl_phase1", "trial-0002", trials1)
    _write_search(root / "final_automl", "trial-0000", {"trial-0000": 13.2, "trial-0001": 15.0})
    final = scored["iter1"].copy()
    defect = ~final["label"].map(is_pass)
    factor = 1.3 if phase3_wins else 0.7
    final[SCORE_COLUMN] = np.where(defect, final[SCORE_COLUMN] * factor, final[SCORE_COLUMN])
    out = layout.final_inference
    out.mkdir(parents=True)
    final.to_csv(out / "kpi_scores.csv", index=False)
    state = DeftState.load(root)
    state.status, state.stop_reason = COMPLETE, "max_iterations reached at iter1"
    register_final_automl(
        state,
        checkpoint=str(root / "final_automl" / "trials" / "trial-0000" / "best_val.pt"),
        kpi=KPISummary.of(kpi_of(final["label"], final[SCORE_COLUMN])),
        inference_csv=out / "kpi_scores.csv",
        val_far_pct=13.2,
        warm_start_from=str(root / "iter1" / "train" / "latest.pt"),
        train_csv=str(root / "iter1" / "dataset" / "train_combined_iter1.csv"),
        rec_id="trial-0000",
    )
    state.save()
    frames = {**scored, "final_automl": final}
    facts["final_automl"] = _far(final)
    ranked = sorted(facts, key=lambda lab: facts[lab][0])
    best_label = ranked[0]
    best = Deliverable(
        checkpoint=f"/ckpt/{best_label}.pt",
        threshold=facts[best_label][1],
        far_pct=facts[best_label][0],
        iteration=best_label,
        images_dir=str(Workspace.at(ws_root).images_dir),
        inference_spec=RunLayout.INFERENCE_SPEC,
        chosen_because=(
            f"lowest FAR at 100% recall on the KPI (steering) set of 3 evaluated model(s): "
            f"{best_label} {facts[best_label][0]:.2f}% vs runner-up {ranked[1]} "
            f"{facts[ranked[1]][0]:.2f}%"
        ),
    )
    best.write(layout.deliverable)
    state.best = BestPointer(
        label=best_label,
        far_pct=best.far_pct,
        threshold=best.threshold,
        best_ckpt_path=best.checkpoint,
    )
    state.save()
    held = {}
    for label, frame in frames.items():
        path = layout.holdout_scores(label)
        path.parent.mkdir(parents=True, exist_ok=True)
        _holdout_from(frame).to_csv(path, index=False)
        held[label] = read_inference_csv(path)
    held_far = {
        label: kpi_of(frame["label"], frame[SCORE_COLUMN].astype(float)).far_pct or 0.0
        for label, frame in held.items()
    }
    steps = [
        TrajectoryStep(
            step=label,
            phase={"baseline": "phase1", "iter1": "phase2"}.get(label, "phase3"),
            far_pct=far,
            threshold=threshold,
            far_pct_ci95=_fake_ci(far),
            holdout=_holdout(held_far[label], [0.0, 50.0]),
        )
        for label, (far, threshold) in facts.items()
    ]
    PipelineSummary(
        results_dir=str(root),
        kpi_target=TARGET,
        deft_status=COMPLETE,
        deft_stop_reason="max_iterations reached at iter1",
        phase1=None,
        phase3=None,
        phase3_ran=True,
        phase3_failed=None,
        phase3_kept=best_label == "final_automl",
        trajectory=steps,
        best=best,
        holdout=next(s.holdout for s in steps if s.step == best_label),
        notes=["the deliverable (final_automl) wins on the steering set"],
    ).write(layout.summary)
    return {"facts": facts, "frames": frames, "held": held, "best": best_label}


@pytest.fixture(scope="module")
def pipeline_run(
    tiny_ws: Path, scored: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any], str]:
    root = tmp_path_factory.mktemp("pipeline") / "run_20261126_140208"
    run = _make_pipeline_run(root, tiny_ws, scored, phase3_wins=True)
    return root, run, render_report(root).read_text(encoding="utf-8")


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", "", html).split())


def test_finalized_run_header_names_the_pipeline_stage_and_total_time(
    pipeline_run: tuple[Path, dict[str, Any], str],
) -> None:
    _, _, html = pipeline_run
    _parse(html)
    assert "<title>automl-deft run report: run_20261126_140208</title>" in html
    assert "<h1>automl-deft run report</h1>" in html and "DEFT loop report" not in html
    header = html[html.index("<header>") : html.index("</header>")]
    assert "<b>Stage</b>: finalized" in header
    status = _text(header[header.index('id="status-line">') + 17 :])
    assert status.startswith("[finalized] Phase 1 winner ")
    assert "iter 1/3" not in status and "· rca" not in status  # no stale DEFT stage
    assert "· deliverable Phase 3 winner, hold-out " in status
    # the total spans every phase, not the DEFT share only
    total = re.search(r"<b>Total time</b>: ([^<]*)", header)
    assert total is not None
    assert all(p in total.group(1) for p in ("Phase 1 AutoML", "Phase 2 DEFT", "Phase 3 AutoML"))
    timeline = _cells(_section(html, "Pipeline at a glance"), "timeline")
    assert [row[0] for row in timeline] == [
        "Phase 1 AutoML",
        "Phase 2 DEFT",
        "Phase 3 AutoML",
        "Finalize (pick-best, hold-out)",
        "Total",
    ]
    assert "4 trial(s) (3 complete, 1 pruned); winner trial-0002" in timeline[0][3]
    assert timeline[-1][3] == "stage: finalized"


def test_phase_summaries(pipeline_run: tuple[Path, dict[str, Any], str]) -> None:
    _, run, html = pipeline_run
    phase1 = _section(html, "Phase 1 AutoML")
    assert "<b>4</b> trial(s), 3 complete and 1 pruned" in phase1
    assert "Winner <b>trial-0002</b>, validation far_pct <b>9.80%</b>" in phase1
    guards = _cells(phase1, "guards-phase1")
    assert [g[0] for g in guards] == ["Mode collapse", "Lucky winner", "Zero-shot"]
    assert "re-trained with a fresh seed as trial-0001-reseed → 14.50%" in guards[1][1]
    trials = _cells(phase1, "trials-phase1")
    assert trials[2][:4] == ["trial-0002 ★", "complete", "9.80%", "9.80%"]
    assert trials[1][3] == "14.50%"  # the lucky winner ranked by its worse run
    assert trials[-1][:2] == ["trial-0001-reseed", "re-run (fresh seed)"]
    base_far = run["facts"]["baseline"][0]
    assert f"<b>{base_far:.2f}%</b> FAR at 100% recall" in phase1
    phase3 = _section(html, "Phase 3 AutoML")
    assert "Warm-started from <b>DEFT iter 1</b>" in phase3
    assert "Winner <b>trial-0000</b>, validation far_pct <b>13.20%</b>" in phase3
    outcome = _text(phase3[phase3.index('id="phase3-outcome">') + 20 :])
    assert outcome.startswith("Kept: the Phase 3 winner")
    assert "Pick-best: lowest FAR at 100% recall" in outcome
    assert "vs runner-up DEFT iter 1" in outcome
    assert "On the untouched hold-out (steered nothing): Phase 3 winner" in phase3


def test_phase3_rolled_back_says_why(
    tiny_ws: Path, scored: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    root = tmp_path / "run"
    run = _make_pipeline_run(root, tiny_ws, scored, phase3_wins=False)
    assert run["best"] == "iter1"
    phase3 = _section(report_html(root), "Phase 3 AutoML")
    outcome = _text(phase3[phase3.index('id="phase3-outcome">') + 20 :])
    far1 = run["facts"]["iter1"][0]
    assert outcome.startswith(
        f"Rolled back: the Phase 3 winner ({run['facts']['final_automl'][0]:.2f}% on the KPI "
        f"set) did not beat DEFT iter 1 ({far1:.2f}%); pick-best ships DEFT iter 1."
    )


def test_no_internal_name_in_any_label(pipeline_run: tuple[Path, dict[str, Any], str]) -> None:
    _, _, html = pipeline_run
    parser = _LabelParser()
    parser.feed(html)
    internal = ("final_automl", "automl_phase1", "automl_phase3", "iter1", "baseline")
    labels = [t for t in parser.labels if any(re.search(rf"\b{w}\b", t) for w in internal)]
    assert not labels, labels[:5]
    # the chart's axis labels are drawn from the same names
    assert "Phase 1 winner" in parser.labels and "Phase 3 winner ★" in parser.labels
    notes = html[html.index('id="review-notes"') :]
    assert "the deliverable (Phase 3 winner) wins on the steering set" in notes


class _LabelParser(HTMLParser):
    """Headings, table headers, the first cell of each row and ``<summary>`` texts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.labels: list[str] = []
        self._open: str | None = None
        self._first = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self._first = True
        if tag in ("h1", "h2", "h3", "h4", "th", "summary", "figcaption") or (
            tag == "td" and self._first
        ):
            self._open, self._first = tag, False
            self.labels.append("")
        elif tag == "td":
            self._first = False

    def handle_endtag(self, tag: str) -> None:
        if tag == self._open:
            self.labels[-1] = " ".join(self.labels[-1].split())
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.labels[-1] += data


def _matrix_cells(section: str, table_id: str) -> dict[str, list[str]]:
    return {row[0]: row[1:] for row in _cells(section, table_id)}


def test_far_contributions_by_defect_and_board_on_both_sets(
    pipeline_run: tuple[Path, dict[str, Any], str],
) -> None:
    from automl_deft.workspace import normalize_label

    _, run, html = pipeline_run
    section = _section(html, "FAR contributions by defect type and board")
    assert "<details" not in section  # visible without expanding anything
    head = section[section.index('id="defect-phase-kpi"') :]
    assert "<th>Phase 1 winner</th><th>DEFT iter 1</th><th>Phase 3 winner</th>" in head
    for key, frames in (("kpi", run["frames"]), ("holdout", run["held"])):
        defects = _matrix_cells(section, f"defect-phase-{key}")
        boards = _matrix_cells(section, f"board-phase-{key}")
        for col, frame in enumerate(frames.values()):
            scores = frame[SCORE_COLUMN].astype(float)
            result = compute_kpi(frame["label"], scores)
            n_pass = int(frame["label"].map(is_pass).sum())
            setters = [name for name, cells in defects.items() if cells[col].endswith("◆")]
            assert len(setters) == 1
            # the defect type that sets the threshold forces exactly the step's false alarms
            assert defects[setters[0]][col].startswith(f"{result.fp}/{n_pass} ")
            assert f"({result.far_pct:.1f}%)" in defects[setters[0]][col]
            setter = threshold_setter(frame.assign(**{SCORE_COLUMN: scores}))
            assert normalize_label(setter.label) == setters[0]
            # by board, the false alarms add up to the step's
            flagged = [int(cells[col].split("/")[0]) for cells in boards.values()]
            assert sum(flagged) == result.fp
            assert boards[str(setter.boardname)][col].endswith("◆")
    missed = _matrix_cells(section, "missed-phase-holdout")
    held_final = run["held"]["final_automl"]
    shipped = run["facts"]["final_automl"][1]
    lost = held_final[~held_final["label"].map(is_pass)]
    lost = lost[lost[SCORE_COLUMN].astype(float) <= shipped]
    assert sum(int(cells[2].split("/")[0]) for cells in missed.values()) == len(lost) > 0
    assert "missed-phase-kpi" not in section  # 100% recall there by construction


def test_contribution_counts_on_a_small_frame() -> None:
    from automl_deft.deft.report.contributions import (
        false_alarms_by,
        forced_false_alarms,
        missed_by,
        operating_threshold,
    )

    frame = pd.DataFrame(
        {
            "label": ["PASS", "PASS", "PASS", "PASS", "short", "Short", "open"],
            SCORE_COLUMN: [0.1, 0.5, 0.7, 0.9, 0.6, 0.95, 0.8],
            "boardname": ["A", "A", "B", "B", "A", "B", "B"],
        }
    )
    forced = forced_false_alarms(frame)
    assert {k: (c.part, c.whole) for k, c in forced.items()} == {"open": (1, 4), "short": (2, 4)}
    threshold = operating_threshold(frame)
    assert threshold == 0.5  # just below the lowest defect (0.6)
    boards = false_alarms_by(frame, threshold, "boardname")
    assert {k: (c.part, c.whole) for k, c in boards.items()} == {"A": (0, 2), "B": (2, 2)}
    assert boards["B"].pct == 100.0
    missed = missed_by(frame, 0.85)
    assert {k: (c.part, c.whole) for k, c in missed.items()} == {"open": (1, 1), "short": (1, 2)}


def test_in_progress_header_shows_the_loop_stage(
    full_run: tuple[Path, dict[str, Any], str],
) -> None:
    _, _, html = full_run
    header = html[html.index("<header>") : html.index("</header>")]
    assert "<b>Stage</b>: Phase 2 DEFT · iter 1/3 · rca" in header
    status = _text(header[header.index('id="status-line">') + 17 :])
    assert status.startswith("[Phase 2 DEFT · iter 1/3 · rca] FAR ")
    assert status.endswith("· next: iter2 routing")
    phase1 = _section(html, "Phase 1 AutoML")
    assert "Phase 1 did not run in this results directory" in phase1
    assert "Phase 3: not yet available" in _section(html, "Phase 3 AutoML")
    held = _section(html, "FAR contributions by defect type and board")
    assert "No hold-out scores: finalize has not run" in held


# ------------------------------------------------- SDG budget use and row hygiene

HYGIENE_REASON = "model scores this PASS like a defect (0.93 ≥ the defects' median 0.61)"
PASS_CHECK_TEXT = "pass-check passed: largest change 0 px (limit 4, source pair 0 px)"
N_FLAGGED = 15  # over the per-iteration cap of thumbnails


def _short_sdg() -> SDGSummary:
    """An SDG stage 3 pairs short of its budget, with a weak label the backend cannot make."""
    return SDGSummary(
        backend="cutpaste",
        requested={"PASS": 39, "spur": 1},
        generated={"PASS": 36, "spur": 1},
        budget=40,
        unrouted={"exotic": "cutpaste has no painter for 'exotic'"},
        pass_check={"checked": 39, "passed": 36, "refused": 3},
    )


def _hygiene_summary() -> HygieneSummary:
    sdg = {
        "candidates": 20,
        "exact_duplicates": 2,
        "near_duplicates": 1,
        "flagged_label_errors": 5,
        "excluded_label_errors": 0,
        "kept": 17,
    }
    mined = {"candidates": 10, "exact_duplicates": 0, "near_duplicates": 2,
             "flagged_label_errors": 10, "excluded_label_errors": 0, "kept": 8}  # fmt: skip
    return HygieneSummary(
        **{key: sdg[key] + mined[key] for key in sdg},
        by_source={"sdg": sdg, "mining_pool": mined},
        thresholds={
            "near_duplicate_similarity": 0.95,
            "golden_similarity": 0.98,
            "label_errors": "flag",
        },
        warnings=["2 candidates had no golden <thumbnail>"],
    )


def _add_pass_sdg_rows(root: Path, ws: Workspace) -> None:
    """Two generated PASS rows (with their ``sdg_check``) first among iter1's sdg rows."""
    path = root / "iter1" / "dataset" / "train_combined_iter1_provenance.csv"
    prov = pd.read_csv(path, dtype=str, keep_default_na=False)
    train = pd.read_csv(ws.train_csv, dtype=str, keep_default_na=False)
    clean = train[train["label"].map(is_pass)].head(2)
    generated = _copy_as_generated(
        root,
        ws,
        clean.assign(
            source="sdg", sdg_backend="cutpaste", sdg_source="benign", sdg_check=PASS_CHECK_TEXT
        ),
    )
    base = prov[prov["source"] == "base_train"]
    rest = prov[prov["source"] != "base_train"]
    pd.concat([base, generated, rest], ignore_index=True).fillna("").to_csv(path, index=False)


def _write_hygiene_files(root: Path, ws: Workspace) -> pd.DataFrame:
    """iter1's hygiene.json, N_FLAGGED flagged pool rows (real images) and 5 refused rows."""
    out = RunLayout(root).stage_dir("iter1", RunLayout.DATASET)
    _hygiene_summary().write(out / "hygiene.json")
    pool = pd.read_csv(ws.pool_csv, dtype=str, keep_default_na=False)
    flagged = pool[pool["label"].map(is_pass)].head(N_FLAGGED).copy()
    flagged["source"] = ["sdg"] * 5 + ["mining_pool"] * (N_FLAGGED - 5)
    flagged["label_error_reason"] = HYGIENE_REASON
    flagged.loc[flagged.index[0], "label_error_reason"] = "<b>not bold</b> & escaped"
    flagged[SCORE_COLUMN] = [f"{0.93 - i / 100:.4f}" for i in range(N_FLAGGED)]
    flagged["change_px"] = "12"
    flagged["signals"] = "model"
    flagged.to_csv(out / "hygiene_flagged.csv", index=False)
    refused = pool.tail(5).copy()
    refused["source"] = "mining_pool"
    refused["hygiene_check"] = ["exact_duplicate", "exact_duplicate"] + ["near_duplicate"] * 3
    refused["duplicate_of"] = "train_000003"
    refused["similarity"] = ["1", "1", "0.97", "0.981", "0.99"]
    refused.to_csv(out / "hygiene_refused.csv", index=False)
    return flagged


@pytest.fixture(scope="module")
def hygiene_run(
    tiny_ws: Path, scored: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, pd.DataFrame, str]:
    """:func:`_make_run` plus a short SDG, PASS pairs, hygiene in the state and on disk."""
    root = tmp_path_factory.mktemp("hygiene") / "run"
    ws = Workspace.at(tiny_ws)
    _make_run(root, tiny_ws, scored)
    _add_pass_sdg_rows(root, ws)
    flagged = _write_hygiene_files(root, ws)
    state = DeftState.load(root)
    state.update("iter1", sdg=_short_sdg(), hygiene=_hygiene_summary())
    state.save()
    return root, flagged, render_report(root).read_text(encoding="utf-8")


def test_sdg_budget_use_is_shown_and_a_short_budget_said_plainly(
    hygiene_run: tuple[Path, pd.DataFrame, str],
) -> None:
    _, _, html = hygiene_run
    _parse(html)
    aug = _section(html, "Augmentation")
    line = _short_sdg().line()
    assert line.startswith("SDG: 40 requested, 37 made via cutpaste — PASS 36, spur 1; 3 short")
    assert escape(line) in aug
    short = aug[aug.index('id="sdg-short-iter1"') :]
    assert short.startswith('id="sdg-short-iter1"><b>SDG made 37 of its 40-pair budget: 3 pair')
    assert "39 checked, 36 passed, 3 refused" in aug
    assert _cells(aug, "sdg-unrouted-iter1") == [
        ["exotic", escape("cutpaste has no painter for 'exotic'")]
    ]
    row = _cells(aug, "augmentation-table")[0]
    # iteration, budget, made, PASS check, mining candidates, mined, refused, flagged, added
    assert row[:4] == ["DEFT iter 1", "40", "37", "36 / 39"]
    assert row[6:8] == ["5", "15"]
    per_label = aug[aug.index("<h3>Per label</h3>") :]
    assert "<td>exotic</td>" in per_label and "<td>PASS</td>" in per_label


def test_hygiene_table_per_iteration_and_source_with_thresholds(
    hygiene_run: tuple[Path, pd.DataFrame, str],
) -> None:
    _, _, html = hygiene_run
    section = _section(html, "Row hygiene")
    # candidates, exact, near, flagged, excluded, kept
    assert _cells(section, "hygiene-table") == [
        ["DEFT iter 1", "mining_pool", "10", "0", "2", "10", "0", "8"],
        ["DEFT iter 1", "sdg", "20", "2", "1", "5", "0", "17"],
        ["DEFT iter 1", "all sources", "30", "2", "3", "15", "0", "25"],
    ]
    caption = section[section.index('id="hygiene-thresholds"') :]
    caption = caption[: caption.index("</p>")]
    assert "golden_similarity 0.98 · label_errors flag · near_duplicate_similarity 0.95" in caption
    assert escape("DEFT iter 1: 2 candidates had no golden <thumbnail>") in section
    refused = _cells(section, "refused-iter1")
    assert len(refused) == 5 and refused[0][3] == "exact duplicate"
    assert refused[-1][3:] == ["near duplicate", "train_000003", "0.9900"]


def test_flagged_rows_shown_as_thumbnails_up_to_the_cap(
    hygiene_run: tuple[Path, pd.DataFrame, str],
) -> None:
    from automl_deft.deft.report.figures import MAX_FLAGGED_PER_ITERATION

    _, flagged, html = hygiene_run
    section = _section(html, "Row hygiene")
    strips = section[section.index('id="flagged-iter1"') :]
    strips = strips[: strips.index("</div>")]
    assert MAX_FLAGGED_PER_ITERATION < N_FLAGGED
    assert strips.count("<img ") == MAX_FLAGGED_PER_ITERATION
    assert strips.count("data:image/png;base64,") == MAX_FLAGGED_PER_ITERATION
    assert "image missing" not in strips
    more = N_FLAGGED - MAX_FLAGGED_PER_ITERATION
    assert f"{N_FLAGGED} row(s) flagged, kept in the training set" in section
    assert f"{more} more not shown (all in iter1/dataset/hygiene_flagged.csv)" in section
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", strips)
    first, second = captions[0].split("<br>"), captions[1].split("<br>")
    assert first[:3] == [
        "PASS · sdg",
        flagged["object_name"].iloc[0],
        "reason: &lt;b&gt;not bold&lt;/b&gt; &amp; escaped",
    ]
    assert second[2] == f"reason: {escape(HYGIENE_REASON)}"
    assert second[3] == "score 0.92 · change 12 px"
    assert "mining_pool" in captions[-1] and flagged["object_name"].iloc[11] in captions[-1]
    assert "<b>not bold" not in html


def test_generated_pass_rows_show_their_pass_check(
    hygiene_run: tuple[Path, pd.DataFrame, str],
) -> None:
    _, _, html = hygiene_run
    samples = _section(html, "Sample of generated data")
    assert "sdg · PASS<br>backend cutpaste<br>" + escape(PASS_CHECK_TEXT) in samples
    assert "image missing" not in samples


def test_hygiene_read_from_its_file_and_no_label_names_an_internal_step(
    hygiene_run: tuple[Path, pd.DataFrame, str], tmp_path: Path
) -> None:
    root, _, html = hygiene_run
    parser = _LabelParser()
    parser.feed(html)
    internal = ("final_automl", "automl_phase1", "automl_phase3", "iter1", "baseline")
    assert not [t for t in parser.labels if any(re.search(rf"\b{w}\b", t) for w in internal)]
    # Without the state's copy the report reads dataset/hygiene.json: the same table.
    moved = tmp_path / "run"
    shutil.copytree(root, moved)
    state = json.loads((moved / STATE_FILE).read_text())
    del state["iterations"]["iter1"]["hygiene"]
    (moved / STATE_FILE).write_text(json.dumps(state))
    again = report_html(moved)
    table_id = "hygiene-table"
    assert _cells(_section(again, "Row hygiene"), table_id) == _cells(
        _section(html, "Row hygiene"), table_id
    )


def test_runs_without_hygiene_or_sdg_budget_render(
    full_run: tuple[Path, dict[str, Any], str],
    hygiene_run: tuple[Path, pd.DataFrame, str],
    tiny_ws: Path,
    tmp_path: Path,
) -> None:
    # An older run: no hygiene files, an SDG summary without budget (not short).
    _, _, html = full_run
    assert "Row hygiene: not yet available" in _section(html, "Row hygiene")
    aug = _section(html, "Augmentation")
    assert "sdg-short-" not in aug and escape("SDG: 4 requested, 4 made via") in aug
    assert _cells(aug, "augmentation-table")[0][6:8] == ["—", "—"]
    # Empty flagged CSV, torn hygiene.json, no refused CSV: the page still renders.
    root = tmp_path / "run"
    shutil.copytree(hygiene_run[0], root)
    state = json.loads((root / STATE_FILE).read_text())
    del state["iterations"]["iter1"]["hygiene"]
    (root / STATE_FILE).write_text(json.dumps(state))
    dataset = root / "iter1" / "dataset"
    (dataset / "hygiene_flagged.csv").write_text("")
    (dataset / "hygiene_refused.csv").unlink()
    (dataset / "hygiene.json").write_text('{"candidates": 3, "torn')
    html = report_html(root)
    _parse(html)
    section = _section(html, "Row hygiene")
    assert "could not be rendered" not in html and "No row flagged." in section
    assert "Problems reading the results directory" in html and "hygiene.json" in html
    # Hygiene disabled, nothing on disk: the section says so.
    disabled = tmp_path / "disabled"
    DeftState.create(
        disabled,
        config=DeftConfig(kpi_target=TARGET, hygiene=HygieneConfig(enabled=False)),
        inputs=_inputs(Workspace.at(tiny_ws)),
    )
    state = DeftState.load(disabled)
    state.commit("iter1", "routing", summary="routing ok", duration_sec=1.0)
    state.save()
    assert "Row hygiene is disabled" in _section(report_html(disabled), "Row hygiene")
