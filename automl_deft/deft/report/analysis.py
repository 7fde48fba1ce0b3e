"""Where the model is weak: score distributions, defect types, generated samples, details.

These sections read the artefact files of each phase (``inference/kpi_scores.csv``,
``rca_results/*``, ``dataset/*_provenance.csv``, the sample images) besides the state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np
import pandas as pd

from automl_deft.deft.rca import (
    BREAKDOWN_FILE,
    GAPS_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    UNREACHABLE_FILE,
)
from automl_deft.deft.report.figures import pick_samples, sample_figure, score_histogram
from automl_deft.deft.report.html import (
    NOT_YET,
    Num,
    duration,
    fmt,
    fmt_float,
    img,
    na,
    pct,
    ratio_pct,
    table,
)
from automl_deft.deft.report.load import PROVENANCE_MINED, PROVENANCE_SDG, ReportRun
from automl_deft.deft.report.overview import SOURCE_NOTES
from automl_deft.deft.report.results import ROUTES
from automl_deft.deft.report.values import as_list, as_mapping, number
from automl_deft.kpi import format_threshold, threshold_sweep
from automl_deft.workspace import PASS_LABEL, SCORE_COLUMN, normalize_label

__all__ = [
    "MAX_BREAKDOWN_ROWS",
    "RECALL_LEVELS",
    "defect_types",
    "details",
    "rca_scores",
    "samples",
]

RECALL_LEVELS: tuple[float, ...] = (100.0, 99.0, 95.0, 90.0)
"""Recall levels (percent) of the recall-vs-FAR table."""
MAX_BREAKDOWN_ROWS = 10
"""Values shown per breakdown column (the highest lift first)."""


def rca_scores(run: ReportRun) -> str:
    out, sweep_rows = [], []
    for lab in run.labels:
        frame = run.scored(lab)
        if frame is None:
            continue
        labels, scores = frame["label"], frame[SCORE_COLUMN].to_numpy(dtype=np.float64)
        far, name = run.far(lab), run.name(lab)
        title = f"{name}: FAR@100% {far:.2f}%" if far is not None else name
        png = score_histogram(labels, scores, run.threshold(lab), title)
        out.append(f"<h3>{escape(name)}</h3>" + img(png, f"score distribution {name}"))
        sweep_rows.append([name, *(Num(c) for c in _far_at_recalls(labels, scores))])
    if not out:
        return na(f"Score distributions: {NOT_YET.lower()} (no scored KPI set on disk).")
    sweep = table(
        ["step", *(f"FAR @ recall ≥ {r:g}% (threshold)" for r in RECALL_LEVELS)],
        sweep_rows,
        table_id="recall-far-table",
    )
    return "<h3>Recall vs FAR</h3>" + sweep + "".join(out)


def _far_at_recalls(labels: pd.Series, scores: np.ndarray) -> list[str]:
    """ "FAR% (threshold)" at each of :data:`RECALL_LEVELS` (the lowest FAR reaching it)."""
    sweep = threshold_sweep(labels, scores)
    cells = []
    for level in RECALL_LEVELS:
        ok = sweep[(sweep["recall"] >= level / 100 - 1e-12) & sweep["far_pct"].notna()]
        if ok.empty:
            cells.append("—")
            continue
        row = ok[ok["far_pct"] == ok["far_pct"].min()].iloc[-1]
        cells.append(f"{row['far_pct']:.2f}% ({format_threshold(float(row['threshold']))})")
    return cells


def defect_types(run: ReportRun) -> str:
    parts: list[str] = []
    evaluated = [lab for lab in run.labels if run.scored(lab) is not None or run.has_rca(lab)]
    for i, lab in enumerate(evaluated):
        attr = " open" if i == len(evaluated) - 1 else ""
        summary = escape(run.name(lab))
        parts.append(f"<details{attr}><summary>{summary}</summary>{_defects_of(run, lab)}")
        parts.append("</details>")
    if not parts:
        return na(f"Defect-type analysis: {NOT_YET.lower()} (no RCA or scored KPI set on disk).")
    return "".join(parts)


def _defects_of(run: ReportRun, lab: str) -> str:
    rca = run.rca_dir(lab)
    out = []
    unreachable = run.read_text(rca / UNREACHABLE_FILE)
    if unreachable:
        out.append(f'<p class="bad">{escape(unreachable.strip())}</p>')
    findings = run.findings(lab)
    if findings:
        out.append("<ul>" + "".join(f"<li>{escape(f)}</li>" for f in findings) + "</ul>")
    out.append(_label_table(run, lab) or na("Per-label weakness: " + NOT_YET.lower() + "."))
    targets = run.rec(lab).rca_target_defects
    if targets:
        out.append(f"<p>RCA targets: {escape(', '.join(targets))}</p>")
    breakdown = as_mapping(run.read_json(rca / BREAKDOWN_FILE))
    for column, entries in breakdown.items():
        rows = sorted(
            (as_mapping(e) for e in as_list(entries)),
            key=lambda e: -(number(e.get("lift")) or 0.0),
        )[:MAX_BREAKDOWN_ROWS]
        if rows:
            out.append(f"<h4>Weakness by <code>{escape(str(column))}</code></h4>")
            out.append(_breakdown_table(rows))
    return "".join(out)


def _breakdown_table(rows: list[dict[str, Any]]) -> str:
    """One ``breakdown.json`` column: its values, highest lift first."""
    return table(
        [
            "value",
            "rows",
            "PASS",
            "defects",
            "false alarms",
            "FAR",
            "weak",
            "row share",
            "weak share",
            "lift",
        ],
        [
            [
                fmt(e.get("value")),
                Num(fmt(e.get("rows"))),
                Num(fmt(e.get("pass"))),
                Num(fmt(e.get("defects"))),
                Num(fmt(e.get("false_alarms"))),
                Num(pct(number(e.get("far_pct")))),
                Num(fmt(e.get("weak"))),
                Num(ratio_pct(e.get("row_share"))),
                Num(ratio_pct(e.get("weak_share"))),
                Num(fmt_float(e.get("lift"))),
            ]
            for e in rows
        ],
    )


@dataclass
class _LabelStats:
    """One row of the per-label weakness table."""

    rows: int | None = None
    weak: int | None = None
    false_alarms: int | None = None
    lowest: float | None = None
    forced: float | None = None


def _label_table(run: ReportRun, lab: str) -> str:
    """Per label: rows, weak rows, false alarms, lowest score and the FAR it forces.

    Read from RCA's ``metrics.json`` (``per_label``), else ``kpi_gaps.parquet``; the
    lowest score (and, without RCA files, the forced FAR) comes from the scored set.
    """
    stats: dict[str, _LabelStats] = {}
    frame = run.scored(lab)
    if frame is not None:
        scores = frame[SCORE_COLUMN].to_numpy(dtype=np.float64)
        names = frame["label"].map(normalize_label).to_numpy(dtype=object)
        pass_scores = scores[names == PASS_LABEL]
        threshold = run.threshold(lab)
        for name in sorted(set(names)):
            mine = scores[names == name]
            entry = stats.setdefault(str(name), _LabelStats(rows=len(mine)))
            if name == PASS_LABEL:
                if threshold is not None:
                    entry.false_alarms = int((mine > threshold).sum())
                continue
            entry.lowest = float(mine.min())
            if len(pass_scores):
                entry.forced = float((pass_scores >= mine.min()).mean() * 100)
    metrics = as_mapping(run.read_json(run.rca_dir(lab) / METRICS_FILE))
    per_label = [as_mapping(e) for e in as_list(metrics.get("per_label"))]
    gaps = None if per_label else run.read_parquet(run.rca_dir(lab) / GAPS_FILE)
    if gaps is not None and {"label", "is_weak"} <= set(gaps.columns):
        for name, group in gaps.groupby(gaps["label"].map(normalize_label)):
            entry = stats.setdefault(str(name), _LabelStats(rows=len(group)))
            entry.weak = int(group["is_weak"].astype(bool).sum())
            if "forced_far_pct" in group.columns and name != PASS_LABEL:
                forced = number(pd.to_numeric(group["forced_far_pct"], errors="coerce").max())
                entry.forced = forced if forced is not None else entry.forced
    for e in per_label:  # metrics.json: {label, n, weak, fp_at_t, max_forced_far_pct, …}
        entry = stats.setdefault(normalize_label(e.get("label")), _LabelStats())
        for key, src in (("rows", "n"), ("weak", "weak"), ("false_alarms", "fp_at_t")):
            if (value := number(e.get(src))) is not None:
                setattr(entry, key, int(value))
        if (forced := number(e.get("max_forced_far_pct"))) is not None:
            entry.forced = forced
    if not stats:
        return ""
    defects = [(n, s) for n, s in stats.items() if n != PASS_LABEL]
    driver = max(defects, key=lambda d: d[1].forced or 0.0, default=None)
    ordered = [(n, s) for n, s in stats.items() if n == PASS_LABEL]
    ordered += sorted(defects, key=lambda d: (-(d[1].forced or 0.0), d[0]))
    rows = [
        [
            name + (" (sets the threshold)" if driver and driver[0] == name else ""),
            Num(fmt(s.rows)),
            Num(fmt(s.weak)),
            Num(fmt(s.false_alarms) if name == PASS_LABEL else ""),
            Num(fmt_float(s.lowest) if name != PASS_LABEL else ""),
            Num(pct(s.forced) if name != PASS_LABEL else ""),
        ]
        for name, s in ordered
    ]
    return table(
        ["label", "rows", "weak rows (RCA)", "false alarms", "lowest score", "max forced FAR"],
        rows,
        table_id=f"labels-{lab}",
    ) + (
        '<p class="meta">Max forced FAR: the FAR a threshold just below the label\'s '
        "lowest-scoring defect gives; the label with the highest one sets the recall-100 "
        "threshold. False alarms: PASS rows above the threshold.</p>"
    )


def samples(run: ReportRun) -> str:
    out: list[str] = []
    for lab in run.iteration_labels:
        prov, head = run.provenance(lab), f"<h3>{escape(run.name(lab))}</h3>"
        if prov is None:
            out.append(head + na(f"{NOT_YET} (no provenance CSV)."))
            continue
        picked = pick_samples(prov)
        if picked.empty:
            out.append(head + na("No generated or mined rows."))
            continue
        if run.images_dir is None:
            out.append(head + na("No images_dir in the state's config."))
            continue
        counts = prov["source"].value_counts()
        figures = "".join(
            sample_figure(row, run.image_file, run.naming) for _, row in picked.iterrows()
        )
        out.append(
            f'{head}<p class="meta">{int(counts.get(PROVENANCE_SDG, 0))} '
            f"synthetic and {int(counts.get(PROVENANCE_MINED, 0))} mined rows added; "
            f"{len(picked)} shown (input | golden | |diff|).</p>"
            f'<div class="flex samples">{figures}</div>'
        )
    if not out:
        return na(f"Generated data: {NOT_YET.lower()} (no iteration has assembled a dataset).")
    return "".join(out)


def details(run: ReportRun) -> str:
    if not run.labels:
        return na(f"Details: {NOT_YET.lower()}.")
    parts = []
    for lab in run.labels:
        attr = " open" if lab == run.labels[-1] else ""
        summary = escape(run.name(lab))
        parts.append(f"<details{attr}><summary>{summary}</summary>{_details_of(run, lab)}")
        parts.append("</details>")
    return "".join(parts)


def _details_of(run: ReportRun, lab: str) -> str:
    rec, state = run.rec(lab), run.state
    body = []
    facts = [
        ("status", rec.status),
        ("stage completed", rec.stage_completed),
        ("source", SOURCE_NOTES.get(rec.source, rec.source) if rec.source else None),
        ("training CSV", state.path_of(lab, "train_csv")),
        ("checkpoint", state.path_of(lab, "best_ckpt_path")),
        ("inference CSV", state.path_of(lab, "inference_csv")),
        ("validation loss", rec.val_loss),
        ("RCA targets", ", ".join(rec.rca_target_defects or []) or None),
    ]
    body.append(table(None, [[k, fmt(v)] for k, v in facts if v not in (None, "")]))
    if rec.error is not None:
        body.append(
            f'<p class="bad">Error in {escape(fmt(rec.error.stage))}: '
            f"{escape(fmt(rec.error.message))}</p>"
        )
    if rec.durations:
        spent = sum(rec.durations.values())
        rows = [[k, Num(duration(v))] for k, v in rec.durations.items()]
        body.append(table(["stage", "duration"], [*rows, ["total", Num(duration(spent))]]))
    if rec.routing is not None:
        routing = rec.routing
        body.append(
            table(
                ["route", "labels (weak rows)"],
                [
                    # weak-row counts are kept for the routed labels (none for "dropped")
                    [
                        route,
                        _route_labels(getattr(routing, route), getattr(routing.rows, route, {})),
                    ]
                    for route in ROUTES
                ],
            )
        )
    warnings = [f"sdg: {w}" for w in (rec.sdg.warnings if rec.sdg else [])]
    warnings += [f"mining: {w}" for w in (rec.mining.warnings if rec.mining else [])]
    if warnings:
        body.append("<ul>" + "".join(f"<li>{escape(w)}</li>" for w in warnings) + "</ul>")
    entries = [e for e in run.log if e.iter == lab]
    if entries:
        body.append(
            table(
                ["seq", "time", "stage", "status", "summary", "duration"],
                [
                    [
                        Num(e.seq),
                        e.ts,
                        e.stage,
                        e.status,
                        fmt(e.summary),
                        Num(duration(e.duration_sec)),
                    ]
                    for e in entries
                ],
            )
        )
    summary_md = run.read_text(run.rca_dir(lab) / SUMMARY_FILE)
    if summary_md:
        body.append(
            f"<details><summary>RCA summary</summary><pre>{escape(summary_md)}</pre></details>"
        )
    metrics = run.read_json(run.rca_dir(lab) / METRICS_FILE)
    if metrics is not None:
        text = escape(json.dumps(metrics, indent=2, default=str))
        body.append(f"<details><summary>RCA metrics</summary><pre>{text}</pre></details>")
    return "".join(body)


def _route_labels(labels: list[str], rows: dict[str, int]) -> str:
    shown = [f"{lab} ({rows[lab]})" if lab in rows else lab for lab in labels]
    return ", ".join(shown) or "—"
