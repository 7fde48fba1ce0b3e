"""Hard negatives: SDG makes PASS pairs for weak PASS rows, each checked to stay a PASS,
and the SDG budget goes only where the backend can spend it (both workspace kinds)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import torch

from automl_deft.deft.config import config_from_dict
from automl_deft.deft.loop import workspace_inputs
from automl_deft.deft.rca import WEAK_FILE
from automl_deft.deft.sdg import SDGContext, SDGRequest, get_sdg_backend, register_sdg_backend
from automl_deft.deft.sdg.base import (
    SDG_BACKENDS,
    PairWriter,
    SDGBackend,
    object_name,
    read_image,
    row_files,
)
from automl_deft.deft.sdg.benign import HardNegatives, measure
from automl_deft.deft.sdg.difference import pass_check
from automl_deft.deft.stages import Stages
from automl_deft.handoff import seed_baseline
from automl_deft.layout import RunLayout
from automl_deft.model.checkpoint import save_checkpoint
from automl_deft.model.data import resolve_color_mode
from automl_deft.model.network import ChangeNetLite
from automl_deft.model.spec import Spec, load_spec
from automl_deft.records import SDGSummary
from automl_deft.synth.defects import DefectSiteError, paint_defect_on_image
from automl_deft.synth.smt import generate_smt_workspace
from automl_deft.workspace import PASS_LABEL, Workspace, read_dataset_csv

MAX_BLOB = 4


@pytest.fixture(scope="module")
def smt_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("smt_hn") / "ws"
    generate_smt_workspace(root, seed=0, scale="tiny", workers=1)
    return root


def _workspace(kind: str, tiny_ws: Path, smt_ws: Path) -> Workspace:
    return Workspace.at(tiny_ws if kind == "demo" else smt_ws)


def _spec(ws: Workspace) -> Spec:
    return resolve_color_mode(
        load_spec(ws.spec_path), read_dataset_csv(ws.train_csv), ws.images_dir
    )


def _ctx(ws: Workspace, out: Path, **kw: Any) -> SDGContext:
    spec = _spec(ws)
    fields: dict[str, Any] = {
        "images_dir": ws.images_dir,
        "naming": spec.naming(),
        "image_size": (64, 64),
        "train_frame": read_dataset_csv(ws.train_csv),
        "out_images_dir": out / "images" / "sdg",
        "work_dir": out / "sdg",
        "color_mode": spec.dataset.classify.color_mode,
    }
    fields.update(kw)
    return SDGContext(**fields)


def _weak_pass(ws: Workspace, n: int = 20) -> pd.DataFrame:
    kpi = read_dataset_csv(ws.kpi_csv)
    return kpi[kpi["label"] == PASS_LABEL].head(n).reset_index(drop=True)


def _side(ctx: SDGContext, row: pd.Series, column: str) -> list[np.ndarray]:
    return [read_image(p) for p in row_files(ctx, row, column)]


def _digest(paths: Sequence[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


@pytest.mark.parametrize(
    ("kind", "backend"),
    [
        ("demo", "procedural-pcb"),
        ("demo", "cutpaste"),
        ("smt", "cutpaste"),
        ("smt", "procedural-pcb"),
    ],
)
def test_generated_pass_pairs_stay_pass(
    kind: str, backend: str, tiny_ws: Path, smt_ws: Path, tmp_path: Path
) -> None:
    ws = _workspace(kind, tiny_ws, smt_ws)
    ctx = _ctx(ws, tmp_path)
    gen = get_sdg_backend(backend)
    assert PASS_LABEL in (gen.supported_labels(ctx) or set())
    rows = gen.generate([SDGRequest(PASS_LABEL, 12, _weak_pass(ws))], ctx)
    assert len(rows) == 12
    assert (rows["label"] == PASS_LABEL).all() and (rows["sdg_backend"] == backend).all()
    assert gen.pass_checks["checked"] >= 12
    train = ctx.train_frame.set_index("object_name", drop=False)
    changed = 0
    for _, row in rows.iterrows():
        assert row["sdg_check"].startswith("pass-check passed"), row["sdg_check"]
        assert "no defect painted" in row["sdg_check"]
        src = train.loc[row["sdg_source"]]
        assert src["label"] == PASS_LABEL  # built on a clean training pair, never a KPI row
        # The golden is the source's, byte for byte.
        assert _digest(row_files(ctx, row, "golden_path")) == _digest(
            row_files(ctx, src, "golden_path")
        )
        tests, goldens = _side(ctx, row, "input_path"), _side(ctx, row, "golden_path")
        before = _side(ctx, src, "input_path")
        # The independent check, run again here, agrees with the recorded one.
        assert pass_check(tests, goldens, max_blob_px=MAX_BLOB, source_tests=before).ok
        assert all(t.shape == b.shape for t, b in zip(tests, before, strict=True))
        changed += any(not np.array_equal(t, b) for t, b in zip(tests, before, strict=True))
    assert changed >= 10  # a variation was applied, not a copy


def test_hard_negatives_off_makes_no_pass_pairs(tiny_ws: Path, tmp_path: Path) -> None:
    ws = Workspace.at(tiny_ws)
    ctx = _ctx(ws, tmp_path, hard_negatives=False)
    for name in ("procedural-pcb", "cutpaste"):
        gen = get_sdg_backend(name)
        assert PASS_LABEL not in (gen.supported_labels(ctx) or set())
        assert gen.generate([SDGRequest(PASS_LABEL, 3, _weak_pass(ws))], ctx).empty
        assert gen.unsupported_reason(PASS_LABEL, ctx) == "sdg.hard_negatives is false"


def test_the_pass_check_refuses_a_painted_defect(tiny_ws: Path, tmp_path: Path) -> None:
    """The check must not pass what a defect painter touched (bare board, greyscale)."""
    ws = Workspace.at(tiny_ws)
    ctx = _ctx(ws, tmp_path)
    train = ctx.train_frame
    clean = train[train["label"] == PASS_LABEL].head(30)
    refused = tried = 0
    rng = np.random.default_rng(0)
    for _, row in clean.iterrows():
        tests, goldens = _side(ctx, row, "input_path"), _side(ctx, row, "golden_path")
        assert pass_check(tests, goldens, max_blob_px=MAX_BLOB).ok  # a real PASS passes
        label = ("open", "short", "spur", "copper", "mousebite", "pin-hole")[tried % 6]
        try:
            painted, _ = paint_defect_on_image(tests[0], label, "medium", rng, reference=goldens[0])
        except DefectSiteError:
            continue
        tried += 1
        refused += not pass_check([painted], goldens, max_blob_px=MAX_BLOB, source_tests=tests).ok
    assert tried >= 20 and refused / tried >= 0.9, (refused, tried)


def test_the_pass_check_refuses_pasted_colour_defects(smt_ws: Path, tmp_path: Path) -> None:
    """... nor a real SMT defect pasted onto a clean colour pair under four lights."""
    ws = Workspace.at(smt_ws)
    ctx = _ctx(ws, tmp_path)
    train = ctx.train_frame.set_index("object_name", drop=False)
    rows = get_sdg_backend("cutpaste").generate(
        [SDGRequest(lab, 4, pd.DataFrame()) for lab in ("bridge", "missing", "shift")], ctx
    )
    assert len(rows) >= 8
    refused = 0
    for _, row in rows.iterrows():
        clean = train.loc[row["sdg_source"].split(";")[1]]
        check = pass_check(
            _side(ctx, row, "input_path"),
            _side(ctx, row, "golden_path"),
            max_blob_px=MAX_BLOB,
            source_tests=_side(ctx, clean, "input_path"),
        )
        refused += not check.ok
    assert refused / len(rows) >= 0.9, (refused, len(rows))


def test_the_profile_reads_what_a_pair_shows(tiny_ws: Path, tmp_path: Path) -> None:
    ws = Workspace.at(tiny_ws)
    ctx = _ctx(ws, tmp_path)
    row = ctx.train_frame[ctx.train_frame["label"] == PASS_LABEL].iloc[0]
    tests, goldens = _side(ctx, row, "input_path"), _side(ctx, row, "golden_path")
    base = measure(tests, goldens)
    moved = [np.roll(t, (2, -1), axis=(0, 1)) for t in tests]
    assert measure(moved, goldens).shift == (base.shift[0] + 2, base.shift[1] - 1)
    darker = [np.clip(t.astype(np.float32) * 0.8, 0, 255).astype(np.uint8) for t in tests]
    assert measure(darker, goldens).gains[0][0] == pytest.approx(base.gains[0][0] * 0.8, rel=0.05)


# -- the SDG stage: the budget goes where the backend can spend it ------------------------


@register_sdg_backend
class _ShortOnOpen(SDGBackend):
    """Makes hard negatives like the built-ins, but at most one ``open`` pair per call."""

    name: ClassVar[str] = "test-short-on-open"

    def supported_labels(self, ctx: SDGContext) -> frozenset[str] | None:
        return frozenset({"open", PASS_LABEL})

    def generate(self, requests: Sequence[SDGRequest], ctx: SDGContext) -> pd.DataFrame:
        writer = PairWriter(ctx, self.name)
        negatives = HardNegatives(ctx, writer, self.name)
        clean = ctx.train_frame[ctx.train_frame["label"] == PASS_LABEL]
        for r in requests:
            if r.label == PASS_LABEL:
                negatives.generate(r, ctx.pass_check_max_blob_px)
                continue
            index = writer.claim(r.label, r.count, r.first_index)[0]
            src = clean.iloc[index % len(clean)]
            files = row_files(ctx, src, "golden_path")
            writer.write(object_name(ctx, r.label, index), r.label, files, files, source="x")
        self.pass_checks = negatives.counts()
        return writer.frame()


def _stages(ws: Path, root: Path, weak: pd.DataFrame, **sdg: Any) -> Stages:
    """A run whose baseline (an untrained model) has RCA output ``weak`` as its weak rows."""
    cfg = config_from_dict({"sdg": {"num_sdg": 20, **sdg}, "hygiene": {"enabled": False}})
    spec = load_spec(Workspace.at(ws).spec_path)
    torch.manual_seed(0)
    model = ChangeNetLite(spec)
    ckpt = root.parent / "start.pt"
    save_checkpoint(
        ckpt, {"state_dict": model.state_dict(), "spec": spec.to_dict(), "arch": model.arch}
    )
    state = seed_baseline(
        root, checkpoint=ckpt, train_metric=None, config=cfg, inputs=workspace_inputs(ws)
    )
    state.commit("baseline", "evaluate", summary="(test)", duration_sec=0.0, far_pct=50.0)
    rca = RunLayout(root).stage_dir("baseline", RunLayout.RCA)
    rca.mkdir(parents=True, exist_ok=True)
    weak.assign(siamese_score=0.9, weakness=0.5).to_csv(rca / WEAK_FILE, index=False)
    return Stages(state, cfg, print)


def test_weak_rows_all_pass_spend_the_whole_budget_on_pass(tiny_ws: Path, tmp_path: Path) -> None:
    ws = Workspace.at(tiny_ws)
    stages = _stages(tiny_ws, tmp_path / "run", _weak_pass(ws, 8))
    fields, _ = stages.stage_routing("iter1")
    assert fields["routing"].sdg == [PASS_LABEL]
    fields, line = stages.stage_sdg("iter1")
    info: SDGSummary = fields["sdg"]
    assert info.requested == {PASS_LABEL: 20} and info.generated == {PASS_LABEL: 20}
    assert fields["sdg_rows"] == 20
    assert line == "SDG: 20 requested, 20 made via procedural-pcb — PASS 20"
    assert info.pass_check["passed"] == 20 and info.unrouted == {}
    rows = pd.read_csv(stages.dir("iter1", RunLayout.SDG, "sdg_rows.csv"), dtype=str)
    assert (rows["label"] == PASS_LABEL).all() and rows["sdg_check"].str.startswith("pass").all()
    # Assembled: labelled PASS, provenance sdg, the check recorded beside it.
    fields, _ = stages.stage_data_merge("iter1")
    prov = pd.read_csv(
        Path(fields["train_csv"]).with_name("train_combined_iter1_provenance.csv"),
        dtype=str,
        keep_default_na=False,
    )
    new = prov[prov["iteration_added"] == "1"]
    assert len(new) == 20 and set(new["source"]) == {"sdg"} and set(new["label"]) == {"PASS"}
    assert new["sdg_check"].str.startswith("pass-check passed").all()


def test_a_short_label_hands_its_budget_on_and_unroutable_labels_are_named(
    tiny_ws: Path, tmp_path: Path
) -> None:
    assert _ShortOnOpen.name in SDG_BACKENDS
    ws = Workspace.at(tiny_ws)
    kpi = read_dataset_csv(ws.kpi_csv)
    weak = pd.concat(
        [
            _weak_pass(ws, 5),
            kpi[kpi["label"] == "open"].head(5),
            kpi[kpi["label"] == "short"].head(2),
        ]
    )
    stages = _stages(tiny_ws, tmp_path / "run", weak, backend=_ShortOnOpen.name)
    stages.stage_routing("iter1")
    fields, line = stages.stage_sdg("iter1")
    info: SDGSummary = fields["sdg"]
    # 20 split by need; "open" makes 1 and the rest goes to PASS, which delivered in full.
    assert info.generated == {PASS_LABEL: 19, "open": 1}
    assert (
        info.requested["open"] > 1
        and sum(info.requested.values()) == 20 + info.requested["open"] - 1
    )
    assert sum(info.generated.values()) == 20 == info.budget
    assert info.unrouted == {
        "short": "the test-short-on-open backend does not make 'short' pairs here"
    }
    assert line == "SDG: 20 requested, 20 made via test-short-on-open — PASS 19, open 1"
    assert info.warnings == [f"open: 1 of {info.requested['open']} made"]


def test_a_budget_that_cannot_be_spent_says_why(tiny_ws: Path, tmp_path: Path) -> None:
    ws = Workspace.at(tiny_ws)
    kpi = read_dataset_csv(ws.kpi_csv)
    weak = pd.concat([_weak_pass(ws, 5), kpi[kpi["label"] == "open"].head(3)])
    stages = _stages(
        tiny_ws, tmp_path / "run", weak, backend=_ShortOnOpen.name, hard_negatives=False
    )
    stages.stage_routing("iter1")
    fields, line = stages.stage_sdg("iter1")
    info: SDGSummary = fields["sdg"]
    assert info.generated == {"open": 1}
    assert info.unrouted == {PASS_LABEL: "sdg.hard_negatives is false"}
    assert line == (
        "SDG: 20 requested, 1 made via test-short-on-open — open 1; 19 short: "
        "PASS not made (sdg.hard_negatives is false); open: 1 of 20 made"
    )


# -- row hygiene at assemble, through the stage -------------------------------------------


def _planted_pool(
    ws: Workspace, n: int, seed: int = 0
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Mined rows with planted faults: ``n`` near copies of training rows (PNG with +-2 grey
    levels of noise) and ``n`` pool rows with their label flipped, among ``2n`` honest pool
    rows; returns the rows, the copies' names and the flipped rows' names."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    train = read_dataset_csv(ws.train_csv)
    pool = read_dataset_csv(ws.pool_csv)
    naming = _spec(ws).naming()
    copies = []
    for k, (_, row) in enumerate(train.sample(n, random_state=seed).iterrows()):
        new = row.copy()
        new["object_name"] = f"copy_{k:03d}"
        for column in ("input_path", "golden_path"):
            rel = f"planted/{column}"
            for light in naming.lights:
                src = ws.images_dir / row[column] / f"{row['object_name']}_{light}{naming.ext}"
                image = read_image(src).astype(np.int16) + rng.integers(-2, 3, size=(1,))
                dest = ws.images_dir / rel / f"{new['object_name']}_{light}{naming.ext}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(dest)
            new[column] = rel
        copies.append(new)
    honest = pool.sample(3 * n, random_state=seed + 1).reset_index(drop=True)
    flipped = honest.iloc[:n].copy()
    flipped["label"] = ["open" if lab == PASS_LABEL else PASS_LABEL for lab in flipped["label"]]
    rows = pd.concat([pd.DataFrame(copies), flipped, honest.iloc[n:]], ignore_index=True)
    rows = rows.assign(mined_for="kpi_000000", mined_similarity="0.99").fillna("").astype(str)
    return rows, [c["object_name"] for c in copies], list(flipped["object_name"])


def test_planted_duplicates_are_refused_at_assemble_and_flipped_labels_reported(
    tiny_ws_copy: Path, tmp_path: Path
) -> None:
    from automl_deft.deft.report.render import render_report

    ws = Workspace.at(tiny_ws_copy)
    stages = _stages(tiny_ws_copy, tmp_path / "run", _weak_pass(ws, 4))
    stages.cfg = config_from_dict({"hygiene": {"enabled": True}})
    mined, copies, flipped = _planted_pool(ws, 10)
    mining_dir = stages.dir("iter1", RunLayout.MINING)
    mining_dir.mkdir(parents=True, exist_ok=True)
    mined.to_csv(mining_dir / "mined_rows.csv", index=False)
    fields, line = stages.stage_data_merge("iter1")
    hygiene = fields["hygiene"]
    out = stages.dir("iter1", RunLayout.DATASET)
    refused = pd.read_csv(out / "hygiene_refused.csv", dtype=str, keep_default_na=False)
    flagged = pd.read_csv(out / "hygiene_flagged.csv", dtype=str, keep_default_na=False)
    combined = read_dataset_csv(fields["train_csv"])
    caught = set(refused["object_name"]) & set(copies)
    assert len(caught) >= 8, refused[["object_name", "hygiene_check", "duplicate_of"]]
    assert not caught & set(combined["object_name"])  # refused at assemble
    assert len(set(flagged["object_name"]) & set(flipped)) >= 8, flagged
    assert set(flipped) & set(flagged["object_name"]) <= set(combined["object_name"])  # flag keeps
    assert hygiene.near_duplicates + hygiene.exact_duplicates == len(refused)
    assert fields["mined_rows"] == len(mined) - len(refused)
    assert f"{len(refused)} duplicate(s) refused" in line
    for stage in ("routing", "sdg", "mining"):  # (this test ran data_merge alone)
        stages.state.commit("iter1", stage, summary="(test)", duration_sec=0.0)
    stages.state.commit("iter1", "data_merge", summary=line, duration_sec=0.0, **fields)
    page = render_report(tmp_path / "run").read_text(encoding="utf-8")
    section = page[page.index("Row hygiene") :]
    for name in set(flagged["object_name"]) & set(flipped):
        assert name in section  # each flagged row is shown (a thumbnail strip with its name)
    assert section.count("<img") >= min(len(flagged), 12)
