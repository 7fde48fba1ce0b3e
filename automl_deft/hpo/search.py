"""An AutoML search end to end: config → search → guards → result files.

``automl_search`` is what ``automl-deft automl`` (and later the pipeline's
Phase 1 and Phase 3 components) call. Outputs, under the phase's results
directory:

- ``automl_result.json``: :class:`SearchResult` as JSON, ``{results_dir, best:
  {rec_id, specs, metric_value, far_pct, val_loss, checkpoint, pred_counts},
  history: [{rec_id, params, metric, status, pruned_at_epoch}], algorithm,
  backend, metric, guards: {collapse_skipped, lucky_winner, zero_shot}}``;
- ``leaderboard.csv`` (one row per finished trial, best first);
- ``automl_report.html`` (optimisation history and parameter importance);
- ``trials/<rec_id>/`` with every trial's spec, checkpoints and ``trial.json``.

One search at a time per results folder: the search holds ``.search.lock`` there
(:func:`search_lock`) from start to finish, so a second ``automl`` (or ``run``) on
the same folder is refused at once instead of taking over the first one's live
trials.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from automl_deft import console
from automl_deft.application import DEFAULT_APPLICATION
from automl_deft.config import read_config_yaml, typed_from_dict
from automl_deft.errors import SpecError, UserError
from automl_deft.hpo.base import (
    Budget,
    SearchBackend,
    SearchVerdict,
    get_backend,
    load_outcome,
)
from automl_deft.hpo.guards import (
    GuardReport,
    check_lucky_winner,
    check_zero_shot,
    rank,
    skip_collapsed,
    zero_shot_far,
)
from automl_deft.hpo.results import SearchBest, SearchResult, SearchTrial
from automl_deft.hpo.space import SearchSpace, default_aoi_space, space_from_config
from automl_deft.hpo.trial import SearchProblem, TrialOutcome, run_trial
from automl_deft.io import atomic_write_csv, atomic_write_json, atomic_write_text, exclusive_lock
from automl_deft.jsontypes import JSONObject, SpecTree
from automl_deft.layout import RunLayout, SearchLayout
from automl_deft.model.checkpoint import load_checkpoint, spec_of
from automl_deft.model.spec import Spec, load_spec
from automl_deft.workspace import Workspace, new_run_dir

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

RESULT_FILE = SearchLayout.RESULT
LEADERBOARD_FILE = SearchLayout.LEADERBOARD
REPORT_FILE = SearchLayout.REPORT
RESEED_OFFSET = 1000


@dataclass(frozen=True)
class GuardConfig:
    lucky_factor: float = 2.0
    allow_no_gain_over_zero_shot: bool = False
    zero_shot_method: str = "pixel-diff"
    """Passed to the application's ``zero_shot`` (aoi-changenet: pixel-diff or feature-distance)."""


@dataclass(frozen=True)
class AutomlConfig:
    """The ``-c CONFIG`` YAML of ``automl-deft automl`` (every key optional)."""

    backend: Literal["optuna", "katib"] = "optuna"
    algorithm: str = "tpe"
    max_trials: int = 6
    metric: Literal["far_pct", "val_loss"] = "far_pct"
    seed: int = 0
    early_stopping: bool = True
    prune_start_epoch: int = 2
    num_epochs: int = 8
    batch_size: int = 16
    search_space: list[JSONObject] | None = None
    """Replaces the default AOI space: ``[{name, key, type, low, high, log, choices}]``
    (checked by :func:`~automl_deft.hpo.space.space_from_config`)."""
    pinned: SpecTree = field(default_factory=dict)
    """Spec values every trial gets (dotted keys)."""
    parallel_trials: int | None = None
    """Trials at once; default: as many as cores (two each) and memory allow."""
    centroid_factor: float = 0.5
    """Phase 3: ranges narrowed to this share of their width around the centroid."""
    guards: GuardConfig = field(default_factory=GuardConfig)
    katib: JSONObject = field(default_factory=dict)
    """Katib settings (namespace, image, pvc_name, gpus, …); checked as ``KatibSettings``."""
    application: str = DEFAULT_APPLICATION
    """What trials train and the zero-shot guard scores: a registered
    :class:`~automl_deft.application.Application` name or ``module:Class``."""

    def space(self) -> SearchSpace:
        pinned = {
            "train.num_epochs": self.num_epochs,
            "dataset.classify.batch_size": self.batch_size,
            **self.pinned,
        }
        if self.search_space is None:
            base = default_aoi_space(num_epochs=self.num_epochs, batch_size=self.batch_size)
            return SearchSpace(base.params, pinned)
        return space_from_config(self.search_space, pinned)


def load_automl_config(path: str | os.PathLike[str] | None) -> AutomlConfig:
    """Read a config YAML strictly (unknown keys and wrong types name the key)."""
    if path is None:
        return AutomlConfig()
    p = Path(path)
    data = read_config_yaml(p, "AutoML config")
    try:
        cfg: AutomlConfig = typed_from_dict(AutomlConfig, data, "", "config")
    except SpecError as exc:
        raise SpecError(f"{p}: {exc}") from exc
    if cfg.max_trials < 1:
        raise SpecError(f"{p}: config key 'max_trials' must be >= 1")
    return cfg


def default_results_dir(workspace: str | os.PathLike[str], phase: str) -> Path:
    """The phase's search folder in a new run directory, e.g.
    ``<ws>/results/run_<YYYYmmdd_HHMMSS>/automl_phase1/`` (as the pipeline lays it out)."""
    return RunLayout(new_run_dir(workspace)).search(phase).root


@dataclass(frozen=True)
class SearchPlan:
    """What a search hands its backend, and what it judges the winner with."""

    problem: SearchProblem
    budget: Budget
    space: SearchSpace
    base: Spec
    results_dir: Path


def plan_search(
    workspace: str | os.PathLike[str],
    config: AutomlConfig,
    *,
    results_dir: str | os.PathLike[str] | None = None,
    phase: str = "phase1",
    base_spec: Spec | None = None,
    train_csv: str | os.PathLike[str] | None = None,
    val_csv: str | os.PathLike[str] | None = None,
    warm_start: str | os.PathLike[str] | None = None,
    centroid: Spec | None = None,
) -> SearchPlan:
    """The problem and budget :func:`automl_search` runs (arguments as there; writes nothing).

    The Katib dry run (:func:`automl_deft.hpo.katib_backend.dry_run_experiment`)
    uses it too, so it prints the Experiment the search would submit.
    """
    ws = Workspace.at(workspace)
    base = base_spec or load_spec(ws.spec_path)
    space = config.space()
    if warm_start is not None:
        source = spec_of(load_checkpoint(warm_start), warm_start)
        space = space.pin_architecture(source)
    if centroid is not None:
        space = space.centred_on(centroid, config.centroid_factor)
    out = Path(results_dir) if results_dir else default_results_dir(ws.root, phase)
    problem = SearchProblem.create(
        ws.root,
        space,
        base,
        out,
        train_csv=train_csv,
        val_csv=val_csv,
        metric=config.metric,
        warm_start=warm_start,
        application=config.application,
    )
    budget = Budget(
        algorithm=config.algorithm,
        max_trials=config.max_trials,
        early_stopping=config.early_stopping,
        prune_start_epoch=config.prune_start_epoch,
        seed=config.seed,
        enqueue=[space.values_of(centroid)] if centroid is not None else [],
        parallel_trials=config.parallel_trials,
    )
    return SearchPlan(problem, budget, space, base, out)


class SearchBusyError(UserError):
    """Another process is running a search in the same results folder."""


@contextlib.contextmanager
def search_lock(results_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the search folder's ``.search.lock`` for the duration (the DEFT loop's
    :func:`~automl_deft.deft.state.run_lock`, for a search).

    Without it a second search on the folder would mark the first one's live trial
    interrupted and retry it, and the first would fail on Optuna's
    ``UpdateFinishedTrialError``.

    Raises:
        SearchBusyError: another process holds the lock (nothing else is written).
    """
    root = Path(results_dir)

    def busy(holder: str) -> SearchBusyError:
        return SearchBusyError(
            f"another search is running in {root} (pid {holder}); wait for it or use "
            "another --results"
        )

    with exclusive_lock(SearchLayout(root).lock, busy):
        yield


def config_backend(config: AutomlConfig) -> SearchBackend:
    """The backend ``config.backend`` names, from the registry, with its settings."""
    kwargs = {"settings": config.katib} if config.backend == "katib" else {}
    return get_backend(config.backend, **kwargs)


def automl_search(
    workspace: str | os.PathLike[str],
    config: AutomlConfig,
    *,
    results_dir: str | os.PathLike[str] | None = None,
    phase: str = "phase1",
    base_spec: Spec | None = None,
    train_csv: str | os.PathLike[str] | None = None,
    val_csv: str | os.PathLike[str] | None = None,
    warm_start: str | os.PathLike[str] | None = None,
    centroid: Spec | None = None,
    backend: SearchBackend | None = None,
) -> SearchResult:
    """Run a search with the guards and write its result files.

    Args:
        workspace: the workspace (its validation set is the evaluation set).
        config: backend, algorithm, budget, space, guards.
        results_dir: default ``<ws>/results/run_<ts>/automl_<phase>/``; re-using a
            directory resumes its search.
        phase: a label for the default results directory.
        base_spec: default: the workspace's baseline spec.
        train_csv, val_csv: default: the workspace's base sets.
        warm_start: every trial starts from this checkpoint; the architecture is
            pinned to the checkpoint's spec (Phase 3).
        centroid: centre the space on this spec and try it first (Phase 3).
        backend: a ready backend instance (default: ``config.backend`` from the registry).

    Raises:
        SearchBusyError: another search is running in the results folder.
    """
    plan = plan_search(
        workspace,
        config,
        results_dir=results_dir,
        phase=phase,
        base_spec=base_spec,
        train_csv=train_csv,
        val_csv=val_csv,
        warm_start=warm_start,
        centroid=centroid,
    )
    with search_lock(plan.results_dir):
        return _run_search(plan, config, backend)


def _run_search(
    plan: SearchPlan, config: AutomlConfig, backend: SearchBackend | None
) -> SearchResult:
    """:func:`automl_search` once it holds the folder's lock."""
    problem, budget, space, base, out = (
        plan.problem,
        plan.budget,
        plan.space,
        plan.base,
        plan.results_dir,
    )
    if backend is None:
        backend = config_backend(config)
    records = backend.search(problem, budget)
    outcomes = [o for o in (load_outcome(problem, r) for r in records) if o is not None]

    report = GuardReport()
    ranked = skip_collapsed(rank(outcomes), report)

    def retrain(best: TrialOutcome) -> TrialOutcome:
        name = f"{best.name}-reseed"
        far = "n/a" if best.far_pct is None else f"{best.far_pct:.2f}%"
        console.emit(
            "heading",
            f"lucky winner {best.name} (val FAR {far}) beat the runner-up by more than "
            f"{config.guards.lucky_factor:g}x: re-training it once with a fresh seed as {name}",
        )
        started = time.monotonic()
        with console.activity(f"re-run {name}"):
            again = run_trial(problem, name, best.params, seed=base.train.seed + RESEED_OFFSET)
        seconds = time.monotonic() - started
        far = "n/a" if again.far_pct is None else f"{again.far_pct:.2f}%"
        console.emit(
            "trial",
            f"re-run {name} finished: val FAR {far} · {console.format_duration(seconds)}",
            job_seconds=seconds,
        )
        return again

    ranked = check_lucky_winner(ranked, config.guards.lucky_factor, retrain, report)
    winner = ranked[0]
    console.emit("result", _winner_line(winner, report))
    check_zero_shot(
        winner,
        zero_shot_far(problem, config.guards.zero_shot_method),
        allow=config.guards.allow_no_gain_over_zero_shot,
        report=report,
    )
    backend.record_verdict(problem, verdict_of(winner, report))
    winning_overrides = space.overrides(winner.params, base)
    result = SearchResult(
        results_dir=out,
        best=SearchBest(
            rec_id=winner.name,
            specs=winning_overrides,
            metric_value=winner.value,
            far_pct=winner.far_pct,
            val_loss=winner.val_loss,
            checkpoint=str(winner.checkpoint),  # a complete trial always has one
            pred_counts=winner.pred_counts,
        ),
        history=[
            SearchTrial(
                rec_id=r.name,
                params=r.params,
                metric=r.value,
                status=r.state,
                pruned_at_epoch=r.pruned_at_epoch,
            )
            for r in records
        ],
        algorithm=config.algorithm,
        backend=backend.name,
        metric=config.metric,
        guards=report,
    )
    write_outputs(result, outcomes)
    return result


def _winner_line(winner: TrialOutcome, report: GuardReport) -> str:
    """``winner trial-0003: val FAR 9.80%`` (and the trial the lucky-winner guard demoted)."""
    far = "n/a" if winner.far_pct is None else f"{winner.far_pct:.2f}%"
    text = f"winner {winner.name}: val FAR {far}"
    lucky = report.lucky_winner
    if lucky is not None and lucky.rec_id != winner.name:
        text += f" ({lucky.rec_id} demoted by the lucky-winner guard)"
    elif lucky is not None:
        text += f", ranked by the worse of its two runs ({lucky.ranked_by:.2f}%)"
    return text


def verdict_of(winner: TrialOutcome, report: GuardReport) -> SearchVerdict:
    """The winner and the guards' decisions, keyed by trial name, for the backend's store."""
    notes: dict[str, dict[str, object]] = {}
    for skip in report.collapse_skipped:
        notes.setdefault(skip.rec_id, {})["guard_collapse_skipped"] = skip.reason
    lucky = report.lucky_winner
    if lucky is not None:
        notes.setdefault(lucky.rec_id, {}).update(
            {
                "guard_lucky_winner": (
                    f"{lucky.value:.4g} beat the runner-up {lucky.runner_up} "
                    f"({lucky.runner_up_value:.4g}) by more than {lucky.factor:g}x: re-trained "
                    f"with a fresh seed as {lucky.reseed_rec_id}"
                ),
                "reseed_trial": lucky.reseed_rec_id,
                "reseed_value": lucky.reseed_value,
                "ranked_by": lucky.ranked_by,
            }
        )
    study: dict[str, object] = {}
    if report.zero_shot is not None:
        study["zero_shot_far_pct"] = report.zero_shot.zero_shot_far_pct
        study["zero_shot_beaten"] = report.zero_shot.beaten
    return SearchVerdict(
        winner=winner.name, winner_value=winner.value, trial_notes=notes, study_notes=study
    )


def write_outputs(result: SearchResult, outcomes: list[TrialOutcome]) -> None:
    """``automl_result.json``, ``leaderboard.csv`` and ``automl_report.html``."""
    from automl_deft.hpo.report import leaderboard, render_report

    out = result.results_dir
    atomic_write_json(out / RESULT_FILE, result.to_json())
    board = leaderboard(result, outcomes)
    atomic_write_csv(out / LEADERBOARD_FILE, board)
    atomic_write_text(out / REPORT_FILE, render_report(result, board, _importance(result)))


def _importance(result: SearchResult) -> dict[str, float]:
    import optuna

    from automl_deft.hpo.optuna_backend import JOURNAL_FILE, load_study

    journal = result.results_dir / JOURNAL_FILE
    if not journal.exists():
        return {}
    try:
        study = load_study(result.results_dir)
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError) as exc:  # too few complete trials
        log.info("no parameter importance: %s", exc)
        return {}
