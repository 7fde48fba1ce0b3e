"""The project's view of a model: an *application* trains, scores and embeds.

All three phases reach the model only through an :class:`Application`: the HPO
trials of Phases 1 and 3 (:meth:`Application.train_trial`), the zero-shot
guard (:meth:`Application.zero_shot`) and the DEFT loop (:meth:`Application.train`,
:meth:`Application.score`, :meth:`Application.embedder`, …). The built-in
``aoi-changenet`` (:mod:`automl_deft.aoi_changenet`) wraps the project's
Siamese ChangeNet-lite. Another model plugs in by subclassing
:class:`Application`::

    @register_application
    class MyApp(Application):
        name = "my-app"
        def naming(self): ...                              # an ImageNaming
        def image_size(self): ...                          # (width, height)
        def train_trial(self, spec, train_frame, val_frame, out_dir, *,
                        on_epoch_end=None, progress=False): ...   # an HPO trial
        def zero_shot(self, frame, *, method): ...         # frame + "siamese_score"
        def train(self, train_frame, val_frame, out_dir, *, pretrained, num_epochs, seed): ...
        def score(self, checkpoint, frame): ...            # frame + "siamese_score"
        def embedder(self, checkpoint, kind): ...          # an automl_deft.deft.embedders.Embedder
        def inference_spec(self, checkpoint, threshold): ...
        def describe(self, checkpoint): ...                # {"backbone": ...}

and is selected with ``application: my-app`` in the AutoML and DEFT configs, or
by import path, ``application: my_package.my_module:MyApp``, which also works
where the registering module was never imported (a Katib trial pod, a
parallel Optuna worker, the CLI). Rows keep the dataset CSV schema
(``input_path, golden_path, label, object_name``); the score column is the
defect score (higher = more likely defective), which the shared KPI judges.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

from automl_deft.errors import SpecError
from automl_deft.jsontypes import SpecTree

if TYPE_CHECKING:
    import pandas as pd

    from automl_deft.model.spec import Spec
    from automl_deft.workspace import ImageNaming

DEFAULT_APPLICATION = "aoi-changenet"

MetricValue: TypeAlias = float | int | dict[str, int] | None
"""One validation metric: a number (``far_pct``, ``val_loss``, ``epoch``, …), per-class
prediction counts (``pred_counts``), or None when unavailable."""

EpochMetrics: TypeAlias = dict[str, MetricValue]
"""One epoch's metrics, by name (what ``history.json`` and a checkpoint's ``metrics`` hold)."""

EpochCallback = Callable[[int, EpochMetrics], None]
"""Called after each validated epoch with (epoch, metrics); may raise to stop (pruning)."""


def metric_value(metrics: Mapping[str, MetricValue], name: str) -> float | None:
    """The numeric metric ``name`` (None when missing or unavailable)."""
    value = metrics.get(name)
    return None if isinstance(value, dict) else value


def metric_counts(metrics: Mapping[str, MetricValue], name: str) -> dict[str, int] | None:
    """The per-class counts ``name`` (``pred_counts``…; None when missing or unavailable)."""
    value = metrics.get(name)
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class TrainedModel:
    """What one training produced: two checkpoints to compare on the KPI set.

    Attributes:
        best_checkpoint: the checkpoint with the best validation metrics.
        latest_checkpoint: the last epoch's checkpoint (for resuming).
        val_metrics: the best checkpoint's validation metrics: ``far_pct`` and
            ``val_loss`` (None when unavailable), ``pred_counts`` (per-class
            predictions at argmax), ``pred_counts_at_threshold`` (at the
            recall-100 threshold) and ``epoch``.
        seconds: wall time of the training.
        spec_path: the saved training spec, when the application wrote one.
        history: one metrics dict per validated epoch.
    """

    best_checkpoint: Path
    latest_checkpoint: Path
    val_metrics: EpochMetrics = field(default_factory=dict)
    seconds: float = 0.0
    spec_path: Path | None = None
    history: list[EpochMetrics] = field(default_factory=list)


class Application(ABC):
    """A model every phase trains and judges (see the module docstring)."""

    name: ClassVar[str]

    def __init__(self, images_dir: str | os.PathLike[str], spec: Spec) -> None:
        self.images_dir = Path(images_dir)
        self.spec = spec

    @abstractmethod
    def naming(self) -> ImageNaming:
        """How the dataset rows' image files are named."""

    @abstractmethod
    def image_size(self) -> tuple[int, int]:
        """(width, height) the model reads."""

    @abstractmethod
    def train_trial(
        self,
        spec: Spec,
        train_frame: pd.DataFrame,
        val_frame: pd.DataFrame,
        out_dir: Path,
        *,
        on_epoch_end: EpochCallback | None = None,
        progress: bool | None = False,
    ) -> TrainedModel:
        """One HPO trial: train exactly ``spec`` (the sampled hyperparameters applied,
        ``train.pretrained_model_path`` set for a warm start) and validate on ``val_frame``.

        Call ``on_epoch_end(epoch, metrics)`` after each validation, ``metrics``
        holding ``far_pct`` and ``val_loss``: the search prunes by raising from it.
        A killed trial re-run on the same ``out_dir`` must continue where it stopped.
        """

    @abstractmethod
    def zero_shot(self, frame: pd.DataFrame, *, method: str) -> pd.DataFrame:
        """``frame`` plus ``siamese_score`` from a training-free baseline.

        The zero-shot guard asks a search's winner to beat it on the validation set.
        ``method`` is ``guards.zero_shot_method``; an application with a single
        baseline may ignore it.
        """

    @abstractmethod
    def train(
        self,
        train_frame: pd.DataFrame,
        val_frame: pd.DataFrame,
        out_dir: Path,
        *,
        pretrained: Path | None,
        num_epochs: int | None,
        seed: int,
    ) -> TrainedModel:
        """A DEFT training: warm-started from ``pretrained`` when given, best/latest kept.

        A killed training re-run on the same ``out_dir`` must continue where it stopped.
        """

    @abstractmethod
    def score(self, checkpoint: Path, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` plus the defect score column ``siamese_score``."""

    @abstractmethod
    def embedder(self, checkpoint: Path, kind: str) -> Any:
        """An :class:`automl_deft.deft.embedders.Embedder` for mining."""

    @abstractmethod
    def inference_spec(self, checkpoint: Path, threshold: float) -> SpecTree:
        """The deliverable spec: training spec, threshold filled in, augmentation off, batch 1."""

    @abstractmethod
    def describe(self, checkpoint: Path) -> dict[str, str]:
        """Facts about a checkpoint for ``best_model.json`` (at least ``backbone``)."""


APPLICATIONS: dict[str, type[Application]] = {}
"""Registered applications by name (the built-ins appear on first lookup)."""

BUILTIN_MODULES: tuple[str, ...] = ("automl_deft.aoi_changenet",)
"""Modules whose import registers the built-in applications."""


def register_application(cls: type[Application]) -> type[Application]:
    """Class decorator: make ``cls`` selectable by ``application: <cls.name>``."""
    APPLICATIONS[cls.name] = cls
    return cls


def application_class(name: str) -> type[Application]:
    """The application ``name`` selects: a registered name or ``module:Class``.

    Raises:
        SpecError: unknown name, or an import path that does not name an
            :class:`Application` (the message lists the registered names).
    """
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    if name in APPLICATIONS:
        return APPLICATIONS[name]
    module_name, sep, attr = name.partition(":")
    if sep:
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise SpecError(
                f"application {name!r}: cannot import it ({type(exc).__name__}: {exc}); "
                "install the package that defines it, or fix the module:Class path"
            ) from exc
        if isinstance(cls, type) and issubclass(cls, Application):
            return cls
        raise SpecError(f"application {name!r} is not an automl_deft.application.Application")
    raise SpecError(
        f"unknown application {name!r}; choose one of {', '.join(sorted(APPLICATIONS))}, "
        "or give an import path module:Class"
    )


def get_application(name: str, images_dir: str | os.PathLike[str], spec: Spec) -> Application:
    """The application ``name`` (see :func:`application_class`) on ``images_dir`` and ``spec``.

    Raises:
        SpecError: unknown name (the message lists the registered ones).
    """
    return application_class(name)(images_dir, spec)


__all__ = [
    "APPLICATIONS",
    "DEFAULT_APPLICATION",
    "Application",
    "EpochCallback",
    "EpochMetrics",
    "MetricValue",
    "TrainedModel",
    "application_class",
    "get_application",
    "metric_counts",
    "metric_value",
    "register_application",
]
