"""A toy :class:`~automl_deft.application.Application` that runs in seconds, for tests.

:class:`MeanDiffApplication` (``mean-diff``) scores a golden/test pair by the mean
absolute pixel difference of its images; "training" fits nothing and only
records that it ran, so every phase can be exercised end to end without a
network. Its training-free baseline scores every row the same (at recall 100%
that flags every PASS row, far_pct 100), so a search with it passes the zero-shot
guard. Every call is appended to :attr:`MeanDiffApplication.calls`, so a test can
show that a phase went through the application and not around it::

    MeanDiffApplication.calls.clear()
    automl_search(ws, AutomlConfig(application="mean-diff", ...))
    assert "train_trial" in MeanDiffApplication.calls

It is also a complete example of a plug-in application.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd
from PIL import Image

from automl_deft.application import (
    Application,
    EpochCallback,
    EpochMetrics,
    TrainedModel,
    register_application,
)
from automl_deft.io import atomic_write_json
from automl_deft.jsontypes import SpecTree
from automl_deft.kpi import compute_kpi
from automl_deft.model.spec import Spec
from automl_deft.workspace import SCORE_COLUMN, ImageNaming, resolve_image_path

if TYPE_CHECKING:
    from automl_deft.deft.embedders import Embedder

CHECKPOINT_NAME = "mean_diff.json"


@register_application
class MeanDiffApplication(Application):
    """Mean absolute pixel difference of test and golden, averaged over the lights."""

    name = "mean-diff"
    calls: ClassVar[list[str]] = []
    """Method names, in call order, over every instance (clear it in a test)."""

    def naming(self) -> ImageNaming:
        return self.spec.naming()

    def image_size(self) -> tuple[int, int]:
        cfg = self.spec.dataset.classify
        return (cfg.image_width, cfg.image_height)

    def _pixels(self, rel_dir: str, object_name: str) -> np.ndarray:
        naming = self.naming()
        images = [
            np.asarray(
                Image.open(
                    resolve_image_path(self.images_dir, rel_dir, object_name, light, naming.ext)
                ).convert("L"),
                dtype=np.float32,
            )
            for light in naming.lights
        ]
        return np.stack(images) / 255.0

    def _mean_diff(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.reset_index(drop=True).copy()
        out[SCORE_COLUMN] = [
            float(
                np.abs(
                    self._pixels(row.input_path, row.object_name)
                    - self._pixels(row.golden_path, row.object_name)
                ).mean()
            )
            for row in out.itertuples()
        ]
        return out

    def _fit(
        self,
        spec: Spec,
        val_frame: pd.DataFrame,
        out_dir: Path,
        on_epoch_end: EpochCallback | None,
    ) -> TrainedModel:
        start = time.monotonic()
        scored = self._mean_diff(val_frame)
        kpi = compute_kpi(scored["label"], scored[SCORE_COLUMN])
        threshold = kpi.threshold if kpi.threshold is not None else np.inf
        flagged = int((scored[SCORE_COLUMN] > threshold).sum())
        counts = {"PASS": len(scored) - flagged, "defect": flagged}
        history: list[EpochMetrics] = []
        for epoch in range(1, spec.train.num_epochs + 1):
            metrics: EpochMetrics = {
                "epoch": epoch,
                "far_pct": kpi.far_pct,
                "val_loss": None,
                "pred_counts": counts,
                "pred_counts_at_threshold": counts,
            }
            history.append(metrics)
            if on_epoch_end is not None:
                on_epoch_end(epoch, metrics)
        out_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = out_dir / CHECKPOINT_NAME
        atomic_write_json(checkpoint, {"application": self.name, "spec": spec.to_dict()})
        return TrainedModel(
            best_checkpoint=checkpoint,
            latest_checkpoint=checkpoint,
            val_metrics=dict(history[-1]) if history else {},
            seconds=time.monotonic() - start,
            history=history,
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
        self.calls.append("train_trial")
        return self._fit(spec, val_frame, out_dir, on_epoch_end)

    def zero_shot(self, frame: pd.DataFrame, *, method: str) -> pd.DataFrame:
        self.calls.append("zero_shot")
        out = frame.reset_index(drop=True).copy()
        out[SCORE_COLUMN] = 0.0
        return out

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
        self.calls.append("train")
        spec = self.spec.with_overrides(
            {"train.seed": seed, **({"train.num_epochs": num_epochs} if num_epochs else {})}
        )
        return self._fit(spec, val_frame, out_dir, None)

    def score(self, checkpoint: Path, frame: pd.DataFrame) -> pd.DataFrame:
        self.calls.append("score")
        return self._mean_diff(frame)

    def embedder(self, checkpoint: Path, kind: str) -> Embedder:
        from automl_deft.deft.embedders import get_embedder

        self.calls.append("embedder")
        return get_embedder("pretrained")

    def inference_spec(self, checkpoint: Path, threshold: float) -> SpecTree:
        self.calls.append("inference_spec")
        spec: SpecTree = json.loads(Path(checkpoint).read_text(encoding="utf-8"))["spec"]
        return {"model": spec, "decision": {"threshold": float(threshold)}}

    def describe(self, checkpoint: Path) -> dict[str, str]:
        self.calls.append("describe")
        return {"backbone": self.name}


__all__ = ["CHECKPOINT_NAME", "MeanDiffApplication"]
