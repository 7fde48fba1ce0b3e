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

import math
import operator
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from automl_deft.errors import KPIError
from automl_deft.io import atomic_path, atomic_write_csv
from automl_deft.workspace import SCORE_COLUMN, defect_mask

__all__ = [
    "NO_DEFECT_REASON",
    "NO_PASS_REASON",
    "SWEEP_COLUMNS",
    "UNREACHABLE_REASON",
    "KPIResult",
    "KPITarget",
    "OperatingPoint",
    "compute_kpi",
    "confusion_matrix_text",
    "kpi_from_csv",
    "kpi_from_frame",
    "parse_target",
    "plot_score_distribution",
    "threshold_sweep",
    "write_sweep_csv",
]

LABEL_COLUMN = "label"

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

TARGET_EXAMPLE = "FAR < 0.1% at recall=100%"
"""The canonical target form, quoted in every parse error."""

TARGET_TOLERANCE_PP = 1e-9
"""FAR values this close (in percentage points) to a target count as equal to it,
so ``7/100`` FAR (7.000000000000001% in floating point) meets ``FAR <= 7%``."""

_MAX_LISTED = 5


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class OperatingPoint:
    """The confusion counts and rates at one threshold.

    ``far_pct`` is NaN only when there are no PASS rows, which :func:`compute_kpi`
    never returns (the result is unavailable instead).
    """

    threshold: float
    precision: float
    recall: float
    f1: float
    far_pct: float
    tp: int
    fp: int
    tn: int
    fn: int

    def to_dict(self) -> dict[str, Any]:
        """Plain floats and ints, ready for ``json.dumps``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OperatingPoint:
        """Inverse of :meth:`to_dict`."""
        return cls(
            threshold=float(data["threshold"]),
            precision=float(data["precision"]),
            recall=float(data["recall"]),
            f1=float(data["f1"]),
            far_pct=float(data["far_pct"]),
            tp=int(data["tp"]),
            fp=int(data["fp"]),
            tn=int(data["tn"]),
            fn=int(data["fn"]),
        )


@dataclass(frozen=True)
class KPIResult:
    """FAR at 100% recall for one set of scores.

    Attributes:
        recall100: the recall-100 operating point; None when the KPI is unavailable.
        best_f1: the threshold with the best (F1, precision, threshold); None when
            the data has a single class.
        n_pass: PASS rows.
        n_defect: defect rows.
        reason: why the KPI is unavailable; None when it is available.

    The flat accessors (``far_pct``, ``threshold``, ``precision``, ``recall``,
    ``f1``, ``tp``, ``fp``, ``tn``, ``fn``) read the recall-100 point and are None
    when the KPI is unavailable.
    """

    recall100: OperatingPoint | None
    best_f1: OperatingPoint | None
    n_pass: int
    n_defect: int
    reason: str | None = None

    @property
    def available(self) -> bool:
        """True when a threshold reaches 100% recall (and both classes are present)."""
        return self.recall100 is not None

    def _get(self, name: str) -> Any:
        return None if self.recall100 is None else getattr(self.recall100, name)

    @property
    def far_pct(self) -> float | None:
        return self._get("far_pct")

    @property
    def threshold(self) -> float | None:
        return self._get("threshold")

    @property
    def precision(self) -> float | None:
        return self._get("precision")

    @property
    def recall(self) -> float | None:
        return self._get("recall")

    @property
    def f1(self) -> float | None:
        return self._get("f1")

    @property
    def tp(self) -> int | None:
        return self._get("tp")

    @property
    def fp(self) -> int | None:
        return self._get("fp")

    @property
    def tn(self) -> int | None:
        return self._get("tn")

    @property
    def fn(self) -> int | None:
        return self._get("fn")

    def to_dict(self) -> dict[str, Any]:
        """Flat recall-100 fields (None when unavailable) plus ``best_f1``, JSON-ready."""
        flat = {name: self._get(name) for name in _POINT_FIELDS}
        return {
            "available": self.available,
            **flat,
            "n_pass": self.n_pass,
            "n_defect": self.n_defect,
            "reason": self.reason,
            "best_f1": None if self.best_f1 is None else self.best_f1.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KPIResult:
        """Inverse of :meth:`to_dict` (e.g. to read a ``metrics.json`` back)."""
        recall100 = OperatingPoint.from_dict(data) if data.get("available") else None
        best = data.get("best_f1")
        return cls(
            recall100=recall100,
            best_f1=None if best is None else OperatingPoint.from_dict(best),
            n_pass=int(data["n_pass"]),
            n_defect=int(data["n_defect"]),
            reason=data.get("reason"),
        )

    def summary(self) -> str:
        """One line, e.g. ``FAR=52.00% threshold=0.3100 (recall=100%, precision=…)``."""
        p = self.recall100
        if p is None:
            return f"KPI unavailable: {self.reason}"
        return (
            f"FAR={p.far_pct:.2f}% threshold={format_threshold(p.threshold)} "
            f"(recall={p.recall * 100:.4g}%, precision={p.precision:.4f}, F1={p.f1:.4f}, "
            f"TP/FP/TN/FN={p.tp}/{p.fp}/{p.tn}/{p.fn})"
        )


_POINT_FIELDS: tuple[str, ...] = tuple(OperatingPoint.__dataclass_fields__)


def format_threshold(threshold: float) -> str:
    """Four decimals, or four significant digits for tiny/huge thresholds."""
    if threshold != 0 and not 1e-3 <= abs(threshold) < 1e6:
        return f"{threshold:.4g}"
    return f"{threshold:.4f}"


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


def _frame_arrays(
    frame: pd.DataFrame, score_column: str, *, source: str
) -> tuple[pd.Series, np.ndarray]:
    """Labels and float scores of an inference frame, with errors that name the fix."""
    if LABEL_COLUMN not in frame.columns:
        raise KPIError(
            f"{source} has no {LABEL_COLUMN!r} column; the KPI needs ground truth: run "
            "inference on a dataset CSV that has one (input_path, golden_path, label, object_name)"
        )
    if score_column not in frame.columns:
        raise KPIError(
            f"{source} has no {score_column!r} column; run inference on it first "
            f"(an inference CSV is the dataset CSV plus {SCORE_COLUMN})"
        )
    labels = frame[LABEL_COLUMN]
    empty = np.flatnonzero(labels.isna().to_numpy() | (labels.astype(str).str.strip() == ""))
    if len(empty):
        raise KPIError(
            f"{source}: {len(empty)} row(s) with an empty {LABEL_COLUMN!r} "
            f"(first at row(s) {_rows(empty)}); fill them in or drop the rows"
        )
    raw = frame[score_column]
    scores = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise KPIError(
            f"{source}: {len(bad)} {score_column!r} value(s) are missing, non-numeric or "
            f"infinite (first at row(s) {_rows(bad)}, e.g. {raw.iloc[bad[0]]!r}); "
            "re-run inference for those rows or drop them"
        )
    return labels, scores


def kpi_from_frame(frame: pd.DataFrame, score_column: str = SCORE_COLUMN) -> KPIResult:
    """:func:`compute_kpi` on an inference table (a dataset CSV plus a score column).

    Raises:
        KPIError: a missing ``label`` or score column, empty labels, bad scores.
    """
    labels, scores = _frame_arrays(frame, score_column, source="inference table")
    return compute_kpi(labels, scores)


def judge_scored_frame(
    frame: pd.DataFrame,
    *,
    inference_csv: str | os.PathLike[str] | None = None,
    sweep_csv: str | os.PathLike[str] | None = None,
    plot: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> KPIResult:
    """The KPI of a scored table, writing whichever artifacts are asked for.

    Args:
        frame: a dataset table with ``label`` and ``siamese_score``.
        inference_csv: write the scored table here (atomically).
        sweep_csv: write the threshold sweep here.
        plot: write the score-distribution PNG (threshold marked) here.
        title: what the plot shows (the KPI is appended).
    """
    result = kpi_from_frame(frame)
    if inference_csv is not None:
        atomic_write_csv(inference_csv, frame)
    if sweep_csv is not None:
        write_sweep_csv(frame["label"], frame[SCORE_COLUMN], sweep_csv)
    if plot is not None:
        plot_score_distribution(
            frame["label"],
            frame[SCORE_COLUMN],
            plot,
            threshold=result.threshold,
            title=_plot_title(result, title),
        )
    return result


def _plot_title(result: KPIResult, what: str | None) -> str:
    if result.far_pct is None or result.threshold is None:
        kpi = "KPI unavailable"
    else:
        kpi = f"FAR@100% recall {result.far_pct:.2f}% (threshold {result.threshold:.4g})"
    return f"{what}: {kpi}" if what else kpi


def read_inference_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read an inference CSV with every column as text (labels like ``NA`` stay labels)."""
    path = Path(path)
    if not path.is_file():
        raise KPIError(f"inference CSV not found: {path}; run inference first or fix the path")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KPIError(f"inference CSV {path} cannot be parsed ({first}); fix the file") from exc


def kpi_from_csv(path: str | os.PathLike[str], *, score_column: str = SCORE_COLUMN) -> KPIResult:
    """:func:`compute_kpi` on an inference CSV file.

    Raises:
        KPIError: missing/unparsable file, missing ``label`` or score column, bad values.
    """
    frame = read_inference_csv(path)
    labels, scores = _frame_arrays(frame, score_column, source=f"inference CSV {path}")
    return compute_kpi(labels, scores)


def confusion_matrix_text(point: OperatingPoint) -> str:
    """A 2x2 text table (rows: actual class, columns: predicted class)."""
    cells = [str(v) for v in (point.tn, point.fp, point.fn, point.tp)]
    width = max(len("pred defect"), *(len(c) for c in cells))
    head = f"{'':<13}  {'pred PASS':>{width}}  {'pred defect':>{width}}"
    return "\n".join(
        [
            head,
            f"{'actual PASS':<13}  {cells[0]:>{width}}  {cells[1]:>{width}}",
            f"{'actual defect':<13}  {cells[2]:>{width}}  {cells[3]:>{width}}",
        ]
    )


def plot_score_distribution(
    labels: Iterable[object],
    scores: Iterable[float],
    path: str | os.PathLike[str],
    *,
    threshold: float | None = None,
    title: str | None = None,
) -> Path:
    """Histogram of PASS vs defect scores as a PNG, with the threshold marked.

    The y axis is logarithmic when one class outnumbers the other tenfold (AOI
    data is PASS-dominant, so the defects would otherwise be invisible).

    Returns:
        ``path``, written atomically.

    Raises:
        KPIError: as :func:`compute_kpi`.
    """
    # Figure + Agg canvas directly: no pyplot, so the process-wide backend is untouched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    is_defect, values = _as_arrays(labels, scores)
    n_defect = int(is_defect.sum())
    n_pass = len(values) - n_defect
    lo, hi = float(values.min()), float(values.max())
    if threshold is not None:
        lo, hi = min(lo, threshold), max(hi, threshold)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 51).tolist()

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.hist(values[~is_defect], bins=bins, alpha=0.6, color="tab:blue", label=f"PASS ({n_pass})")
    ax.hist(values[is_defect], bins=bins, alpha=0.6, color="tab:red", label=f"defect ({n_defect})")
    if max(n_pass, n_defect) >= 10 * max(1, min(n_pass, n_defect)):
        ax.set_yscale("log")
    if threshold is not None:
        ax.axvline(
            threshold,
            color="black",
            linestyle="--",
            label=f"threshold {format_threshold(threshold)}",
        )
    ax.set_xlabel(f"{SCORE_COLUMN} (defect when > threshold)")
    ax.set_ylabel("rows")
    ax.set_title(title or "Score distribution")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


# ------------------------------------------------------------------------- targets

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_OP_ALIASES = {"≤": "<=", "≥": ">=", "=<": "<=", "=>": ">="}

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_TARGET_RE = re.compile(
    rf"""^\s*FAR\s*
        (?P<op><=|>=|=<|=>|<|>|≤|≥)\s*
        (?P<value>{_NUMBER})\s*(?P<unit>%)?\s*
        (?:(?:at|@)?\s*recall\s*(?:==?)?\s*(?P<recall>{_NUMBER})\s*(?P<runit>%)?\s*)?$""",
    re.IGNORECASE | re.VERBOSE,
)


@dataclass(frozen=True)
class KPITarget:
    """A KPI goal such as ``FAR < 0.1% at recall=100%``.

    Attributes:
        op: one of ``<``, ``<=``, ``>``, ``>=``.
        value_pct: the FAR bound in percent (0-100).
        recall_pct: the recall constraint; only 100 is supported.
    """

    op: str
    value_pct: float
    recall_pct: float = 100.0

    def __post_init__(self) -> None:
        if self.op not in _OPERATORS:
            raise KPIError(
                f"KPI target operator {self.op!r} is not one of <, <=, >, >=; "
                f"write it like {TARGET_EXAMPLE!r}"
            )
        if not (math.isfinite(self.value_pct) and 0 <= self.value_pct <= 100):
            raise KPIError(
                f"KPI target FAR {self.value_pct}% is outside 0-100%; "
                f"write it like {TARGET_EXAMPLE!r}"
            )
        if self.recall_pct != 100:
            raise KPIError(
                f"KPI target recall {_fmt_pct(self.recall_pct)}% is not supported; only "
                f"recall=100% is (write it like {TARGET_EXAMPLE!r})"
            )

    def __str__(self) -> str:
        return f"FAR {self.op} {_fmt_pct(self.value_pct)}% at recall={_fmt_pct(self.recall_pct)}%"

    def short(self) -> str:
        """The bound alone, for status lines: ``<5%``."""
        return f"{self.op}{_fmt_pct(self.value_pct)}%"

    def is_met(self, result: KPIResult | float | None) -> bool:
        """Whether a result (or a ``far_pct``) meets the target; unavailable never does.

        Values within :data:`TARGET_TOLERANCE_PP` of the bound count as equal to it.
        """
        far = _far_of(result)
        if far is None:
            return False
        if abs(far - self.value_pct) <= TARGET_TOLERANCE_PP:
            return self.op in ("<=", ">=")
        return _OPERATORS[self.op](far, self.value_pct)

    def gap_pp(self, result: KPIResult | float | None) -> float | None:
        """Percentage points still to go (0.0 when met); None when the KPI is unavailable."""
        far = _far_of(result)
        if far is None:
            return None
        return 0.0 if self.is_met(far) else abs(far - self.value_pct)


def _far_of(result: KPIResult | float | None) -> float | None:
    far = result.far_pct if isinstance(result, KPIResult) else result
    if far is None or not math.isfinite(far):
        return None
    return float(far)


def _fmt_pct(value: float) -> str:
    """Shortest plain decimal (no exponent), e.g. ``0.1``, ``5``, ``0.005``."""
    return f"{value:.10f}".rstrip("0").rstrip(".")


def parse_target(text: str) -> KPITarget:
    """Parse a KPI target such as ``FAR < 0.1% at recall=100%``.

    Accepted: ``FAR``, an operator (``<``, ``<=``, ``>``, ``>=``; ``≤``/``≥`` too),
    a value with a ``%`` sign, and an optional ``at recall=100%`` (case and spaces
    free: ``far<=0.1%``, ``FAR >= 2 % at recall = 100 %``). The ``%`` on the FAR is
    required: a bare ``FAR < 0.5`` could mean 0.5% or 50%, and a target misread by
    100x would silently steer the loop, so it is rejected with the fix. The recall
    may be written ``100%``, ``100`` or ``1`` (all mean 100%); any other recall is
    rejected because only 100% is supported.

    Raises:
        KPIError: unparsable text, a missing ``%``, a value outside 0-100%, or a
            recall other than 100%.
    """
    match = _TARGET_RE.match(text or "")
    if match is None:
        raise KPIError(
            f"cannot parse KPI target {text!r}; write it like {TARGET_EXAMPLE!r} "
            "(operator <, <=, > or >=, value in percent)"
        )
    op = _OP_ALIASES.get(match["op"], match["op"])
    value = float(match["value"])
    if match["unit"] is None:
        raise KPIError(
            f"KPI target {text!r} has no '%' on the FAR value; write "
            f"'FAR {op} {match['value']}%' (percent) or 'FAR {op} {_fmt_pct(value * 100)}%' "
            "(if it was a fraction)"
        )
    recall = 100.0
    if match["recall"] is not None:
        recall = float(match["recall"])
        if match["runit"] is None and recall == 1:
            recall = 100.0
    return KPITarget(op=op, value_pct=value, recall_pct=recall)
