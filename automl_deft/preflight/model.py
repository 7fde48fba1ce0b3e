"""The pre-flight's result: nine sections of blocks, the blocking problems and the warnings.

A :class:`Section` is laid out as blocks (:class:`KeyValue`, :class:`Table`,
:class:`Note`) and also carries the same facts structured (``data``, for JSON);
:mod:`automl_deft.preflight.render` turns a :class:`Preflight` into text and Markdown.
"""

from __future__ import annotations

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
        from automl_deft.preflight.render import plain_lines

        return cls(number, SECTION_TITLES[number - 1], plain_lines(blocks), data, blocks)


@dataclass
class Preflight:
    """The consolidated pre-flight summary.

    Attributes:
        sections: exactly nine, in :data:`SECTION_TITLES` order.
        blocking: problems that stop the run, one line each with the fix.
        warnings: things worth knowing that do not stop the run.
    """

    sections: list[Section]
    blocking: list[str]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        """True when nothing blocks the run."""
        return not self.blocking

    def text(self) -> str:
        """The summary for a terminal: numbered headers and aligned ``key: value`` lines.

        Blocking problems and warnings are listed just before the confirmation line,
        so the last thing a reader sees is what to fix or what to approve.
        """
        from automl_deft.preflight.render import render_text

        return render_text(self)

    def markdown(self) -> str:
        """The summary as Markdown (the KFP ``Markdown`` artifact shown on the dashboard)."""
        from automl_deft.preflight.render import render_markdown

        return render_markdown(self)

    def to_dict(self) -> dict[str, Any]:
        """``{ok, blocking, warnings, sections: [{number, title, lines, data}]}`` (``--json``)."""
        from automl_deft.preflight.render import render_dict

        return render_dict(self)
