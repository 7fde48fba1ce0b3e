"""deft_state.json / loop_log.jsonl: atomic commits, exactly-once logging, lock."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from automl_deft.deft.config import DeftConfig
from automl_deft.deft.state import (
    BASELINE,
    HARD_STOPPED,
    DeftState,
    iteration_label,
    iteration_number,
    read_log,
    run_lock,
)
from automl_deft.errors import UserError
from automl_deft.records import RunInputs


def _new(tmp_path: Path) -> DeftState:
    return DeftState.create(
        tmp_path / "run",
        config=DeftConfig(kpi_target="FAR < 5% at recall=100%", max_iterations=3, seed=0),
        inputs=RunInputs(train_csv="t.csv"),
    )


def test_labels_round_trip() -> None:
    assert iteration_label(0) == BASELINE
    assert iteration_label(2) == "iter2"
    assert iteration_number("iter12") == 12
    assert iteration_number(BASELINE) == 0
    assert iteration_number("final_automl") is None


def test_commit_marks_stage_done_and_logs_once(tmp_path: Path) -> None:
    state = _new(tmp_path)
    assert state.next_stage(BASELINE) == "train"
    state.commit(BASELINE, "train", far_pct=None, summary="trained", duration_sec=1.5)
    state.commit(BASELINE, "evaluate", far_pct=12.5, summary="FAR", duration_sec=2)
    assert state.done(BASELINE, "train") and state.done(BASELINE, "evaluate")
    assert not state.done(BASELINE, "rca")
    assert state.next_stage(BASELINE) == "rca"
    again = DeftState.load(state.results_dir)
    assert again.iterations[BASELINE].far_pct == 12.5
    assert again.iterations[BASELINE].status == "in_progress"
    entries = read_log(state.log_path)
    assert [e["seq"] for e in entries] == [1, 2]
    assert entries[0]["stage"] == "train" and entries[0]["status"] == "ok"
    assert set(entries[0]) == {"seq", "ts", "iter", "stage", "status", "summary", "duration_sec"}


def test_log_line_lost_between_writes_is_restored(tmp_path: Path) -> None:
    state = _new(tmp_path)
    state.commit(BASELINE, "train", summary="a", duration_sec=0)
    state.commit(BASELINE, "evaluate", summary="b", duration_sec=0)
    # Simulate a kill after the state write but before the log append.
    lines = state.log_path.read_text().splitlines()
    state.log_path.write_text(lines[0] + "\n")
    DeftState.load(state.results_dir)
    assert [e["seq"] for e in read_log(state.log_path)] == [1, 2]
    DeftState.load(state.results_dir)  # idempotent
    assert [e["seq"] for e in read_log(state.log_path)] == [1, 2]


def test_torn_log_line_is_ignored(tmp_path: Path) -> None:
    state = _new(tmp_path)
    state.commit(BASELINE, "train", summary="a", duration_sec=0)
    with open(state.log_path, "a") as fh:
        fh.write('{"seq": 2, "ts"')
    assert [e["seq"] for e in read_log(state.log_path)] == [1]


def test_record_error_hard_stops(tmp_path: Path) -> None:
    state = _new(tmp_path)
    state.record_error("iter1", "data_merge", "leakage: 1 row", 0.1)
    again = DeftState.load(state.results_dir)
    assert again.status == HARD_STOPPED
    assert "leakage" in again.stop_reason
    assert read_log(state.log_path)[-1]["status"] == "error"


def test_corrupt_state_is_a_user_error(tmp_path: Path) -> None:
    state = _new(tmp_path)
    state.path.write_text("{not json")
    with pytest.raises(UserError, match="is not valid JSON"):
        DeftState.load(state.results_dir)
    state.path.write_text(json.dumps({"version": 99}))
    with pytest.raises(UserError, match="has version 99"):
        DeftState.load(state.results_dir)
    with pytest.raises(UserError, match=r"no deft_state\.json"):
        DeftState.load(tmp_path / "nowhere")


def _hold(
    path: str, ready: multiprocessing.synchronize.Event, done: multiprocessing.synchronize.Event
) -> None:  # type: ignore[name-defined]
    with run_lock(path):
        ready.set()
        done.wait(10)


def test_lock_refuses_a_second_loop(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(tmp_path), ready, done))
    proc.start()
    try:
        assert ready.wait(10)
        with pytest.raises(UserError, match="another DEFT loop"), run_lock(tmp_path):
            pass
    finally:
        done.set()
        proc.join(10)
    with run_lock(tmp_path):  # released when the holder exits
        pass


def test_the_state_round_trips_through_its_records(tmp_path: Path) -> None:
    """Every field the loop writes is a typed record field: nothing is lost or renamed."""
    from automl_deft.records import RoutingSummary, SDGSummary

    state = _new(tmp_path)
    run = state.results_dir
    state.commit(
        BASELINE,
        "train",
        summary="trained",
        duration_sec=1.0,
        best_ckpt_path=run / BASELINE / "train" / "best_val.pt",
        train_rows=80,
        val_far_pct=12.5,
    )
    state.commit(
        "iter1",
        "routing",
        summary="r",
        duration_sec=0.5,
        routing=RoutingSummary(mining=["short"], sdg=["open"], dropped=[]),
    )
    state.commit("iter1", "sdg", summary="s", duration_sec=0.5, sdg=SDGSummary("cutpaste"))
    on_disk = json.loads(state.path.read_text())
    again = DeftState.load(run)
    assert {**again.to_json(), "updated_at": None} == {**on_disk, "updated_at": None}
    rec = on_disk["iterations"][BASELINE]
    assert rec["best_ckpt_path"] == "baseline/train/best_val.pt"  # run-relative
    assert again.path_of(BASELINE, "best_ckpt_path") == run / "baseline/train/best_val.pt"
    assert type(again.iterations[BASELINE].train_rows) is int
    bad = {**on_disk, "iterations": {BASELINE: {**rec, "train_rows": "eighty"}}}
    state.path.write_text(json.dumps(bad))
    with pytest.raises(UserError, match=r"train_rows': expected an integer"):
        DeftState.load(run)
