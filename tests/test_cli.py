"""The CLI is a thin door: these tests drive each command once, end to end, on tiny inputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from automl_deft.cli import cli
from automl_deft.workspace import Workspace


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_help_lists_every_command_sorted_by_name() -> None:
    out = run("--help").output
    listed = re.findall(r"^  ([a-z][a-z-]*)  ", out.split("Commands:", 1)[1], flags=re.M)
    assert listed == [
        "automl",
        "compile",
        "deft",
        "demo-workspace",
        "evaluate",
        "export",
        "import-deeppcb",
        "infer",
        "kpi",
        "predict",
        "preflight",
        "quickstart",
        "report",
        "run",
        "schedule",
        "split-holdout",
        "submit",
        "train",
        "validate",
        "zero-shot",
    ]


def test_python_dash_m_is_the_console_script() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "automl_deft.cli", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("automl-deft, version ")


def test_demo_workspace_refuses_to_overwrite(tmp_path: Path) -> None:
    run("demo-workspace", tmp_path / "ws", "--scale", "tiny")
    again = run("demo-workspace", tmp_path / "ws", "--scale", "tiny", ok=False)
    assert again.exit_code == 2
    assert "--force" in again.output


def test_validate_json(tiny_ws: Path) -> None:
    payload = json.loads(run("validate", tiny_ws, "--json").output)
    assert payload["overlapping_rows"] == 0
    assert [s["role"] for s in payload["sets"]] == [
        "train",
        "validation",
        "kpi_test",
        "mining_pool",
    ]


def test_kpi_command_text_json_sweep_plot(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = ["PASS"] * 90 + ["short"] * 10
    scores = np.concatenate([rng.uniform(0, 0.6, 90), rng.uniform(0.5, 1.0, 10)])
    csv = tmp_path / "scored.csv"
    pd.DataFrame(
        {
            "input_path": "a",
            "golden_path": "b",
            "label": labels,
            "object_name": range(100),
            "siamese_score": scores,
        }
    ).to_csv(csv, index=False)
    text = run(
        "kpi",
        csv,
        "--target",
        "FAR < 50% at recall=100%",
        "--sweep-csv",
        tmp_path / "sweep.csv",
        "--plot",
        tmp_path / "plot.png",
    ).output
    assert "far_pct=" in text and "target FAR < 50% at recall=100%: MET" in text
    assert (tmp_path / "sweep.csv").stat().st_size > 0 and (
        tmp_path / "plot.png"
    ).stat().st_size > 0
    missed = run("kpi", csv, "--json", "--target", "FAR<1%", ok=False)
    assert missed.exit_code == 3  # a missed target gates CI: 3, not 2 ("bad input")
    payload = json.loads(missed.output)
    assert payload["target_met"] is False and payload["far_pct"] > 1
    low, high = payload["far_pct_ci95"]
    assert low <= payload["far_pct"] <= high


def test_bad_target_is_a_one_line_error(tmp_path: Path) -> None:
    csv = tmp_path / "s.csv"
    pd.DataFrame({"label": ["PASS", "short"], "siamese_score": [0.1, 0.9]}).to_csv(csv, index=False)
    result = run("kpi", csv, "--target", "FAR < 0.5", ok=False)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")


def test_train_evaluate_infer_zero_shot(tiny_ws_copy: Path, tmp_path: Path) -> None:
    ws = Workspace.at(tiny_ws_copy)
    out = tmp_path / "run"
    text = run("train", ws.root, "--set", "train.num_epochs=1", "-o", out).output
    assert "best checkpoint:" in text
    ckpt = out / "best_val.pt"
    ev = json.loads(run("evaluate", ckpt, ws.kpi_csv, "--json").output)
    assert 0 <= ev["far_pct"] <= 100
    run("infer", ckpt, ws.kpi_csv, "-o", tmp_path / "scored.csv")
    assert "siamese_score" in pd.read_csv(tmp_path / "scored.csv").columns
    zs = json.loads(run("zero-shot", ws.kpi_csv, "--json").output)
    assert zs["available"] is True


def test_train_refuses_kpi_set_as_validation(tiny_ws: Path) -> None:
    ws = Workspace.at(tiny_ws)
    result = run("train", ws.root, "--val-csv", ws.kpi_csv, ok=False)
    assert result.exit_code == 2
    assert "KPI test set cannot be the validation set" in result.output


def test_bad_override_names_the_key(tiny_ws: Path) -> None:
    result = run("train", tiny_ws, "--set", "train.optim.lr=fast", ok=False)
    assert result.exit_code == 2
    assert "train.optim.lr" in result.output


def test_corrupt_checkpoint_exit_2_and_debug_traceback(tiny_ws: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    ws = Workspace.at(tiny_ws)
    result = run("evaluate", bad, ws.kpi_csv, ok=False)
    assert result.exit_code == 2 and "corrupt" in result.output
    from automl_deft.errors import CheckpointError

    with pytest.raises(CheckpointError):
        CliRunner().invoke(
            cli, ["--debug", "evaluate", str(bad), str(ws.kpi_csv)], catch_exceptions=False
        )


def test_import_deeppcb_command(tmp_path: Path) -> None:
    from automl_deft.testing.deeppcb_fixture import make_deeppcb_fixture

    src = make_deeppcb_fixture(tmp_path / "src")
    out = run("import-deeppcb", src, tmp_path / "ws").output
    assert "kpi_test" in out
    run("validate", tmp_path / "ws")


def test_a_local_run_approves_the_backend_it_runs(tiny_ws: Path, tmp_path: Path) -> None:
    """kfp.local searches with Optuna: a config asking for Katib must not be shown as Katib."""
    config = tmp_path / "run.yaml"
    config.write_text("automl: {backend: katib}\n")
    result = run("run", tiny_ws, "-c", config, "--no-images", "--results", tmp_path / "r", ok=False)
    assert result.exit_code == 2  # no terminal to confirm on: it stops after the pre-flight
    backends = [line.split()[-1] for line in result.stdout.splitlines() if "backend:" in line]
    assert backends and set(backends) == {"optuna"}


def test_zero_max_trials_is_refused_not_ignored(tiny_ws: Path) -> None:
    result = run("automl", tiny_ws, "--max-trials", "0", ok=False)
    assert result.exit_code == 2
    assert "'--max-trials': 0 is not in the range x>=1" in result.output
