"""The DeepPCB importer, run on a tiny tree in DeepPCB's exact format."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from automl_deft.errors import UserError, WorkspaceError
from automl_deft.importers import ImportSummary, import_deeppcb
from automl_deft.importers.deeppcb import PASS_MARGIN, read_annotations
from automl_deft.model.spec import load_spec
from automl_deft.testing.deeppcb_fixture import make_deeppcb_fixture
from automl_deft.validate import validate_workspace
from automl_deft.workspace import (
    IMAGES_DIR,
    PASS_LABEL,
    TRAIN_CSV,
    ImageNaming,
    Workspace,
    resolve_image_path,
)

CROP = 64
# Written out here rather than imported, so the test checks the mapping itself.
TYPE_NAMES = {1: "open", 2: "short", 3: "mousebite", 4: "spur", 5: "copper", 6: "pin-hole"}
TRAINVAL_ROLES = ("train", "validation", "mining_pool")


def read_list(data: Path, name: str) -> dict[str, list[tuple[int, ...]]]:
    """``{tested image (relative to PCBData) → boxes (x1, y1, x2, y2, type)}`` of one list."""
    out = {}
    for line in (data / name).read_text().splitlines():
        image, annotation = line.split()
        boxes = [
            tuple(int(v) for v in re.split(r"[,\s]+", row.strip()))
            for row in (data / annotation).read_text().splitlines()
            if row.strip()
        ]
        out[image.replace(".jpg", "_test.jpg")] = boxes
    return out


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_deeppcb_fixture(tmp_path_factory.mktemp("deeppcb"))


@pytest.fixture(scope="module")
def imported(
    src: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Workspace, ImportSummary, dict[str, pd.DataFrame]]:
    ws = Workspace.at(tmp_path_factory.mktemp("ws"))
    summary = import_deeppcb(src, ws.root, crop_size=CROP)
    frames = {
        role: pd.read_csv(path, dtype=str, keep_default_na=False)
        for role, path in ws.csvs(include_holdout=True).items()
    }
    return ws, summary, frames


@pytest.fixture(scope="module")
def lists(src: Path) -> dict[str, dict[str, list[tuple[int, ...]]]]:
    data = src / "PCBData"
    return {"trainval": read_list(data, "trainval.txt"), "test": read_list(data, "test.txt")}


def window(row: pd.Series) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (int(v) for v in row["crop_box"].split())
    return x0, y0, x1, y1


def crop_file(ws: Workspace, row: pd.Series, column: str) -> Path:
    """The file of ``row``'s ``column`` (``input_path`` / ``golden_path``) for the one light."""
    naming = ImageNaming()
    return resolve_image_path(
        ws.images_dir, row[column], row["object_name"], naming.lights[0], naming.ext
    )


def load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def test_row_counts_match_boxes_per_split(imported, lists) -> None:
    _, summary, frames = imported
    boxes = {**lists["trainval"], **lists["test"]}
    assert sum(summary.pairs.values()) == len(boxes) == 9
    for role, frame in frames.items():
        defects = frame[frame["label"] != PASS_LABEL]
        sources = set(frame["source_image"])
        assert len(defects) == sum(len(boxes[s]) for s in sources), role
        assert (frame["label"] == PASS_LABEL).sum() > 0, role
        assert summary.rows[role] == len(frame)
        assert summary.pairs[role] == len(sources)
        assert summary.labels[role] == frame["label"].value_counts().to_dict()
    assert summary.oversize_boxes == 1
    assert summary.pass_shortfall == 0


def test_split_honours_deeppcb_lists(imported, lists) -> None:
    _, _, frames = imported
    sources = {role: set(frame["source_image"]) for role, frame in frames.items()}
    # test.txt pairs are the KPI set and the hold-out, split by pair
    assert sources["kpi_test"] | sources["holdout"] == set(lists["test"])
    assert sources["kpi_test"] and sources["holdout"]
    assert set().union(*(sources[r] for r in TRAINVAL_ROLES)) == set(lists["trainval"])
    roles = list(sources)
    for i, a in enumerate(roles):
        for b in roles[i + 1 :]:
            assert not sources[a] & sources[b], f"a board image is in both {a} and {b}"
    assert all(len(sources[r]) >= 1 for r in TRAINVAL_ROLES)


def test_paths_names_and_metadata(imported) -> None:
    _, _, frames = imported
    kpi = frames["kpi_test"]
    row = kpi.iloc[0]
    assert row["input_path"] == f"deeppcb/test/{row['boardname']}/input"
    assert row["golden_path"] == f"deeppcb/test/{row['boardname']}/golden"
    assert row["boardname"] in ("group00041", "group12000")
    assert row["source_image"].startswith(f"{row['boardname']}/")
    everything = pd.concat(frames.values())
    assert not everything.duplicated(["input_path", "object_name"]).any()
    assert everything["object_name"].str.fullmatch(r"\d{8}_[dp]\d{2}").all()
    defects = everything[everything["label"] != PASS_LABEL]
    assert set(defects["severity"]) <= {"low", "medium", "high", "oversize"}
    assert (everything[everything["label"] == PASS_LABEL]["bbox"] == "").all()


def test_crops_have_crop_size(imported) -> None:
    ws, _, frames = imported
    for frame in frames.values():
        for _, row in frame.iterrows():
            for column in ("input_path", "golden_path"):
                with Image.open(crop_file(ws, row, column)) as im:
                    assert (im.size, im.mode, im.format) == ((CROP, CROP), "L", "PNG")


def test_defect_crop_is_centred_on_its_box(imported, src) -> None:
    ws, _, frames = imported
    data = src / "PCBData"
    defects = pd.concat(frames.values())
    defects = defects[defects["label"] != PASS_LABEL]
    clamped = oversize = 0
    for _, row in defects.iterrows():
        x0, y0, x1, y1 = window(row)
        bx1, by1, bx2, by2 = (int(v) for v in row["bbox"].split())
        assert (x1 - x0, y1 - y0) == (CROP, CROP)
        assert min(x0, y0) >= 0 and max(x1, y1) <= 640
        free = CROP / 2 <= (bx1 + bx2) / 2 <= 640 - CROP / 2
        free = free and CROP / 2 <= (by1 + by2) / 2 <= 640 - CROP / 2
        if free:
            assert abs((x0 + x1) / 2 - (bx1 + bx2) / 2) <= 0.5
            assert abs((y0 + y1) / 2 - (by1 + by2) / 2) <= 0.5
        else:
            clamped += 1
        if bx2 - bx1 > CROP or by2 - by1 > CROP:
            oversize += 1
            assert row["severity"] == "oversize"
        else:
            assert x0 <= bx1 and bx2 <= x1 and y0 <= by1 and by2 <= y1, "box not inside crop"
        tested = load(data / row["source_image"])
        template = load(data / row["source_image"].replace("_test.jpg", "_temp.jpg"))
        np.testing.assert_array_equal(load(crop_file(ws, row, "input_path")), tested[y0:y1, x0:x1])
        np.testing.assert_array_equal(
            load(crop_file(ws, row, "golden_path")), template[y0:y1, x0:x1]
        )
    assert clamped >= 1 and oversize == 1


def test_pass_crops_touch_no_box(imported, lists) -> None:
    _, _, frames = imported
    boxes = {**lists["trainval"], **lists["test"]}
    everything = pd.concat(frames.values())
    passes = everything[everything["label"] == PASS_LABEL]
    assert len(passes) == 8 * 9
    for _, row in passes.iterrows():
        x0, y0, x1, y1 = window(row)
        for bx1, by1, bx2, by2, _type in boxes[row["source_image"]]:
            apart = (
                x1 <= bx1 - PASS_MARGIN
                or x0 >= bx2 + PASS_MARGIN
                or y1 <= by1 - PASS_MARGIN
                or y0 >= by2 + PASS_MARGIN
            )
            assert apart, f"{row['object_name']} touches box {bx1} {by1} {bx2} {by2}"


def test_labels_are_mapped_by_type_id(imported, lists) -> None:
    _, _, frames = imported
    boxes = {**lists["trainval"], **lists["test"]}
    everything = pd.concat(frames.values())
    defects = everything[everything["label"] != PASS_LABEL]
    for _, row in defects.iterrows():
        types = {b[:4]: b[4] for b in boxes[row["source_image"]]}
        bbox = tuple(int(v) for v in row["bbox"].split())
        assert row["label"] == TYPE_NAMES[types[bbox]]


def test_space_and_comma_separators_both_parse(imported, lists, src) -> None:
    _, _, frames = imported
    data = src / "PCBData"
    annotations = sorted(data.glob("group*/*_not/*.txt"))
    comma = [a for a in annotations if "," in a.read_text()]
    assert len(comma) == 1 and len(comma) < len(annotations)
    tested = f"group12000/12000/{comma[0].stem}_test.jpg"
    everything = pd.concat(frames.values())
    rows = everything[(everything["source_image"] == tested) & (everything["label"] != "PASS")]
    assert len(rows) == len(lists["trainval"].get(tested) or lists["test"][tested]) >= 3


def test_read_annotations_tolerates_blank_lines_and_mixed_separators(tmp_path: Path) -> None:
    path = tmp_path / "00041000.txt"
    path.write_text("\n1,2,30,40,3\n\n 5 6 70 80 6  \t\r\n10, 20, 30, 40, 2\n\n")
    boxes = read_annotations(path)
    assert [(b.x1, b.y1, b.x2, b.y2, b.label, b.line) for b in boxes] == [
        (1, 2, 30, 40, "mousebite", 2),
        (5, 6, 70, 80, "pin-hole", 4),
        (10, 20, 30, 40, "short", 5),
    ]


def test_same_seed_gives_identical_csvs(imported, src, tmp_path: Path) -> None:
    ws, _, _ = imported
    again = Workspace.at(tmp_path / "again")
    import_deeppcb(src, again.root, crop_size=CROP)
    for role, path in ws.csvs(include_holdout=True).items():
        assert again.csvs(include_holdout=True)[role].read_bytes() == path.read_bytes(), role
    assert again.spec_path.read_bytes() == ws.spec_path.read_bytes()
    other = Workspace.at(tmp_path / "other")
    import_deeppcb(src, other.root, crop_size=CROP, seed=1)
    assert any(
        other.csvs()[role].read_bytes() != path.read_bytes() for role, path in ws.csvs().items()
    )


def test_src_may_be_pcbdata_itself(imported, src, tmp_path: Path) -> None:
    ws, _, _ = imported
    import_deeppcb(src / "PCBData", tmp_path / "ws", crop_size=CROP)
    assert (tmp_path / "ws" / TRAIN_CSV).read_bytes() == ws.train_csv.read_bytes()


def test_workspace_validates(imported) -> None:
    ws, _, _ = imported
    assert load_spec(ws.spec_path).dataset.classify.image_width == CROP
    report = validate_workspace(ws.root)
    assert report.images_checked > 0 and report.overlapping_rows == 0


# --- errors -------------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return make_deeppcb_fixture(tmp_path / "src", n_trainval=3, n_test=1)


def assert_nothing_written(dest: Path) -> None:
    assert not (dest / TRAIN_CSV).exists()
    assert not (dest / IMAGES_DIR).exists()


def test_missing_list_file(small: Path, tmp_path: Path) -> None:
    (small / "PCBData" / "trainval.txt").unlink()
    with pytest.raises(UserError, match=re.escape("PCBData/trainval.txt not found; pass the")):
        import_deeppcb(small, tmp_path / "ws")
    with pytest.raises(UserError, match=re.escape("is not a DeepPCB download")):
        import_deeppcb(tmp_path, tmp_path / "ws")


def test_missing_image(small: Path, tmp_path: Path) -> None:
    (small / "PCBData" / "group00041" / "00041" / "00041000_test.jpg").unlink()
    message = "1 listed file(s) missing under "
    with pytest.raises(UserError, match=re.escape(message)) as info:
        import_deeppcb(small, tmp_path / "ws")
    assert "(e.g. group00041/00041/00041000_test.jpg); restore them" in str(info.value)
    assert_nothing_written(tmp_path / "ws")


def test_bad_annotation_line(small: Path, tmp_path: Path) -> None:
    ann = small / "PCBData" / "group00041" / "00041_not" / "00041000.txt"
    lines = ann.read_text().splitlines()
    ann.write_text("\n".join([lines[0], "12 34 abc 56 1", *lines[1:]]) + "\n")
    message = "00041000.txt:2: malformed annotation line '12 34 abc 56 1'; expected 'x1 y1 x2 y2"
    with pytest.raises(UserError, match=re.escape(message)):
        import_deeppcb(small, tmp_path / "ws")
    assert_nothing_written(tmp_path / "ws")


def test_unknown_type_id(small: Path, tmp_path: Path) -> None:
    ann = small / "PCBData" / "group12000" / "12000_not" / "12000000.txt"
    ann.write_text(ann.read_text() + "1 2 30 40 7\n")
    n = len(ann.read_text().splitlines())
    message = f"12000000.txt:{n}: unknown defect type id 7; DeepPCB types are 1 open, 2 short"
    with pytest.raises(UserError, match=re.escape(message)):
        import_deeppcb(small, tmp_path / "ws")
    assert_nothing_written(tmp_path / "ws")


def test_existing_workspace_needs_force(small: Path, tmp_path: Path) -> None:
    dest = tmp_path / "ws"
    first = import_deeppcb(small, dest, seed=0)
    message = "is already a workspace (has train/base/training_set.csv); pass force=True"
    with pytest.raises(WorkspaceError, match=re.escape(message)):
        import_deeppcb(small, dest)
    stale = resolve_image_path(dest / IMAGES_DIR, "deeppcb/old", "x", "SolderLight", ".png")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    again = import_deeppcb(small, dest, force=True, seed=0)
    assert again.rows == first.rows
    assert not stale.exists(), "crops of the previous import must not linger"
    # one test pair cannot make a hold-out with both classes on both sides: warned, none written
    assert "holdout" not in again.rows and not Workspace.at(dest).has_holdout
    assert any(w.startswith("no hold-out written: 1 test pair(s)") for w in again.warnings)


def test_holdout_fraction_zero_writes_none(small: Path, tmp_path: Path) -> None:
    summary = import_deeppcb(small, tmp_path / "ws", holdout_fraction=0)
    assert "holdout" not in summary.rows and not summary.warnings
    assert not Workspace.at(tmp_path / "ws").has_holdout
    with pytest.raises(UserError, match=re.escape("holdout_fraction must be in [0, 1)")):
        import_deeppcb(small, tmp_path / "ws2", holdout_fraction=1.0)


def test_bad_fractions(small: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=re.escape("must each be in [0, 1) and sum to less")):
        import_deeppcb(small, tmp_path / "ws", val_fraction=0.5, pool_fraction=0.5)
