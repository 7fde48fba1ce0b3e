"""The page in order, each section guarded, and the atomic write of ``DEFT_Loop_Report.html``.

The file keeps its documented name; the page is the whole run's report (Phase 1,
the DEFT loop, Phase 3 and finalize), titled :data:`~.names.PIPELINE_TITLE`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from html import escape
from pathlib import Path

from automl_deft.deft.report import (
    analysis,
    contributions,
    evidence,
    hygiene,
    overview,
    pipeline,
    recommend,
    results,
)
from automl_deft.deft.report.html import document, na
from automl_deft.deft.report.load import ReportRun, load_run
from automl_deft.deft.report.names import PIPELINE_TITLE
from automl_deft.deft.report.values import first_line
from automl_deft.io import atomic_write_text
from automl_deft.layout import RunLayout

__all__ = [
    "REPORT_FILE",
    "SECTIONS",
    "SECTION_TITLES",
    "render_report",
    "report_html",
    "report_path",
]

log = logging.getLogger(__name__)

REPORT_FILE = RunLayout.REPORT

Section = Callable[[ReportRun], str]

SECTIONS: tuple[tuple[str, Section], ...] = (
    ("Problem statement", overview.problem),
    ("KPI dataset characteristics", overview.dataset),
    ("Approach", overview.approach),
    ("Pipeline at a glance", pipeline.glance),
    ("Phase 1 AutoML", pipeline.phase1_summary),
    ("Progress", results.progress),
    ("Results per step", results.per_iteration),
    ("FAR contributions by defect type and board", contributions.contributions),
    ("Sensitivity of the KPI", evidence.sensitivity),
    ("Augmentation", results.augmentation),
    ("Row hygiene", hygiene.hygiene),
    ("RCA score distribution", analysis.rca_scores),
    ("Defect-type analysis", analysis.defect_types),
    ("Sample of generated data", analysis.samples),
    ("Per-iteration details", analysis.details),
    ("Phase 3 AutoML", pipeline.phase3_summary),
    ("Recommendations", recommend.recommendations),
    ("Final status", results.final),
)
"""The ``<h2>`` sections of the page and their builders, in order."""

SECTION_TITLES: tuple[str, ...] = tuple(title for title, _ in SECTIONS)
"""The ``<h2>`` headings of the page, in order (header, KPI banner and headline come first)."""


def report_path(results_dir: str | os.PathLike[str]) -> Path:
    """Where the report of ``results_dir`` lives."""
    return RunLayout.at(results_dir).report


def render_report(results_dir: str | os.PathLike[str]) -> Path:
    """Render ``DEFT_Loop_Report.html`` from what is on disk and write it atomically.

    Args:
        results_dir: the run's results directory (holds ``deft_state.json``).

    Returns:
        The report's path.

    Raises:
        UserError: ``deft_state.json`` is missing or is not a JSON object. Every
            other missing or malformed file only makes its section say so.
    """
    path = report_path(results_dir)
    atomic_write_text(path, report_html(results_dir))
    return path


def report_html(results_dir: str | os.PathLike[str]) -> str:
    """The report as an HTML string (what :func:`render_report` writes).

    Raises:
        UserError: as :func:`render_report`.
    """
    run = load_run(Path(results_dir))
    body = [
        f"<header><h1>{escape(PIPELINE_TITLE)}</h1>{_guard('header', overview.header, run)}"
        "</header>",
        _guard("KPI banner", overview.banner, run),
        _guard("headline", evidence.headline, run),
    ]
    for title, builder in SECTIONS:
        body.append(f"<section><h2>{escape(title)}</h2>\n{_guard(title, builder, run)}</section>")
    if run.problems:
        items = "".join(f"<li>{escape(p)}</li>" for p in run.problems)
        body.append(
            '<p class="meta">Problems reading the results directory:</p>'
            f'<ul class="meta">{items}</ul>'
        )
    body.append(
        f'<p class="meta">Rendered {escape(run.generated)} from {escape(str(run.root))} '
        "(re-rendered after every DEFT iteration and by finalize).</p>"
    )
    return document(f"{PIPELINE_TITLE}: {run.root.name}", body)


def _guard(title: str, builder: Section, run: ReportRun) -> str:
    # The report is re-rendered inside the loop: a malformed file must cost one section,
    # never the iteration that asked for the report.
    try:
        return builder(run)
    except Exception as exc:
        log.warning("report section %r could not be rendered: %s", title, exc, exc_info=True)
        return na(f"This section could not be rendered: {first_line(exc)}")
