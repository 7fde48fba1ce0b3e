"""What finalize adds after every choice is made: hold-out scores, notes, the verdict."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from automl_deft import scorecard, steps
from automl_deft.records import (
    Deliverable,
    HoldoutScore,
    IterationRecord,
    PipelineSummary,
    SearchWinner,
)


class _ScriptedApp:
    """``score`` returns fixed scores (and counts its calls)."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = scores
        self.calls = 0

    def score(self, checkpoint: Path, frame: pd.DataFrame) -> pd.DataFrame:
        self.calls += 1
        return frame.assign(siamese_score=self.scores)


def _frame(labels: list[str]) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame(
        {
            "input_path": ["t"] * n,
            "golden_path": ["g"] * n,
            "label": labels,
            "object_name": [f"o{i}" for i in range(n)],
        }
    )


def test_holdout_score_applies_the_shipped_threshold_and_is_cached(tmp_path: Path) -> None:
    labels = ["PASS"] * 6 + ["short", "open"]
    scores = [0.1, 0.2, 0.3, 0.5, 0.6, 0.9, 0.55, 0.95]
    app = _ScriptedApp(scores)
    out = tmp_path / "holdout" / "iter1_scores.csv"
    held = scorecard.score_holdout(
        app, Path("c.pt"), _frame(labels), deployed_threshold=0.58, out_csv=out
    )
    # Own recall-100 threshold: flag everything >= 0.55 → PASS 0.6 and 0.9 are false alarms.
    assert held.far_pct == pytest.approx(100 * 2 / 6)
    assert held.ci95 is not None and held.ci95[0] <= held.far_pct <= held.ci95[1]
    assert (held.rows, held.n_pass, held.n_defect) == (8, 6, 2)
    # The shipped threshold 0.58 misses the 0.55 defect and flags PASS 0.6, 0.9.
    assert held.deployed_missed == 1 and held.deployed_recall == 0.5
    assert held.deployed_far_pct == pytest.approx(100 * 2 / 6)
    again = scorecard.score_holdout(
        app, Path("c.pt"), _frame(labels), deployed_threshold=0.58, out_csv=out
    )
    assert again == held and app.calls == 1  # a resumed finalize does not score twice
    other = _frame(labels).assign(object_name=[f"x{i}" for i in range(8)])
    scorecard.score_holdout(app, Path("c.pt"), other, deployed_threshold=0.58, out_csv=out)
    assert app.calls == 2  # a different hold-out is scored anew


def _state(val_far: float | None) -> Any:
    return SimpleNamespace(iterations={"final_automl": IterationRecord(val_far_pct=val_far)})


def _best(far: float = 0.18) -> Deliverable:
    return Deliverable(
        checkpoint="c.pt",
        threshold=0.5,
        far_pct=far,
        iteration="final_automl",
        images_dir="/ws/kpi/images",
        inference_spec="s.yaml",
    )


def _winner(zero_shot: float) -> SearchWinner:
    return SearchWinner(
        phase="phase3",
        results_dir="/r",
        guards={"zero_shot": {"winner_far_pct": 13.2, "zero_shot_far_pct": zero_shot}},
    )


def test_a_winner_worse_than_zero_shot_on_validation_is_said() -> None:
    held = HoldoutScore(rows=10, n_pass=8, n_defect=2, far_pct=4.0, ci95=[1.0, 6.0])
    notes = scorecard.review_notes(
        _state(13.2),
        _best(),
        phase1=None,
        phase3=_winner(12.25),
        holdout=held,
        has_holdout=True,
    )
    assert any("worse than the zero-shot scorer's 12.25%" in n for n in notes)
    assert any("hold-out (4.00%) is the number to trust" in n for n in notes)
    assert any("hold-out FAR 4.00% is 3.82 pp above" in n for n in notes)
    quiet = scorecard.review_notes(
        _state(9.0), _best(3.9), phase1=None, phase3=_winner(12.25), holdout=held, has_holdout=True
    )
    assert quiet == []


def test_no_holdout_means_no_untouched_number() -> None:
    notes = scorecard.review_notes(
        _state(None), _best(), phase1=None, phase3=None, holdout=None, has_holdout=False
    )
    assert notes[0] == scorecard.NO_HOLDOUT_NOTE


def test_the_verdict_line() -> None:
    base = PipelineSummary(
        results_dir="/r",
        kpi_target="FAR < 1% at recall=100%",
        deft_status="complete",
        deft_stop_reason=None,
        phase1=None,
        phase3=None,
        phase3_ran=False,
        phase3_failed=None,
        phase3_kept=False,
        trajectory=[],
    )
    assert steps.kpi_verdict(base) == "" and steps.kpi_gate(base) is None
    assert steps.kpi_verdict(base.replace(kpi_met=True)).startswith("KPI MET on the KPI")
    missed = steps.kpi_verdict(base.replace(kpi_met=False, kpi_gap_pp=2.345))
    assert missed == (
        "KPI NOT MET on the KPI (steering) set (2.3 pp from target FAR < 1% at recall=100%)"
    )
    # With a hold-out, it gates: met on the steering set, missed where nothing steered.
    both = base.replace(
        kpi_met=True, kpi_gap_pp=0.0, holdout_kpi_met=False, holdout_kpi_gap_pp=66.2
    )
    assert steps.kpi_gate(both) is False
    assert steps.kpi_verdict(both) == (
        "KPI NOT MET on the untouched hold-out (66.2 pp from target FAR < 1% at recall=100%; "
        "KPI set: met)"
    )


def test_interval_of_is_none_when_undefined() -> None:
    assert scorecard.interval_of(pd.Series(["PASS", "PASS"]), np.array([0.1, 0.2])) is None
