"""How sure is the KPI? A bootstrap interval, drop-N sensitivity, and the threshold setter.

FAR at 100% recall (:func:`automl_deft.kpi.compute_kpi`) hangs on a single row:
the defect with the lowest score. Among the thresholds that flag every defect,
the one :func:`compute_kpi` picks has the fewest false alarms (with recall fixed
at 1.0, F1 and precision both grow as FP falls), which is the largest candidate
below the minimum defect score ``d``. No score lies strictly between that
candidate and ``d`` (when no score lies below ``d`` the candidate is
``nextafter(min, -inf)``), so the rows it flags are exactly those with
``score >= d``, and

    far_pct = (number of PASS rows with score >= d) / n_pass * 100,

ties included: a PASS row that scores exactly ``d`` is a false alarm. The
division and the ``* 100`` come in the same order as in :mod:`~automl_deft.kpi.metric`,
so the numbers here are bit-for-bit those of :func:`compute_kpi`.

:func:`far_interval` is a stratified percentile bootstrap of that number. Each
resample draws the defect rows and the PASS rows separately, with replacement,
each stratum keeping its size (so every resample has both classes and the KPI is
always defined). With ``rng = numpy.random.default_rng(seed)``, ``B`` resamples,
``n_def`` defect rows and ``n_pass`` PASS rows (each stratum in row order), the
draws are, in this order:

1. ``rng.integers(0, n_def, size=(B, n_def))``: row ``b`` indexes the defect scores
   of resample ``b``;
2. ``rng.integers(0, n_pass, size=(B, n_pass))``: row ``b`` indexes its PASS scores.

Resample ``b``'s threshold is the minimum of its defect scores and its FAR the
share of its PASS scores at or above it. Both matrices are drawn in blocks of
rows, which yields the same stream as one draw of the whole matrix; memory stays
about 40 MiB whatever the size. The interval is ``numpy.percentile`` (linear
interpolation) of the ``B`` FARs at ``(1 - level) / 2`` and ``(1 + level) / 2``.

Read the interval as "how much does the KPI hang on which rows were sampled",
not as an exact coverage guarantee: the threshold is a sample minimum, which the
bootstrap reproduces only roughly (a resample leaves out the lowest defect about
a third of the time, so resampled FARs tend to sit below the point estimate and
the interval is skewed low). :func:`drop_n_sensitivity` shows the same fragility
directly.

:func:`drop_n_sensitivity` answers "what if the hardest defect had been caught
another way": the KPI with the 1, 2, ... lowest-scored defects removed.
:func:`threshold_setter` names the row that sets the threshold.

A single-class input (no defect or no PASS rows) has no KPI; these functions
raise :class:`~automl_deft.errors.KPIError` with the reason rather than return None.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from automl_deft.errors import KPIError
from automl_deft.jsontypes import JSONObject
from automl_deft.kpi.metric import _as_arrays, compute_kpi
from automl_deft.kpi.tables import LABEL_COLUMN, _frame_arrays
from automl_deft.workspace import PASS_LABEL, SCORE_COLUMN

__all__ = [
    "DropN",
    "FarInterval",
    "ThresholdSetter",
    "drop_n_sensitivity",
    "far_interval",
    "threshold_setter",
]

_DEFECT_LABEL = "defect"

_BLOCK_ELEMENTS = 1 << 21
"""Index-matrix entries drawn per block (2 Mi: 16 MiB of int64 indices)."""


# ------------------------------------------------------------------------ results


@dataclass(frozen=True)
class FarInterval:
    """A bootstrap percentile interval of FAR at 100% recall.

    Attributes:
        far_pct: the point estimate, :func:`~automl_deft.kpi.compute_kpi`'s ``far_pct``.
        low: lower end of the interval, percent.
        high: upper end of the interval, percent.
        level: the interval's coverage, e.g. 0.95.
        n_resamples: bootstrap resamples drawn.
        seed: seed of ``numpy.random.default_rng``.
    """

    far_pct: float
    low: float
    high: float
    level: float
    n_resamples: int
    seed: int

    def to_json(self) -> JSONObject:
        """``{"far_pct", "ci95": [low, high], "level", "n_resamples", "seed"}``.

        The key stays ``ci95`` whatever ``level`` is (``level`` says which it is).
        """
        return {
            "far_pct": self.far_pct,
            "ci95": [self.low, self.high],
            "level": self.level,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
        }

    def text(self) -> str:
        """E.g. ``11.14% (95% CI 8.90–13.60%)``."""
        return f"{self.far_pct:.2f}% ({_level_pct(self.level)}% CI {self.low:.2f}–{self.high:.2f}%)"


@dataclass(frozen=True)
class DropN:
    """FAR at 100% recall with the ``n`` lowest-scored defects removed.

    Attributes:
        n: how many defects were removed.
        far_pct: the KPI of the remaining rows.
        threshold: its recall-100 threshold.
        dropped: the removed defects, hardest first: their ``names`` when given,
            else their positions (0-based row numbers).
    """

    n: int
    far_pct: float
    threshold: float
    dropped: tuple[object, ...]

    def to_json(self) -> JSONObject:
        """Plain values, ready for ``json.dumps`` (names are kept as str/int)."""
        return {
            "n": self.n,
            "far_pct": self.far_pct,
            "threshold": self.threshold,
            "dropped": [_plain(v) for v in self.dropped],
        }


@dataclass(frozen=True)
class ThresholdSetter:
    """The defect with the lowest score: the row that sets the recall-100 threshold.

    Attributes:
        index: its label in the frame's index.
        position: its 0-based row number.
        label: its ground-truth label.
        object_name: its ``object_name`` (None when the frame has no such column).
        boardname: its ``boardname`` (None when the frame has no such column).
        score: its score.
        ties: how many defects share that lowest score (1 when it is alone); with
            ties the first in row order is reported.
    """

    index: object
    position: int
    label: str
    object_name: str | None
    boardname: str | None
    score: float
    ties: int = 1


# ---------------------------------------------------------------------------- API


def far_interval(
    labels: Iterable[object],
    scores: Iterable[float],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> FarInterval:
    """Stratified bootstrap percentile interval of FAR at 100% recall.

    The method and the exact draw order are in the module docstring; a given
    ``seed`` always gives the same interval.

    Args:
        labels: ground-truth labels; ``PASS`` (any case, stripped) is good, the rest defect.
        scores: defect scores, higher = more likely defective, one per label.
        n_resamples: bootstrap resamples, at least 1.
        seed: seed of ``numpy.random.default_rng``.
        level: coverage of the interval, strictly between 0 and 1.

    Raises:
        KPIError: the KPI is unavailable (no defect or no PASS rows), bad
            ``n_resamples`` / ``level``, or the input errors of :func:`compute_kpi`.
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int | np.integer):
        raise KPIError(f"n_resamples must be an integer, got {n_resamples!r}")
    if n_resamples < 1:
        raise KPIError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0.0 < level < 1.0:
        raise KPIError(f"level must be strictly between 0 and 1 (e.g. 0.95), got {level!r}")
    is_defect, values = _as_arrays(labels, scores)
    point = _point(is_defect, values)
    defect_scores = values[is_defect]
    pass_scores = values[~is_defect]
    far = _bootstrap_far(defect_scores, pass_scores, int(n_resamples), seed)
    alpha = (1.0 - level) / 2.0
    low, high = np.percentile(far, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return FarInterval(
        far_pct=point,
        low=float(low),
        high=float(high),
        level=float(level),
        n_resamples=int(n_resamples),
        seed=seed,
    )


def drop_n_sensitivity(
    labels: Iterable[object],
    scores: Iterable[float],
    *,
    n_max: int = 3,
    names: Sequence[object] | None = None,
) -> list[DropN]:
    """FAR at 100% recall if the 1, 2, ..., ``n_max`` hardest defects were caught otherwise.

    The hardest defects are those with the lowest scores (ties broken by row
    order). Entry ``n`` is :func:`~automl_deft.kpi.compute_kpi` on the rows left
    once those ``n`` defects are removed. The list stops early when no defect
    would be left (at most ``n_defect - 1`` entries).

    Args:
        labels: ground-truth labels, as for :func:`compute_kpi`.
        scores: defect scores, one per label.
        n_max: the most defects to remove, at least 0.
        names: row identifiers (e.g. ``object_name``), one per row, to report in
            ``dropped``; without it ``dropped`` holds 0-based row numbers.

    Raises:
        KPIError: the KPI is unavailable, ``names`` has the wrong length, a
            negative ``n_max``, or the input errors of :func:`compute_kpi`.
    """
    if n_max < 0:
        raise KPIError(f"n_max must be 0 or more, got {n_max}")
    is_defect, values = _as_arrays(labels, scores)
    if names is not None and len(names) != len(values):
        raise KPIError(f"{len(names)} names but {len(values)} rows; pass one name per row")
    _point(is_defect, values)
    defect_rows = np.flatnonzero(is_defect)
    hardest = defect_rows[np.argsort(values[defect_rows], kind="stable")]
    out: list[DropN] = []
    keep = np.ones(len(values), dtype=bool)
    for n in range(1, min(n_max, len(defect_rows) - 1) + 1):
        keep[hardest[n - 1]] = False
        result = compute_kpi(_labels(is_defect[keep]), values[keep])
        assert result.far_pct is not None and result.threshold is not None  # both classes left
        dropped = tuple(names[int(i)] if names is not None else int(i) for i in hardest[:n])
        out.append(DropN(n, result.far_pct, result.threshold, dropped))
    return out


def threshold_setter(frame: pd.DataFrame, score_column: str = SCORE_COLUMN) -> ThresholdSetter:
    """The defect with the lowest score in an inference table (dataset CSV + scores).

    Removing it (and any defect tied with it) is what moves the recall-100
    threshold; see :func:`drop_n_sensitivity`.

    Raises:
        KPIError: the ``label`` or score column is missing or bad, or the KPI is
            unavailable (no defect or no PASS rows).
    """
    labels, values = _frame_arrays(frame, score_column, source="inference table")
    is_defect, values = _as_arrays(labels, values)
    _point(is_defect, values)
    defect_rows = np.flatnonzero(is_defect)
    lowest = values[defect_rows].min()
    tied = defect_rows[values[defect_rows] == lowest]
    position = int(tied[0])
    row = frame.iloc[position]
    return ThresholdSetter(
        index=_plain(frame.index[position]),
        position=position,
        label=str(row[LABEL_COLUMN]),
        object_name=_optional_str(row, "object_name"),
        boardname=_optional_str(row, "boardname"),
        score=float(values[position]),
        ties=len(tied),
    )


# ---------------------------------------------------------------------- internals


def _point(is_defect: np.ndarray, values: np.ndarray) -> float:
    """compute_kpi's far_pct, or KPIError with its reason when unavailable."""
    result = compute_kpi(_labels(is_defect), values)
    if result.far_pct is None:
        raise KPIError(f"FAR at 100% recall is unavailable: {result.reason}; score both classes")
    return result.far_pct


def _labels(is_defect: np.ndarray) -> np.ndarray:
    """Labels that :func:`compute_kpi` reads back as ``is_defect``."""
    return np.where(is_defect, _DEFECT_LABEL, PASS_LABEL)


def _bootstrap_far(
    defect_scores: np.ndarray, pass_scores: np.ndarray, n_resamples: int, seed: int
) -> np.ndarray:
    """FAR (percent) of each resample, drawn in the documented order, in blocks."""
    rng = np.random.default_rng(seed)
    n_def, n_pass = len(defect_scores), len(pass_scores)
    threshold = np.empty(n_resamples, dtype=np.float64)
    for start, stop in _blocks(n_resamples, n_def):
        idx = rng.integers(0, n_def, size=(stop - start, n_def))
        threshold[start:stop] = defect_scores[idx].min(axis=1)
    false_alarms = np.empty(n_resamples, dtype=np.int64)
    for start, stop in _blocks(n_resamples, n_pass):
        idx = rng.integers(0, n_pass, size=(stop - start, n_pass))
        flagged = pass_scores[idx] >= threshold[start:stop, None]
        false_alarms[start:stop] = np.count_nonzero(flagged, axis=1)
    # The same operations, in the same order, as metric._sweep: fp / (fp + tn) * 100.
    return false_alarms / n_pass * 100


def _blocks(n_rows: int, width: int) -> Iterable[tuple[int, int]]:
    step = max(1, _BLOCK_ELEMENTS // max(width, 1))
    for start in range(0, n_rows, step):
        yield start, min(start + step, n_rows)


def _level_pct(level: float) -> str:
    pct = level * 100
    return f"{pct:.0f}" if abs(pct - round(pct)) < 1e-9 else f"{pct:g}"


def _optional_str(row: pd.Series, column: str) -> str | None:
    if column not in row.index or pd.isna(row[column]):
        return None
    return str(row[column])


def _plain(value: object) -> object:
    """numpy scalars to Python ones (JSON-friendly); everything else unchanged."""
    return value.item() if isinstance(value, np.generic) else value
