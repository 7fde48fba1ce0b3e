"""The whole summary, :class:`Preflight`, and its three forms: terminal text, Markdown, JSON.

Also the small number and list formatters the section builders share, so every
section spells counts, minutes and lists the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from automl_deft.preflight.model import SECTION_TITLES, KeyValue, Section, Table, table_lines

__all__ = ["Preflight", "count", "join", "minutes", "num"]


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


# --- the whole summary -------------------------------------------------------------------


BRIEF_KEYS: dict[int, tuple[str, ...]] = {
    4: ("leakage", "model input"),
    5: ("backend", "zero-shot level", "sweep size"),
    6: ("KPI target", "max_iterations", "SDG", "baseline"),
    7: ("enabled", "sweep size"),
    8: ("total",),
}
"""The lines of each section :meth:`Preflight.brief` keeps (by their key)."""


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
        out = [f"AutoML + DEFT pre-flight: {_verdict(self)}", ""]
        for s in self.sections:
            if s.number == len(SECTION_TITLES):
                out.extend(_issues_text("Blocking (fix before running)", self.blocking))
                out.extend(_issues_text("Warnings", self.warnings))
            out.append(f"{s.number}. {s.title}")
            out.extend("   " + line for line in _section_text(s))
            out.append("")
        return "\n".join(out).rstrip() + "\n"

    def brief(self, full_text_at: str) -> str:
        """A few lines for a run that does not ask (``run --yes``): the verdict, what each
        phase will do and cost, every warning and blocking problem, and where the whole
        text was written (``full_text_at``)."""
        by_number = {s.number: s for s in self.sections}
        out = [f"AutoML + DEFT pre-flight: {_verdict(self)} (full text: {full_text_at})"]
        for number in (4, 5, 6, 7, 8):
            section = by_number.get(number)
            if section is None:
                continue
            picked = [
                line.strip()
                for line in _section_text(section)
                if line.strip().split(":", 1)[0] in BRIEF_KEYS.get(number, ())
            ]
            if picked:
                out.append(f"  {section.title}: " + " · ".join(" ".join(p.split()) for p in picked))
        out.extend(f"  warning: {w}" for w in self.warnings)
        out.extend(f"  BLOCKING: {b}" for b in self.blocking)
        return "\n".join(out) + "\n"

    def markdown(self) -> str:
        """The summary as Markdown (the KFP ``Markdown`` artifact shown on the dashboard)."""
        out = [f"# AutoML + DEFT pre-flight: {_verdict(self)}", ""]
        for heading, items in (("Blocking problems", self.blocking), ("Warnings", self.warnings)):
            if items:
                out += [f"## {heading}", "", *(f"- {_md(i)}" for i in items), ""]
        for s in self.sections:
            out += [f"## {s.number}. {s.title}", "", *_section_markdown(s)]
        return "\n".join(out).rstrip() + "\n"

    def to_dict(self) -> dict[str, Any]:
        """``{ok, blocking, warnings, sections: [{number, title, lines, data}]}`` (``--json``)."""
        return {
            "ok": self.ok,
            "blocking": list(self.blocking),
            "warnings": list(self.warnings),
            "sections": [
                {"number": s.number, "title": s.title, "lines": list(s.lines), "data": s.data}
                for s in self.sections
            ],
        }


# --- laying out the text and Markdown -----------------------------------------------------


def _verdict(pf: Preflight) -> str:
    state = "OK" if pf.ok else "BLOCKED"
    return (
        f"{state} ({count(len(pf.blocking), 'blocking problem')}, "
        f"{count(len(pf.warnings), 'warning')})"
    )


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
