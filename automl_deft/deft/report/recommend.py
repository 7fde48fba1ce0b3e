"""The recommendations: rule-based advice from the run's state, most urgent first."""

from __future__ import annotations

import itertools
from html import escape

from automl_deft.deft.report.html import fmt, thr
from automl_deft.deft.report.load import ReportRun
from automl_deft.deft.state import HARD_STOPPED, IN_PROGRESS, NEEDS_REVIEW
from automl_deft.layout import RunLayout
from automl_deft.phases import FINAL_AUTOML

__all__ = ["LARGE_GAP_PP", "recommend", "recommendations"]

LARGE_GAP_PP = 5.0
"""A gap this large after the last iteration rarely closes with one more iteration."""


def recommendations(run: ReportRun) -> str:
    """The section: :func:`recommend`'s items as a list."""
    return "<ul>" + "".join(f"<li>{escape(i)}</li>" for i in recommend(run)) + "</ul>"


def recommend(run: ReportRun) -> list[str]:
    """Rule-based advice, most urgent first (never empty)."""
    items: list[str] = []
    target, best = run.target, run.best()
    reason = run.state.stop_reason or "no reason recorded"
    met = best is not None and target is not None and target.is_met(best.far_pct)
    iters = run.iteration_labels
    if run.status == HARD_STOPPED:
        items.append(
            f"The loop hard-stopped ({reason}). Fix the cause, then resume the loop on this "
            "results directory; it continues from deft_state.json."
        )
    if run.status == NEEDS_REVIEW:
        items.append(
            f"The regression gate stopped the loop ({reason}). Review the regressing "
            "iterations' added data below; continue with --acknowledge-regression or keep the "
            "best checkpoint."
        )
    if met and best is not None:
        items.append(
            f"KPI met: deploy {run.name(best.label)}'s checkpoint ({fmt(best.checkpoint)}) with "
            "threshold "
            f"{thr(best.threshold)} (see {RunLayout.DELIVERABLE} and {RunLayout.INFERENCE_SPEC})."
        )
    regressed = [lab for lab in iters if run.rec(lab).regression]
    if regressed:
        items.append(
            f"{', '.join(run.name(lab) for lab in regressed)} regressed against the best so far: "
            "check the sample of "
            "generated data for implausible or mislabelled rows before continuing."
        )
    dropped = sorted(
        {x for lab in iters if (routing := run.rec(lab).routing) for x in routing.dropped}
    )
    if dropped:
        items.append(
            f"Weak labels with no route ({', '.join(dropped)}): add pool rows with these labels "
            "to the mining pool, or use an SDG backend that supports them."
        )
    yields = [(lab, run.added(lab)[1]) for lab in iters]
    for (prev, a), (lab, b) in itertools.pairwise(yields):
        if a and b is not None and b <= a / 2:
            items.append(
                f"Mining yield fell from {a} ({run.name(prev)}) to {b} ({run.name(lab)}) rows: the "
                "pool is running "
                "out of similar rows; add pool data (or lower mining.min_similarity with care)."
            )
    latest = next(
        (lab for lab in reversed(run.labels) if lab != FINAL_AUTOML and run.has_rca(lab)), None
    )
    if latest is not None:
        concentrated = [f for f in run.findings(latest) if "concentrate" in f]
        for finding in concentrated[:2]:
            items.append(
                f"{run.name(latest)} RCA: {finding}. Collect more training or pool data for that "
                "value."
            )
    if (
        not met
        and best is not None
        and target is not None
        and run.status not in (IN_PROGRESS, HARD_STOPPED, NEEDS_REVIEW)
    ):
        gap = target.gap_pp(best.far_pct) or 0.0
        items.append(
            f"The KPI is {gap:.1f} pp away after {len(iters)} iteration(s): raise max_iterations "
            "or the SDG budget (sdg.num_sdg) and resume."
            + (
                " The gap is large: more real data (pool or training) or a Phase 3 search is "
                "likelier to close it than more iterations."
                if gap > LARGE_GAP_PP
                else ""
            )
        )
    final, loop_best = run.far(FINAL_AUTOML), run.best_of_loop()
    if final is not None and loop_best is not None and final > loop_best.far_pct:
        items.append(
            f"Phase 3 ({final:.2f}%) did not beat DEFT's best {run.name(loop_best.label)} "
            f"({loop_best.far_pct:.2f}%): the pick-best safety net keeps "
            f"{run.name(loop_best.label)}."
        )
    unavailable = [
        lab for lab in run.labels if (kpi := run.rec(lab).kpi) is not None and not kpi.available
    ]
    if unavailable:
        items.append(
            f"No threshold reaches 100% recall for {', '.join(run.name(u) for u in unavailable)}: "
            "check the KPI set "
            "for mislabelled defects or duplicated images with opposite labels."
        )
    if not items:
        items.append(
            "The loop is running; this report is re-rendered after every iteration."
            if run.status == IN_PROGRESS
            else "No action needed."
        )
    return items
