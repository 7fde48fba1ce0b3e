"""The synthetic AOI generator: layouts, nuisance, defect painters, demo workspace."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from automl_deft.errors import UserError
from automl_deft.synth import (
    BOARD_FAMILIES,
    DEFECT_TYPES,
    SCALES,
    SEVERITIES,
    DefectSiteError,
    apply_nuisance,
    generate_demo_workspace,
    paint_defect,
    render,
    render_layout,
    render_nets,
    synthesize_sample,
)
from automl_deft.synth.demo import SPLITS
from automl_deft.synth.render import SPECKLE, dilate, erode, shift_image
from automl_deft.validate import validate_workspace
from automl_deft.workspace import (
    CACHE_DIR,
    PASS_LABEL,
    ImageNaming,
    Workspace,
    input_content_hashes,
    leakage_keys,
)


def _frames(root: Path) -> dict[str, pd.DataFrame]:
    return {
        role: pd.read_csv(p, dtype=str, keep_default_na=False)
        for role, p in Workspace.at(root).csvs(include_holdout=True).items()
    }


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and CACHE_DIR not in p.relative_to(root).parts  # validate's hash cache
    }


# -- layouts and nuisance ------------------------------------------------------


def test_layout_is_deterministic_and_nets_keep_clearance() -> None:
    for family in BOARD_FAMILIES:
        a = render_layout(family, np.random.default_rng(7))
        b = render_layout(family, np.random.default_rng(7))
        assert a == b
        nets = render_nets(a)
        assert a.n_nets >= 2
        for net in range(1, int(nets.max()) + 1):
            own = nets == net
            assert not (dilate(own, 1) & (nets > 0) & ~own).any(), (family, net)


def test_families_differ_in_style() -> None:
    def mean_width(family: str) -> float:
        widths = [
            t.width
            for i in range(20)
            for t in render_layout(family, np.random.default_rng(i)).traces
        ]
        return float(np.mean(widths))

    assert mean_width("D") > mean_width("B") > mean_width("A")
    vias_e = sum(len(render_layout("E", np.random.default_rng(i)).vias) for i in range(20))
    vias_a = sum(len(render_layout("A", np.random.default_rng(i)).vias) for i in range(20))
    assert vias_e > 2 * vias_a


def test_golden_is_binary_and_nuisance_is_benign() -> None:
    rng = np.random.default_rng(0)
    golden = render(render_layout("C", rng))
    assert set(np.unique(golden)) <= {0, 255}
    test = apply_nuisance(golden, rng)
    assert test.dtype == np.uint8 and test.shape == golden.shape
    assert len(np.unique(test)) > 2  # not perfectly binary
    # Benign means: once registered (best shift), every copper/background change sits
    # on a golden edge (etching, edge flips) except for a few isolated speckles.
    copper = golden > 127
    near_edge = dilate(copper, 1) & ~erode(copper, 1)
    stray = min(
        np.count_nonzero((shift_image(test > 127, -dy, -dx) != copper) & ~near_edge)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )
    assert stray <= SPECKLE[1]


def test_unknown_family_names_the_choices() -> None:
    with pytest.raises(UserError, match=r"unknown board family 'Z'; choose one of A, B, C"):
        render_layout("Z", np.random.default_rng(0))


# -- defect painters -----------------------------------------------------------


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("defect_type", DEFECT_TYPES)
def test_painter_changes_image_inside_bbox(defect_type: str, severity: str) -> None:
    for attempt in range(20):
        rng = np.random.default_rng([DEFECT_TYPES.index(defect_type), attempt])
        family = BOARD_FAMILIES[attempt % len(BOARD_FAMILIES)]
        layout = render_layout(family, rng)
        test = apply_nuisance(render(layout), rng)
        before = test.copy()
        contrast = 0.5 if attempt % 2 else 1.0
        try:
            out, (x0, y0, x1, y1) = paint_defect(
                test, layout, defect_type, severity, rng, contrast=contrast
            )
        except DefectSiteError:
            continue
        assert np.array_equal(test, before)  # input left alone
        assert 0 <= x0 < x1 <= test.shape[1] and 0 <= y0 < y1 <= test.shape[0]
        diff = np.abs(out.astype(int) - test.astype(int))
        assert np.count_nonzero(diff >= 80) >= 2  # visible, not a faint smudge
        outside = diff >= 80
        outside[y0:y1, x0:x1] = False
        assert not outside.any()
        return
    pytest.fail(f"no layout took a {severity} {defect_type} in 20 tries")


def test_painter_direction_matches_type() -> None:
    for defect_type in DEFECT_TYPES:
        s = synthesize_sample("B", defect_type, np.random.default_rng(3), severity="high")
        x0, y0, x1, y1 = s.bbox
        clean = synthesize_sample("B", PASS_LABEL, np.random.default_rng(3))
        assert clean.bbox is None and clean.severity == ""
        assert s.label == defect_type and s.contrast is not None
        patch_gold = s.golden[y0:y1, x0:x1] > 127
        patch_test = s.test[y0:y1, x0:x1] > 127
        if defect_type in ("short", "spur", "copper"):
            assert patch_test.sum() > patch_gold.sum() - 3, defect_type
        else:
            assert patch_test.sum() < patch_gold.sum() + 3, defect_type


def test_paint_defect_rejects_unknown_type() -> None:
    rng = np.random.default_rng(0)
    layout = render_layout("A", rng)
    with pytest.raises(UserError, match=r"unknown defect type 'scratch'; choose one of open"):
        paint_defect(render(layout), layout, "scratch", "low", rng)


# -- demo workspace ------------------------------------------------------------


def test_tiny_workspace_validates(tiny_ws: Path) -> None:
    report = validate_workspace(tiny_ws)
    counts = {s.role: s.rows for s in report.summaries}
    tiny = SCALES["tiny"]
    assert counts == {
        "train": tiny["train"],
        "validation": tiny["val"],
        "kpi_test": tiny["kpi"],
        "mining_pool": tiny["pool"],
    }
    assert report.holdout is not None and report.holdout.rows == tiny["holdout"] == 64
    assert (tiny_ws / "README.md").read_text().count("seed 0") == 1


def test_distribution_shift_is_by_design(tiny_ws: Path) -> None:
    f = _frames(tiny_ws)
    train, val, kpi, pool = f["train"], f["validation"], f["kpi_test"], f["mining_pool"]

    def pass_share(frame: pd.DataFrame) -> float:
        return float((frame["label"] == PASS_LABEL).mean())

    assert 0.8 <= pass_share(train) <= 0.9
    assert 0.8 <= pass_share(val) <= 0.9
    assert pass_share(kpi) >= 0.9
    assert set(train["boardname"]) | set(val["boardname"]) == {"A", "B", "C", "D"}
    assert set(kpi["boardname"]) == set(BOARD_FAMILIES) == set(pool["boardname"])
    assert set(kpi["label"]) == {PASS_LABEL, *DEFECT_TYPES} == set(pool["label"])
    assert len(pool) > 3 * len(train)

    defects = train[train["label"] != PASS_LABEL]
    assert set(defects["label"]) == set(DEFECT_TYPES)  # rare, yet present
    # tiny is too small to show rarity in counts: check the plan every scale follows
    (plan,) = [p for p in SPLITS if p.role == "train"]
    for rare in ("mousebite", "pin-hole"):
        assert plan.type_weights[rare] <= max(plan.type_weights.values()) / 2

    def low_share(frame: pd.DataFrame) -> float:
        d = frame[frame["label"] != PASS_LABEL]
        return float((d["severity"] == "low").mean())

    assert low_share(kpi) > low_share(train)
    assert (train[train["label"] == PASS_LABEL]["severity"] == "").all()
    assert set(defects["severity"]) <= set(SEVERITIES)
    assert (
        (defects["contrast"].astype(float) > 0) & (defects["contrast"].astype(float) <= 1)
    ).all()


def test_no_row_or_image_shared_anywhere(tiny_ws: Path) -> None:
    frames = _frames(tiny_ws)
    everything = pd.concat(frames.values(), ignore_index=True)
    assert not leakage_keys(everything).duplicated().any()
    assert everything["object_name"].is_unique
    ws = Workspace.at(tiny_ws)
    hashes = input_content_hashes(everything, ws.images_dir, ImageNaming())
    assert len(set(hashes)) == len(hashes)


def test_same_seed_is_byte_identical_even_in_parallel(tiny_ws: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_demo_workspace(again, seed=0, scale="tiny", workers=2)
    for role, path in Workspace.at(tiny_ws).csvs(include_holdout=True).items():
        other = Workspace.at(again).csvs(include_holdout=True)[role]
        assert path.read_bytes() == other.read_bytes(), role
    assert _tree_digest(tiny_ws) == _tree_digest(again)


def test_existing_workspace_needs_force(tiny_ws: Path, tiny_ws_copy: Path) -> None:
    with pytest.raises(
        UserError, match=r"already contains a workspace; use --force or another directory$"
    ):
        generate_demo_workspace(tiny_ws, seed=0, scale="tiny")

    ws = Workspace.at(tiny_ws_copy)
    stale = ws.images_dir / "stale.png"
    stale.write_bytes(b"old")
    summary = generate_demo_workspace(tiny_ws_copy, seed=1, scale="tiny", force=True)
    assert summary.seed == 1 and summary.counts["train"] == SCALES["tiny"]["train"]
    assert not stale.exists()
    assert ws.train_csv.read_bytes() != Workspace.at(tiny_ws).train_csv.read_bytes()
    old = set(_tree_digest(Workspace.at(tiny_ws).images_dir).values())
    new = set(_tree_digest(ws.images_dir).values())
    assert len(old & new) < 0.01 * len(new)  # a different seed gives different images
    validate_workspace(tiny_ws_copy)


def test_unknown_scale_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unknown scale 'huge'; choose one of tiny, small, medium"):
        generate_demo_workspace(tmp_path / "ws", scale="huge")
    assert not (tmp_path / "ws").exists()
