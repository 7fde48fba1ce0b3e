"""The pipeline steps' own rules (the components only wrap them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from automl_deft import steps
from automl_deft.errors import UserError


def _raise(*args: Any, **kwargs: Any) -> Any:
    raise UserError("every trial collapsed to predicting a single class on the validation set")


def test_a_phase3_search_without_a_winner_is_recorded_not_fatal(
    tiny_ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("automl_deft.hpo.search.automl_search", _raise)
    outs = {name: tmp_path / name for name in ("spec", "model", "report")}
    result = steps.automl_step(
        str(tiny_ws),
        "",
        str(tmp_path / "run"),
        phase="phase3",
        out_spec=outs["spec"],
        out_model=outs["model"],
        out_report=outs["report"],
    )
    assert result["failed"].startswith("every trial collapsed")
    assert "checkpoint" not in result
    for path in outs.values():  # KFP needs every declared output file
        assert "no usable winner" in path.read_text()


def test_a_phase1_search_failure_still_fails_the_step(
    tiny_ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("automl_deft.hpo.search.automl_search", _raise)
    errors = tmp_path / "errors.jsonl"
    monkeypatch.setenv(steps.ERROR_FILE_ENV, str(errors))
    with pytest.raises(UserError, match="every trial collapsed"):
        steps.automl_step(str(tiny_ws), "", str(tmp_path / "run"), phase="phase1")
    assert '"step": "automl_step"' in errors.read_text()


def test_without_nones_drops_nulls_recursively() -> None:
    data = {"a": None, "b": {"c": None, "d": 1}, "e": [None, 2], "f": Path("/x")}
    assert steps.without_nones(data) == {"b": {"d": 1}, "e": [2], "f": "/x"}


def test_trajectory_markdown_says_when_phase3_lost_or_failed() -> None:
    base = {
        "kpi_target": "FAR < 5% at recall=100%",
        "deft_status": "complete",
        "trajectory": [
            {
                "step": "baseline",
                "phase": "phase1",
                "far_pct": 20.0,
                "threshold": 0.5,
                "train_rows": 80,
            },
            {
                "step": "iter1",
                "phase": "phase2",
                "far_pct": 10.0,
                "threshold": 0.4,
                "train_rows": 90,
            },
        ],
        "best": {"iteration": "iter1", "far_pct": 10.0, "threshold": 0.4, "checkpoint": "c.pt"},
    }
    lost = steps.trajectory_markdown({**base, "phase3_ran": True, "phase3_kept": False})
    assert "Phase 3 did not beat the best DEFT iteration" in lost
    failed = steps.trajectory_markdown(
        {**base, "phase3_ran": True, "phase3_kept": False, "phase3_failed": "collapsed"}
    )
    assert "Phase 3 produced no usable winner: collapsed" in failed
    skipped = steps.trajectory_markdown({**base, "phase3_ran": False})
    assert "Phase 3 skipped" in skipped
    assert "| iter1 | phase2 | 10.00% |" in lost


@pytest.mark.parametrize(
    ("status", "enabled", "expected"),
    [
        ("complete", True, True),
        ("hard_stopped", True, False),
        ("needs_review", True, False),
        ("complete", False, False),
    ],
)
def test_phase3_runs_only_after_a_loop_that_ended_normally(
    tiny_ws: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    status: str,
    enabled: bool,
    expected: bool,
) -> None:
    from automl_deft.deft.loop import LoopOutcome

    def fake_run_deft(*args: Any, **kwargs: Any) -> LoopOutcome:
        return LoopOutcome(
            results_dir=tmp_path,
            status=status,
            stop_reason=None,
            best_label=None,
            best_checkpoint=None,
            best_far_pct=None,
            best_threshold=None,
            n_final=0,
            final_train_csv=tmp_path / "train.csv",
            kpi_met=False,
            report=None,
        )

    monkeypatch.setattr("automl_deft.deft.loop.run_deft", fake_run_deft)
    config = tmp_path / "run.yaml"
    config.write_text(f"phase3: {{enabled: {str(enabled).lower()}}}\n")
    outcome = steps.deft_step(str(tiny_ws), str(config), str(tmp_path))
    assert outcome["run_phase3"] is expected
