"""The run as a pipeline: where it stands, how long each phase took, Phase 1 and Phase 3.

The report is re-rendered after every DEFT iteration and once more by finalize,
so "where it stands" is read from what exists: ``pipeline_summary.json`` means
finalize ran (the run is *finalized*); otherwise a Phase 3 folder means the
warm-started search is under way; otherwise the DEFT loop's own state says.

Times come from the records that carry them: each search's trials in its
Optuna journal (:class:`~automl_deft.deft.report.load.SearchOnDisk`), the loop's
``started_at`` and log, and finalize's ``pipeline_summary.json`` (its
modification time: finalize writes it last). The total is the wall-clock span
from the first Phase 1 trial to the last of these.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import PurePosixPath

from automl_deft.deft.report.html import NOT_YET, Num, duration, fmt, na, pct, table
from automl_deft.deft.report.load import ReportRun, SearchOnDisk
from automl_deft.deft.report.names import PHASE_NAMES, phase_name
from automl_deft.deft.state import IN_PROGRESS
from automl_deft.hpo.report import fmt as search_fmt
from automl_deft.hpo.report import guard_rows, guarded_values
from automl_deft.phases import BASELINE, FINAL_AUTOML, SOURCE_PHASE1, Phase, iteration_number

__all__ = [
    "FINALIZED",
    "Span",
    "glance",
    "header_facts",
    "phase1_summary",
    "phase3_summary",
    "run_stage",
    "spans",
    "total_time",
]

FINALIZED = "finalized"
"""The stage of a run whose finalize step wrote ``pipeline_summary.json``."""
FINALIZE = "Finalize (pick-best, hold-out)"


@dataclass(frozen=True)
class Span:
    """One phase of the run on the clock (None where no record holds the time)."""

    name: str
    started: datetime | None
    finished: datetime | None
    result: str

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.finished is None or self.finished < self.started:
            return None
        return (self.finished - self.started).total_seconds()


# ------------------------------------------------------------------------ where it stands


def run_stage(run: ReportRun) -> str:
    """``finalized``, ``Phase 3 AutoML``, ``Phase 2 DEFT · iter 2/3 · train`` or the loop's end."""
    if run.layout.summary.is_file():
        return FINALIZED
    state = run.state
    if state.status == IN_PROGRESS:
        current = state.current_iteration
        label = BASELINE if current == 0 else f"iter{current}"
        stage = run.rec(label).stage_completed or "start"
        where = "baseline" if current == 0 else f"iter {current}/{state.max_iterations}"
        return f"{phase_name(Phase.DEFT.value)} · {where} · {stage}"
    if run.search(Phase.PHASE3) is not None:
        return phase_name(Phase.PHASE3.value)
    return f"{phase_name(Phase.DEFT.value)} {state.status.replace('_', ' ')}"


def _parse(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    try:
        parsed = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def spans(run: ReportRun) -> list[Span]:
    """Phase 1, Phase 2 DEFT, Phase 3 and finalize, those that have started, in run order."""
    out = []
    phase1 = run.search(Phase.PHASE1)
    if phase1 is not None:
        out.append(_search_span(phase1))
    loop_log = [e for e in run.log if e.iter != FINAL_AUTOML]
    deft_end = _parse(loop_log[-1].ts) if loop_log else None
    iterations = len(run.iteration_labels)
    status = run.status.replace("_", " ")
    reason = f": {run.readable(run.state.stop_reason)}" if run.state.stop_reason else ""
    out.append(
        Span(
            PHASE_NAMES[Phase.DEFT.value],
            _parse(run.state.started_at),
            deft_end,
            f"{iterations} iteration(s), {status}{reason}",
        )
    )
    phase3 = run.search(Phase.PHASE3)
    if phase3 is not None:
        out.append(_search_span(phase3))
    if run.layout.summary.is_file():
        written = datetime.fromtimestamp(run.layout.summary.stat().st_mtime, UTC)
        begun = next((s.finished for s in reversed(out) if s.finished is not None), None)
        label = run.deliverable_label()
        result = f"deliverable: {run.name(label)}" if label else "no deliverable"
        out.append(Span(FINALIZE, begun, written, result))
    return out


def _search_span(search: SearchOnDisk) -> Span:
    return Span(
        phase_name(search.phase.value), search.started, search.finished, _search_outcome(search)
    )


def total_time(run: ReportRun) -> float | None:
    """Seconds from the first recorded start to the last recorded end (None: no times)."""
    all_spans = spans(run)
    starts = [s.started for s in all_spans if s.started is not None]
    ends = [s.finished for s in all_spans if s.finished is not None]
    if not starts or not ends or max(ends) < min(starts):
        return None
    return (max(ends) - min(starts)).total_seconds()


def _search_outcome(search: SearchOnDisk) -> str:
    result = search.result
    if result is None:
        return f"running ({search.trials_seen} trial(s) so far)" if search.trials_seen else NOT_YET
    complete = sum(1 for h in result.history if h.status == "complete")
    pruned = len(result.history) - complete
    return (
        f"{len(result.history)} trial(s) ({complete} complete, {pruned} pruned); winner "
        f"{result.best.rec_id}, validation {result.metric} "
        f"{search_fmt(result.best.metric_value, result.metric)}"
    )


def glance(run: ReportRun) -> str:
    """The section: each phase's start, duration and result, and the total."""
    rows = []
    for s in spans(run):
        started = s.started.strftime("%Y-%m-%d %H:%M:%S UTC") if s.started else "—"
        seconds = s.seconds
        took = duration(seconds) if seconds is not None else "—"
        rows.append([s.name, started, Num(took), s.result])
    total = total_time(run)
    took = duration(total) if total is not None else "—"
    rows.append(["Total", "", Num(took), f"stage: {run_stage(run)}"])
    return table(["phase", "started", "duration", "result"], rows, table_id="timeline") + (
        '<p class="meta">Times from the records that hold them: each search\'s trials in its '
        "Optuna journal, the loop's start and log, finalize's pipeline_summary.json. The total "
        "is wall-clock time from the first Phase 1 trial (hand-offs between phases "
        "included).</p>"
    )


# ------------------------------------------------------------------------ the searches


def phase1_summary(run: ReportRun) -> str:
    """The section: Phase 1's trials, winner and guards, and what the loop made of it."""
    search = run.search(Phase.PHASE1)
    baseline = run.state.iterations.get(BASELINE)
    if search is None:
        trained_here = baseline is not None and baseline.source != SOURCE_PHASE1
        return na(
            "Phase 1 did not run in this results directory"
            + (" (a DEFT-only run: the loop trained its own baseline)." if trained_here else ".")
        )
    out = [_search_facts(run, search)]
    if baseline is not None and baseline.source == SOURCE_PHASE1:
        far = run.far(BASELINE)
        out.append(
            f"<p>The loop starts from the winner (no baseline retraining): on the KPI (steering) "
            f"set it scores <b>{escape(pct(far))}</b> FAR at 100% recall "
            f"({escape(fmt(baseline.best_ckpt_kind))} checkpoint).</p>"
        )
    return "".join(out)


def phase3_summary(run: ReportRun) -> str:
    """The section: Phase 3's warm start, trials and guards, and whether pick-best kept it."""
    search = run.search(Phase.PHASE3)
    summary = run.summary
    if search is None:
        if summary is not None and not summary.phase3_ran:
            return na("Phase 3 was skipped (the DEFT loop hard-stopped, or Phase 3 is disabled).")
        return na(f"Phase 3: {NOT_YET.lower()} (it runs after the DEFT loop).")
    out = []
    rec = run.state.iterations.get(FINAL_AUTOML)
    warm = rec.warm_start_from if rec is not None else None
    if warm:
        head = PurePosixPath(str(run.layout.rel(warm))).parts[0]
        source = run.name(head) if iteration_number(head) is not None else "a checkpoint"
        out.append(
            f"<p>Warm-started from <b>{escape(source)}</b> (<code>{escape(str(warm))}</code>) "
            "on the DEFT-augmented training set"
            + (f" <code>{escape(str(rec.train_csv))}</code>" if rec and rec.train_csv else "")
            + ".</p>"
        )
    out.append(_search_facts(run, search))
    out.append(_kept_or_rolled_back(run))
    return "".join(out)


def _search_facts(run: ReportRun, search: SearchOnDisk) -> str:
    result = search.result
    if result is None:
        return na(
            f"{phase_name(search.phase.value)}: no automl_result.json yet "
            f"({_search_outcome(search)})."
        )
    complete = sum(1 for h in result.history if h.status == "complete")
    pruned = len(result.history) - complete
    took = (
        f" in {duration((search.finished - search.started).total_seconds())}"
        if search.started and search.finished
        else ""
    )
    m = result.metric
    page = search.layout.report
    link = (
        f' (<a href="{escape(page.relative_to(run.root).as_posix())}">the search\'s own page</a>)'
        if page.is_file()
        else ""
    )
    facts = (
        f"<p>{escape(result.backend)} · {escape(result.algorithm)}: "
        f"<b>{len(result.history)}</b> trial(s), {complete} complete and {pruned} pruned{took}. "
        f"Winner <b>{escape(result.best.rec_id)}</b>, validation {escape(m)} "
        f"<b>{escape(search_fmt(result.best.metric_value, m))}</b>, ranked after the "
        f"guards{link}.</p>"
    )
    guards = table(
        ["guard", "decision"],
        [[name, text] for name, text in guard_rows(result)],
        table_id=f"guards-{search.phase.value}",
    )
    ranked = guarded_values(result)
    rows, classes = [], []
    for trial in result.history:
        rows.append(
            [
                trial.rec_id + (" ★" if trial.rec_id == result.best.rec_id else ""),
                trial.status
                + (f" at epoch {trial.pruned_at_epoch}" if trial.pruned_at_epoch else ""),
                Num(search_fmt(trial.metric, m)),
                Num(search_fmt(ranked.get(trial.rec_id), m)),
            ]
        )
        classes.append("best" if trial.rec_id == result.best.rec_id else "")
    lucky = result.guards.lucky_winner
    if lucky is not None:
        reseed = Num(search_fmt(lucky.reseed_value, m))
        rows.append([lucky.reseed_rec_id, "re-run (fresh seed)", reseed, Num("—")])
        classes.append("")
    trials = table(
        ["trial", "status", f"validation {m}", "ranked by (after the guards)"],
        rows,
        row_classes=classes,
        table_id=f"trials-{search.phase.value}",
    )
    return (
        facts + f'<div class="flex"><div><h3>Guards</h3>{guards}</div>'
        f"<div><h3>Trials</h3>{trials}</div></div>"
    )


def _kept_or_rolled_back(run: ReportRun) -> str:
    summary = run.summary
    if summary is None:
        return na("Kept or rolled back: decided by finalize's pick-best, which has not run yet.")
    if summary.phase3_failed:
        return (
            f'<p class="bad" id="phase3-outcome"><b>No usable Phase 3 winner</b>: '
            f"{escape(run.readable(summary.phase3_failed))}; the DEFT winner stands.</p>"
        )
    final = run.far(FINAL_AUTOML)
    loop_best = run.best_of_loop()
    label = run.deliverable_label()
    because = run.deliverable.chosen_because if run.deliverable is not None else None
    because = because or (summary.best.chosen_because if summary.best is not None else None)
    why = f" Pick-best: {escape(run.readable(because))}." if because else ""
    if summary.phase3_kept:
        verdict = (
            f"<b>Kept</b>: the Phase 3 winner ({escape(pct(final))} on the KPI set) is the "
            "deliverable."
        )
    else:
        shipped = run.name(label) if label else "the DEFT winner"
        verdict = (
            f"<b>Rolled back</b>: the Phase 3 winner ({escape(pct(final))} on the KPI set) did "
            f"not beat {escape(shipped)}"
            + (f" ({escape(pct(loop_best.far_pct))})" if loop_best is not None else "")
            + f"; pick-best ships {escape(shipped)}."
        )
    held_final = run.step(FINAL_AUTOML)
    held_loop = run.step(loop_best.label) if loop_best is not None else None
    honesty = ""
    if (
        held_final is not None
        and held_final.holdout is not None
        and held_final.holdout.far_pct is not None
        and loop_best is not None
        and held_loop is not None
        and held_loop.holdout is not None
        and held_loop.holdout.far_pct is not None
    ):
        honesty = (
            f'<p class="meta">On the untouched hold-out (steered nothing): Phase 3 winner '
            f"{held_final.holdout.far_pct:.2f}% vs {escape(run.name(loop_best.label))} "
            f"{held_loop.holdout.far_pct:.2f}%. Pick-best ranks on the steering set, so a "
            "Phase 3 win there can be fitted to it.</p>"
        )
    return f'<p id="phase3-outcome">{verdict}{why}</p>{honesty}'


def header_facts(run: ReportRun) -> list[tuple[str, str]]:
    """(name, value) pairs of the page header: stage, total time and each phase's."""
    total = total_time(run)
    timed = [f"{s.name} {duration(s.seconds)}" for s in spans(run) if s.seconds is not None]
    total_text = duration(total) if total is not None else "—"
    if timed:
        total_text += f" ({' · '.join(timed)})"
    return [("Stage", run_stage(run)), ("Total time", total_text)]
