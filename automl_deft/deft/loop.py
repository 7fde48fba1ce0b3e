"""The DEFT loop: a disk-backed state machine, resumable after every stage.

Baseline: train (skipped when pre-seeded by Phase 1) → evaluate → rca.
Iteration N: routing → sdg → mining → data_merge → train → evaluate → rca, then
the gates: KPI met → stop; regression gate → stop for review; N == max → stop.

Every stage writes its outputs under ``<results>/<label>/…`` first and is then
committed in ``deft_state.json`` (see :mod:`automl_deft.deft.state`). A stage
that did not commit is redone from scratch on resume (its output folder is
cleared first); training itself continues from its ``latest.pt``. A stage that
raises a project error (:class:`~automl_deft.errors.AutomlDeftError`) hard-stops
the loop with the reason in the state, the log and the report; any other
exception (a crash, Ctrl-C) leaves the state as it was, ready to resume.

Before the first stage (so before a baseline is trained) :func:`check_inputs`
checks the plug-in names (SDG backend, mining embedder) and the workspace, as
``automl-deft validate`` does; a results directory of another workspace is not
resumed.

The loop ends with the pick-best safety net: ``best_model.json`` and
``best_model_inference_spec.yaml`` describe the lowest-far_pct checkpoint over
the baseline and every iteration, even if the last iteration regressed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from automl_deft import console
from automl_deft.console import format_duration
from automl_deft.deft.config import DeftConfig
from automl_deft.deft.deliverable import final_training_set, write_deliverable
from automl_deft.deft.stages import Stages
from automl_deft.deft.state import (
    COMPLETE,
    HARD_STOPPED,
    IN_PROGRESS,
    NEEDS_REVIEW,
    DeftState,
    iteration_label,
    iteration_number,
    run_lock,
    stages_of,
)
from automl_deft.errors import AutomlDeftError, UserError, WorkspaceError
from automl_deft.layout import RunLayout
from automl_deft.records import LoopOutcome, RunInputs, far_or_inf
from automl_deft.workspace import Workspace, new_run_dir

log = logging.getLogger(__name__)

Status = Callable[[str], None]
StageHook = Callable[[str, str], None]
"""Called with ``(label, stage)`` after a stage wrote its outputs, before it commits
(tests use it to kill the process at the worst moment)."""


def workspace_inputs(
    workspace: str | os.PathLike[str], *, spec_path: str | os.PathLike[str] | None = None
) -> RunInputs:
    """The absolute paths the loop reads, as recorded in ``config.paths``."""
    ws = Workspace.at(workspace)
    return RunInputs(
        workspace=str(ws.root.resolve()),
        train_csv=str(ws.train_csv.resolve()),
        val_csv=str(ws.val_csv.resolve()),
        kpi_csv=str(ws.kpi_csv.resolve()),
        pool_csv=str(ws.pool_csv.resolve()),
        images_dir=str(ws.images_dir.resolve()),
        spec=str(Path(spec_path or ws.spec_path).resolve()),
    )


def _print(line: str) -> None:
    # Under ``automl-deft run`` a console event (shown as it is), else a plain line.
    console.emit("stage", line, echo=True)


def config_problems(cfg: DeftConfig) -> list[str]:
    """Plug-in names the loop would only look up mid-run (after training its baseline),
    checked against their registries now: one line each, listing the valid names."""
    from automl_deft.deft.embedders import EMBEDDERS
    from automl_deft.deft.sdg import SDG_BACKENDS

    problems = []
    if cfg.sdg.enabled and cfg.sdg.backend not in SDG_BACKENDS:
        problems.append(
            f"deft.sdg.backend: unknown SDG backend {cfg.sdg.backend!r}; choose one of "
            f"{', '.join(sorted(SDG_BACKENDS))}"
        )
    if cfg.mining.enabled and cfg.mining.embedder not in EMBEDDERS:
        problems.append(
            f"deft.mining.embedder: unknown mining embedder {cfg.mining.embedder!r}; choose one "
            f"of {', '.join(sorted(EMBEDDERS))}"
        )
    return problems


def check_inputs(
    workspace: str | os.PathLike[str],
    inputs: RunInputs,
    cfg: DeftConfig,
    run_dir: str | os.PathLike[str],
    *,
    check_pool: bool = False,
) -> None:
    """What the loop checks before its first stage: the plug-in names and the workspace.

    The workspace check is :func:`automl_deft.validate.guard_workspace` on the sets the
    run records (training, validation, KPI set, and the hold-out): leakage by row and by
    image content, both classes, every image. ``check_pool`` checks the mining pool the
    same way (the ``deft`` command does); otherwise the stages that use the pool refuse
    a missing or leaking one (routing, assembly).

    Raises:
        WorkspaceError: every problem, one line each.
    """
    from automl_deft.application import get_application
    from automl_deft.model.spec import load_spec
    from automl_deft.validate import guard_workspace

    problems = config_problems(cfg)
    images_dir = inputs.path("images_dir")
    naming = get_application(cfg.application, images_dir, load_spec(inputs.path("spec"))).naming()
    try:
        guard_workspace(
            inputs.workspace or workspace,
            naming,
            train_csv=inputs.train_csv,
            val_csv=inputs.val_csv,
            kpi_csv=inputs.kpi_csv,
            pool_csv=inputs.pool_csv,
            with_pool=check_pool and cfg.mining.enabled,
            require_pool=cfg.mining.on_empty_pool == "hard_stop",
            run_dirs=[run_dir],
        )
    except WorkspaceError as exc:
        problems.extend(exc.problems)
    if problems:
        raise WorkspaceError(problems)


def _refuse_other_workspace(state: DeftState, workspace: str | os.PathLike[str]) -> None:
    recorded = state.inputs.workspace
    here = Workspace.at(workspace).root
    if recorded and Path(recorded).resolve() != here:
        raise UserError(
            f"{state.results_dir} is a run of the workspace {recorded}, not {here}; resume it "
            "with its own workspace, or start a new results directory for this one"
        )


def run_deft(
    workspace: str | os.PathLike[str],
    config: DeftConfig | None = None,
    *,
    results_dir: str | os.PathLike[str] | None = None,
    spec_path: str | os.PathLike[str] | None = None,
    acknowledge_regression: bool = False,
    status: Status | None = _print,
    before_commit: StageHook | None = None,
    check_pool: bool = False,
) -> LoopOutcome:
    """Run (or resume) the DEFT loop on a workspace.

    Args:
        workspace: the workspace root (layout in :mod:`automl_deft.workspace`).
        config: the loop's settings; ignored when resuming (the state's own are used).
        results_dir: where state and outputs go; an existing ``deft_state.json`` there
            is resumed (this is also how a Phase 1 pre-seeded baseline is picked up).
            Default: ``<ws>/results/run_<timestamp>``.
        spec_path: the training spec for a baseline trained here (default: the
            workspace's ``specs/baseline_spec.yaml``).
        acknowledge_regression: continue a run stopped by the regression gate.
        status: receives the one-line status after every stage (None: silent).
        before_commit: called after each stage's outputs exist, before its commit.
        check_pool: check the mining pool with the workspace before the first stage
            (otherwise the stages that use it refuse a missing or leaking pool).

    Returns:
        The outcome; a hard stop is reported there, not raised.

    Raises:
        UserError: a bad workspace/config (checked before the first stage, see
            :func:`check_inputs`), a results directory that belongs to another
            workspace, or another loop holds the results directory.
    """
    # Absolute: stored paths are relative to the run, and a relative root would be
    # applied twice (RUN/RUN/baseline/…) by whatever joins them to it again.
    root = Path(os.path.abspath(results_dir)) if results_dir else new_run_dir(workspace)
    if DeftState.exists(root):
        seen = DeftState.load(root, reconcile=False)
        _refuse_other_workspace(seen, workspace)
        runs = seen.status != COMPLETE and (seen.status != NEEDS_REVIEW or acknowledge_regression)
        if runs:
            check_inputs(workspace, seen.inputs, seen.config, root, check_pool=check_pool)
    else:
        check_inputs(
            workspace,
            workspace_inputs(workspace, spec_path=spec_path),
            config or DeftConfig(),
            root,
            check_pool=check_pool,
        )
    with run_lock(root):
        if DeftState.exists(root):
            state = DeftState.load(root)
        else:
            state = DeftState.create(
                root,
                config=config or DeftConfig(),
                inputs=workspace_inputs(workspace, spec_path=spec_path),
            )
        loop = _Loop(state, state.config, status, before_commit)
        return loop.run(acknowledge_regression=acknowledge_regression)


class _Loop:
    def __init__(
        self,
        state: DeftState,
        cfg: DeftConfig,
        status: Status | None,
        before_commit: StageHook | None,
    ) -> None:
        self.state = state
        self.cfg = cfg
        self.status = status
        self.before_commit = before_commit
        self.stages = Stages(state, cfg, self._say)
        self.target = self.stages.target

    # --- driver -------------------------------------------------------------------------

    def run(self, *, acknowledge_regression: bool) -> LoopOutcome:
        st = self.state
        if st.status == NEEDS_REVIEW:
            if not acknowledge_regression:
                self._say(f"stopped for review: {st.stop_reason}")
                self._say("re-run with --acknowledge-regression to continue")
                return self._finish()
            st.acknowledged.append(iteration_label(st.current_iteration))
            st.reopen()
        elif st.status == HARD_STOPPED:
            self._say(f"retrying after hard stop: {st.stop_reason}")
            st.reopen()
        elif st.status == COMPLETE:
            return self._finish()

        try:
            for label in self._labels():
                for stage in stages_of(label):
                    if st.done(label, stage):
                        continue
                    self._run_stage(label, stage)
                stop = self._gates(label)
                if stop:
                    st.stop(stop[0], stop[1], label=label)
                    break
        except AutomlDeftError as exc:
            # _run_stage recorded it; the deliverable still names the best so far.
            log.debug("hard stop", exc_info=exc)
        return self._finish()

    def _labels(self) -> list[str]:
        return [iteration_label(n) for n in range(self.cfg.max_iterations + 1)]

    def _run_stage(self, label: str, stage: str) -> None:
        start = time.monotonic()
        before = self.stages.best_far()
        try:
            with console.activity(self._where(label, stage)):  # a training bar names it
                fields, summary = getattr(self.stages, f"stage_{stage}")(label)
        except AutomlDeftError as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.state.record_error(label, stage, message, time.monotonic() - start)
            self._say(f"[{self._where(label, stage)}] HARD STOP: {message}")
            self._render_report()
            raise
        if self.before_commit is not None:
            self.before_commit(label, stage)
        duration = time.monotonic() - start
        self.state.commit(label, stage, summary=summary, duration_sec=duration, **fields)
        self._job_done(label, stage, duration)
        self._say(self._status_line(label, stage, summary, duration, before))
        if stage == "rca":
            self._render_report()

    # --- gates --------------------------------------------------------------------------

    def _gates(self, label: str) -> tuple[str, str] | None:
        rec = self.state.iteration(label)
        far = rec.far_pct
        n = iteration_number(label) or 0
        if self.target.is_met(far):
            return COMPLETE, f"KPI met at {label}: FAR {far:.2f}% ({self.target})"
        if (
            n
            and self.cfg.regression.enabled
            and self._regression_streak() >= (self.cfg.regression.patience)
        ):
            return (
                NEEDS_REVIEW,
                f"{self._regression_streak()} iteration(s) in a row worse than the best so far by "
                f"more than {self.cfg.regression.tolerance_pp:g} pp (last: {label} "
                f"FAR {far_or_inf(far):.2f}%)",
            )
        if n >= self.cfg.max_iterations:
            return COMPLETE, f"max_iterations ({self.cfg.max_iterations}) reached"
        if rec.reachable is False:
            return HARD_STOPPED, f"KPI unreachable at {label}: {rec.unreachable_reason}"
        return None

    def _regression_streak(self) -> int:
        acknowledged = set(self.state.acknowledged)
        streak = 0
        for n in range(1, self.cfg.max_iterations + 1):
            rec = self.state.iterations.get(iteration_label(n))
            if not rec or rec.far_pct is None:
                break
            if iteration_label(n) in acknowledged:
                streak = 0
            elif rec.regression:
                streak += 1
            else:
                streak = 0
        return streak

    # --- output -------------------------------------------------------------------------

    def _where(self, label: str, stage: str) -> str:
        n = iteration_number(label)
        if n:
            return f"iter {n}/{self.cfg.max_iterations} · {stage}"
        return f"{label} · {stage}"

    def _status_line(
        self, label: str, stage: str, summary: str, duration: float, before: float | None
    ) -> str:
        stages = stages_of(label)
        i = stages.index(stage)
        if i + 1 < len(stages):
            nxt = stages[i + 1]
        else:
            n = iteration_number(label) or 0
            nxt = "gates" if n >= self.cfg.max_iterations else f"iter {n + 1} routing"
        text = summary
        if stage == "evaluate":
            far = self.state.iteration(label).far_pct
            if before is not None and far is not None:
                text = f"FAR {before:.2f}% → {far:.2f}% (target {self.target.short()})"
            elif far is not None:
                text = f"FAR {far:.2f}% (target {self.target.short()})"
        return f"[{self._where(label, stage)}] {text} · {format_duration(duration)} · next: {nxt}"

    def _say(self, line: str) -> None:
        if self.status is not None:
            self.status(line)

    def _job_done(self, label: str, stage: str, duration: float) -> None:
        """A training job ended (an iteration's last stage, or the baseline trained here):
        its time feeds ``automl-deft run``'s overall ETA."""
        n = iteration_number(label) or 0
        if n and stage == stages_of(label)[-1]:
            seconds = sum(self.state.iteration(label).durations.values())
        elif not n and stage == "train" and duration > 0:
            seconds = duration
        else:
            return
        console.emit("job", "", job_seconds=seconds, done=n, of=self.cfg.max_iterations)

    def _render_report(self) -> Path | None:
        from automl_deft.deft.report import render_report

        try:
            return render_report(self.state.results_dir)
        except Exception as exc:  # a report must never stop the loop
            log.warning("report not rendered: %s", exc)
            return None

    def _finish(self) -> LoopOutcome:
        st = self.state
        best = write_deliverable(st, self.stages.app)
        report = self._render_report()
        n_final, csv = final_training_set(st)
        status = st.status or IN_PROGRESS
        best_far = best.far_pct if best else None
        outcome = LoopOutcome(
            results_dir=str(st.results_dir),
            status=status,
            stop_reason=st.stop_reason,
            best_label=best.iteration if best else None,
            best_checkpoint=str(best.path(st.results_dir, "checkpoint")) if best else None,
            best_far_pct=best_far,
            best_threshold=best.threshold if best else None,
            n_final=n_final,
            final_train_csv=str(csv),
            kpi_met=self.target.is_met(best_far),
            report=None if report is None else str(report),
        )
        if best:
            self._say(
                f"[done · {status}] best {outcome.best_label}: FAR {best_far:.2f}% "
                f"(target {self.target.short()}) · {RunLayout(st.results_dir).deliverable}"
            )
            console.emit("result", f"best {outcome.best_label}: KPI FAR {best_far:.2f}%")
        return outcome
