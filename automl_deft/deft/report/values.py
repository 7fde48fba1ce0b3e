"""Plain JSON values of the artefact files (RCA's ``metrics.json``, ``breakdown.json``).

The state is read through typed records; these artefacts are plain JSON written by
other stages, so their shape is checked where they are read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from automl_deft.errors import first_line

__all__ = ["as_list", "as_mapping", "finite", "first_line", "number", "total"]


def as_mapping(value: Any) -> dict[str, Any]:
    """A JSON artefact's object (empty when it is something else)."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """A JSON artefact's list (empty when it is something else)."""
    return value if isinstance(value, list) else []


def number(value: Any) -> float | None:
    """A JSON artefact's number (None when missing, not a number or not finite)."""
    if value is None or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return finite(float(value))
    except (TypeError, ValueError):
        return None


def total(values: Iterable[Any]) -> int | None:
    """The sum of the numbers among ``values`` (None when there is none)."""
    numbers = [n for v in values if (n := number(v)) is not None]
    return int(sum(numbers)) if numbers else None


def finite(value: float | None) -> float | None:
    """``value`` as a float, None when missing, NaN or infinite."""
    return None if value is None or not math.isfinite(value) else float(value)
