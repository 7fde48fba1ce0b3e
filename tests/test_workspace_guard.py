"""One workspace check at the start of every command that reads a workspace.

The KPI set and the hold-out never choose a checkpoint or steer a search (by
path, by row, by image content), bad data stops a command before it trains
anything, and the pre-flight refuses plug-in names no registry knows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from automl_deft.aoi_changenet import AOIChangeNet
from automl_deft.cli import cli
from automl_deft.deft.config import DeftConfig, config_from_dict
from automl_deft.deft.loop import run_deft, workspace_inputs
from automl_deft.deft.state import DeftState
from automl_deft.errors import SpecError, UserError, WorkspaceError
from automl_deft.hpo.search import AutomlConfig
from automl_deft.hpo.space import Param, SearchSpace
from automl_deft.hpo.trial import SearchProblem
from automl_deft.model.spec import load_spec
from automl_deft.preflight import build_preflight
from automl_deft.run_config import Phase3Config, RunConfig
from automl_deft.validate import validate_workspace
from automl_deft.workspace import (
    HASH_CACHE,
    ImageNaming,
    Workspace,
    relative_image_dir,
    resolve_image_path,
)

NAMING = ImageNaming()


class _Trained(Exception):
    """Raised by every training entry point: the command got past its checks."""


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Training, a search or a DEFT baseline raises :class:`_Trained` (and is recorded)."""
    calls: list[str] = []

    def refuse(what: str) -> Any:
        def stop(*args: Any, **kwargs: Any) -> Any:
            calls.append(what)
            raise _Trained(f"{what} started")

        return stop

    monkeypatch.setattr("automl_deft.model.train.train", refuse("train"))
    monkeypatch.setattr("automl_deft.hpo.search.automl_search", refuse("automl_search"))
    monkeypatch.setattr(AOIChangeNet, "train", refuse("deft baseline"))
    return calls


def _invoke(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _errors(result: Result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error: ")]


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def _files(ws: Workspace, row: pd.Series, column: str) -> list[Path]:
    return [
        resolve_image_path(ws.images_dir, row[column], row["object_name"], light, NAMING.ext)
        for light in NAMING.lights
    ]


def _renamed_copy(ws: Workspace, frame: pd.DataFrame, prefix: str = "copy_") -> pd.DataFrame:
    """``frame``'s rows with their images copied under new ``object_name``s."""
    out = frame.copy()
    out["object_name"] = prefix + out["object_name"]
    for (_, old), (_, new) in zip(frame.iterrows(), out.iterrows(), strict=True):
        for column in ("input_path", "golden_path"):
            for src, dst in zip(_files(ws, old, column), _files(ws, new, column), strict=True):
                shutil.copyfile(src, dst)
    return out


# --- the KPI set and the hold-out never steer -----------------------------------------------


def test_deft_refuses_a_validation_set_that_is_a_copy_of_the_kpi_set(
    tiny_ws_copy: Path, no_training: list[str]
) -> None:
    ws = Workspace.at(tiny_ws_copy)
    shutil.copyfile(ws.kpi_csv, ws.val_csv)
    result = _invoke("deft", ws.root)
    assert result.exit_code == 2, result.output
    assert any("appear in both validation and kpi_test" in e for e in _errors(result))
    assert no_training == [] and not ws.results_dir.exists()


def test_automl_refuses_kpi_images_copied_under_new_names_as_validation(
    tiny_ws_copy: Path, no_training: list[str]
) -> None:
    ws = Workspace.at(tiny_ws_copy)
    _write(_renamed_copy(ws, _read(ws.kpi_csv)), ws.val_csv)
    result = _invoke("automl", ws.root, "--max-trials", "1")
    assert result.exit_code == 2, result.output
    assert any("identical content" in e and "kpi_test" in e for e in _errors(result))
    assert no_training == []


def _kpi_plus_one(ws: Workspace, tmp: Path) -> Path:
    frame = pd.concat([_read(ws.kpi_csv), _read(ws.val_csv).iloc[:1]], ignore_index=True)
    return _write(frame, tmp / "kpi_plus_one.csv")


def _val_plus_one_kpi_row(ws: Workspace, tmp: Path) -> Path:
    frame = pd.concat([_read(ws.val_csv), _read(ws.kpi_csv).iloc[:1]], ignore_index=True)
    return _write(frame, tmp / "val_plus_one.csv")


def _kpi_renamed(ws: Workspace, tmp: Path) -> Path:
    return _write(_renamed_copy(ws, _read(ws.kpi_csv)), tmp / "renamed_kpi.csv")


def _holdout_plus_one(ws: Workspace, tmp: Path) -> Path:
    frame = pd.concat([_read(ws.holdout_csv), _read(ws.val_csv).iloc[:1]], ignore_index=True)
    return _write(frame, tmp / "holdout_plus_one.csv")


def _holdout_renamed(ws: Workspace, tmp: Path) -> Path:
    return _write(_renamed_copy(ws, _read(ws.holdout_csv)), tmp / "renamed_holdout.csv")


@pytest.mark.parametrize(
    ("option", "make", "expected"),
    [
        ("--val-csv", _kpi_plus_one, "appear in both validation and kpi_test"),
        ("--val-csv", _val_plus_one_kpi_row, "1 row(s) appear in both validation and kpi_test"),
        ("--val-csv", _kpi_renamed, "in kpi_test have identical content to images in validation"),
        ("--val-csv", _holdout_plus_one, "appear in both validation and holdout"),
        ("--val-csv", _holdout_renamed, "in holdout have identical content to images in valid"),
        ("--train-csv", _holdout_renamed, "in holdout have identical content to images in train"),
        ("--train-csv", _kpi_plus_one, "appear in both train and kpi_test"),
    ],
)
def test_train_refuses_kpi_and_holdout_rows_by_row_and_by_content(
    tiny_ws_copy: Path, tmp_path: Path, no_training: list[str], option: str, make, expected: str
) -> None:
    ws = Workspace.at(tiny_ws_copy)
    csv = make(ws, tmp_path)
    result = _invoke("train", ws.root, option, csv)
    assert result.exit_code == 2, result.output
    assert any(expected in e for e in _errors(result)), result.output
    assert no_training == []


def test_train_refuses_the_holdout_itself(tiny_ws: Path, no_training: list[str]) -> None:
    ws = Workspace.at(tiny_ws)
    val = _invoke("train", ws.root, "--val-csv", ws.holdout_csv)
    assert val.exit_code == 2 and "hold-out" in val.output and "validation set" in val.output
    trained = _invoke("train", ws.root, "--train-csv", ws.kpi_csv)
    assert trained.exit_code == 2
    assert "is the KPI test set; it cannot be the training set" in trained.output
    assert no_training == []


def test_a_search_refuses_any_kpi_row_and_kpi_images_under_other_names(
    tiny_ws_copy: Path, tmp_path: Path
) -> None:
    ws = Workspace.at(tiny_ws_copy)
    spec = load_spec(ws.spec_path)
    space = SearchSpace((Param("lr", "train.optim.lr", "float", 1e-3, 1e-2, log=True),))
    plus_one = _val_plus_one_kpi_row(ws, tmp_path)
    with pytest.raises(UserError, match="holds KPI test rows"):
        SearchProblem.create(ws.root, space, spec, tmp_path / "s", val_csv=plus_one)
    renamed = _kpi_renamed(ws, tmp_path)
    with pytest.raises(UserError, match="holds KPI test images under other names"):
        SearchProblem.create(ws.root, space, spec, tmp_path / "s", val_csv=renamed)


def test_run_preflight_refuses_kpi_images_as_validation(tiny_ws_copy: Path) -> None:
    """`run` checks through its pre-flight (content included when images are checked)."""
    ws = Workspace.at(tiny_ws_copy)
    _write(_renamed_copy(ws, _read(ws.kpi_csv)), ws.val_csv)
    pf = build_preflight(ws.root, RunConfig(), env={}, image_probe=lambda ref: "PRESENT")
    assert not pf.ok
    assert any("identical content" in b and "validation" in b for b in pf.blocking)


# --- bad data stops a command before it trains --------------------------------------------


def _single_class_train(ws: Workspace) -> str:
    frame = _read(ws.train_csv)
    _write(frame[frame["label"] == "PASS"], ws.train_csv)
    return "train set has a single class (only PASS rows)"


def _missing_image(ws: Workspace) -> str:
    _files(ws, _read(ws.train_csv).iloc[3], "input_path")[0].unlink()
    return "train: 1 image file(s) missing"


def _train_kpi_leak(ws: Workspace) -> str:
    frame = pd.concat([_read(ws.train_csv), _read(ws.kpi_csv).iloc[:1]], ignore_index=True)
    _write(frame.fillna(""), ws.train_csv)
    return "leakage: 1 row(s) appear in both train and kpi_test"


@pytest.mark.parametrize("corrupt", [_single_class_train, _missing_image, _train_kpi_leak])
def test_automl_fails_fast_in_one_line(tiny_ws_copy: Path, no_training: list[str], corrupt) -> None:
    ws = Workspace.at(tiny_ws_copy)
    expected = corrupt(ws)
    result = _invoke("automl", ws.root, "--max-trials", "2")
    assert result.exit_code == 2, result.output
    assert len(_errors(result)) == 1 and expected in _errors(result)[0], result.output
    assert no_training == []


def test_deft_checks_leakage_before_training_its_baseline(
    tiny_ws_copy: Path, tmp_path: Path, no_training: list[str]
) -> None:
    ws = Workspace.at(tiny_ws_copy)
    expected = _train_kpi_leak(ws)
    with pytest.raises(WorkspaceError, match=re.escape(expected)):
        run_deft(ws.root, results_dir=tmp_path / "run", status=None)
    assert no_training == [] and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (lambda f: pd.concat([f, f.iloc[:2]], ignore_index=True), "2 duplicate row(s)"),
        (None, "golden and input images differ in size"),
    ],
)
def test_train_refuses_duplicates_and_size_mismatches(
    tiny_ws_copy: Path, no_training: list[str], corrupt, expected: str
) -> None:
    ws = Workspace.at(tiny_ws_copy)
    if corrupt is not None:
        _write(corrupt(_read(ws.train_csv)), ws.train_csv)
    else:
        golden = _files(ws, _read(ws.train_csv).iloc[0], "golden_path")[0]
        Image.new("L", (20, 20)).save(golden)
    result = _invoke("train", ws.root)
    assert result.exit_code == 2, result.output
    assert any(expected in e for e in _errors(result)), result.output
    assert no_training == []


def test_a_failed_train_leaves_no_empty_output_directory(tiny_ws: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "train"
    result = _invoke(
        "train",
        tiny_ws,
        "--set",
        f"train.pretrained_model_path={tmp_path / 'nope.pt'}",
        "--set",
        "train.num_epochs=1",
        "-o",
        out,
    )
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "out").exists()


def test_deft_resume_refuses_a_run_of_another_workspace(
    tiny_ws: Path, tiny_ws_copy: Path, tmp_path: Path, no_training: list[str]
) -> None:
    run = tmp_path / "run"
    DeftState.create(run, config=DeftConfig(), inputs=workspace_inputs(tiny_ws))
    result = _invoke("deft", tiny_ws_copy, "--resume", run)
    assert result.exit_code == 2, result.output
    (error,) = _errors(result)
    assert f"is a run of the workspace {Workspace.at(tiny_ws).root}, not" in error
    assert no_training == []


# --- paths stay inside the workspace ---------------------------------------------------------


def test_dotdot_paths_and_symlinks_out_of_the_workspace_are_refused(
    tiny_ws_copy: Path, tmp_path: Path
) -> None:
    ws = Workspace.at(tiny_ws_copy)
    row = _read(ws.train_csv).iloc[0]
    outside = tmp_path / "outside" / "imgs"
    outside.mkdir(parents=True)
    for src in _files(ws, row, "input_path"):
        shutil.copyfile(src, outside / src.name)
    escaping = os.path.relpath(outside, ws.images_dir)
    assert escaping.startswith("..")

    def point_first_row_at(path: str) -> None:
        frame = _read(ws.train_csv)
        frame.loc[0, "input_path"] = path
        _write(frame, ws.train_csv)

    point_first_row_at(escaping)
    with pytest.raises(WorkspaceError, match=r"train: 1 image path\(s\) lead outside the work"):
        validate_workspace(ws.root)
    with pytest.raises(WorkspaceError, match="lead outside the workspace"):
        validate_workspace(ws.root, check_image_files=False)

    # `..` that stays inside is fine.
    inside = f"{row['input_path']}/../{Path(row['input_path']).name}"
    point_first_row_at(inside)
    validate_workspace(ws.root)

    # A symlinked image file pointing out of the workspace.
    point_first_row_at(row["input_path"])
    (target,) = _files(ws, row, "input_path")
    target.unlink()
    target.symlink_to(outside / target.name)
    with pytest.raises(WorkspaceError, match="lead outside the workspace"):
        validate_workspace(ws.root)


def test_a_run_directory_may_hold_the_images_its_csvs_name(
    tiny_ws_copy: Path, tmp_path: Path
) -> None:
    """The DEFT loop's assembled CSVs name generated images inside the run with `..`."""
    ws = Workspace.at(tiny_ws_copy)
    run = tmp_path / "elsewhere" / "run"
    DeftState.create(run, config=DeftConfig(), inputs=workspace_inputs(ws.root))
    train = _read(ws.train_csv)
    generated = run / "iter1" / "sdg" / "images"
    generated.mkdir(parents=True)
    extra = train.iloc[:2].copy()
    for column in ("input_path", "golden_path"):
        folder = generated / column
        folder.mkdir()
        for (_, r), name in zip(extra.iterrows(), ("g0", "g1"), strict=True):
            src = _files(ws, r, column)[0]
            shutil.copyfile(src, folder / f"{name}_{NAMING.lights[0]}{NAMING.ext}")
        extra[column] = relative_image_dir(ws.images_dir, folder)
    extra["object_name"] = ["g0", "g1"]
    assert extra["input_path"].iloc[0].startswith("..")
    csv = run / "iter1" / "dataset" / "train_combined_iter1.csv"
    csv.parent.mkdir(parents=True)
    _write(pd.concat([train, extra], ignore_index=True), csv)
    report = validate_workspace(ws.root, csvs={"train": csv}, require_pool=False)
    assert report.summaries[0].rows == len(train) + 2
    # The same CSV outside any run directory may not reach into it.
    loose = _write(_read(csv), tmp_path / "loose.csv")
    with pytest.raises(WorkspaceError, match="lead outside the workspace"):
        validate_workspace(ws.root, csvs={"train": loose}, require_pool=False)


# --- labels, the cache, the pool ---------------------------------------------------------------


def test_placeholder_and_one_off_labels_are_warned_in_the_table(tiny_ws_copy: Path) -> None:
    ws = Workspace.at(tiny_ws_copy)
    frame = _read(ws.train_csv)
    defects = frame.index[frame["label"] != "PASS"]
    frame.loc[defects[:3], "label"] = "NaN"
    frame.loc[defects[3], "label"] = "banana"
    _write(frame, ws.train_csv)
    result = _invoke("validate", ws.root)
    assert result.exit_code == 0, result.output
    assert "nan=3 (!)" in result.output and "banana=1 (!)" in result.output
    warning = next(line for line in result.output.splitlines() if "'banana'" in line)
    assert "'nan' (looks like a missing value)" in warning
    assert "'banana' (only one row in the workspace has it)" in warning
    assert validate_workspace(ws.root).suspicious_labels.keys() == {"banana", "nan"}


def test_image_checks_are_cached_by_path_size_and_mtime(
    tiny_ws_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = Workspace.at(tiny_ws_copy)
    first = validate_workspace(ws.root)
    cache = ws.root / HASH_CACHE
    assert cache.is_file() and (cache.parent / ".gitignore").read_text() == "*\n"
    assert len(json.loads(cache.read_text())["files"]) >= first.images_checked

    opened: list[object] = []
    real_open = Image.open
    monkeypatch.setattr(
        "automl_deft.workspace.Image.open", lambda *a, **k: opened.append(a) or real_open(*a, **k)
    )
    assert validate_workspace(ws.root).images_checked == first.images_checked
    assert opened == []  # warm: nothing decoded

    # A changed file is read again: a golden re-cropped to another size is caught.
    golden = _files(ws, _read(ws.val_csv).iloc[0], "golden_path")[0]
    Image.new("L", (20, 20)).save(golden)
    with pytest.raises(WorkspaceError, match="golden and input images differ in size"):
        validate_workspace(ws.root)
    assert len(opened) == 1


def test_an_empty_pool_is_fine_when_it_is_not_required(tiny_ws_copy: Path) -> None:
    pool = Workspace.at(tiny_ws_copy).pool_csv
    pool.write_text(pool.read_text().splitlines()[0] + "\n")
    validate_workspace(tiny_ws_copy, require_pool=False)
    with pytest.raises(WorkspaceError, match=r"mining_pool CSV .* has no rows"):
        validate_workspace(tiny_ws_copy)


# --- plug-in names ------------------------------------------------------------------------------


def _preflight_blocking(ws: Path, cfg: RunConfig) -> list[str]:
    pf = build_preflight(ws, cfg, env={}, check_images=False, image_probe=lambda ref: "PRESENT")
    return pf.blocking


@pytest.mark.parametrize(
    ("cfg", "line"),
    [
        (
            RunConfig(deft=config_from_dict({"sdg": {"backend": "dall-e"}})),
            "deft.sdg.backend: unknown SDG backend 'dall-e'; choose one of command, cutpaste, "
            "procedural-pcb",
        ),
        (
            RunConfig(deft=config_from_dict({"mining": {"embedder": "clip"}})),
            "deft.mining.embedder: unknown mining embedder 'clip'; choose one of model, pretrained",
        ),
        (
            RunConfig(phase3=Phase3Config(pinned={"model.backbone.type": "resnet"})),
            "phase3.pinned: model.backbone.type 'resnet' is not a backbone; choose one of "
            "cnn_small, efficientnet_lite0",
        ),
        (
            RunConfig(automl=AutomlConfig(pinned={"model.backbone.type": "vit"})),
            "automl.pinned: model.backbone.type 'vit' is not a backbone; choose one of "
            "cnn_small, efficientnet_lite0",
        ),
        (
            RunConfig(automl=AutomlConfig(algorithm="annealing")),
            "automl.algorithm: unknown search algorithm 'annealing'; choose one of random, grid",
        ),
    ],
)
def test_preflight_checks_every_plugin_name_in_one_line(
    tiny_ws: Path, cfg: RunConfig, line: str
) -> None:
    blocking = _preflight_blocking(tiny_ws, cfg)
    assert len(blocking) == 1 and blocking[0].startswith(line), blocking


def test_a_swept_backbone_that_does_not_exist_is_refused(tiny_ws: Path) -> None:
    space = SearchSpace((Param("backbone", "model.backbone.type", "categorical", choices=(
        "cnn_small", "resnet"
    )),))  # fmt: skip
    with pytest.raises(SpecError, match="with backbone='resnet'"):
        space.check_against(load_spec(Workspace.at(tiny_ws).spec_path))


def test_deft_refuses_unknown_plugins_before_its_baseline(
    tiny_ws: Path, tmp_path: Path, no_training: list[str]
) -> None:
    cfg = config_from_dict({"sdg": {"backend": "dall-e"}, "mining": {"embedder": "clip"}})
    with pytest.raises(WorkspaceError) as caught:
        run_deft(tiny_ws, cfg, results_dir=tmp_path / "run", status=None)
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "deft.sdg.backend",
        "deft.mining.embedder",
    ]
    assert no_training == []


# --- importers -----------------------------------------------------------------------------------


def test_import_deeppcb_refuses_zero_pass_crops(tmp_path: Path) -> None:
    from automl_deft.importers.deeppcb import import_deeppcb
    from automl_deft.testing.deeppcb_fixture import make_deeppcb_fixture

    src = make_deeppcb_fixture(tmp_path / "src")
    result = _invoke("import-deeppcb", src, tmp_path / "ws", "--pass-per-image", "0")
    assert result.exit_code == 2 and not (tmp_path / "ws").exists()
    with pytest.raises(UserError, match="pass_per_image must be 1 or more, got 0"):
        import_deeppcb(src, tmp_path / "ws", pass_per_image=0)
    assert not (tmp_path / "ws").exists()
