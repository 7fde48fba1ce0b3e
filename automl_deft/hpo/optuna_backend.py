"""The embedded search backend: an Optuna study persisted in the results directory.

The study lives in a journal file (``<results>/optuna_journal.log``), so a
killed search resumes with ``load_if_exists``: finished trials are never re-run,
and trials a crash left RUNNING are marked FAIL and their parameters retried
within the budget. Each trial trains through :func:`run_trial` (that is, the
problem's application) and reports per-epoch validation far_pct for pruning; a
pruned trial is an expected outcome, not a failure.
``optuna-dashboard <results>/optuna_journal.log`` shows the study live.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from automl_deft import console
from automl_deft.application import EpochMetrics, metric_value
from automl_deft.errors import InfrastructureError, first_line
from automl_deft.hpo.algorithms import canonical, make_pruner, make_sampler
from automl_deft.hpo.base import (
    Budget,
    SearchBackend,
    SearchVerdict,
    TrialRecord,
    default_parallel_trials,
)
from automl_deft.hpo.space import ParamValues
from automl_deft.hpo.trial import SearchProblem, run_trial
from automl_deft.layout import SearchLayout

log = logging.getLogger(__name__)

JOURNAL_FILE = SearchLayout.OPTUNA_JOURNAL
STUDY_NAME = "automl-deft"
RETRY_ATTR = "retry_of"
RESEED_ATTR = "reseed_of"
"""User attribute of a trial added by :meth:`OptunaBackend.record_verdict`: the lucky
winner's fresh-seed re-run (not a sampled trial: the budget and records skip it)."""


def trial_name(number: int) -> str:
    return f"trial-{number:04d}"


def _storage(results_dir: Path) -> JournalStorage:
    results_dir.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(results_dir / JOURNAL_FILE)))


def study_name(results_dir: str | os.PathLike[str], storage: JournalStorage | None = None) -> str:
    """The study's name: ``<run>-<phase>`` from the results directory
    (``run_<ts>/automl_phase1`` → ``run_<ts>-phase1``, ``run_<ts>/final_automl`` →
    ``run_<ts>-phase3``; elsewhere ``<parent>-<folder>``), so a dashboard holding
    several journals tells the phases and runs apart.

    A journal written before studies had such names holds one study called
    :data:`STUDY_NAME`; it keeps that name, so an old search still resumes.
    """
    if storage is not None:
        existing = [s.study_name for s in storage.get_all_studies()]
        if existing:
            return existing[0]
    return SearchLayout(Path(results_dir)).study_name


def load_study(results_dir: str | os.PathLike[str]) -> optuna.Study:
    """The study of the search in ``results_dir`` (its journal must exist)."""
    storage = JournalStorage(JournalFileBackend(str(Path(results_dir) / JOURNAL_FILE)))
    return optuna.load_study(study_name=study_name(results_dir, storage), storage=storage)


def open_study(
    problem: SearchProblem, budget: Budget, storage: JournalStorage | None = None
) -> optuna.Study:
    """Create or resume the study of ``problem`` (same results dir → same study)."""
    max_epochs = int(problem.pinned.get("train.num_epochs", problem.spec.train.num_epochs))
    storage = storage or _storage(Path(problem.results_dir))
    study = optuna.create_study(
        study_name=study_name(problem.results_dir, storage),
        storage=storage,
        load_if_exists=True,
        direction="minimize",
        sampler=make_sampler(
            budget.algorithm,
            problem.space,
            seed=budget.seed,
            settings=budget.algorithm_settings,
        ),
        pruner=make_pruner(
            budget.algorithm,
            early_stopping=budget.early_stopping,
            min_trials=budget.prune_min_trials,
            start_step=budget.prune_start_epoch,
            max_resource=max_epochs,
        ),
    )
    if study.metric_names != [problem.metric]:
        # The dashboard's axis, not "Objective 0". Experimental since Optuna 3.2 (the
        # interface is stable through 4.x, which the pin allows): say nothing per search.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([problem.metric])
    return study


def _recover_interrupted(study: optuna.Study, storage: JournalStorage) -> int:
    """Trials a killed process left RUNNING become FAIL; their params are queued again."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={RETRY_ATTR: t.number}, skip_if_exists=False)
        log.warning("trial %d was interrupted; retrying its parameters", t.number)
    return len(stale)


def prepare_study(study: optuna.Study, storage: JournalStorage, budget: Budget) -> None:
    """Recover interrupted trials; on a new study, queue the budget's first trials."""
    _recover_interrupted(study, storage)
    if not study.trials:
        for params in budget.enqueue:
            study.enqueue_trial(params)


def _counts(study: optuna.Study) -> tuple[int, int]:
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if RESEED_ATTR not in t.user_attrs
    ]
    failed = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        if t.user_attrs.get("error")
    ]
    return len(done), len(failed)


def _sample(trial: optuna.Trial, problem: SearchProblem) -> ParamValues:
    values: ParamValues = {}
    for p in problem.space.params:
        if p.type == "categorical":
            values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.type == "int":
            assert p.low is not None and p.high is not None
            values[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
        else:
            assert p.low is not None and p.high is not None
            values[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
    return values


class _Pruned(Exception):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch


def run_search(
    problem: SearchProblem,
    budget: Budget,
    *,
    on_trial: Callable[[TrialRecord], None] | None = None,
    sole_worker: bool = True,
) -> tuple[optuna.Study, list[TrialRecord]]:
    """Run (or resume) the search until ``max_trials`` trials completed or were pruned.

    Args:
        problem: what to search.
        budget: how much, and how.
        on_trial: called after each finished trial.
        sole_worker: no other process works on this study right now, so trials
            left RUNNING were interrupted (they are failed and retried) and the
            enqueued trials can be added. Parallel workers pass False; their
            parent recovers and enqueues once, before starting them.

    Returns:
        the study and every finished trial's record, in trial order.

    Raises:
        InfrastructureError: more than ``max_failed_trials`` trials raised errors.
    """
    canonical(budget.algorithm)
    problem.save()
    storage = _storage(Path(problem.results_dir))
    study = open_study(problem, budget, storage)
    if sole_worker:
        prepare_study(study, storage, budget)
    while True:
        done, failed = _counts(study)
        if done >= budget.max_trials:
            break
        if failed > budget.max_failed_trials:
            raise InfrastructureError(
                f"{failed} trials failed (limit {budget.max_failed_trials}); see "
                f"{problem.results_dir}/trials/*/ and the log"
            )
        trial = study.ask()
        name = trial_name(trial.number)
        values = _sample(trial, problem)
        log.info("%s: %s", name, values)

        def report(epoch: int, metrics: EpochMetrics, trial: optuna.Trial = trial) -> None:
            value = metric_value(metrics, problem.metric)
            trial.report(math.inf if value is None else float(value), epoch)
            if trial.should_prune():
                raise _Pruned(epoch)

        started = time.monotonic()
        try:
            with console.activity(f"trial {done + 1}/{budget.max_trials}"):
                outcome = run_trial(problem, name, values, on_epoch_end=report)
        except _Pruned as pruned:
            trial.set_user_attr("pruned_at_epoch", pruned.epoch)
            study.tell(trial, state=TrialState.PRUNED)
            record = TrialRecord(trial.number, name, values, "pruned", None, pruned.epoch)
            _announce(study, budget, record, None, time.monotonic() - started)
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
            study.tell(trial, state=TrialState.FAIL)
            log.error("%s failed: %s", name, exc)
            seconds = time.monotonic() - started
            console.emit(
                "trial", f"{name} failed: {first_line(exc)} · {console.format_duration(seconds)}"
            )
            continue
        else:
            trial.set_user_attr("far_pct", outcome.far_pct)
            trial.set_user_attr("val_loss", outcome.val_loss)
            trial.set_user_attr("pred_counts", outcome.pred_counts)
            trial.set_user_attr("checkpoint", outcome.checkpoint)
            trial.set_user_attr("epochs_run", outcome.epochs_run)
            study.tell(trial, outcome.objective())
            record = TrialRecord(trial.number, name, values, "complete", outcome.value)
            _announce(study, budget, record, outcome.far_pct, time.monotonic() - started)
        if on_trial is not None:
            on_trial(record)
    return study, records_of(study)


def _announce(
    study: optuna.Study, budget: Budget, record: TrialRecord, far: float | None, seconds: float
) -> None:
    """``trial 3/5 (trial-0002) finished: val FAR 9.80% (best so far: trial-0001) · 42s``."""
    done, _ = _counts(study)
    head = f"trial {done}/{budget.max_trials} ({record.name})"
    took = console.format_duration(seconds)
    if record.state == "pruned":
        text = f"{head} pruned at epoch {record.pruned_at_epoch} · {took}"
    else:
        complete = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if RESEED_ATTR not in t.user_attrs and t.value is not None
        ]
        best = min(complete, key=lambda t: (t.value, t.number)) if complete else None
        leader = "best so far"
        if best is not None and best.number != record.number:
            leader = f"best so far: {trial_name(best.number)}"
        value = "n/a" if far is None else f"{far:.2f}%"
        text = f"{head} finished: val FAR {value} ({leader}) · {took}"
    console.emit("trial", text, job_seconds=seconds, done=done, of=budget.max_trials)


def records_of(study: optuna.Study) -> list[TrialRecord]:
    """Finished trials (complete or pruned) of a study, in order."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if RESEED_ATTR in t.user_attrs:
            continue
        complete = t.state == TrialState.COMPLETE
        out.append(
            TrialRecord(
                number=t.number,
                name=trial_name(t.number),
                params=dict(t.params),
                state="complete" if complete else "pruned",
                value=t.value if complete else None,
                pruned_at_epoch=t.user_attrs.get("pruned_at_epoch"),
            )
        )
    return out


class OptunaBackend(SearchBackend):
    """The embedded default: an Optuna study in the results directory.

    With ``budget.parallel_trials > 1`` that many worker processes share the
    study through its journal file (file-locked), each with an equal share of
    the CPU threads; together they may finish up to ``parallel_trials - 1``
    trials more than the budget, never fewer.
    """

    name = "optuna"

    def search(self, problem: SearchProblem, budget: Budget) -> list[TrialRecord]:
        workers = max(1, budget.parallel_trials or default_parallel_trials())
        if workers == 1:
            _, records = run_search(problem, budget)
            return records
        problem.save()
        storage = _storage(Path(problem.results_dir))
        prepare_study(open_study(problem, budget, storage), storage, budget)
        one = replace(budget, parallel_trials=1)
        threads = max(1, (os.cpu_count() or 1) // workers)
        ctx = multiprocessing.get_context("spawn")
        procs = [
            ctx.Process(target=_worker, args=(problem, one, threads), name=f"optuna-worker-{i}")
            for i in range(workers)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        failed = [p.name for p in procs if p.exitcode != 0]
        if failed:
            raise InfrastructureError(
                f"search worker(s) {', '.join(failed)} exited with an error; see the log, then "
                "re-run with the same results directory to resume"
            )
        return records_of(load_study(problem.results_dir))

    def record_verdict(self, problem: SearchProblem, verdict: SearchVerdict) -> None:
        """Tell the study what the project decided, so optuna-dashboard and
        ``optuna.load_study`` show it: Optuna's own "best trial" is the lowest raw value,
        which a guard may have demoted.

        * study attributes: ``project_winner`` (a trial name), ``project_winner_value``,
          ``guards`` (each guard's decision by trial name) and the zero-shot check;
        * a lucky winner's fresh-seed re-run becomes a trial of its own (same params,
          its own value), with user attributes ``reseed_of``, ``guard`` and
          ``ranked_by``. A finished trial cannot be changed, so this is how its
          re-seeded value reaches the study. Resuming adds it once.
        """
        study = load_study(problem.results_dir)
        study.set_user_attr("project_winner", verdict.winner)
        study.set_user_attr("project_winner_value", verdict.winner_value)
        study.set_user_attr("guards", verdict.trial_notes)
        for key, value in verdict.study_notes.items():
            study.set_user_attr(key, value)
        trials = study.get_trials(deepcopy=False)
        by_name = {trial_name(t.number): t for t in trials}
        recorded = {t.user_attrs.get(RESEED_ATTR) for t in trials}
        for name, notes in verdict.trial_notes.items():
            original = by_name.get(name)
            reseed_value = notes.get("reseed_value")
            if original is None or not isinstance(reseed_value, float) or name in recorded:
                continue
            study.add_trial(
                optuna.trial.create_trial(
                    params=original.params,
                    distributions=original.distributions,
                    value=reseed_value,
                    user_attrs={
                        RESEED_ATTR: name,
                        "guard": "lucky_winner",
                        "trial_dir": str(notes.get("reseed_trial")),
                        "ranked_by": notes.get("ranked_by"),
                    },
                )
            )


def _worker(problem: SearchProblem, budget: Budget, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    run_search(problem, budget, sole_worker=False)
