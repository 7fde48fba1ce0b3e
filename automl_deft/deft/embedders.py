"""Mining embedders: one vector per golden/test pair, so similar pairs lie close.

An :class:`Embedder` maps the rows of a dataset frame to L2-normalised vectors
(cosine similarity = dot product). Built-ins, by registry name:

* ``model``: the current checkpoint's own view of a pair, the fused difference
  vector its classification head sees (:meth:`ChangeNetLite.embed`). "Similar"
  means "differs from its golden in a way this model finds alike", which is
  what mining for the model's weak samples should look for.
* ``pretrained``: ImageNet EfficientNet-Lite0 features, training-free (a first
  iteration without a usable checkpoint, or a model-independent check).

New embedders subclass :class:`Embedder` and register with
:func:`register_embedder`; :func:`get_embedder` builds one by name.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import ClassVar, TypeVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from automl_deft.errors import SpecError
from automl_deft.model.align import register
from automl_deft.model.data import PairSource, to_float
from automl_deft.model.spec import BackboneSpec, Spec
from automl_deft.workspace import ImageNaming

DEFAULT_BATCH_SIZE = 64


class Embedder(ABC):
    """Pairs to vectors: the one extension point of mining."""

    name: ClassVar[str]

    def __init__(
        self,
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        device: str = "auto",
        image_size: tuple[int, int] | None = None,
    ) -> None:
        """Every embedder takes the options :func:`get_embedder` passes (and may ignore some)."""
        del checkpoint, device, image_size

    @abstractmethod
    def embed(
        self,
        frame: pd.DataFrame,
        images_dir: str | os.PathLike[str],
        naming: ImageNaming,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> np.ndarray:
        """Embed every row of ``frame`` (a dataset frame; files resolved under ``images_dir``).

        Returns:
            ``(len(frame), d)`` float32, rows L2-normalised (so cosine = dot product).
        """


EMBEDDERS: dict[str, type[Embedder]] = {}
"""Registered embedders by name."""

E = TypeVar("E", bound=type[Embedder])


def register_embedder(cls: E) -> E:
    """Class decorator: make ``cls`` available to :func:`get_embedder` as ``cls.name``.

    Raises:
        ValueError: another class already holds that name.
    """
    other = EMBEDDERS.get(cls.name)
    if other is not None and other is not cls:
        raise ValueError(f"embedder name {cls.name!r} is taken by {other.__qualname__}")
    EMBEDDERS[cls.name] = cls
    return cls


def get_embedder(
    name: str,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "auto",
    image_size: tuple[int, int] | None = None,
) -> Embedder:
    """Build a registered embedder.

    Args:
        name: ``model``, ``pretrained`` or another registered name.
        checkpoint: the model checkpoint (required by ``model``).
        device: ``auto``, ``cpu`` or ``cuda``.
        image_size: ``(width, height)`` pairs are resized to; ``model`` always uses
            its checkpoint's training size and ignores this.

    Raises:
        SpecError: unknown name, or ``model`` without a checkpoint.
        CheckpointError: the checkpoint cannot be loaded.
    """
    cls = EMBEDDERS.get(name)
    if cls is None:
        raise SpecError(
            f"unknown mining embedder {name!r}; choose one of {', '.join(sorted(EMBEDDERS))}"
        )
    return cls(checkpoint=checkpoint, device=device, image_size=image_size)


class _PairEmbedder(Embedder):
    """Shared loop: load pairs with :class:`PairSource`, embed batches, normalise."""

    dim: int
    size: tuple[int, int]
    device: torch.device

    def embed(
        self,
        frame: pd.DataFrame,
        images_dir: str | os.PathLike[str],
        naming: ImageNaming,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> np.ndarray:
        """Embed every row of ``frame``; see :meth:`Embedder.embed`."""
        self._check_naming(naming)
        if len(frame) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        source = PairSource.from_frame(frame, images_dir, naming, self.size)
        out = np.empty((len(source), self.dim), dtype=np.float32)
        bar = tqdm(total=len(source), desc=f"embed ({self.name})", unit="pair", disable=None)
        with torch.no_grad(), bar:
            start = 0
            for pixels, _ in source.batches(np.arange(len(source)), batch_size):
                golden, test = to_float(pixels, self.device)
                vec = F.normalize(self._vectors(golden, test).float(), dim=1)
                out[start : start + len(vec)] = vec.cpu().numpy()
                start += len(vec)
                bar.update(len(vec))
        return out

    def _check_naming(self, naming: ImageNaming) -> None:
        """Hook: reject namings the embedder cannot take."""

    @abstractmethod
    def _vectors(self, golden: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
        """Un-normalised vectors ``[B, dim]`` of float pairs ``[B, C, H, W]`` in [0, 1]."""


@register_embedder
class ModelEmbedder(_PairEmbedder):
    """The fused difference vector of a ChangeNetLite checkpoint (what its head sees).

    Pairs are loaded at the checkpoint's training size, registered and encoded
    exactly as in inference (bf16/fp16 autocast on CUDA when the spec enables AMP).
    The vector is non-negative (ReLU, then max and mean pooling), so cosines run
    high across the board: on the tiny demo pool a row's 5th neighbour is at
    about 0.99, and the workflow's 0.9 cutoff rarely removes anything; ``top_k``
    is then the effective limit. ``image_size`` is not used.
    """

    name = "model"

    def __init__(
        self,
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        device: str = "auto",
        image_size: tuple[int, int] | None = None,
    ) -> None:
        from automl_deft.model.checkpoint import load_model
        from automl_deft.model.data import image_size as spec_image_size
        from automl_deft.model.train import amp_dtype_for, select_device

        if checkpoint is None:
            raise SpecError(
                "the 'model' mining embedder needs a checkpoint; pass the previous "
                "iteration's best checkpoint, or use the 'pretrained' embedder"
            )
        self.model, self.spec, _ = load_model(checkpoint)
        self.device = select_device(device)
        self.model.to(self.device).eval()
        self.amp_dtype = amp_dtype_for(self.device, self.spec)
        self.size = spec_image_size(self.spec)
        self.dim = self.model.difference.out_features
        self.checkpoint = str(checkpoint)

    def _check_naming(self, naming: ImageNaming) -> None:
        expected = self.spec.dataset.classify.num_input
        if len(naming.lights) != expected:
            raise SpecError(
                f"checkpoint {self.checkpoint} takes {expected} light(s), the naming gives "
                f"{len(naming.lights)} ({', '.join(naming.lights)}); embed with the "
                "checkpoint's spec naming"
            )

    def _vectors(self, golden: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
        with torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        ):
            return self.model.embed(golden, test)


@register_embedder
class PretrainedEmbedder(_PairEmbedder):
    """ImageNet EfficientNet-Lite0 (the packaged weights), no training needed.

    Lights are averaged to one grey image, the test image is registered onto its
    golden (as the model does), and both go through the encoder. The embedding
    is, per channel of the four block outputs (strides 4-32, 24+40+112+320 = 496
    values), the spatial maximum of ``|test - golden|``: *how* the pair differs.

    Why not pooled test features, or a difference of pooled features: a defect
    covers a few pixels, so any mean over the image is dominated by the board's
    own content, and the neighbours found are "the same kind of board region",
    whatever the defect. On the tiny demo pool (16 rows per defect type), the
    share of a defect row's 5 nearest neighbours with the same defect type was
    0.23 for this max, 0.04 for ``[mean(test) - mean(golden), mean(test)]`` and
    0.05 by chance; the max also keeps the 5th neighbour's cosine near 0.94, so
    the workflow's 0.9 cutoff still separates.

    Pairs are resized to ``image_size`` (default: the default spec's 64x64);
    ``checkpoint`` is not used.
    """

    name = "pretrained"

    def __init__(
        self,
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        device: str = "auto",
        image_size: tuple[int, int] | None = None,
    ) -> None:
        from automl_deft.model.network import EfficientNetLite0
        from automl_deft.model.train import select_device

        defaults = Spec()
        self.size = image_size or (
            defaults.dataset.classify.image_width,
            defaults.dataset.classify.image_height,
        )
        self.max_shift = defaults.model.classify.align_max_shift
        self.device = select_device(device)
        self.encoder = EfficientNetLite0(1, BackboneSpec(type="efficientnet_lite0"))
        self.encoder.to(self.device).eval()
        self.dim = sum(self.encoder.channels)

    def _vectors(self, golden: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
        if golden.shape[1] != 1:
            golden, test = golden.mean(1, keepdim=True), test.mean(1, keepdim=True)
        n = golden.shape[0]
        test = register(golden, test, self.max_shift)
        feats = self.encoder(torch.cat([golden, test]))
        return torch.cat([(f[n:] - f[:n]).abs().amax(dim=(2, 3)) for f in feats], dim=1)
