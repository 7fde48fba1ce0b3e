"""The backend interface and its registry.

A backend takes a :class:`SearchProblem` (space + objective + data) and a
:class:`Budget`, runs the trials wherever it runs them, and returns every
finished trial as a :class:`TrialRecord`. Completed trials' details come from
each trial's ``trial.json``, which the trial entry point writes on the shared
volume whatever the backend (:func:`load_outcome`). Guards, ranking and the
result files are backend-independent (:mod:`automl_deft.hpo.search`).

Implementations live in their own modules and are imported on first use:
``optuna`` (:mod:`automl_deft.hpo.optuna_backend`) and ``katib``
(:mod:`automl_deft.hpo.katib_backend`).
"""

from __future__ import annotations

import abc
import importlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from automl_deft.errors import UserError
from automl_deft.hpo.space import ParamValues
from automl_deft.hpo.trial import SearchProblem, TrialOutcome


@dataclass(frozen=True)
class Budget:
    """How much searching, and how."""

    algorithm: str = "tpe"
    max_trials: int = 6
    """Trials that must finish (complete or pruned)."""
    early_stopping: bool = True
    """Median-stop pruning on per-epoch validation values (Hyperband for ``hyperband``)."""
    prune_min_trials: int = 2
    prune_start_epoch: int = 2
    max_failed_trials: int = 3
    seed: int = 0
    algorithm_settings: dict[str, str | int | float] = field(default_factory=dict)
    """The sampler's settings by Katib name (``n_startup_trials``, ``n_initial_points``)."""
    enqueue: list[ParamValues] = field(default_factory=list)
    """Parameter sets tried first (Phase 3: the centroid)."""
    timeout_s: float = 24 * 3600.0
    parallel_trials: int | None = None
    """Trials running at once (Optuna: worker processes, default from cores and memory;
    Katib: parallelTrialCount, default 2)."""


PER_TRIAL_MEMORY_GB = 3.0
"""What one CPU trial needs at most (a `medium` workspace preloaded + the model)."""


def default_parallel_trials() -> int:
    """As many trials as cores (two per trial) and available memory allow, at least 1."""
    cores = os.cpu_count() or 1
    return max(1, min(cores // 2, int(available_memory_gb() // PER_TRIAL_MEMORY_GB)))


def available_memory_gb() -> float:
    """``MemAvailable`` on Linux; total physical memory elsewhere."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3


@dataclass
class TrialRecord:
    """One finished trial as the search saw it."""

    number: int
    name: str
    params: ParamValues
    state: Literal["complete", "pruned"]
    value: float | None
    pruned_at_epoch: int | None = None


class SearchBackend(abc.ABC):
    """Runs the trials of a problem within a budget."""

    name: str

    @abc.abstractmethod
    def search(self, problem: SearchProblem, budget: Budget) -> list[TrialRecord]:
        """Every finished (complete or pruned) trial, in trial order."""

    def record_verdict(self, problem: SearchProblem, verdict: SearchVerdict) -> None:  # noqa: B027
        """Write the guards' decisions and the project's winner where the backend keeps
        its trials (an Optuna study's attributes), so its own tools tell the same story.
        The default keeps nothing."""


@dataclass(frozen=True)
class SearchVerdict:
    """What the project decided after the backend's trials: the winner (as ranked after
    the guards) and each guard's decision, by trial name.

    Attributes:
        winner: the winning trial's name.
        winner_value: the value it was ranked by (after the lucky-winner guard).
        trial_notes: trial name → JSON-ready facts the guards recorded about it.
        study_notes: JSON-ready facts about the whole search (the zero-shot check).
    """

    winner: str
    winner_value: float | None
    trial_notes: dict[str, dict[str, object]] = field(default_factory=dict)
    study_notes: dict[str, object] = field(default_factory=dict)


def load_outcome(problem: SearchProblem, record: TrialRecord) -> TrialOutcome | None:
    """The ``trial.json`` of a complete trial (None for pruned or missing ones)."""
    path = problem.trial_dir(record.name) / "trial.json"
    if record.state != "complete" or not path.is_file():
        return None
    return TrialOutcome(**json.loads(path.read_text(encoding="utf-8")))


BACKENDS: dict[str, str] = {
    "optuna": "automl_deft.hpo.optuna_backend:OptunaBackend",
    "katib": "automl_deft.hpo.katib_backend:KatibBackend",
}
"""Backend name → ``module:class``."""


def get_backend(name: str, **kwargs: Any) -> SearchBackend:
    """A backend from the registry by name (constructor keywords passed through)."""
    try:
        module, cls = BACKENDS[name].split(":")
    except KeyError:
        raise UserError(
            f"unknown search backend {name!r}; choose one of {', '.join(BACKENDS)}"
        ) from None
    backend: SearchBackend = getattr(importlib.import_module(module), cls)(**kwargs)
    return backend
