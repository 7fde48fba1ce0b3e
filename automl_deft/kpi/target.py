"""KPI goals such as ``FAR < 0.1% at recall=100%``: parsing, and judging a result.

:func:`parse_target` reads the text a user writes in a config or on the command
line; :class:`KPITarget` says whether a :class:`~automl_deft.kpi.KPIResult`
meets it and how far off it is.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from automl_deft.errors import KPIError
from automl_deft.kpi.result import KPIResult

__all__ = ["TARGET_EXAMPLE", "TARGET_TOLERANCE_PP", "KPITarget", "parse_target"]

TARGET_EXAMPLE = "FAR < 0.1% at recall=100%"
"""The canonical target form, quoted in every parse error."""

TARGET_TOLERANCE_PP = 1e-9
"""FAR values this close (in percentage points) to a target count as equal to it,
so ``7/100`` FAR (7.000000000000001% in floating point) meets ``FAR <= 7%``."""


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
