"""The project's KPI: false-alarm rate (FAR) at 100% recall. The one implementation.

Every phase (AutoML trial scoring, DEFT evaluation, checkpoint picking, the
report) compares models by :func:`compute_kpi`; nothing else counts TP/FP/TN/FN.

The rule, from the original workflow:

* a row is predicted *defect* when ``score > threshold``, else PASS;
* ground truth is :func:`automl_deft.workspace.is_pass` (the positive class is defect);
* recall = TP/(TP+FN), FAR = FP/(FP+TN), ``far_pct`` = FAR × 100;
* candidate thresholds are every unique score plus ``nextafter(min_score, -inf)``
  (the threshold that flags every row);
* the *recall-100 point* is, among the thresholds with recall == 1.0, the one with
  the largest (F1, precision, threshold), compared in that order. When no
  threshold reaches recall 1.0 the KPI is unavailable;
* precision is 0.0 when TP+FP == 0, F1 is 0.0 when precision+recall == 0.

Counting is one sort plus cumulative sums (O(n log n)); :func:`compute_kpi` and
:func:`threshold_sweep` share :func:`_sweep`, so the CSV a user reads and the
number the loop compares cannot disagree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from automl_deft.errors import KPIError
from automl_deft.io import atomic_write_csv
from automl_deft.kpi.result import KPIResult, OperatingPoint
from automl_deft.workspace import SCORE_COLUMN, defect_mask

__all__ = [
    "NO_DEFECT_REASON",
    "NO_PASS_REASON",
    "SWEEP_COLUMNS",
    "UNREACHABLE_REASON",
    "compute_kpi",
    "threshold_sweep",
    "write_sweep_csv",
]

NO_DEFECT_REASON = "no defect rows: recall is undefined"
NO_PASS_REASON = "no PASS rows: FAR is undefined"
UNREACHABLE_REASON = "no threshold reaches recall=100%"

SWEEP_COLUMNS: tuple[str, ...] = (
    "threshold",
    "tp",
    "fp",
    "tn",
    "fn",
    "precision",
    "recall",
    "f1",
    "far_pct",
)
"""Columns of :func:`threshold_sweep` and of the sweep CSV, in order."""

_MAX_LISTED = 5


# ----------------------------------------------------------------------- counting


@dataclass(frozen=True)
class _Sweep:
    """Counts and rates at every candidate threshold, ascending."""

    threshold: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    tn: np.ndarray
    fn: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    far_pct: np.ndarray

    def point(self, i: int) -> OperatingPoint:
        return OperatingPoint(
            threshold=float(self.threshold[i]),
            precision=float(self.precision[i]),
            recall=float(self.recall[i]),
            f1=float(self.f1[i]),
            far_pct=float(self.far_pct[i]),
            tp=int(self.tp[i]),
            fp=int(self.fp[i]),
            tn=int(self.tn[i]),
            fn=int(self.fn[i]),
        )

    def subset(self, index: slice | np.ndarray) -> _Sweep:
        return _Sweep(**{name: getattr(self, name)[index] for name in SWEEP_COLUMNS})


def _sweep(is_defect: np.ndarray, scores: np.ndarray) -> _Sweep:
    """The one counting function behind :func:`compute_kpi` and :func:`threshold_sweep`.

    Args:
        is_defect: boolean array, True for defect rows.
        scores: finite float64 scores, same length, at least one row.
    """
    order = np.argsort(scores)
    ordered = scores[order]
    # Last position of each run of equal scores: the counts "score <= u" for each unique u.
    last = np.flatnonzero(np.append(ordered[1:] != ordered[:-1], True))
    defects_le = np.cumsum(is_defect[order], dtype=np.int64)[last]
    pass_le = (last + 1) - defects_le
    n_defect = int(is_defect.sum())
    n_pass = len(is_defect) - n_defect

    # Prepend nextafter(min, -inf): every row is flagged, so tp=n_defect, fp=n_pass.
    below_min = np.nextafter(ordered[0], -np.inf)
    threshold = np.concatenate(([below_min], ordered[last]))
    fn = np.concatenate(([0], defects_le))
    tn = np.concatenate(([0], pass_le))
    tp = n_defect - fn
    fp = n_pass - tn

    with np.errstate(divide="ignore", invalid="ignore"):
        flagged = tp + fp
        precision = np.where(flagged > 0, tp / np.maximum(flagged, 1), 0.0)
        recall = tp / (tp + fn) if n_defect else np.full(len(tp), np.nan)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
        if not n_defect:
            f1 = np.full(len(tp), np.nan)
        far_pct = fp / (fp + tn) * 100 if n_pass else np.full(len(fp), np.nan)
    return _Sweep(threshold, tp, fp, tn, fn, precision, recall, f1, far_pct)


def _best(sweep: _Sweep, candidates: np.ndarray) -> int | None:
    """Index (into ``sweep``) of the lexicographic max of (F1, precision, threshold)."""
    idx = np.flatnonzero(candidates)
    if not len(idx):
        return None
    for key in (sweep.f1, sweep.precision, sweep.threshold):
        values = key[idx]
        idx = idx[values == values.max()]
    return int(idx[-1])


def _result(sweep: _Sweep, *, n_pass: int, n_defect: int) -> KPIResult:
    """Pick the recall-100 and best-F1 points of a two-class sweep."""
    best_f1 = _best(sweep, np.ones(len(sweep.threshold), dtype=bool))
    best = None if best_f1 is None else sweep.point(best_f1)
    at_full_recall = _best(sweep, sweep.tp == n_defect)
    if at_full_recall is None:
        return KPIResult(None, best, n_pass, n_defect, reason=UNREACHABLE_REASON)
    return KPIResult(sweep.point(at_full_recall), best, n_pass, n_defect)


def _as_arrays(labels: Iterable[object], scores: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to (is_defect, scores) arrays."""
    try:
        values = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise KPIError(
            f"scores must be numbers ({exc}); pass the {SCORE_COLUMN} values as floats"
        ) from exc
    if values.ndim != 1:
        raise KPIError(f"scores must be one-dimensional, got shape {values.shape}; flatten them")
    is_defect = _defect_flags(labels)
    if len(is_defect) != len(values):
        raise KPIError(
            f"{len(is_defect)} labels but {len(values)} scores; pass one score per labelled row"
        )
    if not len(values):
        raise KPIError("no rows to score; the KPI needs at least one labelled, scored row")
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise KPIError(
            f"{len(bad)} score(s) are NaN or infinite (first at row(s) {_rows(bad)}); "
            "re-run inference for those rows or drop them"
        )
    return is_defect, values


def _defect_flags(labels: Iterable[object]) -> np.ndarray:
    """:func:`~automl_deft.workspace.defect_mask`, judged once per distinct label.

    Real sets hold a handful of distinct labels, so factorising first keeps a
    million rows fast without restating the PASS rule.
    """
    if not isinstance(labels, np.ndarray | pd.Series | pd.Index):
        labels = np.asarray(list(labels), dtype=object)
    if getattr(labels, "ndim", 1) != 1:
        raise KPIError("labels must be one-dimensional; pass one label per row")
    codes, distinct = pd.factorize(labels, use_na_sentinel=False)
    return defect_mask(distinct)[codes]


def _rows(index: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in index[:_MAX_LISTED])
    return shown + (f" and {len(index) - _MAX_LISTED} more" if len(index) > _MAX_LISTED else "")


# ---------------------------------------------------------------------------- API


def compute_kpi(labels: Iterable[object], scores: Iterable[float]) -> KPIResult:
    """FAR at 100% recall (and the best-F1 point) of one set of scores.

    Args:
        labels: ground-truth labels; ``PASS`` (any case, stripped) is good, the rest defect.
        scores: defect scores, higher = more likely defective, one per label.

    Returns:
        The result; unavailable (with ``reason``) when the data has a single class.

    Raises:
        KPIError: empty input, mismatched lengths, or NaN/infinite/non-numeric scores.
    """
    is_defect, values = _as_arrays(labels, scores)
    n_defect = int(is_defect.sum())
    n_pass = len(is_defect) - n_defect
    if n_defect == 0:
        return KPIResult(None, None, n_pass, n_defect, reason=NO_DEFECT_REASON)
    if n_pass == 0:
        return KPIResult(None, None, n_pass, n_defect, reason=NO_PASS_REASON)
    return _result(_sweep(is_defect, values), n_pass=n_pass, n_defect=n_defect)


def threshold_sweep(labels: Iterable[object], scores: Iterable[float]) -> pd.DataFrame:
    """One row per candidate threshold, ascending, with :data:`SWEEP_COLUMNS`.

    ``recall`` is NaN when there are no defect rows and ``far_pct`` is NaN when
    there are no PASS rows (both undefined).

    Raises:
        KPIError: as :func:`compute_kpi`.
    """
    sweep = _sweep(*_as_arrays(labels, scores))
    return pd.DataFrame({name: getattr(sweep, name) for name in SWEEP_COLUMNS})


def write_sweep_csv(
    labels: Iterable[object], scores: Iterable[float], path: str | os.PathLike[str]
) -> Path:
    """Write :func:`threshold_sweep` to ``path`` atomically; returns the path."""
    atomic_write_csv(path, threshold_sweep(labels, scores))
    return Path(path)
