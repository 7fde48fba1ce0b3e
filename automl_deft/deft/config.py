"""The DEFT loop's typed config (the ``-c CONFIG`` YAML of ``automl-deft deft``).

Every key is optional; the defaults are the original workflow's (``max_iterations``
3, ``num_sdg`` 20, ``top_k_per_target`` 5, ``min_similarity`` 0.9,
``top_k_per_label`` 50). The resolved config is saved into ``deft_state.json``,
so a resumed run keeps the settings it started with.

Example::

    kpi_target: "FAR < 5% at recall=100%"
    max_iterations: 3
    num_epochs: 8            # fine-tuning epochs per iteration (default: the spec's)
    sdg: {backend: procedural-pcb, num_sdg: 20}
    mining: {top_k_per_target: 5, min_similarity: 0.9, embedder: model}
    regression: {tolerance_pp: 5.0, patience: 2}
    hygiene: {near_duplicate_similarity: 0.95, label_errors: flag}
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Literal

from automl_deft.config import read_config_yaml, typed_from_dict
from automl_deft.errors import SpecError
from automl_deft.jsontypes import JSONObject
from automl_deft.kpi import KPITarget, parse_target

DEFAULT_KPI_TARGET = "FAR < 5% at recall=100%"


@dataclass(frozen=True)
class RCAConfig:
    top_k_per_label: int = 50
    """Weak rows kept per label (the original's ``top_k_per_label``)."""
    metadata_columns: list[str] | None = None
    """Columns to break the weakness down by; None: every metadata column with 2–30 values."""


@dataclass(frozen=True)
class SDGConfig:
    enabled: bool = True
    backend: str = "procedural-pcb"
    """``procedural-pcb``, ``cutpaste`` or ``command`` (see ``automl_deft.deft.sdg``)."""
    num_sdg: int = 20
    """New pairs per iteration, split across the targeted labels in proportion to need."""
    options: JSONObject = field(default_factory=dict)
    """Backend settings (for ``command``: ``command``, ``timeout_s``, ``labels``, and
    ``secret_env``: names of variables whose values are masked in everything the
    command prints — the known credential variables always are)."""
    hard_negatives: bool = True
    """PASS is an SDG target: weak PASS rows (false alarms) get benign variations of clean
    training pairs at the nuisance strength measured on them (``cutpaste`` and
    ``procedural-pcb``; ``command`` when its ``labels`` list ``PASS``). False: PASS weak
    rows go to mining only."""
    pass_check_max_blob_px: int = 4
    """The independent PASS check: a generated PASS pair is refused when its registered,
    photometrically normalised difference from its golden has a blob (thin edge lines
    opened away) larger than this many pixels, or larger than its source pair's."""


@dataclass(frozen=True)
class MiningConfig:
    enabled: bool = True
    top_k_per_target: int = 5
    metric: Literal["cosine"] = "cosine"
    min_similarity: float = 0.9
    embedder: str = "model"
    """``model`` (the current checkpoint's difference features) or ``pretrained``."""
    on_empty_pool: Literal["hard_stop", "skip"] = "hard_stop"
    """When mining is required but the pool CSV is missing or empty."""
    block_rows: int = 65536


@dataclass(frozen=True)
class HygieneConfig:
    """Checks of every new row (generated and mined) before it is assembled."""

    enabled: bool = True
    near_duplicate_similarity: float = 0.95
    """Cosine of the registered-difference descriptors above which two pairs whose goldens
    show the same place (``golden_similarity``) and whose exposure matches (gain within 0.02
    per channel) are the same sample: the new one is refused."""
    golden_similarity: float = 0.98
    """Correlation of two goldens' thumbnails above which they show the same place."""
    label_errors: Literal["flag", "exclude"] = "flag"
    """``flag``: likely label errors are listed (report, ``hygiene_flagged.csv``) and kept;
    ``exclude``: they are also left out of the training set."""


@dataclass(frozen=True)
class RegressionGate:
    """Stop for review when iterations keep getting worse.

    An iteration *regresses* when its far_pct is worse than the best so far by more
    than ``tolerance_pp`` percentage points. ``patience`` regressing iterations in a
    row stop the loop with status ``needs_review``; ``--acknowledge-regression``
    continues it (the count starts again).
    """

    enabled: bool = True
    tolerance_pp: float = 5.0
    patience: int = 2


@dataclass(frozen=True)
class DeftConfig:
    kpi_target: str = DEFAULT_KPI_TARGET
    max_iterations: int = 3
    num_epochs: int | None = None
    """Fine-tuning epochs per iteration (and for a baseline trained here); None: the spec's."""
    batch_size: int | None = None
    seed: int = 0
    application: str = "aoi-changenet"
    rca: RCAConfig = field(default_factory=RCAConfig)
    sdg: SDGConfig = field(default_factory=SDGConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    regression: RegressionGate = field(default_factory=RegressionGate)
    hygiene: HygieneConfig = field(default_factory=HygieneConfig)

    def target(self) -> KPITarget:
        return parse_target(self.kpi_target)

    def to_dict(self) -> JSONObject:
        return dataclasses.asdict(self)


def check_config(cfg: DeftConfig, where: str = "config") -> DeftConfig:
    """Range checks the types cannot express; returns ``cfg``."""
    problems = []
    if cfg.max_iterations < 0:
        problems.append("'max_iterations' must be >= 0")
    if cfg.num_epochs is not None and cfg.num_epochs < 1:
        problems.append("'num_epochs' must be >= 1")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        problems.append("'batch_size' must be >= 1")
    if cfg.sdg.num_sdg < 0:
        problems.append("'sdg.num_sdg' must be >= 0")
    if cfg.mining.top_k_per_target < 1:
        problems.append("'mining.top_k_per_target' must be >= 1")
    if not -1.0 <= cfg.mining.min_similarity <= 1.0:
        problems.append("'mining.min_similarity' must be in [-1, 1] (cosine)")
    if cfg.rca.top_k_per_label < 1:
        problems.append("'rca.top_k_per_label' must be >= 1")
    if cfg.sdg.pass_check_max_blob_px < 0:
        problems.append("'sdg.pass_check_max_blob_px' must be >= 0")
    if not -1.0 <= cfg.hygiene.near_duplicate_similarity <= 1.0:
        problems.append("'hygiene.near_duplicate_similarity' must be in [-1, 1] (cosine)")
    if not -1.0 <= cfg.hygiene.golden_similarity <= 1.0:
        problems.append("'hygiene.golden_similarity' must be in [-1, 1] (correlation)")
    if cfg.regression.patience < 1:
        problems.append("'regression.patience' must be >= 1")
    if cfg.regression.tolerance_pp < 0:
        problems.append("'regression.tolerance_pp' must be >= 0")
    if problems:
        raise SpecError(f"{where}: {problems[0]}")
    cfg.target()  # raises KPIError with the fix for an unparsable target
    return cfg


def config_from_dict(data: JSONObject, where: str = "config") -> DeftConfig:
    """A checked :class:`DeftConfig` from a plain dict (unknown keys name the key)."""
    try:
        cfg: DeftConfig = typed_from_dict(DeftConfig, data, "", "DEFT config")
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from exc
    return check_config(cfg, where)


def load_deft_config(path: str | os.PathLike[str] | None) -> DeftConfig:
    """Read the DEFT config YAML strictly; None gives the defaults.

    A file may hold the DEFT keys at the top level or under a ``deft:`` key (so one
    pipeline config can carry every phase).
    """
    if path is None:
        return DeftConfig()
    data = read_config_yaml(path, "DEFT config")
    if "deft" in data and isinstance(data["deft"], dict):
        data = data["deft"]
    return config_from_dict(data, str(path))
