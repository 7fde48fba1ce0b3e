"""The deliverable as a classifier: its confusion matrix at the shipped threshold and its ROC.

What the Kubeflow UI's ``ClassificationMetrics`` artifact shows
(``log_confusion_matrix(categories, matrix)`` and ``log_roc_curve(fpr, tpr, threshold)``):

* :func:`confusion_matrix_at`: the 2 × 2 counts at one threshold, rows the true class
  and columns the predicted one, in :data:`CATEGORIES` order (PASS first, the negative
  class); a row is predicted defect when ``score > threshold``, the KPI's rule;
* :func:`roc_curve`: false- and true-positive rates at every candidate threshold of
  :func:`~automl_deft.kpi.threshold_sweep` (the one counting function), thinned to at
  most :data:`MAX_ROC_POINTS` points that keep both ends;
* :func:`deliverable_classification`: both for a run's deliverable, on its scored
  untouched hold-out (finalize's ``holdout/<label>_scores.csv``) when there is one,
  else on its scored KPI (steering) set, at the threshold it ships with.

Example::

    from automl_deft.kpi.classification import deliverable_classification

    ev = deliverable_classification("ws/results/run_20261126_140208")
    if ev is not None:
        metrics.log_confusion_matrix(list(ev.confusion.categories), ev.confusion.matrix)
        metrics.log_roc_curve(ev.roc.fpr, ev.roc.tpr, ev.roc.threshold)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from automl_deft.errors import KPIError
from automl_deft.kpi.metric import threshold_sweep
from automl_deft.kpi.tables import read_inference_csv
from automl_deft.layout import RunLayout
from automl_deft.records import Deliverable
from automl_deft.workspace import PASS_LABEL, SCORE_COLUMN, defect_mask

__all__ = [
    "CATEGORIES",
    "DEFECT_CATEGORY",
    "MAX_ROC_POINTS",
    "SCORED_ON_HOLDOUT",
    "SCORED_ON_KPI",
    "Classification",
    "ConfusionMatrix",
    "RocCurve",
    "confusion_matrix_at",
    "deliverable_classification",
    "roc_curve",
    "scored_set_of",
    "thin_indices",
]

DEFECT_CATEGORY = "defect"
"""The positive class (every label that is not PASS)."""
CATEGORIES: tuple[str, str] = (PASS_LABEL, DEFECT_CATEGORY)
"""The confusion matrix's rows (true class) and columns (predicted class), in order."""
MAX_ROC_POINTS = 200
"""At most this many ROC points: the KFP UI draws every point it is given."""
SCORED_ON_HOLDOUT = "holdout"
SCORED_ON_KPI = "kpi"


@dataclass(frozen=True)
class ConfusionMatrix:
    """Counts at one threshold: ``matrix[true][predicted]`` in :data:`CATEGORIES` order."""

    threshold: float
    matrix: list[list[int]]
    categories: tuple[str, str] = CATEGORIES

    @property
    def false_alarms(self) -> int:
        """PASS rows flagged as defect."""
        return self.matrix[0][1]

    @property
    def missed(self) -> int:
        """Defect rows let through as PASS."""
        return self.matrix[1][0]


@dataclass(frozen=True)
class RocCurve:
    """Rates at descending thresholds (so ``fpr`` and ``tpr`` ascend from 0 to 1)."""

    fpr: list[float]
    tpr: list[float]
    threshold: list[float]


@dataclass(frozen=True)
class Classification:
    """The deliverable scored as a classifier, and on which set (``holdout`` or ``kpi``)."""

    label: str
    scored_on: str
    scores_csv: Path
    threshold: float
    confusion: ConfusionMatrix
    roc: RocCurve


def confusion_matrix_at(
    labels: Iterable[object], scores: Iterable[float], threshold: float
) -> ConfusionMatrix:
    """The 2 × 2 confusion matrix at ``threshold`` (defect when ``score > threshold``).

    Raises:
        KPIError: no rows, or a score that is not a finite number.
    """
    values = _finite(scores)
    is_defect = defect_mask(labels)
    if len(is_defect) != len(values):
        raise KPIError(f"{len(is_defect)} labels but {len(values)} scores; pass one per row")
    flagged = values > threshold
    return ConfusionMatrix(
        threshold=float(threshold),
        matrix=[
            [int((~is_defect & ~flagged).sum()), int((~is_defect & flagged).sum())],
            [int((is_defect & ~flagged).sum()), int((is_defect & flagged).sum())],
        ],
    )


def roc_curve(
    labels: Iterable[object], scores: Iterable[float], *, max_points: int = MAX_ROC_POINTS
) -> RocCurve:
    """ROC points (fpr, tpr, threshold) from the KPI's threshold sweep, at most ``max_points``.

    Raises:
        KPIError: as :func:`~automl_deft.kpi.compute_kpi`, or both classes are not present
            (a rate would be undefined).
    """
    sweep = threshold_sweep(labels, scores).iloc[::-1].reset_index(drop=True)
    n_defect = int(sweep["tp"].iloc[-1] + sweep["fn"].iloc[-1])
    n_pass = int(sweep["fp"].iloc[-1] + sweep["tn"].iloc[-1])
    if not n_defect or not n_pass:
        raise KPIError(
            f"an ROC curve needs PASS and defect rows ({n_pass} PASS, {n_defect} defect); "
            "score a set that holds both"
        )
    keep = thin_indices(len(sweep), max_points)
    picked = sweep.iloc[keep]
    return RocCurve(
        fpr=[float(v) for v in picked["fp"] / n_pass],
        tpr=[float(v) for v in picked["tp"] / n_defect],
        threshold=[float(v) for v in picked["threshold"]],
    )


def thin_indices(n: int, max_points: int) -> list[int]:
    """At most ``max_points`` evenly spread positions of ``range(n)``, both ends kept."""
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2 (got {max_points})")
    if n <= max_points:
        return list(range(n))
    return [int(i) for i in np.unique(np.linspace(0, n - 1, max_points).round().astype(int))]


def scored_set_of(run_dir: str | os.PathLike[str], label: str) -> tuple[str, Path] | None:
    """(``holdout``/``kpi``, CSV) of ``label``'s scores: the hold-out's when finalize scored
    it there, else its scored KPI (steering) set; None when neither exists."""
    layout = RunLayout.at(run_dir)
    held = layout.holdout_scores(label)
    if held.is_file():
        return SCORED_ON_HOLDOUT, held
    kpi = layout.stage_dir(label, RunLayout.INFERENCE, RunLayout.KPI_SCORES)
    if kpi.is_file():
        return SCORED_ON_KPI, kpi
    return None


def deliverable_classification(
    run_dir: str | os.PathLike[str], *, max_points: int = MAX_ROC_POINTS
) -> Classification | None:
    """The deliverable's confusion matrix at its shipped threshold and its ROC curve.

    On the untouched hold-out when finalize scored the deliverable there, else on the
    KPI (steering) set. None when the run has no ``best_model.json`` or no scored set.

    Raises:
        UserError: ``best_model.json`` is unreadable.
        KPIError: the scored CSV is unreadable, has a non-numeric score, or lacks a class.
    """
    layout = RunLayout.at(run_dir)
    if not layout.deliverable.is_file():
        return None
    best = Deliverable.read(layout.deliverable)
    found = scored_set_of(layout.root, best.iteration)
    if found is None:
        return None
    scored_on, path = found
    frame = read_inference_csv(path)
    for column in ("label", SCORE_COLUMN):
        if column not in frame.columns:
            raise KPIError(f"{path} has no {column!r} column; score the set again")
    scores = _finite(frame[SCORE_COLUMN], where=str(path))
    return Classification(
        label=best.iteration,
        scored_on=scored_on,
        scores_csv=path,
        threshold=best.threshold,
        confusion=confusion_matrix_at(frame["label"], scores, best.threshold),
        roc=roc_curve(frame["label"], scores, max_points=max_points),
    )


def _finite(scores: Iterable[float], where: str = "scores") -> np.ndarray:
    try:
        values = np.asarray(list(scores), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise KPIError(f"{where}: a score is not a number; score the set again") from exc
    if not len(values):
        raise KPIError(f"{where}: no rows")
    if not np.isfinite(values).all():
        raise KPIError(f"{where}: {int((~np.isfinite(values)).sum())} score(s) not finite")
    return values
