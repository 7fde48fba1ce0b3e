"""A search's HTML page and leaderboard, ranked the way the project ranks: after the guards.

The optimisation history's "best so far" follows the guarded ranking (a lucky
winner counts with the worse of its two runs; a collapsed trial does not
count), the leaderboard holds the lucky winner's fresh-seed re-run as a row of
its own, parameter importance is drawn only when enough trials finished (and
says why not otherwise), and the guards read as a table.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from automl_deft.hpo.guards import GuardReport
from automl_deft.hpo.results import SearchResult
from automl_deft.hpo.trial import TrialOutcome
from automl_deft.layout import SearchLayout

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MIN_TRIALS_FOR_IMPORTANCE = 5
"""Complete trials below which parameter importance (fANOVA) is noise, not signal."""


def phase_title(results_dir: Path) -> str:
    """``Phase 1 AutoML search`` / ``Phase 3 AutoML search`` / ``AutoML search``."""
    phase = SearchLayout(results_dir).phase
    return f"Phase {phase.value.removeprefix('phase')} AutoML search" if phase else "AutoML search"


def fmt(value: float | None, metric: str = "far_pct") -> str:
    """A metric value for a person: far_pct as ``9.80%``, a loss to 4 significant digits."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.2f}%" if metric == "far_pct" else f"{value:.4g}"


def guarded_values(result: SearchResult) -> dict[str, float | None]:
    """Each trial's value as the project ranks it: the lucky winner by the worse of its two
    runs, a mode-collapsed trial not at all (None), the rest by their own value."""
    out: dict[str, float | None] = {h.rec_id: h.metric for h in result.history}
    for skip in result.guards.collapse_skipped:
        out[skip.rec_id] = None
    lucky = result.guards.lucky_winner
    if lucky is not None:
        out[lucky.rec_id] = lucky.ranked_by
    return out


def leaderboard(result: SearchResult, outcomes: Sequence[TrialOutcome]) -> pd.DataFrame:
    """One row per finished trial plus the lucky winner's re-run, best (as ranked) first.

    Columns: ``rec_id, status, ranked_by, value, far_pct, val_loss, epochs_run, note,
    param_*``: ``value`` is the trial's own value of the search metric, ``ranked_by``
    the value the project ranked it by (after the guards; empty for a skipped trial).
    """
    by_name = {o.name: o for o in outcomes}
    ranked = guarded_values(result)
    notes = _trial_notes(result.guards)
    rows = []
    for h in result.history:
        o = by_name.get(h.rec_id)
        rows.append(
            {
                "rec_id": h.rec_id,
                "status": h.status,
                "ranked_by": ranked.get(h.rec_id),
                "value": h.metric,
                "far_pct": o.far_pct if o else None,
                "val_loss": o.val_loss if o else None,
                "epochs_run": o.epochs_run if o else h.pruned_at_epoch,
                "note": notes.get(h.rec_id, ""),
                **{f"param_{k}": v for k, v in h.params.items()},
            }
        )
    lucky = result.guards.lucky_winner
    if lucky is not None:
        again = _reseed_outcome(result.results_dir, lucky.reseed_rec_id)
        params = next((h.params for h in result.history if h.rec_id == lucky.rec_id), {})
        rows.append(
            {
                "rec_id": lucky.reseed_rec_id,
                "status": "re-run",
                "ranked_by": None,
                "value": lucky.reseed_value,
                "far_pct": again.far_pct if again else None,
                "val_loss": again.val_loss if again else None,
                "epochs_run": again.epochs_run if again else None,
                "note": f"fresh-seed re-run of {lucky.rec_id} (lucky-winner guard)",
                **{f"param_{k}": v for k, v in params.items()},
            }
        )
    board = pd.DataFrame(rows)
    if len(board):
        board = board.sort_values("ranked_by", na_position="last", kind="stable")
    return board


def _reseed_outcome(results_dir: Path, rec_id: str) -> TrialOutcome | None:
    path = SearchLayout(results_dir).trial_dir(rec_id) / "trial.json"
    if not path.is_file():
        return None
    return TrialOutcome(**json.loads(path.read_text(encoding="utf-8")))


def _trial_notes(guards: GuardReport) -> dict[str, str]:
    notes = {s.rec_id: "skipped: predicts a single class" for s in guards.collapse_skipped}
    lucky = guards.lucky_winner
    if lucky is not None:
        notes[lucky.rec_id] = (
            f"lucky-winner guard: ranked by the worse of two runs ({fmt(lucky.ranked_by)})"
        )
    return notes


def guard_rows(result: SearchResult) -> list[tuple[str, str]]:
    """(guard, what it decided) for the page's table, in the order the guards ran."""
    g, m = result.guards, result.metric
    skipped = ", ".join(f"{s.rec_id} ({s.reason})" for s in g.collapse_skipped)
    rows = [("Mode collapse", f"skipped {skipped}" if skipped else "no trial skipped")]
    lucky = g.lucky_winner
    if lucky is None:
        rows.append(("Lucky winner", "not triggered (the winner was not far ahead of the rest)"))
    else:
        rows.append(
            (
                "Lucky winner",
                f"{lucky.rec_id} ({fmt(lucky.value, m)}) beat the runner-up {lucky.runner_up} "
                f"({fmt(lucky.runner_up_value, m)}) by more than {lucky.factor:g}×: re-trained "
                f"with a fresh seed as {lucky.reseed_rec_id} → {fmt(lucky.reseed_value, m)}; "
                f"ranked by the worse, {fmt(lucky.ranked_by, m)}",
            )
        )
    z = g.zero_shot
    if z is None or z.zero_shot_far_pct is None:
        rows.append(("Zero-shot", "not checked"))
    else:
        verdict = "beaten" if z.beaten else "NOT beaten"
        rows.append(
            (
                "Zero-shot",
                f"winner {fmt(z.winner_far_pct)} vs the untrained scorer "
                f"{fmt(z.zero_shot_far_pct)} on the validation set: {verdict}",
            )
        )
    return rows


def history_figure(result: SearchResult) -> Figure:
    """Each trial's own value, and the best so far as the project ranks (after the guards)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    ranked = guarded_values(result)
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    xs, ys, best, best_x = [], [], [], []
    current = math.inf
    for i, h in enumerate(result.history, start=1):
        if h.metric is not None and math.isfinite(h.metric):
            xs.append(i)
            ys.append(h.metric)
        value = ranked.get(h.rec_id)
        if value is not None and math.isfinite(value):
            current = min(current, value)
        if math.isfinite(current):
            best_x.append(i)
            best.append(current)
        if h.status == "pruned":
            ax.axvline(i, color="0.88", lw=1, zorder=0)
    ax.scatter(xs, ys, label="trial (its own value)", zorder=3)
    if best:
        ax.step(best_x, best, where="post", color="C3", label="best so far (after guards)")
    lucky = result.guards.lucky_winner
    if lucky is not None:
        at = next(i for i, h in enumerate(result.history, start=1) if h.rec_id == lucky.rec_id)
        ax.scatter([at], [lucky.reseed_value], marker="x", color="C1", zorder=4, label="re-run")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial (grey line: pruned)")
    ax.set_ylabel("validation FAR at 100% recall (%)" if result.metric == "far_pct" else "loss")
    ax.legend(loc="upper right", fontsize="small")
    return fig


def importance_figure(importance: Mapping[str, float], complete: int) -> tuple[Figure | None, str]:
    """The fANOVA bars, or None and the reason when too few trials completed."""
    if complete < MIN_TRIALS_FOR_IMPORTANCE or not importance:
        why = (
            f"Not shown: {complete} complete trial(s); parameter importance needs at least "
            f"{MIN_TRIALS_FOR_IMPORTANCE} to mean anything."
        )
        return None, why
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 0.4 * len(importance) + 0.8))
    ax = fig.subplots()
    names = list(importance)[::-1]
    ax.barh(names, [importance[n] for n in names])
    ax.set_xlabel("importance (fANOVA, share of the variance)")
    return fig, f"From {complete} complete trials; read it as a hint, not a ranking."


def png(fig: Figure) -> str:
    """A figure as base64 PNG for an ``<img src="data:…">``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def render_report(
    result: SearchResult, board: pd.DataFrame, importance: Mapping[str, float]
) -> str:
    """The self-contained HTML page of a search."""
    title = phase_title(result.results_dir)
    best, m = result.best, result.metric
    complete = sum(1 for h in result.history if h.status == "complete")
    pruned = sum(1 for h in result.history if h.status == "pruned")
    imp_fig, imp_note = importance_figure(importance, complete)
    imp_html = (
        f'<img alt="parameter importance" src="data:image/png;base64,{png(imp_fig)}">'
        if imp_fig is not None
        else ""
    )
    guards = "".join(
        f"<tr><th>{escape(name)}</th><td>{escape(text)}</td></tr>"
        for name, text in guard_rows(result)
    )
    shown = board.rename(columns=lambda c: c.removeprefix("param_"))
    table = shown.to_html(
        index=False,
        na_rep="",
        float_format=lambda v: f"{v:.4g}",
        classes="board",
        border=0,
    )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:min(64em,96vw);
padding:0 1em;line-height:1.4}}img{{max-width:100%;height:auto}}
table{{border-collapse:collapse;font-size:.85em}}td,th{{border:1px solid #ccc;
padding:.2em .5em;text-align:left;vertical-align:top}}.scroll{{overflow-x:auto}}
.guards th{{white-space:nowrap;background:#f4f4f4}}</style></head><body>
<h1>{escape(title)} <small>({escape(result.backend)} · {escape(result.algorithm)})</small></h1>
<p>Winner: <b>{escape(str(best.rec_id))}</b>, {escape(m)} <b>{fmt(best.metric_value, m)}</b>
on the validation set, ranked after the guards; {complete} complete and {pruned} pruned
trial(s). Checkpoint <code>{escape(str(best.checkpoint))}</code>.</p>
<h2>Optimisation history</h2>
<img alt="optimisation history" src="data:image/png;base64,{png(history_figure(result))}">
<h2>Guards</h2><table class="guards">{guards}</table>
<h2>Leaderboard</h2><div class="scroll">{table}</div>
<h2>Parameter importance</h2><p>{escape(imp_note)}</p>{imp_html}
</body></html>
"""


__all__ = [
    "MIN_TRIALS_FOR_IMPORTANCE",
    "fmt",
    "guard_rows",
    "guarded_values",
    "history_figure",
    "importance_figure",
    "leaderboard",
    "phase_title",
    "png",
    "render_report",
]
