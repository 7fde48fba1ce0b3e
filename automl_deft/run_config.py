"""The whole run's config: one YAML for all three phases (``automl-deft run -c``).

::

    automl:   {algorithm: tpe, max_trials: 6, num_epochs: 8}     # Phase 1 (AutomlConfig)
    deft:     {kpi_target: "FAR < 5% at recall=100%", max_iterations: 3}   # Phase 2 (DeftConfig)
    phase3:   {max_trials: 4}            # Phase 3: same algorithm, metric and val set as Phase 1
    compute:  {per_job_minutes: 11}      # only for the pre-flight estimate; never guessed
    images:   {component: ghcr.io/you/automl-deft:0.1.0}

Every section and key is optional. Phase 3 takes Phase 1's settings, with the
overrides under ``phase3``; its centroid, warm start and pinned architecture are
set by the pipeline, never by hand.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from automl_deft.config import read_config_yaml, typed_from_dict
from automl_deft.deft.config import DeftConfig, check_config
from automl_deft.errors import SpecError
from automl_deft.hpo.katib_manifest import DEFAULT_IMAGE
from automl_deft.hpo.search import AutomlConfig
from automl_deft.jsontypes import JSONObject, SpecTree

__all__ = ["DEFAULT_IMAGE", "RunConfig", "load_run_config", "run_config_from_dict"]


@dataclass(frozen=True)
class Phase3Config:
    enabled: bool = True
    max_trials: int | None = None
    """Default: Phase 1's ``max_trials``."""
    num_epochs: int | None = None
    """Fine-tuning epochs per trial; default: Phase 1's."""
    centroid_factor: float | None = None
    """Ranges narrowed to this share of their width around the Phase 1 winner."""
    pinned: SpecTree = field(default_factory=dict)
    """Spec values fixed in Phase 3 (``{"train.optim.lr": 1e-4}``), merged over
    ``automl.pinned``; a swept key pinned here is taken out of the Phase 3 sweep."""


@dataclass(frozen=True)
class ComputeConfig:
    per_job_minutes: float | None = None
    """Minutes per training job; with it the pre-flight shows a time estimate."""
    per_iteration_minutes: float | None = None
    """Minutes per DEFT iteration; default: per_job_minutes (the training dominates)."""


@dataclass(frozen=True)
class ImagesConfig:
    component: str = DEFAULT_IMAGE
    """The image every cluster task runs (``make image``)."""
    sdg: str | None = None
    """An external SDG generator's image, when ``deft.sdg.backend: command`` uses one."""


@dataclass(frozen=True)
class RunConfig:
    application: str | None = None
    """The model every phase trains and scores (an application name or ``module:Class``);
    sets ``automl.application`` and ``deft.application`` (which may not say otherwise)."""
    automl: AutomlConfig = field(default_factory=AutomlConfig)
    deft: DeftConfig = field(default_factory=DeftConfig)
    phase3: Phase3Config = field(default_factory=Phase3Config)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)

    def phase3_automl(self) -> AutomlConfig:
        """Phase 1's search config with the Phase 3 overrides.

        The zero-shot guard only records its comparison in Phase 3: Phase 3's
        yardstick is the DEFT winner on the KPI set (pick-best in ``finalize``),
        and a warm-started trial that trails the zero-shot scorer on the
        validation set must still be judged there, not stop the run.
        """
        replace = dataclasses.replace
        cfg = replace(
            self.automl,
            guards=replace(self.automl.guards, allow_no_gain_over_zero_shot=True),
        )
        if self.phase3.max_trials is not None:
            cfg = replace(cfg, max_trials=self.phase3.max_trials)
        if self.phase3.num_epochs is not None:
            cfg = replace(cfg, num_epochs=self.phase3.num_epochs)
        if self.phase3.centroid_factor is not None:
            cfg = replace(cfg, centroid_factor=self.phase3.centroid_factor)
        if self.phase3.pinned:
            pinned = self.phase3.pinned
            cfg = replace(
                cfg,
                pinned={**self.automl.pinned, **pinned},
                search_space=[
                    dataclasses.asdict(p)
                    for p in self.automl.space().params
                    if p.key.split("[")[0] not in pinned
                ],
            )
        return cfg

    def to_dict(self) -> JSONObject:
        return dataclasses.asdict(self)


def run_config_from_dict(data: JSONObject, where: str = "config") -> RunConfig:
    """A checked :class:`RunConfig` (unknown keys and wrong types name the key)."""
    try:
        cfg: RunConfig = typed_from_dict(RunConfig, data, "", "run config")
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from exc
    cfg = _one_application(cfg, data, where)
    if cfg.automl.max_trials < 1:
        raise SpecError(f"{where}: 'automl.max_trials' must be >= 1")
    if cfg.phase3.max_trials is not None and cfg.phase3.max_trials < 1:
        raise SpecError(f"{where}: 'phase3.max_trials' must be >= 1")
    for key in ("per_job_minutes", "per_iteration_minutes"):
        value = getattr(cfg.compute, key)
        if value is not None and value <= 0:
            raise SpecError(f"{where}: 'compute.{key}' must be > 0")
    check_config(cfg.deft, where)
    return cfg


def _one_application(cfg: RunConfig, data: JSONObject, where: str) -> RunConfig:
    """The top-level ``application`` for every phase; a phase naming another is refused."""
    if cfg.application is None:
        if cfg.automl.application != cfg.deft.application:
            raise SpecError(
                f"{where}: 'automl.application' ({cfg.automl.application}) and "
                f"'deft.application' ({cfg.deft.application}) differ; all three phases train "
                "one model: set the top-level 'application' key instead"
            )
        return cfg
    for section in ("automl", "deft"):
        named = (data.get(section) or {}).get("application")
        if named is not None and named != cfg.application:
            raise SpecError(
                f"{where}: '{section}.application' ({named}) differs from 'application' "
                f"({cfg.application}); drop one of them"
            )
    return dataclasses.replace(
        cfg,
        automl=dataclasses.replace(cfg.automl, application=cfg.application),
        deft=dataclasses.replace(cfg.deft, application=cfg.application),
    )


def load_run_config(path: str | os.PathLike[str] | None) -> RunConfig:
    """Read the run config YAML strictly; None or an empty path gives the defaults."""
    if path is None or str(path) == "":
        return RunConfig()
    data = read_config_yaml(path, "run config")
    return run_config_from_dict(data, str(path))
