"""The loop's view of a model: an *application* trains, scores and embeds.

The DEFT loop never touches a network, a spec or an image loader itself; it
calls an :class:`Application`. The built-in ``aoi-changenet`` wraps the project's
Siamese ChangeNet-lite. A non-AOI application (another modality, another model)
plugs in by subclassing :class:`Application` and registering it::

    @register_application
    class MyApp(Application):
        name = "my-app"
        def train(self, train_frame, val_frame, out_dir, *, pretrained, num_epochs, seed): ...
        def score(self, checkpoint, frame): ...           # frame + "siamese_score"
        def embedder(self, checkpoint, kind): ...         # an automl_deft.deft.embedders.Embedder
        def inference_spec(self, checkpoint, threshold): ...
        def describe(self, checkpoint): ...               # {"backbone": ...}

and setting ``application: my-app`` in the DEFT config. Rows keep the dataset CSV
schema (``input_path, golden_path, label, object_name``); the score column is
the defect score (higher = more likely defective), which the shared KPI judges.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from automl_deft.errors import SpecError
from automl_deft.model.checkpoint import load_checkpoint, spec_of
from automl_deft.model.spec import Spec, save_spec
from automl_deft.workspace import ImageNaming

SPEC_NAME = "spec.yaml"


@dataclass(frozen=True)
class TrainedModel:
    """What one training produced: two checkpoints to compare on the KPI set."""

    best_checkpoint: Path
    latest_checkpoint: Path
    val_metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    spec_path: Path | None = None


class Application(ABC):
    """A model the DEFT loop can improve (see the module docstring)."""

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
        """Train (warm-started from ``pretrained`` when given) and keep best/latest checkpoints.

        A killed training re-run on the same ``out_dir`` must continue where it stopped.
        """

    @abstractmethod
    def score(self, checkpoint: Path, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` plus the defect score column ``siamese_score``."""

    @abstractmethod
    def embedder(self, checkpoint: Path, kind: str) -> Any:
        """An :class:`automl_deft.deft.embedders.Embedder` for mining."""

    @abstractmethod
    def inference_spec(self, checkpoint: Path, threshold: float) -> dict[str, Any]:
        """The deliverable spec: training spec, threshold filled in, augmentation off, batch 1."""

    @abstractmethod
    def describe(self, checkpoint: Path) -> dict[str, Any]:
        """Facts about a checkpoint for ``best_model.json`` (at least ``backbone``)."""


APPLICATIONS: dict[str, type[Application]] = {}


def register_application(cls: type[Application]) -> type[Application]:
    """Class decorator: make ``cls`` selectable by ``application: <cls.name>``."""
    APPLICATIONS[cls.name] = cls
    return cls


def get_application(name: str, images_dir: str | os.PathLike[str], spec: Spec) -> Application:
    """The registered application ``name``.

    Raises:
        SpecError: unknown name (the message lists the registered ones).
    """
    if name not in APPLICATIONS:
        raise SpecError(
            f"unknown application {name!r}; choose one of {', '.join(sorted(APPLICATIONS))}"
        )
    return APPLICATIONS[name](images_dir, spec)


@register_application
class AOIChangeNet(Application):
    """The built-in application: the Siamese ChangeNet-lite on golden/test image pairs.

    Fine-tuning keeps the hyperparameters the warm-start checkpoint was trained
    with (checkpoints carry their spec), overriding only the warm-start path,
    the epoch budget and the seed; the spec of every training is saved beside
    its checkpoints as ``spec.yaml``.
    """

    name = "aoi-changenet"

    def naming(self) -> ImageNaming:
        return self.spec.naming()

    def image_size(self) -> tuple[int, int]:
        cfg = self.spec.dataset.classify
        return (cfg.image_width, cfg.image_height)

    def training_spec(self, *, pretrained: Path | None, num_epochs: int | None, seed: int) -> Spec:
        base = spec_of(load_checkpoint(pretrained), pretrained) if pretrained else self.spec
        override: dict[str, Any] = {
            "train.pretrained_model_path": str(pretrained) if pretrained else None,
            "train.seed": seed,
        }
        if num_epochs is not None:
            override["train.num_epochs"] = num_epochs
        return base.with_overrides(override)

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
        from automl_deft.model.train import train

        spec = self.training_spec(pretrained=pretrained, num_epochs=num_epochs, seed=seed)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_spec(spec, out_dir / SPEC_NAME)
        start = time.monotonic()
        result = train(spec, train_frame, val_frame, self.images_dir, out_dir, resume=True)
        return TrainedModel(
            best_checkpoint=result.best_checkpoint,
            latest_checkpoint=result.latest_checkpoint,
            val_metrics=dict(result.best_metrics),
            seconds=time.monotonic() - start,
            spec_path=out_dir / SPEC_NAME,
        )

    def score(self, checkpoint: Path, frame: pd.DataFrame) -> pd.DataFrame:
        from automl_deft.model.infer import infer_frame

        return infer_frame(checkpoint, frame, self.images_dir)

    def embedder(self, checkpoint: Path, kind: str) -> Any:
        from automl_deft.deft.embedders import get_embedder

        return get_embedder(kind, checkpoint=checkpoint if kind == "model" else None)

    def inference_spec(self, checkpoint: Path, threshold: float) -> dict[str, Any]:
        spec = spec_of(load_checkpoint(checkpoint), checkpoint)
        spec = spec.with_overrides(
            {
                "train.pretrained_model_path": str(checkpoint),
                "dataset.classify.batch_size": 1,
                "dataset.classify.augmentation_config.augment": False,
            }
        )
        out = spec.to_dict()
        out["inference"] = {"checkpoint": str(checkpoint), "threshold": float(threshold)}
        return out

    def describe(self, checkpoint: Path) -> dict[str, Any]:
        spec = spec_of(load_checkpoint(checkpoint), checkpoint)
        return {"backbone": spec.model.backbone.type}
