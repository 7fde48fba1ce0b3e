"""The page's opening: header and status line, KPI banner, problem, KPI dataset, approach."""

from __future__ import annotations

import json
from html import escape

import pandas as pd

from automl_deft.deft.report.evidence import holdout_of
from automl_deft.deft.report.html import NOT_YET, Num, Raw, duration, fmt, na, share, table
from automl_deft.deft.report.load import ReportRun
from automl_deft.deft.report.pipeline import FINALIZED, header_facts, run_stage, total_time
from automl_deft.deft.state import HARD_STOPPED, IN_PROGRESS, NEEDS_REVIEW, stages_of
from automl_deft.phases import (
    BASELINE,
    SOURCE_PHASE1,
    SOURCE_PHASE3,
    SOURCE_TRAINED_HERE,
    iteration_label,
)
from automl_deft.workspace import REQUIRED_COLUMNS, SCORE_COLUMN, is_pass, normalize_label

__all__ = [
    "MAX_METADATA_VALUES",
    "SOURCE_NOTES",
    "approach",
    "banner",
    "dataset",
    "header",
    "problem",
    "status_line",
]

MAX_METADATA_VALUES = 30
"""A metadata column with more distinct values than this is an identifier, not a category."""

SOURCE_NOTES = {
    SOURCE_PHASE1: "AutoML Phase 1 winner, reused",
    SOURCE_TRAINED_HERE: "trained by the loop",
    "deft": "DEFT fine-tune",
    SOURCE_PHASE3: "AutoML Phase 3 (warm-started)",
}
"""What each ``iterations.<label>.source`` means, in the tables' words."""


def header(run: ReportRun) -> str:
    state = run.state
    done = state.current_iteration
    facts = [
        ("Generated", run.generated),
        ("KPI target", run.target_text),
        *header_facts(run),
        ("DEFT iterations", f"{done}/{state.max_iterations}"),
        ("DEFT status", run.status.replace("_", " ")),
        ("DEFT started", fmt(state.started_at)),
        ("Updated", fmt(state.updated_at)),
        ("Results", str(run.root)),
    ]
    if state.created_in and state.created_in != str(run.root.resolve()):
        facts.append(("Created in", state.created_in))
    items = " · ".join(f"<b>{escape(k)}</b>: {escape(v)}" for k, v in facts)
    return (
        f'<p class="meta" id="run-facts">{items}</p>'
        f'<p><code id="status-line">{escape(status_line(run))}</code></p>'
    )


def status_line(run: ReportRun) -> str:
    """The one-line status of the run.

    While the loop runs: ``[Phase 2 DEFT · iter 2/3 · train] FAR 26.54% → 11.14% (target …)
    · total 11m · next: evaluate``; after finalize: ``[finalized] Phase 1 winner 26.54% →
    DEFT iter 1 11.14% → Phase 3 winner 0.18% on the KPI set · deliverable Phase 3 winner,
    hold-out 67.23% (target …) · total 9m``.
    """
    state = run.state
    stage = run_stage(run)
    parts = [f"[{stage}]"]
    if stage == FINALIZED:
        steps = [
            f"{run.name(lab)} {far:.2f}%" for lab in run.labels if (far := run.far(lab)) is not None
        ]
        if steps:
            parts.append(" → ".join(steps) + " on the KPI set")
        label = run.deliverable_label()
        if label is not None:
            held = holdout_of(run, label)
            parts.append(
                f"· deliverable {run.name(label)}"
                + (f", hold-out {held.far_pct:.2f}%" if held and held.far_pct is not None else "")
            )
    else:
        base, best = run.far(BASELINE), run.best()
        if base is not None:
            moved = best is not None and best.label != BASELINE
            parts.append(f"FAR {base:.2f}%" + (f" → {best.far_pct:.2f}%" if best and moved else ""))
    parts.append(f"(target {run.target_text})")
    total = total_time(run)
    if total:
        parts.append(f"· total {duration(total)}")
    if run.status == IN_PROGRESS and stage != FINALIZED:
        current = state.current_iteration
        label = iteration_label(current)
        done = run.rec(label).stage_completed or "start"
        order = stages_of(label)
        after = order.index(done) + 1 if done in order else 0
        nxt = order[after] if after < len(order) else None
        if nxt is None and current < state.max_iterations:
            nxt = f"{iteration_label(current + 1)} routing"
        if nxt:
            parts.append(f"· next: {nxt}")
    return " ".join(parts)


def banner(run: ReportRun) -> str:
    target, best = run.target, run.best()
    far = None if best is None else best.far_pct
    reason = run.state.stop_reason or "no reason recorded"
    detail = (
        "no KPI measured yet" if best is None else f"best FAR {far:.2f}% ({run.name(best.label)})"
    )
    detail += f" · target {run.target_text}"
    if run.status == HARD_STOPPED:
        css, text = "stopped", f"HARD STOPPED: {reason}"
    elif run.status == NEEDS_REVIEW:
        css, text = "review", f"NEEDS REVIEW: {reason}"
    elif target is not None and target.is_met(far):
        css, text = "met", "MET"
    elif run.status == IN_PROGRESS:
        css, text = "progress", "IN PROGRESS"
        gap = None if target is None else target.gap_pp(far)
        if gap is not None:
            detail += f" · {gap:.1f} pp to go"
    else:
        gap = None if target is None else target.gap_pp(far)
        css = "gap"
        text = "KPI unavailable" if gap is None else f"{gap:.1f} pp from target"
    return (
        f'<div class="banner {css}" id="kpi-banner">KPI: {escape(text)}'
        f"<small>{escape(detail)}</small></div>"
    )


def problem(run: ReportRun) -> str:
    base = run.far(BASELINE)
    target = run.target
    text = (
        "<p>An automated optical inspection (AOI) classifier compares a test image of a "
        "board region with its golden (defect-free) reference and emits a defect score "
        f"(<code>{SCORE_COLUMN}</code>, higher = more likely defective). A row is flagged "
        "when its score is above the decision threshold. The KPI is the false-alarm rate "
        "(FAR: the share of good, PASS rows that get flagged) at the threshold that still "
        "catches <em>every</em> defect of the KPI test set (100% recall).</p>"
        f"<p>Target: <b>{escape(run.target_text)}</b>.</p>"
    )
    if base is None:
        return text + na("Baseline FAR: " + NOT_YET.lower() + ".")
    gap = None if target is None else target.gap_pp(base)
    where = (
        "which already meets the target"
        if gap == 0
        else f"{gap:.1f} pp from the target"
        if gap is not None
        else "the target could not be parsed"
    )
    source = SOURCE_NOTES.get(str(run.rec(BASELINE).source), "")
    return text + (
        f"<p>The baseline{', the ' + escape(source) + ',' if source else ''} has a FAR of "
        f"<b>{base:.2f}%</b>, {escape(where)}. DEFT (data-enhanced fine-tuning) adds "
        "training data aimed at the samples the model gets wrong until the KPI is met or "
        "the iteration budget is spent.</p>"
    )


def dataset(run: ReportRun) -> str:
    frame = run.kpi_set
    if frame is None or "label" not in frame.columns:
        return na(f"KPI test set: {NOT_YET.lower()} (no KPI CSV or scored copy on disk).")
    labels = frame["label"].astype(str)
    passes = labels.map(is_pass)
    n, n_pass = len(frame), int(passes.sum())
    n_def = n - n_pass
    ratio = f"{n_pass / n_def:.0f} PASS per defect" if n_def else "no defects"
    out = [
        f"<p><b>{n}</b> rows: <b>{n_pass}</b> PASS ({share(n_pass, n)}), <b>{n_def}</b> defect "
        f"({share(n_def, n)}); {escape(ratio)}.</p>"
    ]
    counts = labels.map(normalize_label).value_counts()
    blocks = [
        "<div><h3>Label distribution</h3>"
        + table(
            ["label", "rows", "share"],
            [[lab, Num(int(c)), Num(share(int(c), n))] for lab, c in counts.items()],
        )
        + "</div>"
    ]
    configured = run.config.rca.metadata_columns
    columns = (
        [c for c in configured if c in frame.columns]
        if configured is not None
        else [c for c in frame.columns if _is_category(frame[c])]
    )
    for col in columns:
        values = frame[col].astype(str)
        rows = []
        for value, count in sorted(values.value_counts().items(), key=lambda v: (-v[1], v[0])):
            defects = int((~passes[values == value]).sum())
            rows.append(
                [value or "(empty)", Num(int(count)), Num(int(count) - defects), Num(defects)]
            )
        blocks.append(
            f"<div><h3>By <code>{escape(col)}</code></h3>"
            + table([col, "rows", "PASS", "defect"], rows)
            + "</div>"
        )
    out.append(f'<div class="flex">{"".join(blocks)}</div>')
    return "".join(out)


def _is_category(column: pd.Series) -> bool:
    """A metadata column worth a value-count table (not an identifier or a measurement).

    Between 2 and :data:`MAX_METADATA_VALUES` values, and on average at least two rows
    per non-empty value, so per-row columns (a bounding box, a contrast) are left out.
    """
    if column.name in REQUIRED_COLUMNS or column.name == SCORE_COLUMN:
        return False
    filled = column.astype(str)
    filled = filled[filled.str.strip() != ""]
    distinct = filled.nunique()
    return 2 <= column.nunique() <= MAX_METADATA_VALUES and 0 < distinct <= len(filled) / 2


def approach(run: ReportRun) -> str:
    cfg = run.config
    sdg, mining, regression = cfg.sdg, cfg.mining, cfg.regression
    sdg_text = (
        f"backend <code>{escape(sdg.backend)}</code>, {sdg.num_sdg} new pairs per iteration "
        "split across the targeted defect types in proportion to need"
        if sdg.enabled
        else "disabled"
    )
    mining_text = (
        f"top {mining.top_k_per_target} pool rows per weak sample by "
        f"{escape(mining.metric)} similarity of <code>{escape(mining.embedder)}</code> "
        f"embeddings, kept at similarity ≥ {escape(fmt(mining.min_similarity))}, never "
        "re-selecting a row"
        if mining.enabled
        else "disabled"
    )
    gate = (
        f"an iteration regresses when its FAR is worse than the best so far by more than "
        f"{escape(fmt(regression.tolerance_pp))} pp; {regression.patience} regressing "
        "iteration(s) in a row stop the loop for review"
        if regression.enabled
        else "disabled"
    )
    steps = [
        "Baseline: train (or reuse the AutoML Phase 1 winner), score the KPI test set, "
        "root-cause analysis (RCA) of the weak samples.",
        "RCA: sweep the threshold at 100% recall, rank rows by weakness, keep the top "
        f"{cfg.rca.top_k_per_label} weak rows per label and break the "
        "weakness down by metadata.",
        "Routing: each weak sample's label goes to mining when the pool has it, to synthetic "
        "data generation (SDG) when the generator supports it; labels going nowhere are "
        "reported as dropped.",
        f"SDG: {sdg_text}.",
        f"Mining: {mining_text}.",
        "Assemble: previous training set + new rows (it only grows), checked for missing files "
        "and leakage into the validation and KPI sets.",
        f"Fine-tune from the previous best checkpoint "
        f"({escape(fmt(cfg.num_epochs or 'spec default'))} epochs), score the KPI set, "
        "keep the better of the best-validation and latest checkpoints.",
        f"Stop when the KPI is met, after {cfg.max_iterations} "
        f"iterations, or at a hard stop. Regression gate: {gate}.",
    ]
    items = "".join(f"<li>{s}</li>" for s in steps)
    paths = run.state.inputs.to_json()
    path_rows = [[k, Raw(f"<code>{escape(str(v))}</code>")] for k, v in paths.items() if v]
    resolved = {**cfg.to_dict(), "paths": paths}
    config_json = escape(json.dumps(resolved, indent=2, default=str))
    return (
        f"<ol>{items}</ol>"
        + (table(["input", "path"], path_rows) if path_rows else "")
        + f"<details><summary>Resolved configuration</summary><pre>{config_json}</pre></details>"
    )
