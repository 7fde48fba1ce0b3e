"""Algorithm names follow Katib's; each maps to its Optuna equivalent.

| Katib                | Optuna 5                                   |
|----------------------|--------------------------------------------|
| random               | RandomSampler                              |
| grid                 | GridSampler (over the space's grid points) |
| tpe                  | TPESampler(multivariate=False)             |
| multivariate-tpe     | TPESampler(multivariate=True)              |
| cmaes                | CmaEsSampler (needs the ``cmaes`` package) |
| sobol                | QMCSampler(qmc_type="sobol") (needs scipy) |
| bayesianoptimization | GPSampler (needs scipy; a different engine than scikit-optimize) |
| hyperband            | RandomSampler + HyperbandPruner            |

``bayesian`` (the original workflow's name) is an alias of
``bayesianoptimization``. Early stopping ``medianstop`` maps to ``MedianPruner``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

import optuna

from automl_deft.errors import UserError
from automl_deft.hpo.space import ParamValue, SearchSpace

ALGORITHMS: tuple[str, ...] = (
    "random",
    "grid",
    "tpe",
    "multivariate-tpe",
    "cmaes",
    "sobol",
    "bayesianoptimization",
    "hyperband",
)
ALIASES: dict[str, str] = {"bayesian": "bayesianoptimization"}
GRID_POINTS = 3
"""Points per numeric axis when ``grid`` discretises a continuous range."""


def canonical(name: str) -> str:
    """The Katib algorithm name for ``name`` (aliases resolved)."""
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in ALGORITHMS:
        raise UserError(
            f"unknown search algorithm {name!r}; choose one of {', '.join(ALGORITHMS)} "
            "(or 'bayesian')"
        )
    return key


def _needs(module: str, algorithm: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(
            f"algorithm {algorithm!r} needs the {module!r} package: pip install {module}"
        )


def grid_values(space: SearchSpace) -> dict[str, list[ParamValue]]:
    """Discrete values per param for grid search."""
    out: dict[str, list[ParamValue]] = {}
    for p in space.params:
        if p.type == "categorical":
            out[p.name] = list(p.choices)
            continue
        assert p.low is not None and p.high is not None
        if p.type == "int":
            span = int(p.high) - int(p.low)
            step = max(1, span // (GRID_POINTS - 1))
            out[p.name] = list(range(int(p.low), int(p.high) + 1, step))
        elif p.log:
            import math

            lo, hi = math.log(p.low), math.log(p.high)
            out[p.name] = [
                math.exp(lo + (hi - lo) * i / (GRID_POINTS - 1)) for i in range(GRID_POINTS)
            ]
        else:
            out[p.name] = [
                p.low + (p.high - p.low) * i / (GRID_POINTS - 1) for i in range(GRID_POINTS)
            ]
    return out


def make_sampler(
    algorithm: str,
    space: SearchSpace,
    *,
    seed: int,
    settings: Mapping[str, str | int | float] | None = None,
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for a Katib algorithm name."""
    algo = canonical(algorithm)
    settings = dict(settings or {})
    if algo in ("random", "hyperband"):
        return optuna.samplers.RandomSampler(seed=seed)
    if algo == "grid":
        return optuna.samplers.GridSampler(grid_values(space), seed=seed)
    if algo in ("tpe", "multivariate-tpe"):
        n_startup = int(settings.get("n_startup_trials", 3))
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=algo == "multivariate-tpe", n_startup_trials=n_startup
        )
    if algo == "cmaes":
        _needs("cmaes", algo)
        return optuna.samplers.CmaEsSampler(seed=seed)
    if algo == "sobol":
        _needs("scipy", algo)
        return optuna.samplers.QMCSampler(qmc_type="sobol", seed=seed)
    _needs("scipy", algo)
    return optuna.samplers.GPSampler(
        seed=seed, n_startup_trials=int(settings.get("n_initial_points", 3))
    )


def make_pruner(
    algorithm: str,
    *,
    early_stopping: bool,
    min_trials: int = 2,
    start_step: int = 2,
    max_resource: int = 10,
) -> optuna.pruners.BasePruner:
    """``hyperband`` prunes by Hyperband; otherwise median-stop when early stopping is on."""
    if canonical(algorithm) == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_resource)
    if early_stopping:
        return optuna.pruners.MedianPruner(n_startup_trials=min_trials, n_warmup_steps=start_step)
    return optuna.pruners.NopPruner()
