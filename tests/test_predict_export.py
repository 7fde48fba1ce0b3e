"""The deliverable leaves the run: ``predict``, ``export``, the model card, exit codes that gate.

One tiny DEFT run (in-process, inside a copy of the tiny workspace, like a user's
``WS/results/run_x``) is shared by the module. ``predict`` reads it as a run
directory, as ``best_model.json`` and as exported ONNX / TorchScript packages; the
packages must score like the checkpoint (1e-4) without the training code's
checkpoint; the whole workspace is then moved and every door still opens.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from automl_deft.cli import cli
from automl_deft.deft.config import config_from_dict
from automl_deft.deft.loop import run_deft
from automl_deft.layout import RunLayout
from automl_deft.model_card import ModelCard
from automl_deft.records import Deliverable
from automl_deft.workspace import PASS_LABEL, SCORE_COLUMN, ImageNaming, resolve_image_path

CONFIG = {
    "kpi_target": "FAR < 0.1% at recall=100%",
    "max_iterations": 1,
    "num_epochs": 1,
    "sdg": {"num_sdg": 4},
    "mining": {"top_k_per_target": 1},
    "rca": {"top_k_per_label": 5},
}


@pytest.fixture(scope="module")
def finished(tiny_ws: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(workspace, run) — a finished tiny DEFT run inside its own workspace copy."""
    ws = tmp_path_factory.mktemp("deliver") / "ws"
    shutil.copytree(tiny_ws, ws)
    run = ws / "results" / "run_a"
    run_deft(ws, config_from_dict(CONFIG), results_dir=run, status=None)
    assert (run / RunLayout.DELIVERABLE).is_file()
    return ws, run


def _invoke(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _unlabelled(ws: Path, dest: Path) -> Path:
    frame = pd.read_csv(ws / "kpi" / "testing_set.csv", dtype=str, keep_default_na=False)
    out = dest / "production.csv"
    frame.drop(columns=["label"]).to_csv(out, index=False)
    return out


def _scores(csv: Path) -> pd.DataFrame:
    return pd.read_csv(csv, dtype={"label": str}, keep_default_na=False)


def test_predict_a_run_on_unlabelled_rows_writes_decisions(
    finished: tuple[Path, Path], tmp_path: Path
) -> None:
    ws, run = finished
    source = _unlabelled(ws, tmp_path)
    code, out = _invoke("predict", run, source, "--images-dir", ws / "kpi" / "images")
    assert code == 0, out
    scored = _scores(tmp_path / "production_predictions.csv")
    best = Deliverable.read(run / RunLayout.DELIVERABLE)
    assert "label" not in scored.columns
    assert list(scored.columns[-2:]) == [SCORE_COLUMN, "decision"]
    expected = np.where(scored[SCORE_COLUMN] > best.threshold, "NO_PASS", PASS_LABEL)
    assert (scored["decision"] == expected).all()
    assert f"{(expected == 'NO_PASS').sum()} NO_PASS" in out


def test_predict_with_labels_reports_the_kpi_and_gates_on_the_target(
    finished: tuple[Path, Path], tmp_path: Path
) -> None:
    ws, run = finished
    kpi = ws / "kpi" / "testing_set.csv"
    best = Deliverable.read(run / RunLayout.DELIVERABLE)
    out_csv = tmp_path / "scored.csv"
    code, out = _invoke("predict", run / RunLayout.DELIVERABLE, kpi, "-o", out_csv)
    assert code == 0, out
    # The deliverable's own KPI set, scored again: the same far_pct the run recorded.
    assert f"far_pct={best.far_pct:.4f}" in out
    assert "(95% bootstrap)" in out
    code, out = _invoke("predict", run, kpi, "-o", out_csv, "--target", "FAR < 0.0001%")
    assert code == 3 and "NOT MET" in out
    code, out = _invoke("kpi", out_csv, "--target", "FAR <= 100%", "--json")
    assert code == 0
    payload = json.loads(out)
    low, high = payload["far_pct_ci95"]
    assert low <= payload["far_pct"] <= high
    code, _ = _invoke("kpi", out_csv, "--target", "FAR < 0.0001%")
    assert code == 3


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_exported_package_scores_like_the_checkpoint(
    finished: tuple[Path, Path], tmp_path: Path, fmt: str
) -> None:
    ws, run = finished
    kpi = ws / "kpi" / "testing_set.csv"
    pkg = tmp_path / f"pkg_{fmt}"
    code, out = _invoke("export", run, "--format", fmt, "-o", pkg)
    assert code == 0, out
    for name in ("package.json", "model_card.json", "MODEL_CARD.md"):
        assert (pkg / name).is_file(), name
    card = ModelCard.loads((pkg / "model_card.json").read_text(encoding="utf-8"))
    best = Deliverable.read(run / RunLayout.DELIVERABLE)
    assert card.threshold == best.threshold and card.iteration == best.iteration
    roles = {d.role: d for d in card.datasets}
    assert roles["KPI (steering) set"].rows == len(pd.read_csv(kpi))
    assert len(roles["KPI (steering) set"].sha256) == 64
    assert "## Data" in (pkg / "MODEL_CARD.md").read_text(encoding="utf-8")

    code, _ = _invoke("predict", run, kpi, "-o", tmp_path / "ckpt.csv")
    assert code == 0
    code, out = _invoke("predict", pkg, kpi, "-o", tmp_path / "pkg.csv")
    assert code == 0, out
    ckpt_scores = _scores(tmp_path / "ckpt.csv")[SCORE_COLUMN].to_numpy()
    pkg_scores = _scores(tmp_path / "pkg.csv")[SCORE_COLUMN].to_numpy()
    np.testing.assert_allclose(pkg_scores, ckpt_scores, atol=1e-4, rtol=0)
    assert (
        _scores(tmp_path / "pkg.csv")["decision"] == _scores(tmp_path / "ckpt.csv")["decision"]
    ).all()


def test_one_pair_from_files(finished: tuple[Path, Path]) -> None:
    ws, run = finished
    row = pd.read_csv(ws / "kpi" / "testing_set.csv", dtype=str).iloc[0]
    naming = ImageNaming()
    images = ws / "kpi" / "images"
    light = naming.lights[0]
    golden = resolve_image_path(images, row["golden_path"], row["object_name"], light, ".png")
    test = resolve_image_path(images, row["input_path"], row["object_name"], light, ".png")
    code, out = _invoke("predict", run, "--golden", golden, "--test", test)
    assert code == 0, out
    assert "siamese_score=" in out and ("→ PASS" in out or "→ NO_PASS" in out)
    code, out = _invoke("predict", run, "--golden", golden, "--golden", golden, "--test", test)
    assert code == 2 and "one file per light" in out


def test_bad_rows_are_one_error_naming_them(finished: tuple[Path, Path], tmp_path: Path) -> None:
    ws, run = finished
    frame = pd.read_csv(ws / "kpi" / "testing_set.csv", dtype=str, keep_default_na=False)
    frame.loc[0, "object_name"] = "no_such_object"
    bad = ws / "kpi" / "bad_rows.csv"
    frame.to_csv(bad, index=False)
    out_csv = tmp_path / "never.csv"
    code, out = _invoke("predict", run, bad, "-o", out_csv)
    bad.unlink()
    assert code == 2
    assert "missing" in out and "no_such_object" in out
    assert not out_csv.exists()


def test_a_moved_workspace_still_predicts_exports_and_reports(
    finished: tuple[Path, Path], tmp_path: Path
) -> None:
    ws, run = finished
    moved_ws = tmp_path / "elsewhere" / "ws_moved"
    shutil.copytree(ws, moved_ws, symlinks=True)
    moved_run = moved_ws / "results" / run.name
    hidden = ws.with_name("ws_hidden")
    ws.rename(hidden)  # nothing may still read the old place
    try:
        kpi = moved_ws / "kpi" / "testing_set.csv"
        code, out = _invoke("predict", moved_run, kpi, "-o", tmp_path / "moved.csv")
        assert code == 0, out
        code, out = _invoke("export", moved_run, "-o", tmp_path / "pkg")
        assert code == 0, out
        card = ModelCard.loads((tmp_path / "pkg" / "model_card.json").read_text("utf-8"))
        assert {d.role for d in card.datasets} >= {"KPI (steering) set", "base training set"}
        assert all(not Path(d.path).is_absolute() for d in card.datasets)
        (moved_run / RunLayout.REPORT).unlink()
        code, out = _invoke("report", moved_run)
        assert code == 0, out
        assert (moved_run / RunLayout.REPORT).is_file()
    finally:
        hidden.rename(ws)


def test_the_cli_offers_exactly_the_package_formats() -> None:
    from typing import get_args

    from automl_deft.cli.serve import EXPORT_FORMATS
    from automl_deft.serving import ModelFormat

    assert get_args(ModelFormat) == EXPORT_FORMATS
