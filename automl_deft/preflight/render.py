"""Rendering a :class:`~automl_deft.preflight.model.Preflight`: terminal text, Markdown, JSON.

Also the small number and list formatters the section builders share, so every
section spells counts, minutes and lists the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from automl_deft.preflight.model import SECTION_TITLES, Block, KeyValue, Preflight, Section, Table

__all__ = [
    "count",
    "join",
    "minutes",
    "num",
    "plain_lines",
    "render_dict",
    "render_markdown",
    "render_text",
]


# --- formatters ---------------------------------------------------------------------------


def count(n: int, noun: str) -> str:
    """``1 warning``, ``2 warnings``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def join(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b, and c``."""
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]


def num(value: float) -> str:
    return f"{value:g}"


def minutes(value: float) -> str:
    """``50 min``; from 90 minutes on also in hours: ``110 min (1.8 h)``."""
    text = f"{num(round(value, 1))} min"
    return f"{text} ({num(round(value / 60, 1))} h)" if value >= 90 else text


# --- blocks -------------------------------------------------------------------------------


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


# --- the whole summary --------------------------------------------------------------------


def _verdict(pf: Preflight) -> str:
    state = "OK" if pf.ok else "BLOCKED"
    return (
        f"{state} ({count(len(pf.blocking), 'blocking problem')}, "
        f"{count(len(pf.warnings), 'warning')})"
    )


def render_text(pf: Preflight) -> str:
    """The terminal summary (see :meth:`Preflight.text`)."""
    out = [f"AutoML + DEFT pre-flight: {_verdict(pf)}", ""]
    for s in pf.sections:
        if s.number == len(SECTION_TITLES):
            out.extend(_issues_text("Blocking (fix before running)", pf.blocking))
            out.extend(_issues_text("Warnings", pf.warnings))
        out.append(f"{s.number}. {s.title}")
        out.extend("   " + line for line in _section_text(s))
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def render_markdown(pf: Preflight) -> str:
    """The dashboard summary (see :meth:`Preflight.markdown`)."""
    out = [f"# AutoML + DEFT pre-flight: {_verdict(pf)}", ""]
    for heading, items in (("Blocking problems", pf.blocking), ("Warnings", pf.warnings)):
        if items:
            out += [f"## {heading}", "", *(f"- {_md(i)}" for i in items), ""]
    for s in pf.sections:
        out += [f"## {s.number}. {s.title}", "", *_section_markdown(s)]
    return "\n".join(out).rstrip() + "\n"


def render_dict(pf: Preflight) -> dict[str, Any]:
    """The JSON form (see :meth:`Preflight.to_dict`)."""
    return {
        "ok": pf.ok,
        "blocking": list(pf.blocking),
        "warnings": list(pf.warnings),
        "sections": [
            {"number": s.number, "title": s.title, "lines": list(s.lines), "data": s.data}
            for s in pf.sections
        ],
    }


def _section_text(s: Section) -> list[str]:
    if not s.blocks:
        return list(s.lines)
    width = max((len(b.key) for b in s.blocks if isinstance(b, KeyValue)), default=0)
    out: list[str] = []
    for b in s.blocks:
        if isinstance(b, KeyValue):
            out.append(f"{(b.key + ':').ljust(width + 1)} {b.value}")
        elif isinstance(b, Table):
            out.extend(table_lines(b))
        else:
            out.append(b.text)
    return out


def _issues_text(heading: str, items: list[str]) -> list[str]:
    if not items:
        return []
    return [f"{heading}:", *(f"   - {i}" for i in items), ""]


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _section_markdown(s: Section) -> list[str]:
    if not s.blocks:
        return [*(_md(line) + "  " for line in s.lines), ""]
    out: list[str] = []
    pending: list[KeyValue] = []

    def flush() -> None:
        if pending:
            out.extend(["| setting | value |", "|---|---|"])
            out.extend(f"| {_md(kv.key)} | {_md(kv.value)} |" for kv in pending)
            out.append("")
            pending.clear()

    for b in s.blocks:
        if isinstance(b, KeyValue):
            pending.append(b)
            continue
        flush()
        if isinstance(b, Table):
            out.append("| " + " | ".join(_md(c) for c in b.columns) + " |")
            out.append("|" + "---|" * len(b.columns))
            out.extend("| " + " | ".join(_md(v) for v in row) + " |" for row in b.rows)
        else:
            out.append(_md(b.text))
        out.append("")
    flush()
    return out
