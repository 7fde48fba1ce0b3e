"""Numbers a reviewer can trust: intervals, the untouched hold-out, and what to be told.

The KPI test set steers the workflow (evaluate picks checkpoints on it, RCA mines
toward its failures, pick-best ranks phases on it), so its FAR cannot also be the
proof. Finalize therefore adds, *after* every choice is made:

* a bootstrap 95% interval of FAR at 100% recall for every step on the steering
  set (:func:`steering_interval`; the method is :mod:`automl_deft.kpi.interval`);
* every step's score on the untouched hold-out (``kpi/holdout_set.csv``, read only
  through :func:`automl_deft.holdout.read_holdout`, only here): FAR at the
  hold-out's own recall-100 threshold with its interval, and what the shipped
  threshold (chosen on the steering set) does there (:func:`score_holdout`);
* the notes a reviewer must read (:func:`review_notes`): a deliverable worse than
  the zero-shot scorer on the validation set that wins on the steering set, a
  hold-out FAR far above the steering FAR, no hold-out at all.

Nothing here feeds back into a choice: the deliverable is written before the
hold-out is read.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from automl_deft.application import Application
from automl_deft.deft.state import DeftState
from automl_deft.errors import KPIError
from automl_deft.holdout import NO_HOLDOUT_WARNING
from automl_deft.io import atomic_write_csv
from automl_deft.kpi import compute_kpi, read_inference_csv
from automl_deft.kpi.interval import far_interval
from automl_deft.records import Deliverable, HoldoutScore, SearchWinner
from automl_deft.workspace import SCORE_COLUMN, defect_mask

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "NO_HOLDOUT_NOTE",
    "interval_of",
    "review_notes",
    "score_holdout",
    "steering_interval",
]

log = logging.getLogger(__name__)

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
NO_HOLDOUT_NOTE = NO_HOLDOUT_WARNING
"""The review note of a run without a hold-out (the same sentence validate prints)."""
HOLDOUT_GAP_FACTOR = 2.0
"""A hold-out FAR this many times the steering FAR (and > 1 pp above it) gets a note."""


def interval_of(labels: pd.Series, scores: np.ndarray | pd.Series) -> list[float] | None:
    """``[low, high]`` of FAR at 100% recall (bootstrap 95%), or None when undefined."""
    try:
        iv = far_interval(
            labels,
            np.asarray(scores, dtype=np.float64),
            n_resamples=BOOTSTRAP_RESAMPLES,
            seed=BOOTSTRAP_SEED,
        )
    except KPIError:
        return None
    return [float(iv.low), float(iv.high)]


def steering_interval(state: DeftState, label: str) -> list[float] | None:
    """The interval of ``label``'s far_pct from its scored KPI-set CSV (None: not scored)."""
    path = state.path_of(label, "inference_csv")
    if path is None or not path.is_file():
        return None
    frame = read_inference_csv(path)
    return interval_of(frame["label"], frame[SCORE_COLUMN].to_numpy(dtype=np.float64))


def score_holdout(
    app: Application,
    checkpoint: Path,
    holdout: pd.DataFrame,
    *,
    deployed_threshold: float | None,
    out_csv: Path,
) -> HoldoutScore:
    """Score ``holdout`` with ``checkpoint`` (cached in ``out_csv``) and judge it.

    A cached CSV is reused when it holds exactly the hold-out's rows (a resumed
    finalize does not score twice); scores are deterministic, so this changes nothing.
    """
    scored = _cached(out_csv, holdout)
    if scored is None:
        scored = app.score(checkpoint, holdout)
        atomic_write_csv(out_csv, scored)
    labels = scored["label"]
    scores = scored[SCORE_COLUMN].to_numpy(dtype=np.float64)
    is_defect = defect_mask(labels)
    n_defect = int(is_defect.sum())
    n_pass = len(scored) - n_defect
    result = compute_kpi(labels, scores)
    score = HoldoutScore(
        rows=len(scored),
        n_pass=n_pass,
        n_defect=n_defect,
        far_pct=result.far_pct,
        ci95=interval_of(labels, scores) if result.far_pct is not None else None,
        threshold=result.threshold,
        reason=result.reason if result.far_pct is None else None,
    )
    if deployed_threshold is None or not n_pass or not n_defect:
        return score
    flagged = scores > deployed_threshold
    caught = int((flagged & is_defect).sum())
    return score.replace(
        deployed_threshold=float(deployed_threshold),
        deployed_far_pct=100.0 * int((flagged & ~is_defect).sum()) / n_pass,
        deployed_recall=caught / n_defect,
        deployed_missed=n_defect - caught,
    )


def _cached(out_csv: Path, holdout: pd.DataFrame) -> pd.DataFrame | None:
    if not out_csv.is_file():
        return None
    try:
        cached = read_inference_csv(out_csv)
    except KPIError:
        return None
    keys = ["input_path", "golden_path", "object_name", "label"]
    if (
        len(cached) != len(holdout)
        or not (cached[keys].astype(str).to_numpy() == holdout[keys].astype(str).to_numpy()).all()
    ):
        return None
    return cached


def _zero_shot_val(winner: SearchWinner | None) -> float | None:
    guard = (winner.guards if winner is not None else {}).get("zero_shot") or {}
    value = guard.get("zero_shot_far_pct") if isinstance(guard, dict) else None
    return float(value) if isinstance(value, int | float) else None


def review_notes(
    state: DeftState,
    best: Deliverable | None,
    *,
    phase1: SearchWinner | None,
    phase3: SearchWinner | None,
    holdout: HoldoutScore | None,
    has_holdout: bool,
) -> list[str]:
    """What a reviewer must know about the deliverable, one sentence each."""
    notes: list[str] = []
    if not has_holdout:
        notes.append(NO_HOLDOUT_NOTE)
    if best is None:
        return notes
    rec = state.iterations[best.iteration]
    zero = _zero_shot_val(phase3) if best.iteration == "final_automl" else None
    zero = zero if zero is not None else _zero_shot_val(phase1)
    if rec.val_far_pct is not None and zero is not None and rec.val_far_pct > zero:
        trust = (
            f"the hold-out ({holdout.far_pct:.2f}%) is the number to trust"
            if holdout is not None and holdout.far_pct is not None
            else "no hold-out exists to settle it"
        )
        notes.append(
            f"the deliverable ({best.iteration}) scored {rec.val_far_pct:.2f}% FAR on the "
            f"validation set, worse than the zero-shot scorer's {zero:.2f}%, yet has the "
            f"lowest steering-set FAR ({best.far_pct:.2f}%): {trust}"
        )
    if holdout is not None and holdout.far_pct is not None:
        gap = holdout.far_pct - best.far_pct
        if gap > 1.0 and holdout.far_pct > HOLDOUT_GAP_FACTOR * best.far_pct:
            notes.append(
                f"hold-out FAR {holdout.far_pct:.2f}% is {gap:.2f} pp above the steering-set "
                f"{best.far_pct:.2f}%: the steering number is optimistic (it chose the model)"
            )
        if holdout.deployed_missed:
            notes.append(
                f"at the shipped threshold {holdout.deployed_threshold:.4g} the hold-out has "
                f"{holdout.deployed_missed} missed defect(s) "
                f"(recall {100 * (holdout.deployed_recall or 0):.1f}%): the threshold chosen on "
                "the steering set does not give 100% recall on unseen data"
            )
    return notes
