"""The quality rules the original workflow left to a person reading a checklist.

- **Mode collapse**: a winner that predicts a single class on the validation set
  is skipped for the next best, with the reason recorded.
- **Lucky winner**: when the winner beats the runner-up by more than a factor,
  its configuration is re-trained with a fresh seed and ranked by the worse of
  the two runs.
- **Zero-shot**: a winner that does not beat the application's training-free
  baseline (:meth:`automl_deft.application.Application.zero_shot`) on the
  validation set stops the run, unless explicitly allowed.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from automl_deft.application import Application
from automl_deft.errors import UserError
from automl_deft.hpo.trial import SearchProblem, TrialOutcome
from automl_deft.kpi import compute_kpi
from automl_deft.records import Record
from automl_deft.workspace import SCORE_COLUMN, read_dataset_csv


@dataclass(frozen=True)
class CollapseSkip(Record):
    """A trial the mode-collapse guard skipped, and why."""

    rec_id: str
    reason: str


@dataclass(frozen=True)
class LuckyWinner(Record):
    """The lucky-winner guard's re-training: both runs, and the value the winner ranks by."""

    rec_id: str
    value: float
    runner_up: str
    runner_up_value: float
    factor: float
    reseed_rec_id: str
    reseed_value: float
    ranked_by: float


@dataclass(frozen=True)
class ZeroShotCheck(Record):
    """The zero-shot guard's comparison on the validation set."""

    ALWAYS = frozenset({"winner_far_pct", "zero_shot_far_pct"})

    winner_far_pct: float | None
    zero_shot_far_pct: float | None
    beaten: bool


@dataclass
class GuardReport(Record):
    """What the guards decided (``guards`` of ``automl_result.json``).

    Not frozen: the guards fill it in as they run, one after the other.
    """

    ALWAYS = frozenset({"lucky_winner", "zero_shot"})

    collapse_skipped: list[CollapseSkip] = field(default_factory=list)
    lucky_winner: LuckyWinner | None = None
    zero_shot: ZeroShotCheck | None = None


def is_collapsed(pred_counts: dict[str, int]) -> bool:
    """True when the predictions hold a single class (every row PASS, or every row flagged)."""
    return len([v for v in pred_counts.values() if v > 0]) < 2


def rank(outcomes: Sequence[TrialOutcome]) -> list[TrialOutcome]:
    """Complete trials, best (lowest objective) first; ties keep trial order."""
    done = [o for o in outcomes if o.status == "complete"]
    return sorted(done, key=lambda o: o.objective())


def skip_collapsed(ranked: Sequence[TrialOutcome], report: GuardReport) -> list[TrialOutcome]:
    """``ranked`` without collapsed trials (the skips are recorded)."""
    kept = []
    for o in ranked:
        if is_collapsed(o.pred_counts):
            report.collapse_skipped.append(
                CollapseSkip(
                    rec_id=o.name,
                    reason=f"predicts a single class on the validation set {o.pred_counts}",
                )
            )
        else:
            kept.append(o)
    if not kept:
        raise UserError(
            "every trial collapsed to predicting a single class on the validation set; "
            "raise train.classify.cls_weight or fpratio_sampling, or train longer"
        )
    return kept


def lucky_winner_can_fire(finished_trials: int, factor: float) -> bool:
    """Whether the lucky-winner guard can re-train at all: it needs a runner-up and a
    factor above 1 (the pre-flight counts that re-run from this)."""
    return finished_trials >= 2 and factor > 1


def check_lucky_winner(
    ranked: list[TrialOutcome],
    factor: float,
    retrain: Callable[[TrialOutcome], TrialOutcome],
    report: GuardReport,
) -> list[TrialOutcome]:
    """Re-train a suspiciously good winner with a fresh seed; rank it by its worse run."""
    if not lucky_winner_can_fire(len(ranked), factor):
        return ranked
    best, runner_up = ranked[0], ranked[1]
    b, r = best.objective(), runner_up.objective()
    if not math.isfinite(r) or r <= factor * b:
        return ranked
    again = retrain(best)
    worse = max(b, again.objective())
    report.lucky_winner = LuckyWinner(
        rec_id=best.name,
        value=b,
        runner_up=runner_up.name,
        runner_up_value=r,
        factor=factor,
        reseed_rec_id=again.name,
        reseed_value=again.objective(),
        ranked_by=worse,
    )
    adjusted = dataclasses.replace(best, value=worse)
    return sorted([adjusted, *ranked[1:]], key=lambda o: o.objective())


def zero_shot_far(problem: SearchProblem, method: str) -> float | None:
    """far_pct of the problem's application's training-free baseline on the evaluation set.

    Args:
        problem: the search (its application and evaluation set).
        method: ``guards.zero_shot_method``, passed to the application.
    """
    return application_zero_shot_far(problem.make_application(), problem.val_csv, method)


def application_zero_shot_far(
    application: Application, val_csv: str | os.PathLike[str], method: str
) -> float | None:
    """far_pct of ``application``'s training-free scorer on the evaluation set ``val_csv``
    (what the zero-shot guard compares with; the pre-flight shows it before training)."""
    frame = read_dataset_csv(val_csv, role="validation")
    scored = application.zero_shot(frame, method=method)
    return compute_kpi(scored["label"], scored[SCORE_COLUMN]).far_pct


def check_zero_shot(
    winner: TrialOutcome, zero_shot_far: float | None, *, allow: bool, report: GuardReport
) -> None:
    """Stop (UserError) when the winner does not beat the zero-shot scorer's far_pct."""
    win = winner.far_pct
    beat = win is not None and zero_shot_far is not None and win < zero_shot_far
    report.zero_shot = ZeroShotCheck(
        winner_far_pct=win, zero_shot_far_pct=zero_shot_far, beaten=beat
    )
    if not beat and not allow:
        raise UserError(
            f"AutoML did not beat the zero-shot scorer on the validation set (winner far_pct "
            f"{win}, zero-shot {zero_shot_far}); review the search space, or set "
            "guards.allow_no_gain_over_zero_shot: true to hand the winner on anyway"
        )
