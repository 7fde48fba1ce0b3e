"""Numbers a reviewer can trust: the headline, the hold-out cells and the KPI's sensitivity.

The KPI (steering) set chose the model: evaluate picked checkpoints on it, RCA and
mining aimed at its failures, pick-best ranked the phases on it. Its FAR is
therefore optimistic, and the page says so next to the number. Finalize writes
``pipeline_summary.json`` after every choice is made, with each step scored on the
untouched hold-out (``kpi/holdout_set.csv``) and the notes a reviewer must read;
this module shows them. The report never reads the hold-out itself: a DEFT-only
run (no summary) says plainly that no untouched number exists.

The sensitivity section shows how much the steering FAR hangs on a few rows: the
defect that sets the recall-100 threshold
(:func:`~automl_deft.kpi.threshold_setter`) and the FAR if the 1, 2, 3 hardest
defects were caught by other means (:func:`~automl_deft.kpi.drop_n_sensitivity`).
"""

from __future__ import annotations

from html import escape

import numpy as np

from automl_deft.deft.report.html import (
    NOT_YET,
    Num,
    Raw,
    delta_html,
    far_ci,
    fmt,
    na,
    pct,
    table,
    thr,
)
from automl_deft.deft.report.load import ReportRun
from automl_deft.deft.report.values import first_line
from automl_deft.errors import AutomlDeftError, KPIError
from automl_deft.kpi import (
    KPITarget,
    compute_kpi,
    drop_n_sensitivity,
    parse_target,
    threshold_setter,
)
from automl_deft.records import HoldoutScore
from automl_deft.workspace import SCORE_COLUMN

__all__ = [
    "DROP_N",
    "HOLDOUT_TITLE",
    "NOT_SCORED_NOTE",
    "NO_SUMMARY_SENTENCE",
    "STEERING_TITLE",
    "headline",
    "holdout_cell",
    "holdout_of",
    "sensitivity",
]

DROP_N = 3
"""The sensitivity table removes the 1, 2, …, ``DROP_N`` hardest defects."""

STEERING_TITLE = "KPI (steering) set — chose the model"
HOLDOUT_TITLE = "untouched hold-out — steered nothing"

NO_SUMMARY_SENTENCE = (
    "No untouched number exists: this run has no pipeline_summary.json (a DEFT-only run, "
    "or finalize has not run yet), so every FAR in this report is measured on the KPI set "
    "that steered the run."
)
"""What the hold-out card says when finalize has not written its evidence."""

NOT_SCORED_NOTE = "the deliverable was not scored on the hold-out"
"""The reason shown when the summary has no hold-out score and no ``holdout_note``."""

_STEERED = (
    "FAR at 100% recall, bootstrap 95% interval. This set picked the checkpoints, guided "
    "RCA and mining and ranked the phases, so its number is optimistic."
)


# ------------------------------------------------------------------------ the headline


def headline(run: ReportRun) -> str:
    """The deliverable's steering FAR beside its hold-out FAR, the verdict, why, and notes."""
    label = run.deliverable_label()
    summary = run.summary
    out = []
    if label is None:
        out.append(na(f"Headline numbers: {NOT_YET.lower()} (no phase has been evaluated)."))
    else:
        out.append(
            '<div class="headline" id="headline">'
            + _steering_card(run, label)
            + _holdout_card(run, label)
            + "</div>"
        )
    out.append(_verdict(run, label))
    because = _chosen_because(run)
    if because:
        because = run.readable(because)
        out.append(f'<p id="chosen-because"><b>Chosen because</b>: {escape(because)}.</p>')
    if summary is not None and summary.best is not None and summary.best.iteration != label:
        out.append(
            f'<p class="bad">pipeline_summary.json was written when the deliverable was '
            f"{escape(run.name(summary.best.iteration))}; the run now ships "
            f"{escape(run.name(label) if label else fmt(label))}. Its "
            "hold-out numbers are those finalize recorded; run finalize again for current "
            "ones.</p>"
        )
    notes = [] if summary is None else summary.notes
    if notes:
        items = "".join(f"<li>{escape(run.readable(n))}</li>" for n in notes)
        out.append(
            '<div class="callout" id="review-notes"><b>Read before trusting these numbers</b>'
            f"<ul>{items}</ul></div>"
        )
    return "".join(out)


def _steering_card(run: ReportRun, label: str) -> str:
    summary, deliverable = run.summary, run.deliverable
    far = run.far(label)
    if deliverable is not None and deliverable.iteration == label:
        far = deliverable.far_pct
    ci = run.steering_ci(label)
    if summary is not None and summary.best is not None and summary.best.iteration == label:
        ci = summary.far_pct_ci95 or ci
    who = "the deliverable" if deliverable is not None else "the best phase so far"
    return (
        f'<div class="card steering" id="steering-far"><h3>{escape(STEERING_TITLE)}</h3>'
        f'<p class="big">{escape(far_ci(far, ci))}</p>'
        f'<p class="meta">{escape(run.name(label))} ({escape(who)}). {escape(_STEERED)}</p></div>'
    )


def holdout_of(run: ReportRun, label: str) -> HoldoutScore | None:
    """``label``'s hold-out score as finalize recorded it (None: none recorded)."""
    summary = run.summary
    if summary is None:
        return None
    if summary.best is not None and summary.best.iteration == label and summary.holdout:
        return summary.holdout
    step = run.step(label)
    return None if step is None else step.holdout


def _holdout_card(run: ReportRun, label: str) -> str:
    summary = run.summary
    held = holdout_of(run, label)
    if summary is None and run.layout.summary.is_file():
        return _no_holdout_card(
            "No untouched number can be shown: pipeline_summary.json could not be read (see "
            "the problems at the end of the page), so every FAR shown here is measured on the "
            "KPI set that steered the run."
        )
    if summary is None:
        return _no_holdout_card(NO_SUMMARY_SENTENCE)
    if held is None:
        why = summary.holdout_note or NOT_SCORED_NOTE
        return _no_holdout_card(
            f"No untouched number exists ({why}): every FAR in this report is measured on "
            "the KPI set that steered the run."
        )
    counts = f"{held.rows} rows ({held.n_pass} PASS, {held.n_defect} defect)"
    if held.far_pct is None:
        return _no_holdout_card(
            f"No untouched FAR: {held.reason or 'the KPI is undefined on the hold-out'}; {counts}."
        )
    detail = (
        f"{run.name(label)} on {counts}, at the hold-out's own recall-100 threshold "
        f"{thr(held.threshold)}; bootstrap 95% interval. Nothing was chosen on this set."
    )
    deployed = _deployed(held)
    return (
        f'<div class="card holdout" id="holdout-far"><h3>{escape(HOLDOUT_TITLE)}</h3>'
        f'<p class="big">{escape(far_ci(held.far_pct, held.ci95))}</p>'
        f'<p class="meta">{escape(detail)}</p>'
        + (f"<p>{escape(deployed)}</p>" if deployed else "")
        + "</div>"
    )


def _no_holdout_card(text: str) -> str:
    return (
        f'<div class="card none" id="holdout-far"><h3>{escape(HOLDOUT_TITLE)}</h3>'
        f"<p><b>{escape(text)}</b></p></div>"
    )


def _deployed(held: HoldoutScore) -> str:
    """What the shipped threshold (chosen on the steering set) gives on the hold-out."""
    if held.deployed_threshold is None:
        return ""
    parts = [f"FAR {pct(held.deployed_far_pct)}"]
    if held.deployed_recall is not None:
        parts.append(f"recall {held.deployed_recall * 100:.1f}%")
    if held.deployed_missed is not None:
        parts.append(f"{held.deployed_missed} missed defect(s)")
    shipped = (
        f"At the shipped threshold {thr(held.deployed_threshold)} (chosen on the steering set)"
    )
    return f"{shipped}: " + ", ".join(parts) + "."


def _verdict(run: ReportRun, label: str | None) -> str:
    summary = run.summary
    if summary is None or summary.kpi_met is None:
        return ""
    target_text = summary.kpi_target or run.target_text
    if summary.kpi_met:
        text = f"KPI target {target_text} met on the KPI (steering) set"
        css = "good"
    else:
        gap = "" if summary.kpi_gap_pp is None else f": {summary.kpi_gap_pp:.2f} pp above the bound"
        text = f"KPI target {target_text} not met on the KPI (steering) set{gap}"
        css = "bad"
    held = None if label is None else holdout_of(run, label)
    target = _target(target_text)
    if held is not None and held.far_pct is not None and target is not None:
        gap_pp = target.gap_pp(held.far_pct)
        if target.is_met(held.far_pct):
            text += "; met on the untouched hold-out"
        elif gap_pp is not None:
            text += f"; not met on the untouched hold-out ({gap_pp:.2f} pp above the bound)"
    return f'<p id="kpi-verdict" class="{css}"><b>KPI verdict</b>: {escape(text)}.</p>'


def _target(text: str) -> KPITarget | None:
    try:
        return parse_target(text)
    except AutomlDeftError:
        return None


def _chosen_because(run: ReportRun) -> str | None:
    if run.deliverable is not None and run.deliverable.chosen_because:
        return run.deliverable.chosen_because
    summary = run.summary
    if summary is not None and summary.best is not None:
        return summary.best.chosen_because
    return None


def holdout_cell(run: ReportRun, label: str) -> str:
    """``label``'s hold-out FAR [interval] for a table cell (``—`` when none recorded)."""
    held = holdout_of(run, label)
    if held is None:
        return "—"
    if held.far_pct is None:
        return f"unavailable ({held.reason})" if held.reason else "unavailable"
    return far_ci(held.far_pct, held.ci95)


# -------------------------------------------------------------------------- sensitivity


def sensitivity(run: ReportRun) -> str:
    """Who sets the threshold of the deliverable, and FAR without the hardest defects."""
    label = run.deliverable_label()
    if label is None:
        return na(f"Sensitivity: {NOT_YET.lower()} (no phase has been evaluated).")
    frame = run.scored(label)
    if frame is None:
        return na(
            f"Sensitivity: {NOT_YET.lower()} (no scored KPI set on disk for {run.name(label)})."
        )
    labels = frame["label"]
    scores = frame[SCORE_COLUMN].to_numpy(dtype=np.float64)
    try:
        full = compute_kpi(labels, scores)
        setter = threshold_setter(frame)
        drops = drop_n_sensitivity(labels, scores, n_max=DROP_N)
    except KPIError as exc:
        return na(f"Sensitivity of {run.name(label)}: {first_line(exc)}")
    assert full.far_pct is not None  # threshold_setter raises when the KPI is undefined
    n_defect, n = full.n_defect, len(frame)

    def who(position: int) -> str:
        row = frame.iloc[position]
        name = str(row["object_name"]) if "object_name" in frame.columns else f"row {position}"
        return f"{name} ({row['label']}, {thr(float(scores[position]))})"

    setter_rows = [
        ["object_name", fmt(setter.object_name)],
        ["label", setter.label],
        ["boardname", fmt(setter.boardname)],
        ["score", thr(setter.score)],
    ]
    if setter.ties > 1:
        setter_rows.append(["defects tied at that score", Num(setter.ties)])
    rows: list[list[object]] = [
        ["0 (as measured)", Num(pct(full.far_pct)), "—", Num(thr(full.threshold)), "—"]
    ]
    for d in drops:
        rows.append(
            [
                str(d.n),
                Num(pct(d.far_pct)),
                Raw(delta_html(d.far_pct - full.far_pct)),
                Num(thr(d.threshold)),
                # without ``names`` the dropped rows are 0-based positions (ints)
                "; ".join(who(p) for p in d.dropped if isinstance(p, int)),
            ]
        )
    short = (
        f" Only {len(drops)} can be removed: at least one defect must remain."
        if len(drops) < DROP_N
        else ""
    )
    return (
        f"<p>On {escape(run.name(label))}'s scored KPI (steering) set: {n} rows, "
        f"{n_defect} defect. "
        f"The recall-100 threshold {escape(thr(full.threshold))} is set by the "
        f"lowest-scored defect <b>{escape(fmt(setter.object_name))}</b> "
        f"({escape(setter.label)}, board {escape(fmt(setter.boardname))}, score "
        f"{escape(thr(setter.score))}); one row decides the whole KPI.</p>"
        + table(None, setter_rows, table_id="threshold-setter")
        + "<h3>If the hardest defects were caught by other means</h3>"
        + table(
            [
                "hardest defects removed",
                "FAR@100%",
                "Δ vs as measured (pp)",
                "threshold",
                "removed (hardest first)",
            ],
            rows,
            table_id="drop-n-table",
        )
        + '<p class="meta">FAR at 100% recall on the rest of the steering set when the 1, 2, '
        f"{DROP_N} lowest-scored defects are left out (e.g. caught by a second inspection). "
        f"A large drop means a handful of rows sets the KPI.{escape(short)}</p>"
    )
