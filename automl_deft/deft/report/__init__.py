"""``DEFT_Loop_Report.html``: the loop's story on one self-contained page.

The page is rendered from what is on disk only (``deft_state.json``,
``loop_log.jsonl``, the per-iteration files and, after finalize,
``pipeline_summary.json``), so the loop re-renders it after
every iteration and a user can re-render it for any results directory, running,
finished, half-written or moved. Nothing on disk is modified except the report
itself (written atomically).

Self-contained on purpose: every plot and thumbnail is an inline PNG (matplotlib
on the Agg canvas), the style sheet is inline, and there is no script, so the
page works offline, as a mailed attachment, and in the Kubeflow UI's sandboxed
HTML viewer.

Sections, in order: header, KPI banner, headline (the deliverable's FAR on the
KPI/steering set beside its FAR on the untouched hold-out, each with its bootstrap
95% interval, the KPI verdict, why pick-best chose it, and the reviewer notes of
``pipeline_summary.json``), problem statement, KPI dataset characteristics,
approach, progress, per-iteration results (steering interval, validation and
hold-out FAR per phase), sensitivity of the KPI (the defect that sets the
threshold, FAR without the 1–3 hardest defects), augmentation, RCA score
distribution, defect-type analysis, sample of generated data, per-iteration
details, recommendations, final status. A section whose inputs do not exist yet
says "not yet available"; a section that cannot be rendered from a malformed file
says so and the rest of the page is still written. Without
``pipeline_summary.json`` (a DEFT-only run) the page says that no untouched number
exists; the report never reads the hold-out itself.

Modules: :mod:`.load` (the run as the report reads it), :mod:`.overview`,
:mod:`.evidence`, :mod:`.results`, :mod:`.analysis` and :mod:`.recommend` (the sections),
:mod:`.figures` (charts and thumbnails), :mod:`.html` (markup and formats),
:mod:`.render` (the page).

Example::

    from automl_deft.deft.report import render_report

    path = render_report("ws/results/run_20261126_140208")
"""

from __future__ import annotations

from automl_deft.deft.report.analysis import RECALL_LEVELS
from automl_deft.deft.report.load import rebase_into_run
from automl_deft.deft.report.render import (
    REPORT_FILE,
    SECTION_TITLES,
    render_report,
    report_html,
    report_path,
)

__all__ = [
    "RECALL_LEVELS",
    "REPORT_FILE",
    "SECTION_TITLES",
    "rebase_into_run",
    "render_report",
    "report_html",
    "report_path",
    "write_report",
]

write_report = render_report
"""Alias of :func:`render_report`."""
