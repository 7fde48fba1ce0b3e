"""The loop's numbers: progress chart, per-iteration table, augmentation, final status.

The per-iteration table shows each phase's FAR on the KPI (steering) set with its
bootstrap 95% interval, its validation FAR and, when finalize scored it, its FAR on
the untouched hold-out with that interval (:mod:`.evidence`).
"""

from __future__ import annotations

import json
from html import escape

from automl_deft.deft.report.evidence import holdout_cell, holdout_of
from automl_deft.deft.report.figures import progress_chart
from automl_deft.deft.report.html import (
    NOT_YET,
    Num,
    Raw,
    ci_text,
    delta_html,
    fmt,
    img,
    na,
    pct,
    share,
    table,
    thr,
)
from automl_deft.deft.report.hygiene import hygiene_counts
from automl_deft.deft.report.load import ReportRun
from automl_deft.deft.report.names import phase_name
from automl_deft.deft.report.overview import SOURCE_NOTES
from automl_deft.deft.report.values import first_line, total
from automl_deft.errors import UserError
from automl_deft.layout import RunLayout
from automl_deft.phases import BASELINE, FINAL_AUTOML, iteration_label, iteration_number, phase_of
from automl_deft.records import Deliverable, IterationRecord, SDGSummary

__all__ = ["augmentation", "final", "per_iteration", "progress", "sdg_use"]

ROUTES = ("mining", "sdg", "dropped")
"""Where routing sends a weak label (:class:`~automl_deft.records.RoutingSummary`)."""


def progress(run: ReportRun) -> str:
    points = [(lab, far) for lab in run.labels if (far := run.far(lab)) is not None]
    if not points:
        return na(f"Progress chart: {NOT_YET.lower()} (no phase has been evaluated).")
    names = {lab: run.name(lab) for lab, _ in points}
    png = progress_chart(points, run.target, run.best(), names)
    return img(png, "FAR per step of the run with the KPI target", "progress-chart")


def per_iteration(run: ReportRun) -> str:
    if not run.labels:
        return na(f"Per-iteration results: {NOT_YET.lower()}.")
    base, best = run.far(BASELINE), run.best()
    best_label = None if best is None else best.label
    rows, classes = [], []
    synthetic_total = mined_total = 0
    last_train_rows: int | None = None
    for lab in run.labels:
        rec = run.rec(lab)
        far = run.far(lab)
        n = iteration_number(lab)
        new_sdg, new_mined = run.added(lab)
        if n:  # iterations: cumulative counts of the training set they trained on
            synthetic_total += new_sdg or 0
            mined_total += new_mined or 0
        synthetic: int | None
        mined: int | None
        if n == 0:
            synthetic, mined = 0, 0
        elif n or lab == FINAL_AUTOML:  # Phase 3 trains on the last iteration's set
            synthetic, mined = synthetic_total, mined_total
        else:
            synthetic = mined = None
        train_rows = rec.train_rows
        if train_rows is None and n and (prov := run.provenance(lab)) is not None:
            train_rows = len(prov)
        if n:
            last_train_rows = train_rows
        elif lab == FINAL_AUTOML and train_rows is None:
            train_rows = last_train_rows
        delta = None if far is None or base is None or lab == BASELINE else far - base
        unavailable = rec.kpi is not None and not rec.kpi.available
        far_text = pct(far) if far is not None else "unavailable" if unavailable else "—"
        rows.append(
            [
                run.name(lab) + (" ★" if best_label == lab else ""),
                _phase_of(run, lab),
                rec.status,
                Num(far_text),
                Num(ci_text(run.steering_ci(lab)) if far is not None else "—"),
                Num(pct(run.val_far(lab))),
                Num(holdout_cell(run, lab)),
                Raw(delta_html(delta)),
                Num(thr(run.threshold(lab))),
                Num(fmt(train_rows)),
                Num(fmt(synthetic)),
                Num(share(synthetic, train_rows) if synthetic is not None else "—"),
                Num(fmt(mined)),
                _checkpoint_kind(rec),
                _note(rec),
            ]
        )
        classes.append("best" if best_label == lab else "")
    out = table(
        [
            "step",
            "phase",
            "status",
            "FAR@100% (KPI / steering set)",
            "steering 95% interval",
            "validation FAR",
            "hold-out FAR [95% interval]",
            "Δ vs the first step (pp)",
            "threshold",
            "training rows",
            "synthetic rows",
            "synthetic ratio",
            "mined rows",
            "checkpoint",
            "note / source",
        ],
        rows,
        row_classes=classes,
        table_id="iterations-table",
    )
    return f'<div class="scroll">{out}</div>' + (
        '<p class="meta">FAR@100%: on the KPI (steering) set, which chose checkpoints, guided '
        "mining and ranked the phases; interval: bootstrap 95% on that set. Hold-out: the "
        "untouched kpi/holdout_set.csv, scored by finalize after every choice was made "
        "(— when finalize has not run or the workspace has none). "
        "Synthetic and mined rows count what the phase's training set holds "
        "(cumulative); the augmentation table shows what each iteration added. ★ = best.</p>"
    )


def _phase_of(run: ReportRun, label: str) -> str:
    return phase_name(phase_of(label, run.rec(label).source).value)


def _checkpoint_kind(rec: IterationRecord) -> str:
    shown = [f"{k} {pct(v)}" for k, v in (rec.candidates or {}).items() if v is not None]
    return fmt(rec.best_ckpt_kind) + (f" ({' · '.join(shown)})" if shown else "")


def _note(rec: IterationRecord) -> str:
    parts = []
    if rec.source:
        parts.append(SOURCE_NOTES.get(rec.source, rec.source))
    if rec.regression:
        parts.append("regression")
    if rec.error is not None:
        parts.append(f"error in {fmt(rec.error.stage)}")
    return "; ".join(parts) or "—"


def augmentation(run: ReportRun) -> str:
    iters = run.iteration_labels
    if not iters:
        return na(f"Augmentation: {NOT_YET.lower()} (no iteration has started).")
    cutoff = fmt(run.config.mining.min_similarity)
    rows, label_rows, budget_use = [], [], []
    for lab in iters:
        rec = run.rec(lab)
        new_sdg, new_mined = run.added(lab)
        added = rec.added_rows
        if added is None and (new_sdg is not None or new_mined is not None):
            added = (new_sdg or 0) + (new_mined or 0)
        requested = rec.sdg.requested if rec.sdg else {}
        generated = rec.sdg.generated if rec.sdg else {}
        per_label = rec.mining.per_label if rec.mining else {}
        screened = run.hygiene(lab)
        refused, flagged = hygiene_counts(screened) if screened else (None, None)
        asked, made = (rec.sdg.asked, rec.sdg.made) if rec.sdg else (None, new_sdg)
        rows.append(
            [
                run.name(lab),
                Num(fmt(asked)),
                Num(fmt(made)),
                Num(_pass_check_cell(rec.sdg)),
                Num(fmt(total(v.get("candidates") for v in per_label.values()))),
                Num(fmt(new_mined)),
                Num(fmt(refused)),
                Num(fmt(flagged)),
                Num(fmt(added)),
                rec.sdg.backend if rec.sdg else run.config.sdg.backend,
            ]
        )
        if rec.sdg is not None:
            budget_use.append(sdg_use(run, lab, rec.sdg))
        # RCA of the phase before chose this iteration's targets (and wrote ``need``).
        need = run.rec(iteration_label((iteration_number(lab) or 1) - 1)).need or {}
        routed = {route: _routed(rec, route) for route in ROUTES}
        unrouted = rec.sdg.unrouted if rec.sdg else {}
        names = sorted(
            {*need, *requested, *generated, *per_label, *unrouted}.union(*routed.values())
        )
        for name in names:
            routes = [route for route in ROUTES if name in routed[route]]
            stats = per_label.get(name, {})
            label_rows.append(
                [
                    run.name(lab),
                    name,
                    Num(fmt(need.get(name))),
                    ", ".join(routes) or "—",
                    Num(fmt(requested.get(name))),
                    Num(fmt(generated.get(name))),
                    Num(fmt(stats.get("targets"))),
                    Num(fmt(stats.get("pool_rows"))),
                    Num(fmt(stats.get("candidates"))),
                    Num(fmt(stats.get("selected"))),
                ]
            )
    out = table(
        [
            "iteration",
            "SDG budget",
            "SDG made",
            "PASS check (passed / checked)",
            f"mining candidates (≥ {cutoff})",
            "mined, selected",
            "duplicates refused (hygiene)",
            "flagged label errors (hygiene)",
            "total added",
            "SDG backend",
        ],
        rows,
        table_id="augmentation-table",
    )
    out = f'<div class="scroll">{out}</div>' + (
        '<p class="meta">SDG budget: the pairs the iteration could make (sdg.num_sdg); made: '
        "the pairs written after the independent PASS check. Hygiene: the new rows refused as "
        "duplicates and flagged as likely label errors before assemble (see Row hygiene); "
        "total added counts what reached the training set.</p>"
    )
    if budget_use:
        out += "<h3>SDG budget use</h3>" + "".join(budget_use)
    if label_rows:
        out += "<h3>Per label</h3>" + table(
            [
                "iteration",
                "label",
                "need",
                "routed to",
                "SDG requested",
                "SDG generated",
                "mining targets",
                "pool rows",
                "candidates",
                "selected",
            ],
            label_rows,
        )
    return out


def sdg_use(run: ReportRun, label: str, sdg: SDGSummary) -> str:
    """One iteration's SDG: its stage line, a visible sentence when it made fewer pairs than
    its budget, the independent PASS check, and the weak labels it could not make and why."""
    asked, made = sdg.asked, sdg.made
    out = [
        f"<p><b>{escape(run.name(label))}</b>: "
        f'<code id="sdg-line-{escape(label)}">{escape(run.readable(sdg.line()))}</code></p>'
    ]
    if made < asked:
        out.append(
            f'<p class="bad" id="sdg-short-{escape(label)}"><b>SDG made {made} of its '
            f"{asked}-pair budget: {asked - made} pair(s) short.</b></p>"
        )
    check = sdg.pass_check
    if check:
        out.append(
            "<p>Independent PASS check of the generated PASS pairs (no model involved): "
            f"{fmt(check.get('checked'))} checked, {fmt(check.get('passed'))} passed, "
            f"{fmt(check.get('refused'))} refused (left out).</p>"
        )
    if sdg.unrouted:
        out.append(
            table(
                ["weak label", f"why {sdg.backend} cannot make it (it got no SDG budget)"],
                [[lab, run.readable(why)] for lab, why in sorted(sdg.unrouted.items())],
                table_id=f"sdg-unrouted-{label}",
            )
        )
    return "".join(out)


def _pass_check_cell(sdg: SDGSummary | None) -> str:
    if sdg is None or not sdg.pass_check:
        return "—"
    return f"{fmt(sdg.pass_check.get('passed'))} / {fmt(sdg.pass_check.get('checked'))}"


def _routed(rec: IterationRecord, route: str) -> list[str]:
    """The labels routing sent to ``route`` (empty before routing ran)."""
    return [] if rec.routing is None else list(getattr(rec.routing, route))


def final(run: ReportRun) -> str:
    best, target = run.best(), run.target
    out = []
    if best is None:
        out.append(na(f"Best model: {NOT_YET.lower()} (no phase has been evaluated)."))
    else:
        gap = None if target is None else target.gap_pp(best.far_pct)
        gap_text = "—" if gap is None else ("met" if gap == 0 else f"{gap:.1f} pp")
        held = holdout_of(run, best.label)
        rows = [
            ["best step", run.name(best.label)],
            ["best FAR@100% recall (steering set)", pct(best.far_pct)],
            ["steering 95% interval", ci_text(run.steering_ci(best.label))],
            [
                "hold-out FAR [95% interval]",
                holdout_cell(run, best.label) if held is not None else "no untouched number",
            ],
            ["threshold", thr(best.threshold)],
            ["gap to KPI", gap_text],
            ["best checkpoint", Raw(f"<code>{escape(fmt(best.checkpoint))}</code>")],
            ["checkpoint kind", fmt(run.rec(best.label).best_ckpt_kind)],
            ["loop status", run.status.replace("_", " ")],
            ["stop reason", fmt(run.state.stop_reason)],
        ]
        out.append(table(None, rows, table_id="final-table"))
    out.append(_deliverable(run))
    return "".join(out)


def _deliverable(run: ReportRun) -> str:
    """``best_model.json`` as written, with its checkpoint resolved against this run."""
    path, name = run.layout.deliverable, RunLayout.DELIVERABLE
    if not path.is_file():
        return na(f"{name}: {NOT_YET.lower()} (written when the loop ends).")
    try:
        deliverable = Deliverable.read(path)
    except UserError as exc:
        run.note(f"{path}: {first_line(exc)}")
        return na(f"{name} could not be read: {first_line(exc)}")
    text = escape(json.dumps(deliverable.to_json(), indent=2, default=str))
    checkpoint = escape(str(deliverable.path(run.root, "checkpoint")))
    return (
        f"<h3><code>{name}</code></h3><pre>{text}</pre>"
        f'<p class="meta">Checkpoint: <code>{checkpoint}</code></p>'
    )
