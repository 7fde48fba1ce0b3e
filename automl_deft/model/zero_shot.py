"""Training-free scorers: the "did training beat zero-shot?" baseline.

Each scorer maps golden/test pairs to a defect score with no training at all.
They answer the workflow's quality question: if a trained model does not beat
a pixel difference, the training (or the search) did not earn its cost.

Registry: ``pixel-diff`` (aligned absolute difference) and ``feature-distance``
(distance of pretrained EfficientNet-Lite0 features). Both work on RGB and on
greyscale. A scorer sees one light at a time: :func:`score_tiled` cuts each
tiled multi-light image into its light tiles, scores every tile on its own
(registration never crosses a tile border) and keeps a pair's largest tile
score, as a defect seen under any one light is a defect. They are the built-in
application's training-free baseline (``AOIChangeNet.zero_shot`` calls
:func:`zero_shot_frame`), which the search's zero-shot guard asks the winner to beat.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from automl_deft.errors import UserError
from automl_deft.model.align import register, split_tiles
from automl_deft.model.data import PairSource, to_float
from automl_deft.model.spec import Spec
from automl_deft.workspace import SCORE_COLUMN


class ZeroShotScorer(abc.ABC):
    """Scores a batch of float pairs ``[B, C, H, W]`` in [0, 1] (one light each, C = 1
    or 3); higher = more defective."""

    name: str

    @abc.abstractmethod
    def score_batch(self, golden: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
        """Defect scores ``[B]``."""


class PixelDiffScorer(ZeroShotScorer):
    """Absolute difference after the best integer shift (|dx|, |dy| <= ``max_shift``),
    smoothed by a ``window`` box filter; the score is the maximum of the smoothed map.

    The alignment search removes misregistration; the box filter suppresses
    isolated speckle, so what remains is the largest locally-consistent change.
    """

    name = "pixel-diff"

    def __init__(self, max_shift: int = 2, window: int = 3) -> None:
        self.max_shift = max_shift
        self.window = window

    def score_batch(self, golden: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
        r = self.max_shift
        h, w = test.shape[-2:]
        aligned = register(golden, test, r)
        # The border r pixels of a shifted image are replicated, not observed: leave them out.
        diff = (aligned - golden)[..., r : h - r, r : w - r].abs().mean(dim=1, keepdim=True)
        return F.avg_pool2d(diff, self.window, stride=1).amax(dim=(1, 2, 3))


class FeatureDistanceScorer(ZeroShotScorer):
    """Largest per-location L2 distance of ImageNet EfficientNet-Lite0 features (stride 8).

    RGB goes to the pretrained stem as it is; greyscale is repeated to RGB.
    """

    name = "feature-distance"

    def __init__(self) -> None:
        from automl_deft.model.network import EfficientNetLite0
        from automl_deft.model.spec import BackboneSpec

        self.encoder = EfficientNetLite0(3, BackboneSpec(type="efficientnet_lite0")).eval()

    @torch.no_grad()
    def score_batch(self, golden: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
        self.encoder.to(golden.device)
        if golden.shape[1] == 1:
            golden, test = golden.expand(-1, 3, -1, -1), test.expand(-1, 3, -1, -1)
        n = golden.shape[0]
        feats = self.encoder(torch.cat([golden, test]))[1]
        dist = (feats[:n] - feats[n:]).pow(2).sum(dim=1).sqrt()
        return dist.flatten(1).amax(dim=1)


SCORERS: dict[str, Callable[[], ZeroShotScorer]] = {
    PixelDiffScorer.name: PixelDiffScorer,
    FeatureDistanceScorer.name: FeatureDistanceScorer,
}


def get_scorer(name: str) -> ZeroShotScorer:
    """A scorer from the registry by name."""
    try:
        return SCORERS[name]()
    except KeyError:
        raise UserError(
            f"unknown zero-shot method {name!r}; choose one of {', '.join(sorted(SCORERS))}"
        ) from None


def score_tiled(
    scorer: ZeroShotScorer, golden: torch.Tensor, test: torch.Tensor, rows: int, columns: int
) -> torch.Tensor:
    """Scores ``[B]`` of tiled pairs ``[B, C, rows*h, columns*w]``: each light tile scored
    on its own, a pair's score its largest tile's."""
    if rows == columns == 1:
        return scorer.score_batch(golden, test)
    tiles = [split_tiles(x, rows, columns).flatten(0, 1) for x in (golden, test)]
    return scorer.score_batch(*tiles).view(-1, rows * columns).amax(dim=1)


@torch.no_grad()
def zero_shot_frame(
    frame: pd.DataFrame,
    images_dir: str | os.PathLike[str],
    spec: Spec,
    *,
    method: str = PixelDiffScorer.name,
    batch_size: int = 256,
) -> pd.DataFrame:
    """Score ``frame`` with a zero-shot method; returns a copy with ``siamese_score``.

    The images load as :meth:`PairSource.for_spec` does (RGB unless greyscale, lights
    tiled per ``concat_type``); every light tile is scored (:func:`score_tiled`).
    """
    scorer = get_scorer(method)
    source = PairSource.for_spec(frame, images_dir, spec)
    rows, columns = spec.dataset.classify.layout
    device = torch.device("cpu")
    scores = [
        score_tiled(scorer, *to_float(pixels, device), rows, columns).double()
        for pixels, _ in source.batches(np.arange(len(source)), batch_size)
    ]
    out = frame.reset_index(drop=True).copy()
    out[SCORE_COLUMN] = torch.cat(scores).numpy() if scores else np.zeros(0)
    return out
