"""The DEFT loop end to end on the tiny workspace: kill/resume, lock, hard stops, gates.

Every run is kept minimal (1 epoch, 1 iteration, 4 SDG pairs, 1 mined row per
target) and the KPI target is out of reach, so each run goes through every stage.
One uninterrupted reference run is shared by the tests that only read a finished run.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from automl_deft.aoi_changenet import AOIChangeNet
from automl_deft.application import TrainedModel
from automl_deft.cli import cli
from automl_deft.deft.config import config_from_dict
from automl_deft.deft.loop import run_deft, workspace_inputs
from automl_deft.deft.state import (
    BASELINE,
    COMPLETE,
    HARD_STOPPED,
    LOCK_FILE,
    LOG_FILE,
    LOOP_STOP,
    NEEDS_REVIEW,
    DeftState,
    read_log,
    run_lock,
)
from automl_deft.handoff import seed_baseline
from automl_deft.layout import RunLayout
from automl_deft.model.checkpoint import BEST_NAME
from automl_deft.records import LoopOutcome
from automl_deft.workspace import Workspace, leakage_keys, normalize_label, read_dataset_csv

TINY_CONFIG: dict[str, Any] = {
    "kpi_target": "FAR < 0.1% at recall=100%",
    "max_iterations": 1,
    "num_epochs": 1,
    "sdg": {"num_sdg": 4},
    "mining": {"top_k_per_target": 1},
    "rca": {"top_k_per_label": 5},
}
FAULTS = (
    "baseline:train",
    "baseline:evaluate",
    "baseline:rca",
    "iter1:routing",
    "iter1:sdg",
    "iter1:mining",
    "iter1:data_merge",
    "iter1:train",
    "iter1:evaluate",
    "iter1:rca",
)
COMMITTED = [(BASELINE, s) for s in ("train", "evaluate", "rca")] + [
    ("iter1", s)
    for s in ("routing", "sdg", "mining", "data_merge", "train", "evaluate", "rca", LOOP_STOP)
]
CLI_TIMEOUT_S = 600
FAULT_CLI = Path(__file__).with_name("fault_cli.py")
LEDGER_FILE = RunLayout.LEDGER
REPORT_FILE = RunLayout.REPORT
BEST_MODEL_FILE = RunLayout.DELIVERABLE
STAGE_LINE = re.compile(
    r"^\[(baseline|iter \d+/\d+) · [a-z_]+\] .+ · (\d+s|\d+m|\d+\.\dh) · next: \S.*$"
)


def _config(**overrides: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(TINY_CONFIG))
    for key, value in overrides.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return data


def _write_config(path: Path, **overrides: Any) -> Path:
    path.write_text(yaml.safe_dump(_config(**overrides)), encoding="utf-8")
    return path


def _deft_args(ws: Path, cfg: Path, run: Path) -> list[str]:
    return ["deft", str(ws), "-c", str(cfg), "--results", str(run)]


def _deft_cli(
    ws: Path, cfg: Path, run: Path, *, fault: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``automl-deft deft`` in its own process (so a fault can SIGKILL it)."""
    entry = [str(FAULT_CLI), fault] if fault else ["-m", "automl_deft.cli"]
    args = [sys.executable, *entry, *_deft_args(ws, cfg, run)]
    return subprocess.run(
        args, env=dict(os.environ), capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )


def _start_deft_cli(ws: Path, cfg: Path, run: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "automl_deft.cli", *_deft_args(ws, cfg, run)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _ok_stages(run: Path) -> list[tuple[str, str]]:
    return [(e["iter"], e["stage"]) for e in read_log(run / LOG_FILE) if e["status"] == "ok"]


def _assert_log_contiguous(run: Path) -> None:
    seqs = [e["seq"] for e in read_log(run / LOG_FILE)]
    assert seqs == list(range(1, len(seqs) + 1))


def _seeded(ws: Path, root: Path, checkpoint: Path, **overrides: Any) -> DeftState:
    """A results directory whose baseline is a Phase 1 winner (no baseline training here)."""
    cfg = config_from_dict(_config(**overrides))
    return seed_baseline(
        root, checkpoint=checkpoint, train_metric=None, config=cfg, inputs=workspace_inputs(ws)
    )


class _Crash(Exception):
    """Stands in for a crash: not a project error, so the state is left ready to resume."""


def _scripted_score(self: AOIChangeNet, checkpoint: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """Scores without a forward pass, for tests about the loop rather than the model.

    The baseline raises one false alarm; every later iteration flags every good board.
    """
    worse = any(part.startswith("iter") for part in Path(checkpoint).parts)
    out = frame.reset_index(drop=True).copy()
    good = (out["label"].map(normalize_label) == "PASS").to_numpy()
    scores = np.where(good, 0.95 if worse else 0.1, 0.9)
    if good.any():  # (the hygiene check also scores frames of new defect rows only)
        scores[np.flatnonzero(good)[0]] = 0.95
    out["siamese_score"] = scores
    return out


def _scripted_train(
    self: AOIChangeNet,
    train_frame: pd.DataFrame,
    val_frame: pd.DataFrame,
    out_dir: Path,
    *,
    pretrained: Path | None,
    num_epochs: int | None,
    seed: int,
) -> TrainedModel:
    """Training without an epoch: the warm-start checkpoint becomes the result."""
    assert pretrained is not None, "scripted training only fine-tunes"
    out_dir.mkdir(parents=True, exist_ok=True)
    best = out_dir / BEST_NAME
    shutil.copyfile(pretrained, best)
    return TrainedModel(best_checkpoint=best, latest_checkpoint=best)


@pytest.fixture
def scripted_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-in application without a forward pass (for tests about the loop itself):
    scores from :func:`_scripted_score`, training by :func:`_scripted_train`."""
    monkeypatch.setattr(AOIChangeNet, "score", _scripted_score)
    monkeypatch.setattr(AOIChangeNet, "train", _scripted_train)


@pytest.fixture(scope="module")
def reference(
    tiny_ws: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[LoopOutcome, list[str]]:
    """One uninterrupted in-process run with the tiny config, and its status lines."""
    lines: list[str] = []
    root = tmp_path_factory.mktemp("reference") / "run"
    outcome = run_deft(tiny_ws, config_from_dict(_config()), results_dir=root, status=lines.append)
    return outcome, lines


@pytest.fixture(scope="module")
def baseline_ckpt(reference: tuple[LoopOutcome, list[str]]) -> Path:
    """The reference run's evaluated baseline checkpoint (a stand-in Phase 1 winner)."""
    state = DeftState.load(reference[0].results_dir)
    path = state.path_of(BASELINE, "best_ckpt_path")
    assert path is not None
    return path


@pytest.mark.slow
def test_killed_at_every_stage_resumes_to_the_uninterrupted_result(
    tiny_ws: Path, tmp_path: Path, reference: tuple[LoopOutcome, list[str]]
) -> None:
    """SIGKILL inside every stage in turn (outputs written, not committed), one results dir."""
    cfg = _write_config(tmp_path / "deft.yaml")
    run = tmp_path / "run"
    for fault in FAULTS:
        proc = _deft_cli(tiny_ws, cfg, run, fault=fault)
        assert proc.returncode == -signal.SIGKILL, (fault, proc.stdout, proc.stderr)
        label, stage = fault.split(":")
        assert (label, stage) not in _ok_stages(run), fault
        _assert_log_contiguous(run)
    proc = _deft_cli(tiny_ws, cfg, run)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    _assert_log_contiguous(run)
    committed = _ok_stages(run)
    assert sorted(committed) == sorted(COMMITTED)  # each exactly once: COMMITTED has no repeats

    state = DeftState.load(run)
    assert state.status == COMPLETE
    rec = state.iterations["iter1"]
    combined = read_dataset_csv(run / "iter1" / "dataset" / "train_combined_iter1.csv")
    assert not leakage_keys(combined).duplicated().any()
    base_rows = len(read_dataset_csv(Workspace.at(tiny_ws).train_csv))
    assert rec.sdg_rows > 0 and rec.mined_rows > 0
    assert len(combined) == rec.train_rows == base_rows + rec.sdg_rows + rec.mined_rows

    pairs = json.loads(
        (run / LEDGER_FILE).read_text(encoding="utf-8"), object_pairs_hook=lambda kv: kv
    )
    ledger_keys = [k for k, _ in dict(pairs)["entries"]]
    assert len(ledger_keys) == len(set(ledger_keys)) == rec.mined_rows
    mined = read_dataset_csv(run / "iter1" / "mining_filter" / "mined_rows.csv")
    assert set(ledger_keys) == set(leakage_keys(mined))
    assert (run / BEST_MODEL_FILE).is_file()
    assert (run / REPORT_FILE).is_file()

    ref_state = DeftState.load(reference[0].results_dir)
    assert sorted(_ok_stages(Path(reference[0].results_dir))) == sorted(committed)
    assert ref_state.iterations["iter1"].train_rows == rec.train_rows
    # CPU training is deterministic and a killed training resumes from its finished
    # latest.pt, so the interrupted run scores exactly like the uninterrupted one.
    for label in (BASELINE, "iter1"):
        assert state.iterations[label].far_pct == ref_state.iterations[label].far_pct


def test_a_second_loop_on_the_same_results_is_refused(tiny_ws: Path, tmp_path: Path) -> None:
    cfg = _write_config(tmp_path / "deft.yaml")
    run = tmp_path / "run"
    first = _start_deft_cli(tiny_ws, cfg, run)
    try:
        lock = run / LOCK_FILE
        deadline = time.monotonic() + 120
        while not (lock.is_file() and lock.read_text().strip().isdigit()):
            assert first.poll() is None, "the first loop ended before taking the lock"
            assert time.monotonic() < deadline, "the first loop never took the lock"
            time.sleep(0.1)
        second = CliRunner().invoke(cli, _deft_args(tiny_ws, cfg, run))
        assert second.exit_code == 2, second.output
        assert second.stderr.strip() == (
            f"error: another DEFT loop (pid {first.pid}) is running on {run}; wait for it to "
            "finish or use another results directory"
        )
    finally:
        first.kill()
        first.wait(30)
    with run_lock(run):  # the kernel released the killed holder's lock
        pass


@pytest.mark.usefixtures("scripted_app")
def test_leakage_in_an_assembled_set_hard_stops_at_training(
    tiny_ws: Path, tmp_path: Path, baseline_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KPI row slipped into a committed training CSV is caught when training re-validates."""
    # A crash inside iter1 training leaves data_merge committed and train pending, like
    # the iter1:train fault would, without training a model first.
    run = tmp_path / "run"
    _seeded(tiny_ws, run, baseline_ckpt, mining={"enabled": False})

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise _Crash("killed during iter1 training")

    with monkeypatch.context() as m:
        m.setattr(AOIChangeNet, "train", crash)
        with pytest.raises(_Crash):
            run_deft(tiny_ws, results_dir=run, status=None)
    state = DeftState.load(run)
    assert state.done("iter1", "data_merge") and not state.done("iter1", "train")

    combined_csv = state.path_of("iter1", "train_csv")
    combined = pd.read_csv(combined_csv, dtype=str, keep_default_na=False)
    kpi = pd.read_csv(Workspace.at(tiny_ws).kpi_csv, dtype=str, keep_default_na=False)
    leaked = pd.concat([combined, kpi.iloc[:1]], ignore_index=True).fillna("")
    leaked.to_csv(combined_csv, index=False)

    cfg = _write_config(tmp_path / "deft.yaml", mining={"enabled": False})
    proc = _deft_cli(tiny_ws, cfg, run)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith("error: DEFT hard-stopped: iter1 train: leakage in ")
    assert "[iter 1/1 · train] HARD STOP: leakage in " in proc.stdout

    state = DeftState.load(run)
    assert state.status == HARD_STOPPED
    reason = state.stop_reason
    assert reason.startswith(f"iter1 train: leakage in {combined_csv} (1 row(s)): ")
    last = read_log(run / LOG_FILE)[-1]
    assert (last["iter"], last["stage"], last["status"]) == ("iter1", "train", "error")
    report = (run / REPORT_FILE).read_text(encoding="utf-8")
    assert "HARD STOPPED" in report
    assert html.escape(reason) in report
    best = json.loads((run / BEST_MODEL_FILE).read_text(encoding="utf-8"))
    assert best["iteration"] == BASELINE


@pytest.mark.usefixtures("scripted_app")
def test_mined_kpi_rows_hard_stop_before_the_set_is_written(
    tiny_ws_copy: Path, tmp_path: Path, baseline_ckpt: Path
) -> None:
    """A pool that holds the KPI set: each weak KPI row mines itself (similarity 1.0)."""
    ws = Workspace.at(tiny_ws_copy)
    shutil.copyfile(ws.kpi_csv, ws.pool_csv)
    run = tmp_path / "run"
    _seeded(tiny_ws_copy, run, baseline_ckpt)
    outcome = run_deft(tiny_ws_copy, results_dir=run, status=None)
    assert outcome.status == HARD_STOPPED
    assert re.match(
        r"iter1 data_merge: leakage in iter1 assembled set \(\d+ row\(s\)\): ", outcome.stop_reason
    )
    state = DeftState.load(run)
    assert state.iterations["iter1"].mined_rows > 0
    assert not state.done("iter1", "data_merge")
    assert not (run / "iter1" / "dataset" / "train_combined_iter1.csv").exists()
    assert not (run / LEDGER_FILE).exists()


@pytest.mark.usefixtures("scripted_app")
def test_a_missing_mining_pool_hard_stops_at_routing(
    tiny_ws_copy: Path, tmp_path: Path, baseline_ckpt: Path
) -> None:
    pool = Workspace.at(tiny_ws_copy).pool_csv
    pool.unlink()
    run = tmp_path / "run"
    _seeded(tiny_ws_copy, run, baseline_ckpt)
    outcome = run_deft(tiny_ws_copy, results_dir=run, status=None)
    assert outcome.status == HARD_STOPPED
    assert outcome.stop_reason == (
        f"iter1 routing: mining pool {pool.resolve()} is missing or empty; add pool rows or set "
        "mining.on_empty_pool: skip"
    )
    assert DeftState.load(run).next_stage("iter1") == "routing"


@pytest.mark.usefixtures("scripted_app")
def test_an_empty_mining_pool_can_be_skipped(
    tiny_ws_copy: Path, tmp_path: Path, baseline_ckpt: Path
) -> None:
    pool = Workspace.at(tiny_ws_copy).pool_csv
    header = pool.read_text(encoding="utf-8").splitlines()[0]
    pool.write_text(header + "\n", encoding="utf-8")
    run = tmp_path / "run"
    _seeded(tiny_ws_copy, run, baseline_ckpt, mining={"on_empty_pool": "skip"})
    lines: list[str] = []
    outcome = run_deft(tiny_ws_copy, results_dir=run, status=lines.append)
    assert outcome.status == COMPLETE, outcome.stop_reason
    rec = DeftState.load(run).iterations["iter1"]
    assert rec.mined_rows == 0 and rec.sdg_rows > 0
    assert (
        f"warning: mining pool {pool.resolve()} is missing or empty; mining skipped "
        "(mining.on_empty_pool: skip)"
    ) in lines


@pytest.mark.usefixtures("scripted_app")
def test_the_regression_gate_stops_for_review_until_acknowledged(
    tiny_ws: Path, tmp_path: Path, baseline_ckpt: Path
) -> None:
    run = tmp_path / "run"
    _seeded(
        tiny_ws,
        run,
        baseline_ckpt,
        mining={"enabled": False},
        regression={"tolerance_pp": 0.0, "patience": 1},
    )
    outcome = run_deft(tiny_ws, results_dir=run, status=None)
    assert outcome.status == NEEDS_REVIEW
    assert outcome.stop_reason == (
        "1 iteration(s) in a row worse than the best so far by more than 0 pp "
        "(last: iter1 FAR 100.00%)"
    )
    assert DeftState.load(run).iterations["iter1"].regression is True
    assert outcome.best_label == BASELINE

    entries = len(read_log(run / LOG_FILE))
    again = run_deft(tiny_ws, results_dir=run, status=None)
    assert again.status == NEEDS_REVIEW
    assert len(read_log(run / LOG_FILE)) == entries

    done = run_deft(tiny_ws, results_dir=run, acknowledge_regression=True, status=None)
    assert done.status == COMPLETE
    assert done.stop_reason == "max_iterations (1) reached"
    assert done.best_label == BASELINE
    state = DeftState.load(run)
    assert state.acknowledged == ["iter1"]
    stops = [e for e in read_log(run / LOG_FILE) if e["stage"] == LOOP_STOP]
    assert [e["summary"].split(":")[0] for e in stops] == [NEEDS_REVIEW, COMPLETE]


@pytest.mark.usefixtures("scripted_app")
def test_a_preseeded_baseline_is_not_retrained(
    tiny_ws: Path, tmp_path: Path, baseline_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained: list[Path] = []
    inner_train = AOIChangeNet.train

    def counting_train(self: AOIChangeNet, *args: Any, **kwargs: Any) -> Any:
        trained.append(Path(args[2]))
        return inner_train(self, *args, **kwargs)

    monkeypatch.setattr(AOIChangeNet, "train", counting_train)
    run = tmp_path / "run"
    _seeded(tiny_ws, run, baseline_ckpt, mining={"enabled": False})
    outcome = run_deft(tiny_ws, results_dir=run, status=None)
    assert outcome.status == COMPLETE, outcome.stop_reason
    assert trained == [run / "iter1" / "train"]
    state = DeftState.load(run)
    assert state.iterations[BASELINE].source == "automl_phase1"
    first = read_log(run / LOG_FILE)[0]
    assert (first["iter"], first["stage"]) == (BASELINE, "train")
    assert "reused Phase 1 winner" in first["summary"]


def test_status_lines_name_stage_duration_and_next_step(
    reference: tuple[LoopOutcome, list[str]],
) -> None:
    _, lines = reference
    stage_lines = [line for line in lines if line.startswith(("[baseline ·", "[iter "))]
    for line in stage_lines:
        assert STAGE_LINE.match(line), line
    where = [line[1 : line.index("]")] for line in stage_lines]
    assert where == [f"baseline · {s}" for s in ("train", "evaluate", "rca")] + [
        f"iter 1/1 · {s}"
        for s in ("routing", "sdg", "mining", "data_merge", "train", "evaluate", "rca")
    ]
    nexts = [line.rsplit(" · next: ", 1)[1] for line in stage_lines]
    assert nexts[2] == "iter 1 routing" and nexts[-1] == "gates"
    for line in stage_lines:
        if "· evaluate]" in line:
            assert "FAR" in line and "(target <0.1%)" in line
    assert lines[-1].startswith("[done · complete] best ")


def test_report_command_rerenders_and_refuses_a_dir_without_state(
    reference: tuple[LoopOutcome, list[str]], tmp_path: Path
) -> None:
    root = Path(reference[0].results_dir)
    report = root / REPORT_FILE
    report.unlink()
    result = CliRunner().invoke(cli, ["report", str(root)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(report)
    assert report.is_file()

    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["report", str(empty)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: no deft_state.json in {empty}; ")


def test_a_moved_run_directory_reports_resumes_and_delivers(
    tiny_ws: Path, tmp_path: Path, reference: tuple[LoopOutcome, list[str]]
) -> None:
    """Paths inside a run are stored relative to it: move it, and it still works."""
    first = tmp_path / "first" / "run"
    shutil.copytree(reference[0].results_dir, first)
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(first, moved)
    assert not first.exists()

    for name in ("deft_state.json", BEST_MODEL_FILE):
        text = (moved / name).read_text(encoding="utf-8")
        assert str(reference[0].results_dir) + "/" not in text, name

    report = moved / REPORT_FILE
    report.unlink()
    result = CliRunner().invoke(cli, ["report", str(moved)])
    assert result.exit_code == 0, result.output
    assert report.is_file() and "iterations-table" in report.read_text(encoding="utf-8")

    resumed = run_deft(tiny_ws, results_dir=moved, status=None)
    assert resumed.status == COMPLETE
    assert resumed.best_label == reference[0].best_label
    assert resumed.best_far_pct == reference[0].best_far_pct
    assert resumed.best_checkpoint is not None
    assert Path(resumed.best_checkpoint).is_relative_to(moved)

    from automl_deft.model.checkpoint import load_checkpoint
    from automl_deft.records import Deliverable

    best = Deliverable.read(moved / BEST_MODEL_FILE)
    assert best.iteration == reference[0].best_label
    checkpoint = best.path(moved, "checkpoint")
    assert checkpoint.is_file() and checkpoint.is_relative_to(moved)
    load_checkpoint(checkpoint)
    assert best.path(moved, "inference_spec").is_file()
    state = DeftState.load(moved)
    for label in state.iterations:
        ckpt = state.path_of(label, "best_ckpt_path")
        assert ckpt is not None and ckpt.is_file() and ckpt.is_relative_to(moved), label

    # Its generated images are named relative to the workspace images root (into the
    # old place); the Dataset handed to Phase 3 names them where they are now.
    from automl_deft.model.spec import load_spec
    from automl_deft.steps import publish_dataset
    from automl_deft.workspace import row_paths

    csv = state.path_of("iter1", "train_csv")
    assert csv is not None
    stale = read_dataset_csv(csv)
    images = Workspace.at(tiny_ws).images_dir
    lights = load_spec(Workspace.at(tiny_ws).spec_path).naming()
    original = Path(reference[0].results_dir).resolve()

    def into(frame: pd.DataFrame, run: Path) -> int:
        files = [p for row in row_paths(frame, images, lights, "input_path") for p in row]
        return sum(Path(os.path.normpath(p.resolve())).is_relative_to(run) for p in files)

    generated = into(stale, original)
    assert generated > 0  # the stored names point into the place the run was made in
    # What deft_step publishes: the resumed loop's final training set.
    assert Path(resumed.final_train_csv) != csv
    manifest = publish_dataset(resumed.final_train_csv, tmp_path / "dataset", tiny_ws, moved)
    published = read_dataset_csv(tmp_path / "dataset" / "train.csv")
    assert len(published) == len(stale)
    for column in ("input_path", "golden_path"):
        for row in row_paths(published, images, lights, column):
            assert all(p.is_file() for p in row), row
    assert into(published, original) == 0 and into(published, moved.resolve()) == generated
    assert Path(manifest["source_csv"]).is_relative_to(moved)
    assert read_dataset_csv(manifest["source_csv"]).equals(published)


@pytest.mark.usefixtures("scripted_app")
def test_a_relative_results_directory_is_not_applied_twice(
    tiny_ws: Path, tmp_path: Path, baseline_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``deft WS --results r0`` from another folder: stored run-relative paths resolve once
    (it used to look for r0/r0/baseline/train/best_val.pt and hard-stop at evaluate)."""
    _seeded(tiny_ws, tmp_path / "r0", baseline_ckpt)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["deft", str(tiny_ws), "--resume", "r0"])
    assert result.exit_code == 0, result.output
    state = DeftState.load(tmp_path / "r0")
    assert state.status == COMPLETE, state.stop_reason
