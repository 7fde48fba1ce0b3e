"""The result types of the KPI: one operating point, and FAR at 100% recall.

:class:`OperatingPoint` holds the counts and rates at one threshold;
:class:`KPIResult` holds the recall-100 and best-F1 points that
:func:`automl_deft.kpi.compute_kpi` picks, and round-trips through JSON so a
``metrics.json`` can be read back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from automl_deft.jsontypes import JSONObject

__all__ = ["KPIResult", "OperatingPoint", "format_threshold"]


@dataclass(frozen=True)
class OperatingPoint:
    """The confusion counts and rates at one threshold.

    ``far_pct`` is NaN only when there are no PASS rows, which
    :func:`~automl_deft.kpi.compute_kpi` never returns (the result is unavailable instead).
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

    def to_dict(self) -> dict[str, float]:
        """Plain floats and ints, ready for ``json.dumps``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: JSONObject) -> OperatingPoint:
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

    def to_dict(self) -> JSONObject:
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
    def from_dict(cls, data: JSONObject) -> KPIResult:
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


def format_far(far_pct: float | None, ci95: Sequence[float] | None = None) -> str:
    """``0.18%``, or ``0.18% [0.00–0.55]`` with a 95% interval; ``n/a`` when unavailable."""
    if far_pct is None:
        return "n/a"
    text = f"{far_pct:.2f}%"
    if ci95 is not None and len(ci95) == 2:
        text += f" [{ci95[0]:.2f}–{ci95[1]:.2f}]"
    return text
