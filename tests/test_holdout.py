"""The untouched hold-out: the split, the command's refusals, the demo's, and validation."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from automl_deft.cli import cli
from automl_deft.errors import WorkspaceError
from automl_deft.holdout import read_holdout, split_holdout, split_holdout_frame
from automl_deft.synth import BOARD_FAMILIES, DEFECT_TYPES, SCALES
from automl_deft.validate import validate_workspace
from automl_deft.workspace import (
    HOLDOUT_CSV,
    PASS_LABEL,
    ImageNaming,
    Workspace,
    leakage_keys,
    normalize_label,
    refuse_kpi_set,
    resolve_image_path,
)

NAMING = ImageNaming()


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _cli(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _digests(ws: Workspace) -> dict[str, str | None]:
    return {
        role: hashlib.sha1(p.read_bytes()).hexdigest() if p.exists() else None
        for role, p in ws.csvs(include_holdout=True).items()
    }


def _frame(counts: dict[tuple[str, str], int], *, with_family: bool = True) -> pd.DataFrame:
    rows = [
        {
            "input_path": f"in/{fam}",
            "golden_path": f"gold/{fam}",
            "label": label,
            "object_name": f"{label}_{fam}_{i}",
            "boardname": fam,
        }
        for (label, fam), n in counts.items()
        for i in range(n)
    ]
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)
    return frame if with_family else frame.drop(columns=["boardname"])


COUNTS = {
    ("PASS", "A"): 40,
    ("PASS", "B"): 25,
    ("PASS", "C"): 9,
    ("short", "A"): 3,
    ("short", "B"): 2,
    ("open", "A"): 10,
    ("open", "C"): 1,
    ("spur", "B"): 1,
}


def _strata(frame: pd.DataFrame) -> pd.Series:
    return frame["label"].map(normalize_label) + "/" + frame["boardname"]


# -- split_holdout_frame -----------------------------------------------------------------


def test_split_is_stratified_and_loses_or_duplicates_no_row() -> None:
    frame = _frame(COUNTS)
    kept, held = split_holdout_frame(frame, fraction=0.3, seed=0)
    both = pd.concat([kept, held], ignore_index=True)
    assert len(both) == len(frame)
    assert sorted(leakage_keys(both)) == sorted(leakage_keys(frame))
    assert not set(leakage_keys(kept)) & set(leakage_keys(held))
    n_kept, n_held = _strata(kept).value_counts(), _strata(held).value_counts()
    for (label, fam), n in COUNTS.items():
        name = f"{normalize_label(label)}/{fam}"
        got = int(n_held.get(name, 0))
        assert got + int(n_kept.get(name, 0)) == n
        if n >= 2:  # both sides see every stratum of two or more rows
            assert 1 <= got <= n - 1, name
            assert got == min(n - 1, max(1, int(np.floor(n * 0.3 + 0.5)))), name
    # each side keeps the input's row order
    order = {k: i for i, k in enumerate(leakage_keys(frame))}
    for side in (kept, held):
        positions = [order[k] for k in leakage_keys(side)]
        assert positions == sorted(positions)


def test_split_is_deterministic_for_a_seed() -> None:
    frame = _frame(COUNTS)
    a = split_holdout_frame(frame, fraction=0.3, seed=7)
    b = split_holdout_frame(frame.copy(), fraction=0.3, seed=7)
    pd.testing.assert_frame_equal(a[1], b[1])
    pd.testing.assert_frame_equal(a[0], b[0])
    others = [set(split_holdout_frame(frame, seed=s)[1]["object_name"]) for s in range(1, 4)]
    assert any(o != set(a[1]["object_name"]) for o in others)


def test_single_row_strata_are_pooled_by_label_then_class() -> None:
    # like the demo's KPI set: every defect type twice, in two different families
    counts = {("PASS", f): 20 for f in "ABC"}
    counts |= {(t, f): 1 for t in ("open", "short") for f in "AB"}
    counts |= {("spur", "C"): 1, ("copper", "A"): 1}
    kept, held = split_holdout_frame(_frame(counts), fraction=0.3, seed=0)
    for label in ("open", "short"):  # pooled across families: one on each side
        assert (kept["label"] == label).sum() == (held["label"] == label).sum() == 1
    # spur and copper are alone in their labels too: pooled as defects, one each side
    assert ((kept["label"] == "spur") | (kept["label"] == "copper")).sum() == 1
    assert len(kept) + len(held) == 66


def test_split_without_boardname_stratifies_by_label() -> None:
    frame = _frame(COUNTS, with_family=False)
    kept, held = split_holdout_frame(frame, fraction=0.5, seed=0)
    assert len(kept) + len(held) == len(frame)
    for label in ("PASS", "short", "open", "spur"):
        n = int((frame["label"] == label).sum())
        got = int((held["label"] == label).sum())
        assert (1 <= got <= n - 1) if n >= 2 else got in (0, 1), label


def test_split_by_group_keeps_a_group_on_one_side() -> None:
    frame = _frame(COUNTS).assign(source_image=lambda f: f["object_name"].str[-1])
    kept, held = split_holdout_frame(frame, fraction=0.3, seed=0, group_by="source_image")
    assert len(kept) + len(held) == len(frame)
    assert not set(kept["source_image"]) & set(held["source_image"])
    assert len(kept) and len(held)
    with pytest.raises(WorkspaceError, match="no such column"):
        split_holdout_frame(frame, group_by="nope")


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_refuses_a_fraction_outside_0_1(fraction: float) -> None:
    with pytest.raises(WorkspaceError, match=r"fraction must be in \(0, 1\)"):
        split_holdout_frame(_frame(COUNTS), fraction=fraction)


# -- split-holdout on a workspace ---------------------------------------------------------


@pytest.fixture
def no_holdout_ws(tiny_ws_copy: Path) -> Workspace:
    """The tiny workspace with its hold-out deleted (what an older workspace looks like)."""
    ws = Workspace.at(tiny_ws_copy)
    ws.holdout_csv.unlink()
    return ws


def test_cli_split_moves_rows_and_validates(no_holdout_ws: Workspace) -> None:
    ws = no_holdout_ws
    before = _read(ws.kpi_csv)
    assert read_holdout(ws) is None
    result = _cli("split-holdout", ws.root, "--fraction", "0.3", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert f"held out {len(_read(ws.holdout_csv))} of {len(before)} KPI rows" in result.output
    assert "label" in result.output and "holdout" in result.output and "total" in result.output
    kept, held = _read(ws.kpi_csv), read_holdout(ws)
    assert held is not None and list(held.columns) == list(before.columns)
    assert sorted(leakage_keys(pd.concat([kept, held]))) == sorted(leakage_keys(before))
    for side in (kept, held):
        assert (side["label"] == PASS_LABEL).any() and (side["label"] != PASS_LABEL).any()
    report = validate_workspace(ws.root)
    assert report.holdout is not None and report.holdout.rows == len(held)


def test_cli_split_refuses_a_second_split(tiny_ws_copy: Path) -> None:
    ws = Workspace.at(tiny_ws_copy)
    before = _digests(ws)
    result = _cli("split-holdout", ws.root)
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and "already exists; a hold-out is split once" in line
    assert f"rm {HOLDOUT_CSV}" in line  # says how to undo
    assert _digests(ws) == before


@pytest.mark.parametrize("fraction", ["0", "1", "1.5", "-0.2"])
def test_cli_split_refuses_a_bad_fraction(no_holdout_ws: Workspace, fraction: str) -> None:
    before = _digests(no_holdout_ws)
    result = _cli("split-holdout", no_holdout_ws.root, "--fraction", fraction)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: hold-out fraction must be in (0, 1)")
    assert _digests(no_holdout_ws) == before


def test_cli_split_refuses_a_side_without_defects(no_holdout_ws: Workspace) -> None:
    ws = no_holdout_ws
    kpi = _read(ws.kpi_csv)
    one_defect = pd.concat([kpi[kpi["label"] == PASS_LABEL], kpi[kpi["label"] != PASS_LABEL][:1]])
    one_defect.to_csv(ws.kpi_csv, index=False)
    before = _digests(ws)
    result = _cli("split-holdout", ws.root)
    assert result.exit_code == 2, result.output
    assert "side would have no defect rows" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert _digests(ws) == before


def test_split_finishes_an_interrupted_split(no_holdout_ws: Workspace) -> None:
    ws = no_holdout_ws
    before = _read(ws.kpi_csv)
    kept, held = split_holdout_frame(before, seed=3)
    held.to_csv(ws.holdout_csv, index=False)  # crashed after the first of the two writes
    result = split_holdout(ws.root, seed=99)  # the existing hold-out wins
    assert result.resumed and result.n_holdout == len(held) and result.n_kept == len(kept)
    pd.testing.assert_frame_equal(_read(ws.kpi_csv), kept)
    validate_workspace(ws.root)
    with pytest.raises(WorkspaceError, match="already exists; a hold-out is split once"):
        split_holdout(ws.root)


def test_split_refuses_a_partly_overlapping_holdout(no_holdout_ws: Workspace) -> None:
    ws = no_holdout_ws
    kpi = _read(ws.kpi_csv)
    pd.concat([kpi[:2], kpi[:2].assign(object_name="elsewhere")]).to_csv(
        ws.holdout_csv, index=False
    )
    before = _digests(ws)
    with pytest.raises(WorkspaceError, match=r"2 of its 4 rows are also in kpi/testing_set\.csv"):
        split_holdout(ws)
    assert _digests(ws) == before


# -- the demo's hold-out --------------------------------------------------------------------


def test_demo_writes_a_holdout_of_the_kpi_distribution(tiny_ws: Path) -> None:
    ws = Workspace.at(tiny_ws)
    kpi, held = _read(ws.kpi_csv), read_holdout(ws)
    assert held is not None
    assert len(kpi) == SCALES["tiny"]["kpi"] == 150  # the KPI set keeps its size
    assert len(held) == round(150 / 0.7) - 150 == SCALES["tiny"]["holdout"]
    assert set(held["label"]) == {PASS_LABEL, *DEFECT_TYPES}
    assert set(held["boardname"]) == set(BOARD_FAMILIES)
    assert 0.88 <= (held["label"] == PASS_LABEL).mean() <= 0.95
    assert held["object_name"].str.fullmatch(r"holdout_\d{6}").all()
    assert "holdout" in (tiny_ws / "README.md").read_text()


def test_demo_holdout_is_outside_the_working_sets(tiny_ws: Path) -> None:
    ws = Workspace.at(tiny_ws)
    assert "holdout" not in ws.csvs()
    assert ws.csvs(include_holdout=True)["holdout"] == ws.holdout_csv
    report = validate_workspace(tiny_ws)
    assert report.has_holdout and [s.role for s in report.summaries] == [
        "train",
        "validation",
        "kpi_test",
        "mining_pool",
    ]
    assert report.table().splitlines()[-1].startswith("holdout ")
    result = _cli("validate", tiny_ws)
    assert result.exit_code == 0 and "warning" not in result.output


def test_refuse_kpi_set_refuses_the_holdout(tiny_ws: Path, tmp_path: Path) -> None:
    ws = Workspace.at(tiny_ws)
    with pytest.raises(WorkspaceError, match=r"the untouched hold-out .* cannot be the val"):
        refuse_kpi_set(ws, ws.holdout_csv, used_as="the validation set")
    copy = tmp_path / "copy.csv"
    shutil.copyfile(ws.holdout_csv, copy)
    with pytest.raises(WorkspaceError, match="holds hold-out rows"):
        refuse_kpi_set(ws, copy, used_as="the validation set")
    refuse_kpi_set(ws, ws.val_csv, used_as="the validation set")


# -- validation ----------------------------------------------------------------------------


def _input_file(ws: Workspace, row: pd.Series, column: str = "input_path") -> Path:
    return resolve_image_path(
        ws.images_dir, row[column], row["object_name"], NAMING.lights[0], NAMING.ext
    )


def test_validate_flags_a_holdout_row_copied_into_train(tiny_ws_copy: Path) -> None:
    ws = Workspace.at(tiny_ws_copy)
    pd.concat([_read(ws.train_csv), _read(ws.holdout_csv)[:2]]).to_csv(ws.train_csv, index=False)
    with pytest.raises(WorkspaceError, match=r"leakage: 2 row\(s\) appear in both train and hold"):
        validate_workspace(ws.root)
    result = _cli("validate", ws.root)
    assert result.exit_code == 2 and "train and holdout" in result.output


def test_validate_flags_a_holdout_image_copied_under_a_new_name(tiny_ws_copy: Path) -> None:
    ws = Workspace.at(tiny_ws_copy)
    source = _read(ws.holdout_csv).iloc[0]
    copy = source.copy()
    copy["object_name"] = "renamed_000001"
    for column in ("input_path", "golden_path"):
        shutil.copyfile(_input_file(ws, source, column), _input_file(ws, copy, column))
    pool = _read(ws.pool_csv)
    pd.concat([pool, copy.to_frame().T]).to_csv(ws.pool_csv, index=False)
    with pytest.raises(WorkspaceError) as info:
        validate_workspace(ws.root)
    (line,) = info.value.problems
    assert line.startswith("leakage: 1 input image(s) in holdout have identical content to ")
    assert "images in mining_pool" in line


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda f: f[f["label"] == PASS_LABEL], r"holdout set has a single class"),
        (lambda f: f.drop(columns=["golden_path"]), r"holdout CSV .* missing required column"),
        (lambda f: pd.concat([f, f[:1]]), r"holdout: 1 duplicate row"),
    ],
)
def test_validate_checks_the_holdout_like_the_others(
    tiny_ws_copy: Path, corrupt, message: str
) -> None:
    ws = Workspace.at(tiny_ws_copy)
    corrupt(_read(ws.holdout_csv)).to_csv(ws.holdout_csv, index=False)
    with pytest.raises(WorkspaceError, match=message):
        validate_workspace(ws.root)


def test_validate_checks_holdout_images(tiny_ws_copy: Path) -> None:
    ws = Workspace.at(tiny_ws_copy)
    _input_file(ws, _read(ws.holdout_csv).iloc[0]).unlink()
    with pytest.raises(WorkspaceError, match=r"holdout: 1 image file\(s\) missing"):
        validate_workspace(ws.root)


def test_missing_holdout_passes_with_a_warning(no_holdout_ws: Workspace) -> None:
    report = validate_workspace(no_holdout_ws.root)
    assert not report.has_holdout and report.holdout is None
    result = CliRunner().invoke(cli, ["validate", str(no_holdout_ws.root)])
    assert result.exit_code == 0, result.output
    assert "warning: no untouched hold-out" in result.stderr
    assert "split-holdout" in result.stderr
