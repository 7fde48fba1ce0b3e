"""``DEFT_Loop_Report.html``: the whole run's story on one self-contained page.

The page ("automl-deft run report") covers the pipeline: Phase 1 AutoML, the DEFT
loop (Phase 2), Phase 3 AutoML and finalize. It is rendered from what is on disk
only (``deft_state.json``, ``loop_log.jsonl``, the per-iteration files, each
search's ``automl_result.json`` and Optuna journal and, after finalize,
``pipeline_summary.json`` and the hold-out scores), so the loop re-renders it after
every iteration, finalize once more, and a user can re-render it for any results
directory, running, finished, half-written or moved. Nothing on disk is modified
except the report itself (written atomically).

Self-contained on purpose: every plot and thumbnail is an inline PNG (matplotlib
on the Agg canvas), the style sheet is inline, and there is no script, so the
page works offline, as a mailed attachment, and in the Kubeflow UI's sandboxed
HTML viewer.

Sections, in order: header (the stage, finalized or where it runs, and the total
time with each phase's), KPI banner, headline (the deliverable's FAR on the
KPI/steering set beside its FAR on the untouched hold-out, each with its bootstrap
95% interval, the KPI verdict, why pick-best chose it, and the reviewer notes of
``pipeline_summary.json``), problem statement, KPI dataset characteristics,
approach, pipeline at a glance (each phase's start, duration, result), Phase 1
AutoML (trials, winner, guards), progress, results per step (steering interval,
validation and hold-out FAR per step), FAR contributions (defect type × step and
board × step, on the KPI set and the hold-out), sensitivity of the KPI (the defect
that sets the threshold, FAR without the 1–3 hardest defects), augmentation (each
iteration's SDG budget: asked, made, what could not be routed and why, the independent
PASS check), row hygiene (duplicates refused and likely label errors flagged, per
iteration and source, the flagged rows as thumbnails), RCA score distribution,
defect-type analysis, sample of generated data, per-iteration
details, Phase 3 AutoML (warm start, trials, kept or rolled back and why),
recommendations, final status. Steps are named for a reader (``Phase 1 winner``,
``DEFT iter 1``, ``Phase 3 winner``: :mod:`.names`), never by their file labels. A
section whose inputs do not exist yet says "not yet available"; a section that
cannot be rendered from a malformed file says so and the rest of the page is still
written. Without ``pipeline_summary.json`` (a DEFT-only run) the page says that no
untouched number exists; hold-out rows are shown only from the scores finalize wrote
after every choice was made.

Modules: :mod:`.load` (the run as the report reads it), :mod:`.overview`,
:mod:`.evidence`, :mod:`.pipeline`, :mod:`.results`, :mod:`.contributions`, :mod:`.hygiene`,
:mod:`.analysis` and :mod:`.recommend` (the sections), :mod:`.names` (a reader's words
for the files' labels), :mod:`.figures` (charts and thumbnails), :mod:`.html` (markup and
formats), :mod:`.render` (the page).

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
