"""The run plan: every decision a run makes before it starts, computed once.

:func:`plan_run` reads the workspace spec, the run config and (when the results
directory holds one) the DEFT state, and returns a frozen :class:`RunPlan`:

- per search phase (Phase 1, Phase 3) the exact :class:`AutomlConfig` the search
  runs with (:meth:`RunPlan.search_config`), its trainings, epochs, batch size,
  metric and algorithm;
- for DEFT the settings the loop will use (a resumed run keeps the ones it started
  with), the epochs and batch size per iteration and where each comes from, and
  where the baseline comes from (pre-seeded by Phase 1, trained here, or resumed);
- the Phase 3 gate (:meth:`RunPlan.phase3_runs`) and the hard safety gates;
- the compute estimate's inputs.

The pre-flight renders this object and the steps decide by it, so the summary a
user approves is the run that happens. Nothing here writes files or raises for a
problem the pre-flight should report: problems are recorded on the plan
(``spec_error``, ``resume_error``, ``problems``), one line each with the fix.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from automl_deft.deft.config import DeftConfig, check_config
from automl_deft.deft.state import COMPLETE, HARD_STOPPED, NEEDS_REVIEW, DeftState, stages_of
from automl_deft.errors import AutomlDeftError, SpecError, UserError
from automl_deft.handoff import unseedable
from automl_deft.hpo.algorithms import canonical
from automl_deft.hpo.base import BACKENDS
from automl_deft.hpo.guards import lucky_winner_can_fire
from automl_deft.hpo.search import AutomlConfig
from automl_deft.hpo.space import SearchSpace
from automl_deft.kpi import KPITarget
from automl_deft.model.spec import Spec, load_spec
from automl_deft.phases import (
    BASELINE,
    SOURCE_PHASE1,
    SOURCE_TRAINED_HERE,
    Phase,
    iteration_label,
    parse_phases,
)
from automl_deft.run_config import RunConfig
from automl_deft.workspace import Workspace

__all__ = [
    "PHASES",
    "BaselineSource",
    "ComputePlan",
    "DeftPlan",
    "Phase3Gate",
    "ResumePoint",
    "RunPlan",
    "SearchPhasePlan",
    "ValueSource",
    "plan_run",
]

PHASES: tuple[str, ...] = ("automl", "deft", "phase3")
"""The phases a pipeline may run, in run order, by the names the pipelines pass
(:class:`~automl_deft.phases.Phase` values ``phase1``, ``phase2``, ``phase3`` work too)."""

EPOCHS_KEY = "train.num_epochs"
BATCH_KEY = "dataset.classify.batch_size"


class ValueSource(StrEnum):
    """Where a DEFT training setting (epochs, batch size) comes from."""

    CONFIG = "config"
    """``deft.num_epochs`` / ``deft.batch_size``."""
    RESUMED_SPEC = "resumed_spec"
    """The spec the resumed run's state records."""
    PHASE1_WINNER = "phase1_winner"
    """The Phase 1 winner's spec (the search pins it; the handoff merges it in)."""
    WORKSPACE_SPEC = "workspace_spec"
    UNKNOWN = "unknown"
    """The spec did not load."""


class BaselineSource(StrEnum):
    """Where DEFT's baseline checkpoint comes from."""

    PHASE1 = SOURCE_PHASE1
    """Pre-seeded with the Phase 1 winner (no baseline training)."""
    TRAINED_HERE = SOURCE_TRAINED_HERE
    """Trained by the loop from the spec."""
    RESUMED = "resumed"
    """Already trained in the resumed run."""


@dataclass(frozen=True)
class ResumePoint:
    """What an existing ``deft_state.json`` says about the run to resume.

    Attributes:
        results_dir: the run's results directory.
        status: the loop's status (``in_progress``, ``complete``, ``hard_stopped``, …).
        stop_reason: why it stopped, if it did.
        label, stage: the next stage the loop runs (``baseline`` · ``evaluate``).
        config: the loop settings the run started with (a resumed run keeps them).
        baseline_trained: the baseline's ``train`` stage is committed.
        baseline_source: the source the baseline record names (``automl_phase1``, …).
        spec_path: the training spec the run recorded, if any.
    """

    results_dir: Path
    status: str
    stop_reason: str | None
    label: str
    stage: str
    config: DeftConfig
    baseline_trained: bool
    baseline_source: str | None
    spec_path: Path | None

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE

    @property
    def hard_stopped(self) -> bool:
        return self.status == HARD_STOPPED

    @property
    def needs_review(self) -> bool:
        return self.status == NEEDS_REVIEW


def _resume_point(results_dir: Path) -> ResumePoint | None:
    """The only reader of ``deft_state.json`` here (None when there is none).

    Raises:
        UserError: the state cannot be read, or its settings are invalid.
    """
    if not DeftState.exists(results_dir):
        return None
    state = DeftState.load(results_dir, reconcile=False)  # the pre-flight writes nothing
    n = state.current_iteration
    label = iteration_label(n)
    stage = state.next_stage(label)
    if stage is None:
        label = iteration_label(n + 1)
        stage = stages_of(label)[0]
    baseline = state.iterations.get(BASELINE)
    return ResumePoint(
        results_dir=state.results_dir,
        status=state.status,
        stop_reason=state.stop_reason,
        label=label,
        stage=stage,
        config=check_config(state.config, f"{results_dir}/deft_state.json"),
        baseline_trained=state.done(BASELINE, "train"),
        baseline_source=baseline.source if baseline is not None else None,
        spec_path=Path(state.inputs.spec) if state.inputs.spec else None,
    )


@dataclass(frozen=True)
class SearchPhasePlan:
    """One search phase as it will run.

    Attributes:
        phase: ``phase1`` or ``phase3``.
        config: the exact search config (Phase 3: ``RunConfig.phase3_automl()``;
            the backend override applied).
        space: the search space (None when the config's space is invalid).
        problems: what stops this search, one line each with the fix.
        lucky_rerun: the lucky-winner guard can re-train the winner once more.
        epochs, batch_size: what every trial trains with (pinned in the space).
    """

    phase: str
    config: AutomlConfig
    space: SearchSpace | None
    problems: tuple[str, ...]
    lucky_rerun: bool
    epochs: int
    batch_size: int

    @property
    def backend(self) -> str:
        return self.config.backend

    @property
    def algorithm(self) -> str:
        return self.config.algorithm

    @property
    def metric(self) -> str:
        return self.config.metric

    @property
    def trainings(self) -> int:
        """Trials that finish (one training each)."""
        return self.config.max_trials

    @property
    def max_trainings(self) -> int:
        """Trainings including a lucky-winner re-run."""
        return self.trainings + int(self.lucky_rerun)

    @property
    def zero_shot_gate(self) -> bool:
        """A winner that does not beat the zero-shot scorer stops the search."""
        return not self.config.guards.allow_no_gain_over_zero_shot


@dataclass(frozen=True)
class DeftPlan:
    """The DEFT loop as it will run.

    Attributes:
        config: the loop's settings (a resumed run's own, else ``RunConfig.deft``).
        target: the parsed KPI target (None when it does not parse; see ``problems``).
        epochs, epochs_source: fine-tuning epochs per iteration and where they come from.
        batch_size, batch_source: the training batch size and where it comes from.
        baseline: where the baseline checkpoint comes from.
        baseline_recorded: the baseline source a resumed state records.
        problems: what stops the loop before it starts, one line each with the fix.
    """

    config: DeftConfig
    target: KPITarget | None
    epochs: int | None
    epochs_source: ValueSource
    batch_size: int | None
    batch_source: ValueSource
    baseline: BaselineSource
    baseline_recorded: str | None
    problems: tuple[str, ...]

    @property
    def kpi_target(self) -> str:
        return self.config.kpi_target

    @property
    def max_iterations(self) -> int:
        return self.config.max_iterations

    @property
    def baseline_trainings(self) -> int:
        """1 when the loop trains its own baseline, else 0."""
        return int(self.baseline is BaselineSource.TRAINED_HERE)

    @property
    def trainings(self) -> int:
        """Iteration trainings plus the baseline's (an upper bound when resuming)."""
        return self.max_iterations + self.baseline_trainings

    @property
    def evaluations(self) -> int:
        """KPI-set evaluations at most: best_val and latest, baseline and every iteration."""
        return 2 * (self.max_iterations + 1)

    @property
    def uses_pool(self) -> bool:
        return self.config.mining.enabled

    @property
    def requires_pool(self) -> bool:
        """A missing or empty mining pool hard-stops the loop."""
        return self.uses_pool and self.config.mining.on_empty_pool == "hard_stop"


@dataclass(frozen=True)
class Phase3Gate:
    """Whether Phase 3 runs: planned, and only after a DEFT loop that ended normally.

    A hard stop or the regression gate (``needs_review``) skips it: both are safety
    gates the pre-flight names.
    """

    in_pipeline: bool
    enabled: bool
    """``phase3.enabled``."""
    skipped_when: tuple[str, ...] = (HARD_STOPPED, NEEDS_REVIEW)
    """DEFT statuses after which Phase 3 does not run."""

    @property
    def planned(self) -> bool:
        return self.in_pipeline and self.enabled

    def runs(self, *, hard_stopped: bool, needs_review: bool) -> bool:
        return self.planned and not (hard_stopped or needs_review)


@dataclass(frozen=True)
class ComputePlan:
    """The compute estimate's inputs (minutes only when the config gives them)."""

    per_job_minutes: float | None
    per_iteration_minutes: float | None
    """As configured (None: ``per_job_minutes``)."""

    @property
    def iteration_minutes(self) -> float | None:
        """Minutes per DEFT iteration (default: per training job)."""
        return self.per_iteration_minutes or self.per_job_minutes


@dataclass(frozen=True)
class RunPlan:
    """One run's decisions, computed once by :func:`plan_run`.

    Attributes:
        workspace: the workspace.
        config: the run config the plan was computed from.
        phases: the phases this pipeline runs, in run order.
        results_dir: the run's results directory (None: a fresh default one).
        spec, spec_error: the workspace spec, or why it did not load.
        resume, resume_error: the state to resume, or why it could not be read.
        settings_differ: DEFT settings the resumed state holds differently from the config.
        phase1, phase3: the two searches (computed whether or not they run).
        deft: the DEFT loop.
        phase3_gate: whether Phase 3 runs.
        compute: the estimate's inputs.
    """

    workspace: Workspace
    config: RunConfig
    phases: tuple[Phase, ...]
    results_dir: Path | None
    spec: Spec | None
    spec_error: str | None
    resume: ResumePoint | None
    resume_error: str | None
    settings_differ: tuple[str, ...]
    phase1: SearchPhasePlan
    deft: DeftPlan
    phase3: SearchPhasePlan
    phase3_gate: Phase3Gate
    compute: ComputePlan

    def in_pipeline(self, phase: str) -> bool:
        """``phase`` (``automl``/``phase1``, ``deft``/``phase2``, ``phase3``) is one of this
        pipeline's."""
        return _phase(phase) in self.phases

    def runs(self, phase: str) -> bool:
        """``phase`` is in the pipeline and enabled (Phase 3 still waits for its gate)."""
        if _phase(phase) is Phase.PHASE3:
            return self.phase3_gate.planned
        return self.in_pipeline(phase)

    def search(self, phase: str) -> SearchPhasePlan:
        """The plan of search phase ``phase1`` (or ``automl``) or ``phase3``.

        Raises:
            UserError: another name.
        """
        which = _phase(phase) if phase in _ACCEPTED else None
        if which is Phase.PHASE1:
            return self.phase1
        if which is Phase.PHASE3:
            return self.phase3
        raise UserError(f"unknown search phase {phase!r}; choose from phase1, phase3")

    def search_config(self, phase: str, *, katib: dict[str, Any] | None = None) -> AutomlConfig:
        """The exact config the ``phase`` search runs with.

        Args:
            phase: ``phase1`` or ``phase3``.
            katib: Katib settings merged over the config's (the pipeline passes its
                volume, image and GPU count).
        """
        cfg = self.search(phase).config
        if katib:
            cfg = dataclasses.replace(cfg, katib={**cfg.katib, **katib})
        return cfg

    def phase3_runs(self, *, hard_stopped: bool, needs_review: bool) -> bool:
        """Whether Phase 3 runs after a DEFT loop that ended this way."""
        return self.phase3_gate.runs(hard_stopped=hard_stopped, needs_review=needs_review)

    @property
    def searches(self) -> tuple[SearchPhasePlan, ...]:
        """The searches that run, in run order."""
        out = []
        if self.runs("automl"):
            out.append(self.phase1)
        if self.runs("phase3"):
            out.append(self.phase3)
        return tuple(out)

    @property
    def safety_gates(self) -> tuple[str, ...]:
        """The hard gates that can still stop an approved run, in the order they may fire.

        Phase 3's own failures (no usable winner) never stop the run: the DEFT winner
        stands (``automl_step``), so only Phase 1's zero-shot guard is a gate.
        """
        gates: list[str] = []
        if self.runs("deft"):
            gates += ["leakage or missing files in an assembled set", "a DEFT stage error"]
            if self.deft.config.regression.enabled:
                gates.append("the regression gate (needs_review)")
        if self.runs("automl") and self.phase1.zero_shot_gate:
            gates.append("the Phase 1 winner failing to beat zero-shot")
        return tuple(gates)


# --- computing it -------------------------------------------------------------------------

_ACCEPTED = frozenset(PHASES) | {p.value for p in Phase}


def _phase(name: str) -> Phase:
    """A phase from either vocabulary (``automl`` = ``phase1``, ``deft`` = ``phase2``)."""
    return parse_phases((name,))[0]


def _search_plan(
    phase: str, cfg: AutomlConfig, spec: Spec | None, backend: str | None
) -> SearchPhasePlan:
    if backend:
        cfg = dataclasses.replace(cfg, backend=backend)  # type: ignore[arg-type]
    problems: list[str] = []
    if cfg.backend not in BACKENDS:
        problems.append(
            f"unknown search backend {cfg.backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    space: SearchSpace | None
    try:
        space = cfg.space()
    except SpecError as exc:
        problems.append(f"automl.search_space: {exc}")
        space = None
    try:
        canonical(cfg.algorithm)
    except UserError as exc:
        problems.append(f"automl.algorithm: {exc}")
    if space is not None and spec is not None:
        try:
            space.check_against(spec)
        except SpecError as exc:
            problems.append(f"automl.search_space: {exc}")
    pinned = space.pinned if space is not None else {}
    return SearchPhasePlan(
        phase=phase,
        config=cfg,
        space=space,
        problems=tuple(problems),
        lucky_rerun=lucky_winner_can_fire(cfg.max_trials, cfg.guards.lucky_factor),
        epochs=int(pinned.get(EPOCHS_KEY, cfg.num_epochs)),
        batch_size=int(pinned.get(BATCH_KEY, cfg.batch_size)),
    )


def _phase3_config(cfg: RunConfig) -> tuple[AutomlConfig, str | None]:
    """``cfg.phase3_automl()``; with an invalid Phase 1 space, without the Phase 3 pins."""
    try:
        return cfg.phase3_automl(), None
    except SpecError as exc:
        bare = dataclasses.replace(cfg, phase3=dataclasses.replace(cfg.phase3, pinned={}))
        return bare.phase3_automl(), f"automl.search_space: {exc}"


def _resumed_spec(resume: ResumePoint | None) -> Spec | None:
    if resume is None or resume.spec_path is None or not resume.spec_path.is_file():
        return None
    try:
        return load_spec(resume.spec_path)
    except SpecError:
        return None


def _deft_plan(
    cfg: DeftConfig,
    *,
    phases: tuple[Phase, ...],
    spec: Spec | None,
    phase1: SearchPhasePlan,
    resume: ResumePoint | None,
    results_dir: Path | None,
) -> DeftPlan:
    problems: list[str] = []
    target: KPITarget | None
    try:
        target = cfg.target()
    except AutomlDeftError as exc:
        problems.append(f"deft.kpi_target: {exc}")
        target = None
    # The loop trains from the spec its state records (steps.seed_deft_baseline_step merges
    # the Phase 1 winner's pinned epochs and batch size into it); deft.num_epochs and
    # deft.batch_size override it (deft.stages: Stages._base_spec and stage_train).
    resumed = _resumed_spec(resume)
    phase1_runs = Phase.PHASE1 in phases
    epochs, epochs_source = _training_setting(
        cfg.num_epochs,
        resumed=resumed.train.num_epochs if resumed is not None else None,
        phase1=phase1.epochs if phase1_runs else None,
        workspace=spec.train.num_epochs if spec is not None else None,
    )
    batch, batch_source = _training_setting(
        cfg.batch_size,
        resumed=resumed.dataset.classify.batch_size if resumed is not None else None,
        phase1=phase1.batch_size if phase1_runs else None,
        workspace=spec.dataset.classify.batch_size if spec is not None else None,
    )
    if resume is not None and resume.baseline_trained:
        baseline = BaselineSource.RESUMED
    elif phase1_runs:
        baseline = BaselineSource.PHASE1
        if resume is not None:
            problems.append(unseedable(results_dir or "the results directory"))
    else:
        baseline = BaselineSource.TRAINED_HERE
    return DeftPlan(
        config=cfg,
        target=target,
        epochs=epochs,
        epochs_source=epochs_source,
        batch_size=batch,
        batch_source=batch_source,
        baseline=baseline,
        baseline_recorded=resume.baseline_source if resume is not None else None,
        problems=tuple(problems),
    )


def _training_setting(
    own: int | None, *, resumed: int | None, phase1: int | None, workspace: int | None
) -> tuple[int | None, ValueSource]:
    """The first that applies: the DEFT config's own value, the resumed run's spec, the
    Phase 1 winner's spec, the workspace spec."""
    for value, source in (
        (own, ValueSource.CONFIG),
        (resumed, ValueSource.RESUMED_SPEC),
        (phase1, ValueSource.PHASE1_WINNER),
        (workspace, ValueSource.WORKSPACE_SPEC),
    ):
        if value is not None:
            return value, source
    return None, ValueSource.UNKNOWN


def plan_run(
    workspace: str | os.PathLike[str],
    cfg: RunConfig,
    *,
    phases: Sequence[str] = PHASES,
    hpo_backend: str | None = None,
    results_dir: str | os.PathLike[str] | None = None,
) -> RunPlan:
    """Compute the run's plan; nothing is written and nothing is started.

    Args:
        workspace: the workspace root.
        cfg: the whole run's config.
        phases: the phases this pipeline runs (``automl``, ``deft``, ``phase3``; or
            ``phase1``, ``phase2``, ``phase3``).
        hpo_backend: the search backend the pipeline uses (default: ``cfg.automl.backend``).
        results_dir: the run's results directory; one holding ``deft_state.json`` is
            resumed with its own DEFT settings.

    Raises:
        UserError: ``phases`` names an unknown phase.
    """
    unknown = sorted(set(phases) - _ACCEPTED)
    if unknown:
        raise UserError(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}")
    ordered = parse_phases(tuple(phases))
    ws = Workspace.at(workspace)
    root = Path(results_dir) if results_dir is not None else None
    spec: Spec | None = None
    spec_error = None
    if ws.spec_path.is_file():
        try:
            spec = load_spec(ws.spec_path)
        except SpecError as exc:
            spec_error = str(exc)

    resume: ResumePoint | None = None
    resume_error = None
    deft_cfg = cfg.deft
    differ: tuple[str, ...] = ()
    if root is not None:
        try:
            resume = _resume_point(root)
        except UserError as exc:
            resume_error = str(exc)
    if resume is not None:
        deft_cfg = resume.config
        saved = resume.config.to_dict()
        differ = tuple(sorted(k for k, v in cfg.deft.to_dict().items() if saved.get(k) != v))

    phase1 = _search_plan("phase1", cfg.automl, spec, hpo_backend)
    phase3_cfg, phase3_problem = _phase3_config(cfg)
    phase3 = _search_plan("phase3", phase3_cfg, spec, hpo_backend)
    if phase3_problem is not None and phase3_problem not in phase3.problems:
        phase3 = dataclasses.replace(phase3, problems=(phase3_problem, *phase3.problems))
    return RunPlan(
        workspace=ws,
        config=cfg,
        phases=ordered,
        results_dir=root,
        spec=spec,
        spec_error=spec_error,
        resume=resume,
        resume_error=resume_error,
        settings_differ=differ,
        phase1=phase1,
        deft=_deft_plan(
            deft_cfg, phases=ordered, spec=spec, phase1=phase1, resume=resume, results_dir=root
        ),
        phase3=phase3,
        phase3_gate=Phase3Gate(in_pipeline=Phase.PHASE3 in ordered, enabled=cfg.phase3.enabled),
        compute=ComputePlan(
            per_job_minutes=cfg.compute.per_job_minutes,
            per_iteration_minutes=cfg.compute.per_iteration_minutes,
        ),
    )
