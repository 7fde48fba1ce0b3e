"""The pipeline steps' own rules (the components only wrap them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from automl_deft import steps
from automl_deft.errors import UserError
from automl_deft.layout import RunLayout
from automl_deft.records import (
    Deliverable,
    LoopOutcome,
    PipelineSummary,
    SearchWinner,
    TrajectoryStep,
)


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
    assert result.failed is not None and result.failed.startswith("every trial collapsed")
    assert result.checkpoint is None and not result.usable
    assert "checkpoint" not in result.to_json()
    for path in outs.values():  # KFP needs every declared output file
        assert "no usable winner" in path.read_text()


def test_a_phase1_search_failure_still_fails_the_step(
    tiny_ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("automl_deft.hpo.search.automl_search", _raise)
    errors = RunLayout(tmp_path / "run").task_errors
    with pytest.raises(UserError, match="every trial collapsed"):
        steps.automl_step(str(tiny_ws), "", str(tmp_path / "run"), phase="phase1")
    assert '"step": "automl_step"' in errors.read_text()


def test_records_cross_a_task_boundary_exactly() -> None:
    """What KFP's dict parameters broke (2 → 2.0, nulls refused) a record's text keeps."""
    winner = SearchWinner(
        phase="phase1",
        results_dir="/r",
        rec_id="t3",
        far_pct=9.8,
        checkpoint="/r/t3/best_val.pt",
        specs={"train.num_epochs": 8, "train.optim.lr": 0.001, "model.x": None},
        pred_counts={"PASS": 200, "defect": 40},
        trials=5,
    )
    again = SearchWinner.loads(winner.dumps())
    assert again == winner
    assert type(again.specs["train.num_epochs"]) is int and again.specs["model.x"] is None
    assert type(again.pred_counts["PASS"]) is int
    with pytest.raises(UserError, match=r"unknown SearchWinner key 'bogus'"):
        SearchWinner.from_json({**winner.to_json(), "bogus": 1})
    with pytest.raises(UserError, match=r"'trials': expected an integer, got 2.5"):
        SearchWinner.from_json({**winner.to_json(), "trials": 2.5})


def test_trajectory_markdown_says_when_phase3_lost_or_failed() -> None:
    base = PipelineSummary(
        results_dir="/r",
        kpi_target="FAR < 5% at recall=100%",
        deft_status="complete",
        deft_stop_reason=None,
        phase1=None,
        phase3=None,
        phase3_ran=True,
        phase3_failed=None,
        phase3_kept=False,
        trajectory=[
            TrajectoryStep(
                step="baseline", phase="phase1", far_pct=20.0, threshold=0.5, train_rows=80
            ),
            TrajectoryStep(
                step="iter1", phase="phase2", far_pct=10.0, threshold=0.4, train_rows=90
            ),
        ],
        best=Deliverable(
            checkpoint="c.pt",
            threshold=0.4,
            far_pct=10.0,
            iteration="iter1",
            images_dir="/ws/kpi/images",
            inference_spec="best_model_inference_spec.yaml",
        ),
    )
    assert PipelineSummary.loads(base.dumps()) == base
    lost = steps.trajectory_markdown(base)
    assert "Phase 3 did not beat the best DEFT iteration" in lost
    failed = steps.trajectory_markdown(base.replace(phase3_failed="collapsed"))
    assert "Phase 3 produced no usable winner: collapsed" in failed
    skipped = steps.trajectory_markdown(base.replace(phase3_ran=False))
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
    def fake_run_deft(*args: Any, **kwargs: Any) -> LoopOutcome:
        return LoopOutcome(
            results_dir=str(tmp_path),
            status=status,
            n_final=0,
            final_train_csv=str(tmp_path / "train.csv"),
            kpi_met=False,
        )

    monkeypatch.setattr("automl_deft.deft.loop.run_deft", fake_run_deft)
    config = tmp_path / "run.yaml"
    config.write_text(f"phase3: {{enabled: {str(enabled).lower()}}}\n")
    outcome = steps.deft_step(str(tiny_ws), str(config), str(tmp_path))
    assert outcome.run_phase3 is expected
    assert LoopOutcome.loads(outcome.dumps()) == outcome
