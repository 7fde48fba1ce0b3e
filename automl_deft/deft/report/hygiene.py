"""The rows that entered training, checked: duplicates refused and likely label errors flagged.

Before assemble, every new row of an iteration (generated and mined) is screened
(``hygiene`` in the config): an exact content hash and a pair-aware near-duplicate
test against the training set and the rest of the batch refuse copies, and a label
screen flags rows whose label the current model's out-of-sample score and/or the
independent check contradict. This section reads what the checks recorded: the
state's :class:`~automl_deft.records.HygieneSummary` (else the dataset folder's
``hygiene.json``), ``hygiene_flagged.csv`` (shown as thumbnails, capped at
:data:`~.figures.MAX_FLAGGED_PER_ITERATION` per iteration) and
``hygiene_refused.csv`` (listed). A run that predates the checks, or ran with them
disabled, says so.
"""

from __future__ import annotations

from html import escape

from automl_deft.deft.report.figures import (
    MAX_FLAGGED_PER_ITERATION,
    flagged_caption,
    sample_figure,
)
from automl_deft.deft.report.html import NOT_YET, Num, fmt, na, table
from automl_deft.deft.report.load import HYGIENE_FLAGGED_FILE, HYGIENE_REFUSED_FILE, ReportRun
from automl_deft.deft.report.values import number
from automl_deft.records import HygieneSummary

__all__ = ["MAX_REFUSED_ROWS", "hygiene", "hygiene_counts"]

MAX_REFUSED_ROWS = 50
"""Refused rows listed per iteration (the rest are counted)."""

_COUNTS = (
    ("candidates", "candidates"),
    ("exact_duplicates", "exact duplicates refused"),
    ("near_duplicates", "near duplicates refused"),
    ("flagged_label_errors", "flagged as likely label errors"),
    ("excluded_label_errors", "flagged and excluded"),
    ("kept", "kept"),
)
"""The counts of a :class:`~automl_deft.records.HygieneSummary` (and of each source), as
the table names them."""

_CHECKS = (
    "Exact duplicate: the same image content as a training row or an earlier candidate. "
    "Near duplicate: a golden showing the same place (golden similarity above its threshold) "
    "and the same registered difference (cosine of the difference descriptors above "
    "near_duplicate_similarity). Both are refused. Likely label error: the label is "
    "contradicted by the current model's out-of-sample score and/or the independent check; "
    "such rows are listed below and kept unless label_errors is exclude. Kept: the rows that "
    "went on to assemble."
)


def hygiene(run: ReportRun) -> str:
    """The section: per iteration and source what each check refused or flagged, the
    thresholds, the flagged rows as thumbnails and the refused rows as a list."""
    iters = run.iteration_labels
    if not iters:
        return na(f"Row hygiene: {NOT_YET.lower()} (no iteration has started).")
    screened = [lab for lab in iters if _has_hygiene(run, lab)]
    if not screened:
        if not run.config.hygiene.enabled:
            return na(
                "Row hygiene is disabled (hygiene.enabled: false): the added rows were not "
                "checked for duplicates or label errors."
            )
        return na(
            f"Row hygiene: {NOT_YET.lower()} (no iteration has recorded its checks: none has "
            "assembled a dataset yet, or the run predates the checks)."
        )
    rows: list[list[object]] = []
    warnings: list[str] = []
    for lab in screened:
        summary = run.hygiene(lab)
        if summary is None:
            rows.append([run.name(lab), "—", *(Num("—") for _ in _COUNTS)])
            continue
        rows.extend([run.name(lab), source, *cells] for source, cells in _rows_of(summary))
        warnings += [f"{run.name(lab)}: {run.readable(w)}" for w in summary.warnings]
    out = [
        table(
            ["iteration", "source", *(title for _, title in _COUNTS)],
            rows,
            table_id="hygiene-table",
        ),
        f'<p class="meta" id="hygiene-thresholds">{escape(_thresholds_caption(run, screened))} '
        f"{escape(_CHECKS)}</p>",
    ]
    if warnings:
        out.append("<ul>" + "".join(f"<li>{escape(w)}</li>" for w in warnings) + "</ul>")
    for lab in screened:
        out.append(_flagged(run, lab))
        out.append(_refused(run, lab))
    return "".join(out)


def hygiene_counts(summary: HygieneSummary) -> tuple[int, int]:
    """(duplicates refused, rows flagged as likely label errors) of one iteration."""
    return summary.exact_duplicates + summary.near_duplicates, summary.flagged_label_errors


def _has_hygiene(run: ReportRun, label: str) -> bool:
    return run.hygiene(label) is not None or any(
        run.hygiene_path(label, name).is_file()
        for name in (HYGIENE_FLAGGED_FILE, HYGIENE_REFUSED_FILE)
    )


def _rows_of(summary: HygieneSummary) -> list[tuple[str, list[Num]]]:
    """(source, count cells) per source, then all sources together when there are several."""

    def cells(counts: dict[str, int]) -> list[Num]:
        return [Num(fmt(counts.get(key))) for key, _ in _COUNTS]

    whole = {key: getattr(summary, key) for key, _ in _COUNTS}
    per_source = [(source, cells(c)) for source, c in sorted(summary.by_source.items())]
    if len(per_source) == 1 and summary.by_source[per_source[0][0]] == whole:
        return per_source
    return [*per_source, ("all sources", cells(whole))]


def _thresholds_caption(run: ReportRun, labels: list[str]) -> str:
    """``Thresholds: near_duplicate_similarity 0.95 · …`` (per iteration when they differ)."""
    texts: dict[str, list[str]] = {}
    for lab in labels:
        summary = run.hygiene(lab)
        if summary is None or not summary.thresholds:
            continue
        text = " · ".join(f"{k} {fmt(v)}" for k, v in sorted(summary.thresholds.items()))
        texts.setdefault(text, []).append(run.name(lab))
    if not texts:
        return "Thresholds: not recorded."
    if len(texts) == 1:
        return f"Thresholds: {next(iter(texts))}."
    return "Thresholds: " + "; ".join(f"{t} ({', '.join(names)})" for t, names in texts.items())


def _flagged(run: ReportRun, label: str) -> str:
    """``label``'s rows flagged as likely label errors, as captioned thumbnails."""
    head = f"<h3>{escape(run.name(label))}: rows flagged as likely label errors</h3>"
    summary = run.hygiene(label)
    frame = run.hygiene_rows(label, HYGIENE_FLAGGED_FILE)
    path = run.layout.rel(run.hygiene_path(label, HYGIENE_FLAGGED_FILE))
    if frame is None:
        if summary is not None and summary.flagged_label_errors:
            return head + na(
                f"{summary.flagged_label_errors} row(s) flagged, but {path} is not on disk."
            )
        return ""
    if frame.empty:
        return head + na("No row flagged.")
    if run.images_dir is None:
        return head + na(f"{len(frame)} row(s) flagged; no images_dir in the state's config.")
    excluded = summary is not None and summary.excluded_label_errors > 0
    fate = "left out of the training set" if excluded else "kept in the training set"
    shown = frame.head(MAX_FLAGGED_PER_ITERATION)
    more = len(frame) - len(shown)
    rest = f"; {more} more not shown (all in {path})" if more else f" (listed in {path})"
    figures = "".join(
        sample_figure(
            row,
            run.image_file,
            run.naming,
            flagged_caption(row, run.readable(str(row.get("label_error_reason", "")))),
        )
        for _, row in shown.iterrows()
    )
    return (
        f'{head}<p class="meta">{len(frame)} row(s) flagged, {escape(fate)}; {len(shown)} '
        f"shown (input | golden | |diff|){escape(rest)}.</p>"
        f'<div class="flex samples" id="flagged-{escape(label)}">{figures}</div>'
    )


def _refused(run: ReportRun, label: str) -> str:
    """``label``'s refused duplicates as a collapsed list."""
    frame = run.hygiene_rows(label, HYGIENE_REFUSED_FILE)
    if frame is None or frame.empty:
        return ""
    shown = frame.head(MAX_REFUSED_ROWS)
    rows = [
        [
            fmt(row.get("object_name")),
            fmt(row.get("label")),
            fmt(row.get("source")),
            fmt(str(row.get("hygiene_check", "")).replace("_", " ")),
            fmt(row.get("duplicate_of")),
            Num(_similarity(row.get("similarity"))),
        ]
        for _, row in shown.iterrows()
    ]
    more = len(frame) - len(shown)
    path = run.layout.rel(run.hygiene_path(label, HYGIENE_REFUSED_FILE))
    note = f'<p class="meta">{more} more in {escape(str(path))}.</p>' if more else ""
    return (
        f"<details><summary>{escape(run.name(label))}: {len(frame)} duplicate row(s) "
        "refused</summary>"
        + table(
            ["object_name", "label", "source", "check", "duplicate of", "similarity"],
            rows,
            table_id=f"refused-{label}",
        )
        + note
        + "</details>"
    )


def _similarity(value: object) -> str:
    num = number(value)
    return "—" if num is None else f"{num:.4f}"
