"""The backend interface and its registry.

A backend takes a :class:`SearchProblem` (space + objective + data) and a
:class:`Budget`, runs the trials wherever it runs them, and returns every
finished trial as :class:`TrialRecord`s plus the completed trials'
:class:`TrialOutcome`s (read from each trial's ``trial.json``, which the trial
entry point writes on the shared volume in both cases). Guards, ranking and
the result files are backend-independent (:mod:`automl_deft.hpo.search`).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from automl_deft.errors import UserError
from automl_deft.hpo.optuna_backend import OptunaSettings, TrialRecord, run_search
from automl_deft.hpo.trial import SearchProblem, TrialOutcome


@dataclass(frozen=True)
class Budget:
    """How much searching, and how."""

    algorithm: str = "tpe"
    max_trials: int = 6
    early_stopping: bool = True
    prune_start_epoch: int = 2
    seed: int = 0
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    """Parameter sets tried first (Phase 3: the centroid)."""
    timeout_s: float = 24 * 3600.0


class SearchBackend(abc.ABC):
    """Runs the trials of a problem within a budget."""

    name: str

    @abc.abstractmethod
    def search(self, problem: SearchProblem, budget: Budget) -> list[TrialRecord]:
        """Every finished (complete or pruned) trial, in trial order."""


def load_outcome(problem: SearchProblem, record: TrialRecord) -> TrialOutcome | None:
    """The ``trial.json`` of a complete trial (None for pruned or missing ones)."""
    path = problem.trial_dir(record.name) / "trial.json"
    if record.state != "complete" or not path.is_file():
        return None
    return TrialOutcome(**json.loads(path.read_text(encoding="utf-8")))


class OptunaBackend(SearchBackend):
    """The embedded default: an Optuna study in the results directory."""

    name = "optuna"

    def search(self, problem: SearchProblem, budget: Budget) -> list[TrialRecord]:
        settings = OptunaSettings(
            algorithm=budget.algorithm,
            max_trials=budget.max_trials,
            early_stopping=budget.early_stopping,
            prune_start_epoch=budget.prune_start_epoch,
            seed=budget.seed,
            enqueue=list(budget.enqueue),
        )
        _, records = run_search(problem, settings)
        return records


class KatibBackend(SearchBackend):
    """Trials as Katib trial Jobs on the cluster; this process only launches and waits.

    The problem file and the trials' outputs live on the workspace volume, which
    must be mounted at the same path here and in the trial pods.
    """

    name = "katib"

    def __init__(self, settings: dict[str, Any] | None = None, **launcher_kwargs: Any) -> None:
        self.settings = dict(settings or {})
        self.launcher_kwargs = launcher_kwargs

    def search(self, problem: SearchProblem, budget: Budget) -> list[TrialRecord]:
        from automl_deft.hpo import katib_manifest as km
        from automl_deft.hpo.katib_backend import KatibLauncher

        settings = km.KatibSettings(
            **{
                "algorithm": budget.algorithm,
                "max_trials": budget.max_trials,
                "early_stopping": budget.early_stopping,
                # defaults that stay valid for small budgets; explicit settings win
                "parallel_trials": min(2, budget.max_trials),
                "max_failed_trials": min(3, budget.max_trials),
                **self.settings,
            }
        )
        problem_path = problem.save()
        launcher = KatibLauncher(
            problem.space,
            settings,
            results_dir=Path(problem.results_dir),
            problem_path=str(problem_path),
            **self.launcher_kwargs,
        )
        outcome = launcher.run(budget.timeout_s)
        records = []
        for number, h in enumerate(outcome.history):
            state = KATIB_STATES.get(str(h.get("condition")))
            if state is None:  # failed, killed, or still running: not a finished trial
                continue
            records.append(
                TrialRecord(
                    number=number,
                    name=h["name"],
                    params=dict(h["params"]),
                    state=state,
                    value=h.get(problem.metric) if state == "complete" else None,
                )
            )
        return records


KATIB_STATES = {"Succeeded": "complete", "EarlyStopped": "pruned"}
"""Katib trial conditions that count as finished trials."""


BACKENDS: dict[str, Callable[..., SearchBackend]] = {
    OptunaBackend.name: OptunaBackend,
    KatibBackend.name: KatibBackend,
}


def get_backend(name: str, **kwargs: Any) -> SearchBackend:
    """A backend from the registry by name."""
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise UserError(
            f"unknown search backend {name!r}; choose one of {', '.join(BACKENDS)}"
        ) from None
    return factory(**kwargs)
