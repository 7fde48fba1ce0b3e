"""The pre-flight's sections: numbered, laid out as blocks, with the same facts as data.

A :class:`Section` is laid out as blocks (:class:`KeyValue`, :class:`Table`,
:class:`Note`), as plain ``lines`` rendered from them, and carries the same facts
structured (``data``, for JSON). The whole summary, :class:`~automl_deft.preflight.
render.Preflight`, and its text and Markdown forms are in :mod:`automl_deft.preflight.render`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SECTION_TITLES: tuple[str, ...] = (
    "Workspace & platform",
    "Credentials",
    "Container images",
    "Datasets",
    "Phase 1 (AutoML)",
    "Phase 2 (DEFT)",
    "Phase 3 (AutoML warm-started)",
    "Compute estimate",
    "Confirmation",
)
"""The nine sections of the single gate, in the order the facts file gives."""


@dataclass(frozen=True)
class KeyValue:
    """One ``key: value`` line of a section."""

    key: str
    value: str


@dataclass(frozen=True)
class Table:
    """A small table (rendered aligned in the terminal, as a table in Markdown)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Note:
    """A free-text line."""

    text: str


Block = KeyValue | Table | Note


# --- layout -------------------------------------------------------------------------------


def table_lines(t: Table) -> list[str]:
    widths = [len(c) for c in t.columns]
    for row in t.rows:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
    last = len(t.columns) - 1

    def line(cells: Sequence[str]) -> str:
        return "  ".join(v if i == last else v.ljust(widths[i]) for i, v in enumerate(cells))

    return [line(t.columns), *(line(r) for r in t.rows)]


def plain_lines(blocks: Sequence[Block]) -> list[str]:
    """``key: value`` lines, table rows and notes, unaligned (a section's ``lines``)."""
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, KeyValue):
            lines.append(f"{b.key}: {b.value}")
        elif isinstance(b, Table):
            lines.extend(table_lines(b))
        else:
            lines.append(b.text)
    return lines


@dataclass
class Section:
    """One numbered section of the pre-flight.

    Attributes:
        number: 1..9.
        title: one of :data:`SECTION_TITLES`.
        lines: the section as plain lines (``key: value``, table rows, notes).
        data: the same facts, structured (JSON-ready).
        blocks: the layout ``lines`` was rendered from (for aligned text and Markdown).
    """

    number: int
    title: str
    lines: list[str]
    data: dict[str, Any]
    blocks: list[Block] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def of(cls, number: int, blocks: list[Block], data: dict[str, Any]) -> Section:
        """A section whose ``lines`` are rendered from ``blocks``."""
        return cls(number, SECTION_TITLES[number - 1], plain_lines(blocks), data, blocks)
