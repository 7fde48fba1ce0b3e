"""The built-in application ``aoi-changenet``: the Siamese ChangeNet-lite on golden/test pairs.

Every phase trains it with :func:`automl_deft.model.train.train`, scores with
:func:`automl_deft.model.infer.infer_frame`, and judges it against the
training-free scorers of :mod:`automl_deft.model.zero_shot`. It lives beside
:mod:`automl_deft.application`, not in ``model/``, because its mining embedder
comes from :mod:`automl_deft.deft.embedders` (imported on use) and ``model/``
imports neither ``deft`` nor ``hpo``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from automl_deft.application import (
    DEFAULT_APPLICATION,
    Application,
    EpochCallback,
    TrainedModel,
    register_application,
)
from automl_deft.jsontypes import SpecTree
from automl_deft.layout import TrainFiles
from automl_deft.model.checkpoint import load_checkpoint, spec_of
from automl_deft.model.spec import Spec, save_spec
from automl_deft.workspace import ImageNaming

if TYPE_CHECKING:
    from automl_deft.deft.embedders import Embedder

SPEC_NAME = TrainFiles.SPEC


@register_application
class AOIChangeNet(Application):
    """The built-in application: the Siamese ChangeNet-lite on golden/test image pairs.

    Fine-tuning keeps the hyperparameters the warm-start checkpoint was trained
    with (checkpoints carry their spec), overriding only the warm-start path,
    the epoch budget and the seed; the spec of every DEFT training is saved
    beside its checkpoints as ``spec.yaml``. An HPO trial trains the spec it is
    given as it is.
    """

    name = DEFAULT_APPLICATION

    def naming(self) -> ImageNaming:
        return self.spec.naming()

    def image_size(self) -> tuple[int, int]:
        cfg = self.spec.dataset.classify
        return (cfg.image_width, cfg.image_height)

    def training_spec(self, *, pretrained: Path | None, num_epochs: int | None, seed: int) -> Spec:
        base = spec_of(load_checkpoint(pretrained), pretrained) if pretrained else self.spec
        override: SpecTree = {
            "train.pretrained_model_path": str(pretrained) if pretrained else None,
            "train.seed": seed,
        }
        if num_epochs is not None:
            override["train.num_epochs"] = num_epochs
        return base.with_overrides(override)

    def _fit(
        self,
        spec: Spec,
        train_frame: pd.DataFrame,
        val_frame: pd.DataFrame,
        out_dir: Path,
        **options: Any,
    ) -> TrainedModel:
        from automl_deft.model.train import train

        start = time.monotonic()
        result = train(spec, train_frame, val_frame, self.images_dir, out_dir, **options)
        spec_path = out_dir / SPEC_NAME
        return TrainedModel(
            best_checkpoint=result.best_checkpoint,
            latest_checkpoint=result.latest_checkpoint,
            val_metrics=dict(result.best_metrics),
            seconds=time.monotonic() - start,
            spec_path=spec_path if spec_path.is_file() else None,
            history=result.history,
        )

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
        return self._fit(
            spec, train_frame, val_frame, out_dir, progress=progress, on_epoch_end=on_epoch_end
        )

    def zero_shot(self, frame: pd.DataFrame, *, method: str) -> pd.DataFrame:
        from automl_deft.model.zero_shot import zero_shot_frame

        return zero_shot_frame(frame, self.images_dir, self.spec, method=method)

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
        spec = self.training_spec(pretrained=pretrained, num_epochs=num_epochs, seed=seed)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_spec(spec, out_dir / SPEC_NAME)
        return self._fit(spec, train_frame, val_frame, out_dir, resume=True)

    def score(self, checkpoint: Path, frame: pd.DataFrame) -> pd.DataFrame:
        from automl_deft.model.infer import infer_frame

        return infer_frame(checkpoint, frame, self.images_dir)

    def embedder(self, checkpoint: Path, kind: str) -> Embedder:
        from automl_deft.deft.embedders import get_embedder

        return get_embedder(kind, checkpoint=checkpoint if kind == "model" else None)

    def inference_spec(self, checkpoint: Path, threshold: float) -> SpecTree:
        """What serving the checkpoint needs: the model, the preprocessing, the decision.

        Not a training spec: nothing here trains (the training spec stays in the
        checkpoint and in the run's ``spec.yaml`` files).
        """
        from automl_deft.model.network import architecture
        from automl_deft.serving import preprocessing_of

        spec = spec_of(load_checkpoint(checkpoint), checkpoint)
        return {
            "model": {"format": "automl-deft-checkpoint", **architecture(spec)},
            "preprocessing": preprocessing_of(spec).to_json(),
            "decision": {
                "threshold": float(threshold),
                "rule": "siamese_score > threshold → NO_PASS, else PASS",
            },
        }

    def describe(self, checkpoint: Path) -> dict[str, str]:
        spec = spec_of(load_checkpoint(checkpoint), checkpoint)
        return {"backbone": spec.model.backbone.type}


__all__ = ["SPEC_NAME", "AOIChangeNet"]
