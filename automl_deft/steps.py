"""The pipeline's steps as plain library calls (the KFP components only wrap these).

Every step takes paths, plain values and typed records
(:mod:`automl_deft.records`), does its work on the run's results directory (on
the workspace volume, so state survives pod restarts), writes the files its
component publishes as artifacts, and returns a typed record; a component
passes it on as the record's exact JSON text (:meth:`~automl_deft.records.Record.dumps`).
The same functions run under ``kfp.local`` (the embedded default) and in a pod.
The run directory's layout is :class:`automl_deft.layout.RunLayout`'s.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from automl_deft.deft.state import DeftState
from automl_deft.errors import AutomlDeftError, UserError, WorkspaceError
from automl_deft.io import atomic_copy, atomic_write_json, atomic_write_text
from automl_deft.layout import RunLayout
from automl_deft.phases import FINAL_AUTOML, Phase, iteration_number, phase_of
from automl_deft.records import (
    BaselineSeed,
    Deliverable,
    ExportOutcome,
    KPISummary,
    LoopOutcome,
    PipelineSummary,
    PreflightOutcome,
    SearchBrief,
    SearchWinner,
    TrajectoryStep,
    WarmStart,
)
from automl_deft.run_config import RunConfig, load_run_config
from automl_deft.workspace import Workspace, new_run_dir

log = logging.getLogger(__name__)

DATASET_MANIFEST = RunLayout.DATASET_MANIFEST
PIPELINE_PHASES: tuple[Phase, ...] = tuple(Phase)

F = TypeVar("F", bound=Callable[..., Any])


def step(fn: F) -> F:
    """Decorator for the public steps: record a project error in the run directory.

    A step that fails on a project error appends ``{step, message, exit_code}`` to
    ``RUN/task_errors.jsonl`` (when it knows its results directory), so a local
    runner can report the task's own one-line error instead of kfp's.
    """
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AutomlDeftError as exc:
            results = signature.bind_partial(*args, **kwargs).arguments.get("results_dir")
            if results:
                from automl_deft.deft.state import append_log_line
                from automl_deft.redact import redact

                line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                record = {"step": fn.__name__, "message": redact(line), "exit_code": exc.exit_code}
                path = RunLayout.at(results).task_errors
                path.parent.mkdir(parents=True, exist_ok=True)
                append_log_line(path, record)
            raise

    return wrapper  # type: ignore[return-value]


def on_volume(artifact: Any, key: str, member: str = "") -> str | None:
    """The workspace-volume path an artifact was published from, else its local copy.

    Katib trial pods see the workspace volume but not the KFP artifact store, so a
    search prefers the original (``metadata[key]``) when this pod can see it.
    """
    if artifact is None:
        return None
    original = artifact.metadata.get(key)
    if original and Path(original).exists():
        return str(original)
    return os.path.join(artifact.path, member) if member else str(artifact.path)


def resolve_config(workspace: str | os.PathLike[str], config: str) -> RunConfig:
    """The run config: ``config`` may be absolute or relative to the workspace; '' = defaults."""
    if not config:
        return load_run_config(None)
    path = Path(config)
    if not path.is_absolute():
        path = Path(workspace) / path
    return load_run_config(path)


def resolve_results_dir(workspace: str | os.PathLike[str], results_dir: str) -> Path:
    """``results_dir`` (relative to the workspace when not absolute), or a new
    ``<ws>/results/run_<YYYYmmdd_HHMMSS>``."""
    if results_dir:
        path = Path(results_dir)
        return path if path.is_absolute() else Path(workspace) / path
    return new_run_dir(workspace)


# --- preflight ---------------------------------------------------------------------------


@step
def preflight_step(
    workspace: str,
    config: str,
    results_dir: str,
    hpo_backend: str,
    *,
    phases: Sequence[str] = tuple(p.value for p in PIPELINE_PHASES),
    summary_md: str | os.PathLike[str] | None = None,
    check_images: bool = True,
) -> PreflightOutcome:
    """The single gate's checks at the start of a run; blocking problems fail it.

    Returns:
        The resolved results directory every later step uses, and the warnings.

    Raises:
        WorkspaceError: leakage, missing data, the KPI set used as validation set, …
    """
    from automl_deft.preflight import build_preflight

    cfg = resolve_config(workspace, config)
    root = resolve_results_dir(workspace, results_dir)
    pre = build_preflight(
        workspace,
        cfg,
        results_dir=root,
        phases=tuple(phases),
        hpo_backend=hpo_backend or None,
        check_images=check_images,
    )
    if summary_md is not None:
        atomic_write_text(summary_md, pre.markdown())
    if pre.blocking:
        raise WorkspaceError(pre.blocking)
    root.mkdir(parents=True, exist_ok=True)
    return PreflightOutcome(results_dir=str(root), ok=True, warnings=list(pre.warnings))


# --- AutoML (Phase 1 and 3) --------------------------------------------------------------


@step
def automl_step(
    workspace: str,
    config: str,
    results_dir: str,
    *,
    phase: str,
    hpo_backend: str = "",
    train_csv: str | None = None,
    warm_start: str | None = None,
    centroid_overrides: str | None = None,
    katib: dict[str, Any] | None = None,
    out_spec: str | os.PathLike[str] | None = None,
    out_model: str | os.PathLike[str] | None = None,
    out_report: str | os.PathLike[str] | None = None,
) -> SearchWinner:
    """Run the Phase 1 (``phase1``) or Phase 3 (``phase3``) search.

    Phase 3 uses Phase 1's algorithm, metric and validation set, trains on
    ``train_csv`` (the last augmented set), starts every trial from
    ``warm_start``, pins the architecture to it, and centres the space on the
    Phase 1 winning spec: the workspace spec with ``centroid_overrides`` (the
    winner's HP YAML) deep-merged on top. ``katib`` overrides the config's Katib
    settings (the pipeline passes its volume, image and GPU count).

    Returns:
        The winner; its spec YAML, checkpoint and HTML report are copied to
        ``out_spec``, ``out_model`` and ``out_report``.
    """

    from automl_deft.hpo.search import SearchBusyError, automl_search
    from automl_deft.model.spec import load_spec
    from automl_deft.plan import plan_run
    from automl_deft.yamlio import dump_yaml, read_yaml_file

    which = Phase(phase)
    plan = plan_run(workspace, resolve_config(workspace, config), hpo_backend=hpo_backend or None)
    search_cfg = plan.search_config(which.value, katib=katib)
    out = RunLayout.at(results_dir).search(which)
    centroid = None
    if centroid_overrides:
        winning = read_yaml_file(centroid_overrides, what="Phase 1 winning spec") or {}
        centroid = load_spec(Workspace.at(workspace).spec_path).with_overrides(winning)
    try:
        result = automl_search(
            workspace,
            search_cfg,
            results_dir=out.root,
            phase=which.value,
            base_spec=centroid,
            train_csv=train_csv,
            warm_start=warm_start,
            centroid=centroid,
        )
    except UserError as exc:
        if which is not Phase.PHASE3 or isinstance(exc, SearchBusyError):
            raise
        # Phase 3 is an attempt to improve on DEFT's winner: a search that cannot hand
        # a winner on (every trial collapsed, no gain over zero-shot) loses to it,
        # recorded, instead of failing the whole run.
        reason = str(exc).splitlines()[0]
        log.warning("Phase 3 produced no usable winner: %s", reason)
        for path in (out_spec, out_model, out_report):
            if path is not None:
                atomic_write_text(path, f"Phase 3 produced no usable winner: {reason}\n")
        return SearchWinner(
            phase=which.value, results_dir=str(out.root), failed=reason, train_csv=train_csv
        )
    best = result.best
    if out_spec is not None:
        atomic_write_text(out_spec, dump_yaml(best.specs, sort_keys=True))
    if out_model is not None:
        atomic_copy(best.checkpoint, out_model)
    if out_report is not None:
        atomic_copy(out.report, out_report)
    return SearchWinner(
        phase=which.value,
        results_dir=str(out.root),
        rec_id=best.rec_id,
        far_pct=best.far_pct,
        val_loss=best.val_loss,
        metric=result.metric,
        metric_value=best.metric_value,
        checkpoint=best.checkpoint,
        specs=best.specs,
        pred_counts=best.pred_counts,
        algorithm=result.algorithm,
        backend=result.backend,
        trials=len(result.history),
        warm_start=warm_start,
        train_csv=train_csv,
        guards=result.guards.to_json(),
    )


@step
def quality_check_step(
    search: SearchWinner, *, out_md: str | os.PathLike[str] | None
) -> SearchWinner:
    """Check the winner before handing it on: both classes predicted, and zero-shot beaten.

    The search already skipped collapsed trials and re-ran a lucky winner; this step
    re-checks the result it is handed and writes what it found for the dashboard.

    Raises:
        UserError: the winner predicts one class only (nothing else qualified).
    """
    counts = search.pred_counts
    predicted = {k: v for k, v in counts.items() if v}
    lines = [
        f"# Quality check ({search.phase})",
        "",
        f"- winner: `{search.rec_id}`, validation far_pct {search.far_pct}",
        f"- per-class prediction counts: {json.dumps(counts)}",
    ]
    for key, value in sorted(search.guards.items()):
        lines.append(f"- guard `{key}`: {json.dumps(value, default=str)}")
    if counts and len(predicted) < 2:
        raise UserError(
            f"the AutoML winner {search.rec_id} predicts one class only ({counts}); "
            "widen the search space or raise max_trials"
        )
    lines.append("- verdict: **passed** (both classes predicted; zero-shot guard applied)")
    if out_md is not None:
        atomic_write_text(out_md, "\n".join(lines) + "\n")
    return search.replace(quality="passed")


# --- handoff 1 → 2 ------------------------------------------------------------------------


@step
def seed_deft_baseline_step(
    workspace: str, config: str, results_dir: str, search: SearchWinner
) -> BaselineSeed:
    """The four-step handoff: merged spec, copied checkpoint, pre-seeded state and log."""
    from automl_deft.deft.loop import workspace_inputs
    from automl_deft.handoff import AUTOML_SPEC_NAME, merge_winning_spec, seed_baseline

    if not search.usable or search.checkpoint is None:
        raise UserError(f"the {search.phase} search has no winner to hand on: {search.failed}")
    cfg = resolve_config(workspace, config)
    ws = Workspace.at(workspace)
    spec_out = ws.spec_path.with_name(AUTOML_SPEC_NAME)
    merge_winning_spec(ws.spec_path, search.specs, spec_out)
    state = seed_baseline(
        results_dir,
        checkpoint=search.checkpoint,
        train_metric=search.far_pct,
        config=cfg.deft,
        inputs=workspace_inputs(workspace, spec_path=spec_out),
    )
    base = state.path_of("baseline", "best_ckpt_path")
    return BaselineSeed(
        results_dir=str(state.results_dir),
        spec=str(spec_out),
        specs=search.specs,
        baseline_checkpoint=str(base),
        source=str(state.iteration("baseline").source),
    )


# --- Phase 2 -----------------------------------------------------------------------------


@step
def deft_step(
    workspace: str,
    config: str,
    results_dir: str,
    *,
    out_dataset: str | os.PathLike[str] | None = None,
    out_model: str | os.PathLike[str] | None = None,
    out_report: str | os.PathLike[str] | None = None,
) -> LoopOutcome:
    """Run (or resume) the DEFT loop in ``results_dir`` and publish its results.

    The augmented training set is published as a directory: ``train.csv`` plus
    ``manifest.json`` naming the images root and the results directory, so the
    rows resolve the same way locally and in a pod.
    """
    from automl_deft.deft.loop import run_deft
    from automl_deft.plan import plan_run

    cfg = resolve_config(workspace, config)
    plan = plan_run(workspace, cfg)
    outcome = run_deft(workspace, cfg.deft, results_dir=results_dir)
    if out_dataset is not None:
        publish_dataset(outcome.final_train_csv, out_dataset, workspace, results_dir)
    if out_model is not None and outcome.best_checkpoint is not None:
        atomic_copy(outcome.best_checkpoint, out_model)
    if out_report is not None and outcome.report is not None:
        atomic_copy(outcome.report, out_report)
    # Phase 3 runs only after a loop that ended normally: a hard stop or the regression
    # gate (needs_review) is one of the safety gates the pre-flight names.
    run_phase3 = plan.phase3_runs(
        hard_stopped=outcome.hard_stopped, needs_review=outcome.needs_review
    )
    return outcome.replace(run_phase3=run_phase3)


def publish_dataset(
    csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    workspace: str | os.PathLike[str],
    results_dir: str | os.PathLike[str],
) -> dict[str, str]:
    """Write a self-describing Dataset artifact directory (CSV + manifest)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_copy(csv, out / "train.csv")
    ws = Workspace.at(workspace)
    manifest = {
        "csv": "train.csv",
        "source_csv": str(csv),
        "images_dir": str(ws.images_dir),
        "results_dir": str(results_dir),
        "path_rule": "{images_dir}/{input_path}/{object_name}_{light}{ext}; input_path may "
        "start with ../ for generated images under results_dir",
    }
    atomic_write_json(out / DATASET_MANIFEST, manifest)
    return manifest


# --- handoff 2 → 3 and final -------------------------------------------------------------


@step
def select_warm_start_step(results_dir: str) -> WarmStart:
    """Phase 3's warm start: the lowest-far_pct DEFT iteration (never final_automl)."""
    from automl_deft.handoff import select_warm_start

    return select_warm_start(DeftState.load(results_dir))


@step
def finalize_step(
    workspace: str,
    config: str,
    results_dir: str,
    *,
    phase1: SearchWinner | None,
    phase3: SearchWinner | None,
    out_md: str | os.PathLike[str] | None = None,
    out_model: str | os.PathLike[str] | None = None,
    out_report: str | os.PathLike[str] | None = None,
) -> PipelineSummary:
    """Evaluate Phase 3's winner on the KPI set, register it, pick the best, summarise.

    Phase 3 loses to the DEFT winner when it regresses: that is recorded in the
    summary (``phase3_kept: false``), not hidden.
    """
    from automl_deft.application import get_application
    from automl_deft.deft.report import render_report
    from automl_deft.deft.stages import clear_dir, evaluate_checkpoints
    from automl_deft.handoff import register_final_automl, write_deliverable
    from automl_deft.model.spec import load_spec
    from automl_deft.workspace import read_dataset_csv

    cfg = resolve_config(workspace, config)
    state = DeftState.load(results_dir)
    layout = state.layout
    inputs = state.inputs
    app = get_application(
        cfg.deft.application, inputs.path("images_dir"), load_spec(inputs.path("spec"))
    )
    if phase3 is not None and phase3.failed:
        log.warning("Phase 3 did not produce a winner (%s); the DEFT winner stands", phase3.failed)
    elif phase3 is not None and phase3.checkpoint and FINAL_AUTOML not in state.iterations:
        out = layout.final_inference
        clear_dir(out)
        kpi = read_dataset_csv(inputs.path("kpi_csv"), role="KPI test")
        kind, result, _ = evaluate_checkpoints(
            app, {"best_val": Path(phase3.checkpoint)}, kpi, out, title=FINAL_AUTOML
        )
        if kind is None or result is None:
            raise UserError(f"Phase 3 checkpoint {phase3.checkpoint} is missing")
        register_final_automl(
            state,
            checkpoint=phase3.checkpoint,
            kpi=KPISummary.of(result),
            inference_csv=out / RunLayout.KPI_SCORES,
            val_far_pct=phase3.far_pct,
            warm_start_from=phase3.warm_start,
            train_csv=phase3.train_csv,
            rec_id=phase3.rec_id,
        )
    # Every choice is made here, on the steering set: only now is the hold-out read.
    best = write_deliverable(state, app)
    summary = trajectory(state, phase1=phase1, phase3=phase3, best=best)
    summary = with_evidence(summary, state, app, Workspace.at(workspace), phase1, phase3)
    summary.write(layout.summary)
    report = render_report(results_dir)
    if out_md is not None:
        atomic_write_text(out_md, trajectory_markdown(summary))
    if out_model is not None and best is not None:
        atomic_copy(best.path(layout.root, "checkpoint"), out_model)
    if out_report is not None:
        atomic_copy(report, out_report)
    return summary


EXPORT_NONE = "none"


@step
def export_step(results_dir: str, fmt: str, out_dir: str | os.PathLike[str]) -> ExportOutcome:
    """Package the deliverable (``onnx`` / ``torchscript``) with its model card into
    ``out_dir``; ``none`` (or no deliverable) skips, saying why."""
    from automl_deft.model_card import export_run

    layout = RunLayout(Path(results_dir))
    if fmt == EXPORT_NONE:
        return ExportOutcome(format=fmt, skipped="export_format is none")
    if not layout.deliverable.is_file():
        return ExportOutcome(format=fmt, skipped="the run has no deliverable")
    package = export_run(layout.root, fmt, out_dir)
    summary = PipelineSummary.read(layout.summary) if layout.summary.is_file() else None
    held = summary.holdout if summary is not None else None
    return ExportOutcome(
        format=fmt,
        path=str(out_dir),
        model_file=package.manifest.model_file,
        threshold=package.manifest.threshold,
        far_pct=summary.best.far_pct if summary is not None and summary.best else None,
        holdout_far_pct=held.far_pct if held is not None else None,
    )


def with_evidence(
    summary: PipelineSummary,
    state: DeftState,
    app: Any,
    ws: Workspace,
    phase1: SearchWinner | None,
    phase3: SearchWinner | None,
) -> PipelineSummary:
    """The summary with what a reviewer can trust: steering-set intervals, every step on
    the untouched hold-out (scored here, once, after the deliverable is chosen), the
    KPI verdict and the review notes (:mod:`automl_deft.scorecard`)."""
    from automl_deft.holdout import read_holdout
    from automl_deft.kpi import parse_target
    from automl_deft.scorecard import review_notes, score_holdout, steering_interval

    holdout_frame = read_holdout(ws)
    steps = []
    for s in summary.trajectory:
        rec = state.iterations[s.step]
        ckpt = state.path_of(s.step, "best_ckpt_path")
        held = None
        if holdout_frame is not None and ckpt is not None and ckpt.is_file():
            held = score_holdout(
                app,
                ckpt,
                holdout_frame,
                deployed_threshold=rec.threshold,
                out_csv=state.layout.holdout_scores(s.step),
            )
        steps.append(
            s.replace(
                far_pct_ci95=steering_interval(state, s.step),
                val_far_pct=rec.val_far_pct,
                holdout=held,
            )
        )
    best = summary.best
    chosen = next((s for s in steps if best is not None and s.step == best.iteration), None)
    target = parse_target(state.kpi_target) if state.kpi_target else None
    far = best.far_pct if best is not None else None
    held_far = chosen.holdout.far_pct if chosen is not None and chosen.holdout else None
    return summary.replace(
        trajectory=steps,
        far_pct_ci95=chosen.far_pct_ci95 if chosen else None,
        holdout=chosen.holdout if chosen else None,
        holdout_note=None if holdout_frame is not None else "no kpi/holdout_set.csv",
        kpi_met=None if target is None else target.is_met(far),
        kpi_gap_pp=None if target is None else target.gap_pp(far),
        holdout_kpi_met=None if target is None or held_far is None else target.is_met(held_far),
        holdout_kpi_gap_pp=None if target is None or held_far is None else target.gap_pp(held_far),
        notes=review_notes(
            state,
            best,
            phase1=phase1,
            phase3=phase3,
            holdout=chosen.holdout if chosen else None,
            has_holdout=holdout_frame is not None,
        ),
    )


def trajectory(
    state: DeftState,
    *,
    phase1: SearchWinner | None,
    phase3: SearchWinner | None,
    best: Deliverable | None,
) -> PipelineSummary:
    """Phase 1 best → DEFT iterations → Phase 3 best, far_pct on the KPI set each."""
    steps: list[tuple[tuple[bool, int], TrajectoryStep]] = []
    for label, rec in state.iterations.items():
        if rec.far_pct is None and label != FINAL_AUTOML:
            continue
        n = iteration_number(label)
        phase = phase_of(label, rec.source)
        order = (phase is Phase.PHASE3, -1 if n is None else n)
        steps.append(
            (
                order,
                TrajectoryStep(
                    step=label,
                    phase=phase.value,
                    far_pct=rec.far_pct,
                    threshold=rec.threshold,
                    train_rows=rec.train_rows,
                    added_rows=rec.added_rows,
                ),
            )
        )
    steps.sort(key=lambda s: s[0])
    return PipelineSummary(
        results_dir=str(state.results_dir),
        kpi_target=state.kpi_target,
        deft_status=state.status,
        deft_stop_reason=state.stop_reason,
        phase1=SearchBrief.of(phase1),
        phase3=SearchBrief.of(phase3),
        phase3_ran=phase3 is not None,
        phase3_failed=None if phase3 is None else phase3.failed,
        phase3_kept=best is not None and best.iteration == FINAL_AUTOML,
        trajectory=[s for _, s in steps],
        best=best,
    )


def trajectory_markdown(summary: PipelineSummary) -> str:
    """The trajectory as a Markdown table (the dashboard's summary artifact)."""
    from automl_deft.kpi import format_far

    lines = [
        "# automl-deft: trajectory, steering set and untouched hold-out",
        "",
        f"KPI target: {summary.kpi_target} · DEFT: {summary.deft_status}",
        "",
        "FAR at 100% recall with bootstrap 95% intervals. The KPI (steering) set chose "
        "checkpoints, mined rows and picked the best; the hold-out steered nothing.",
        "",
        "| step | phase | KPI set FAR | hold-out FAR | threshold | training rows |",
        "|---|---|---|---|---|---|",
    ]
    for s in summary.trajectory:
        thr = "n/a" if s.threshold is None else f"{s.threshold:.4g}"
        held = "—" if s.holdout is None else format_far(s.holdout.far_pct, s.holdout.ci95)
        lines.append(
            f"| {s.step} | {s.phase} | {format_far(s.far_pct, s.far_pct_ci95)} | {held} "
            f"| {thr} | {s.train_rows or ''} |"
        )
    best = summary.best
    if best:
        lines += [
            "",
            f"**Deliverable:** `{best.iteration}` at KPI-set FAR "
            f"{format_far(best.far_pct, summary.far_pct_ci95)} (threshold {best.threshold:.4g})"
            f" — `{best.checkpoint}`",
        ]
        if summary.holdout is not None:
            lines.append(
                f"**Hold-out:** FAR {format_far(summary.holdout.far_pct, summary.holdout.ci95)}"
                f" on {summary.holdout.rows} rows"
            )
        if best.chosen_because:
            lines.append(f"Chosen because: {best.chosen_because}.")
    if kpi_gate(summary) is not None:
        lines += ["", kpi_verdict(summary)]
    if summary.phase3_ran and not summary.phase3_kept:
        lines.append("")
        lines.append("Phase 3 did not beat the best DEFT iteration; the DEFT winner is kept.")
    if summary.phase3_failed:
        lines.append("")
        lines.append(f"Phase 3 produced no usable winner: {summary.phase3_failed}")
    if not summary.phase3_ran:
        lines.append("")
        lines.append("Phase 3 skipped (DEFT hard-stopped or disabled).")
    if summary.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in summary.notes]
    return "\n".join(lines) + "\n"


def kpi_verdict(summary: PipelineSummary) -> str:
    """``KPI MET`` or ``KPI NOT MET (x.x pp from target)`` for the number that gates
    (:func:`kpi_gate`), naming the set; empty when the run has no target."""
    met = kpi_gate(summary)
    if met is None:
        return ""
    on_holdout = summary.holdout_kpi_met is not None
    where = "on the untouched hold-out" if on_holdout else "on the KPI (steering) set"
    gap_pp = summary.holdout_kpi_gap_pp if on_holdout else summary.kpi_gap_pp
    other = ""
    if on_holdout and summary.kpi_met is not None:
        other = f"; KPI set: {'met' if summary.kpi_met else 'not met'}"
    if met:
        return f"KPI MET {where} ({summary.kpi_target}{other})"
    gap = "n/a" if gap_pp is None else f"{gap_pp:.1f}"
    return f"KPI NOT MET {where} ({gap} pp from target {summary.kpi_target}{other})"


def kpi_gate(summary: PipelineSummary) -> bool | None:
    """Whether the deliverable meets the target: on the hold-out when the workspace has
    one (the number that steered nothing), else on the KPI set; None without a target."""
    return summary.holdout_kpi_met if summary.holdout_kpi_met is not None else summary.kpi_met
