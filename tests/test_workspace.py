"""Workspace validation: a clean workspace passes; each corruption fails with its message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from automl_deft.cli import cli
from automl_deft.errors import WorkspaceError
from automl_deft.validate import validate_workspace
from automl_deft.workspace import (
    ImageNaming,
    Workspace,
    find_images_dir,
    find_leakage,
    leakage_keys,
    resolve_image_path,
)

NAMING = ImageNaming()


def _csv(ws: Path, role: str) -> Path:
    return Workspace.at(ws).csvs()[role]


def _rewrite(ws: Path, role: str, fn) -> None:
    path = _csv(ws, role)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(frame).to_csv(path, index=False)


def _input_file(ws: Path, role: str, row: int) -> Path:
    frame = pd.read_csv(_csv(ws, role), dtype=str, keep_default_na=False)
    r = frame.iloc[row]
    return resolve_image_path(
        Workspace.at(ws).images_dir, r["input_path"], r["object_name"], NAMING.lights[0], NAMING.ext
    )


def test_resolve_image_path_is_the_documented_rule(tmp_path) -> None:
    got = resolve_image_path(tmp_path, "a/b", "obj1", "SolderLight", ".jpg")
    assert got == tmp_path / "a" / "b" / "obj1_SolderLight.jpg"
    with pytest.raises(WorkspaceError, match="is absolute"):
        resolve_image_path(tmp_path, "/abs/dir", "o", "L", ".png")
    with pytest.raises(WorkspaceError, match="is absolute"):
        resolve_image_path(tmp_path, "C:\\data", "o", "L", ".png")


def test_clean_tiny_workspace_validates(tiny_ws: Path) -> None:
    report = validate_workspace(tiny_ws)
    roles = [s.role for s in report.summaries]
    assert roles == ["train", "validation", "kpi_test", "mining_pool"]
    assert report.overlapping_rows == 0
    assert report.images_checked > 0
    table = report.table()
    assert "PASS" in table and "kpi_test" in table


def test_cli_validate_ok(tiny_ws: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", str(tiny_ws)])
    assert result.exit_code == 0, result.output
    assert "0 overlapping rows" in result.output


CORRUPTIONS = {
    "missing_csv": (
        lambda ws: _csv(ws, "validation").unlink(),
        r"validation CSV not found: .*validation_set.csv; create it",
    ),
    "missing_column": (
        lambda ws: _rewrite(ws, "train", lambda f: f.drop(columns=["golden_path"])),
        r"train CSV .* is missing required column\(s\) golden_path; required: input_path",
    ),
    "absolute_path": (
        lambda ws: _rewrite(ws, "kpi_test", lambda f: f.assign(input_path="/data/" + f.input_path)),
        r"kpi_test CSV .*: \d+ absolute input_path value\(s\) .*make them directories relative",
    ),
    "missing_image": (
        lambda ws: [_input_file(ws, "train", i).unlink() for i in range(7)],
        r"train: 7 image file\(s\) missing under .* \(e\.g\. .*\); restore them or remove",
    ),
    "unreadable_image": (
        lambda ws: _input_file(ws, "validation", 0).write_bytes(b"not an image"),
        r"validation: 1 image file\(s\) cannot be decoded .*re-export them",
    ),
    "size_mismatch": (
        lambda ws: Image.new("L", (40, 40)).save(_input_file(ws, "kpi_test", 3)),
        r"kpi_test: 1 row\(s\) whose golden and input images differ in size \(line 5: input 40x40",
    ),
    "single_class_train": (
        lambda ws: _rewrite(ws, "train", lambda f: f[f.label == "PASS"]),
        r"train set has a single class \(only PASS rows\)",
    ),
    "duplicate_rows": (
        lambda ws: _rewrite(ws, "train", lambda f: pd.concat([f, f.iloc[:2]])),
        r"train: 2 duplicate row\(s\) .* remove the duplicates",
    ),
    "leakage_by_key": (
        lambda ws: _rewrite(
            ws,
            "kpi_test",
            lambda f: pd.concat(
                [f, pd.read_csv(_csv(ws, "train"), dtype=str, keep_default_na=False).iloc[:3]]
            ),
        ),
        r"leakage: 3 row\(s\) appear in both train and kpi_test",
    ),
    "leakage_by_content": (
        lambda ws: shutil.copyfile(_input_file(ws, "train", 0), _input_file(ws, "validation", 1)),
        r"leakage: 1 input image\(s\) in validation have identical content to images in train",
    ),
    "missing_spec": (
        lambda ws: Workspace.at(ws).spec_path.unlink(),
        r"spec not found: .*baseline_spec.yaml",
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_each_corruption_is_reported(tiny_ws_copy: Path, case: str) -> None:
    corrupt, message = CORRUPTIONS[case]
    corrupt(tiny_ws_copy)
    with pytest.raises(WorkspaceError, match=message):
        validate_workspace(tiny_ws_copy)
    result = CliRunner().invoke(cli, ["validate", str(tiny_ws_copy)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines)
    assert "Traceback" not in result.output


def test_missing_images_message_names_first_few_and_counts(tiny_ws_copy: Path) -> None:
    for i in range(8):
        _input_file(tiny_ws_copy, "train", i).unlink()
    with pytest.raises(WorkspaceError) as info:
        validate_workspace(tiny_ws_copy)
    (line,) = [p for p in info.value.problems if "missing under" in p]
    assert line.startswith("train: 8 image file(s) missing")
    assert line.count("_SolderLight.png") == 5  # the first five, then the count says the rest


def test_all_problems_reported_at_once(tiny_ws_copy: Path) -> None:
    CORRUPTIONS["duplicate_rows"][0](tiny_ws_copy)
    CORRUPTIONS["leakage_by_key"][0](tiny_ws_copy)
    with pytest.raises(WorkspaceError) as info:
        validate_workspace(tiny_ws_copy)
    assert len(info.value.problems) == 2


def test_leakage_key_includes_boardname() -> None:
    a = pd.DataFrame(
        {
            "input_path": ["x"],
            "golden_path": ["g"],
            "label": ["PASS"],
            "object_name": ["o"],
            "boardname": ["A"],
        }
    )
    b = a.assign(boardname="B")
    assert leakage_keys(a).iloc[0] != leakage_keys(b).iloc[0]
    assert find_leakage({"train": a, "kpi_test": b})[1] == 0
    assert find_leakage({"train": a, "kpi_test": a})[1] == 1


def test_find_images_dir(tiny_ws: Path, tmp_path: Path) -> None:
    assert find_images_dir(Workspace.at(tiny_ws).kpi_csv) == Workspace.at(tiny_ws).images_dir
    with pytest.raises(WorkspaceError, match="pass --images-dir"):
        find_images_dir(tmp_path / "x.csv")
