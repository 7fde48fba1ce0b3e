"""Mining embedders: one vector per golden/test pair, so similar pairs lie close.

An :class:`Embedder` maps the rows of a dataset frame to L2-normalised vectors
(cosine similarity = dot product). Built-ins, by registry name:

* ``model``: the current checkpoint's own view of a pair, the fused difference
  vector its classification head sees (:meth:`ChangeNetLite.embed`). "Similar"
  means "differs from its golden in a way this model finds alike", which is
  what mining for the model's weak samples should look for.
* ``pretrained``: ImageNet EfficientNet-Lite0 features, training-free (a first
  iteration without a usable checkpoint, or a model-independent check); colour
  or greyscale as the files are, each light embedded on its own.

Both take colour, multi-light workspaces: ``model`` loads pairs exactly as its
checkpoint's model takes them (:attr:`ChangeNetLite.geometry`), ``pretrained``
splits every pair into its light tiles and never registers across a tile border.

New embedders subclass :class:`Embedder` and register with
:func:`register_embedder`; :func:`get_embedder` builds one by name.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import ClassVar, TypeVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from automl_deft.errors import SpecError
from automl_deft.model.align import register, split_tiles
from automl_deft.model.data import PairSource, probe_channels, to_float
from automl_deft.model.spec import BackboneSpec, InputGeometry, Spec
from automl_deft.workspace import ImageNaming

DEFAULT_BATCH_SIZE = 64
TILE_CHUNK = DEFAULT_BATCH_SIZE
"""Most light tiles (per side) the pretrained encoder takes in one forward pass, so a
batch of four-light pairs needs no more memory than one of single-light pairs."""


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
        geometry = self.geometry_for(frame, images_dir, naming)
        dim = self.dimension(geometry)
        if len(frame) == 0:
            return np.zeros((0, dim), dtype=np.float32)
        source = PairSource.from_frame(frame, images_dir, geometry)
        out = np.empty((len(source), dim), dtype=np.float32)
        bar = tqdm(total=len(source), desc=f"embed ({self.name})", unit="pair", disable=None)
        with torch.no_grad(), bar:
            start = 0
            for pixels, _ in source.batches(np.arange(len(source)), batch_size):
                golden, test = to_float(pixels, self.device)
                vec = F.normalize(self._vectors(golden, test, geometry).float(), dim=1)
                out[start : start + len(vec)] = vec.cpu().numpy()
                start += len(vec)
                bar.update(len(vec))
        return out

    @abstractmethod
    def geometry_for(
        self, frame: pd.DataFrame, images_dir: str | os.PathLike[str], naming: ImageNaming
    ) -> InputGeometry:
        """How the pairs of ``frame`` are loaded (lights, colour, tiling, tile size).

        Raises:
            SpecError: the embedder cannot take ``naming``'s lights.
        """

    @abstractmethod
    def dimension(self, geometry: InputGeometry) -> int:
        """The length of one embedding of pairs loaded as ``geometry``."""

    @abstractmethod
    def _vectors(
        self, golden: torch.Tensor, test: torch.Tensor, geometry: InputGeometry
    ) -> torch.Tensor:
        """Un-normalised vectors ``[B, dim]`` of tiled float pairs ``[B, C, H, W]`` in [0, 1]."""


@register_embedder
class ModelEmbedder(_PairEmbedder):
    """The fused difference vector of a ChangeNetLite checkpoint (what its head sees).

    Pairs are loaded as the checkpoint's model takes them (``model.geometry``: its
    colour, its lights tiled by its ``concat_type``/``grid_map``, its tile size),
    registered light tile by light tile and encoded exactly as in inference (bf16/fp16
    autocast on CUDA when the spec enables AMP). The naming's lights must be the
    model's, in its order; the files' extension is the naming's (the workspace's).
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
        self.checkpoint = str(checkpoint)

    def geometry_for(
        self, frame: pd.DataFrame, images_dir: str | os.PathLike[str], naming: ImageNaming
    ) -> InputGeometry:
        own = self.model.geometry
        if tuple(naming.lights) != own.lights:
            raise SpecError(
                f"checkpoint {self.checkpoint} takes {own.num_tiles} light(s) "
                f"({', '.join(own.lights)}), the naming gives {len(naming.lights)} "
                f"({', '.join(naming.lights)}); embed with the checkpoint's spec naming"
            )
        return replace(own, ext=naming.ext)

    def dimension(self, geometry: InputGeometry) -> int:
        return int(self.model.difference.out_features)

    def _vectors(
        self, golden: torch.Tensor, test: torch.Tensor, geometry: InputGeometry
    ) -> torch.Tensor:
        with torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        ):
            return self.model.embed(golden, test)


@register_embedder
class PretrainedEmbedder(_PairEmbedder):
    """ImageNet EfficientNet-Lite0 (the packaged weights), no training needed.

    Each light is embedded on its own and the lights' vectors are concatenated in
    the naming's light order, so the dimension is 496 per light (fixed for a given
    naming): 496 for one light, 1984 for four. Per light, the test image is
    registered onto its golden (its own best shift, never across into another light),
    both go through the 3-channel encoder (RGB as it is, a greyscale image repeated
    to three channels), and the light's vector is, per channel of the four block
    outputs (strides 4-32, 24+40+112+320 = 496 values), the spatial maximum of
    ``|test - golden|``: *how* the pair differs under that light.

    Why not pooled test features, or a difference of pooled features: a defect
    covers a few pixels, so any mean over the image is dominated by the board's
    own content, and the neighbours found are "the same kind of board region",
    whatever the defect. On the tiny demo pool (16 rows per defect type, one grey
    light), the share of a defect row's 5 nearest neighbours with the same defect
    type was 0.23 for this max, 0.04 for ``[mean(test) - mean(golden), mean(test)]``
    and 0.05 by chance; the max also keeps the 5th neighbour's cosine near 0.94, so
    the workflow's 0.9 cutoff still separates.

    Why concatenate the lights rather than pool over them: which light shows a
    difference tells defect types apart (solder faults under the solder and
    low-angle lights, a body fault under all). On the tiny SMT pool (four RGB
    lights, 96 defect rows of seven types, 64 px tiles) the same-type share of the
    5 nearest neighbours was 0.56 concatenated, 0.46 for the maximum over lights,
    0.48 for their mean, 0.14 by chance; the 5th neighbour's cosine stays at 0.95.

    Colour follows the files (:func:`~automl_deft.model.data.probe_channels` on the
    frame embedded). Pairs are resized to ``image_size`` per light (default: the
    default spec's 64x64); ``checkpoint`` is not used.
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
        self.encoder = EfficientNetLite0(3, BackboneSpec(type="efficientnet_lite0"))
        self.encoder.to(self.device).eval()
        self.light_dim = sum(self.encoder.channels)

    def geometry_for(
        self, frame: pd.DataFrame, images_dir: str | os.PathLike[str], naming: ImageNaming
    ) -> InputGeometry:
        # One column of tiles: the layout is undone before encoding, so any would do.
        return InputGeometry(
            lights=tuple(naming.lights),
            ext=naming.ext,
            channels=probe_channels(frame, images_dir, naming),
            tile_width=self.size[0],
            tile_height=self.size[1],
            rows=len(naming.lights),
            columns=1,
        )

    def dimension(self, geometry: InputGeometry) -> int:
        return self.light_dim * geometry.num_tiles

    def _vectors(
        self, golden: torch.Tensor, test: torch.Tensor, geometry: InputGeometry
    ) -> torch.Tensor:
        n, lights = golden.shape[0], geometry.num_tiles
        # Light tiles as images of their own: [B * T, C, h, w], pair-major.
        golden, test = (
            split_tiles(x, geometry.rows, geometry.columns).flatten(0, 1) for x in (golden, test)
        )
        if golden.shape[1] == 1:
            golden, test = golden.expand(-1, 3, -1, -1), test.expand(-1, 3, -1, -1)
        parts = []
        for start in range(0, len(golden), TILE_CHUNK):
            g, t = golden[start : start + TILE_CHUNK], test[start : start + TILE_CHUNK]
            t = register(g, t, self.max_shift)
            feats = self.encoder(torch.cat([g, t]))
            k = len(g)
            parts.append(torch.cat([(f[k:] - f[:k]).abs().amax(dim=(2, 3)) for f in feats], dim=1))
        return torch.cat(parts).view(n, lights * self.light_dim)
