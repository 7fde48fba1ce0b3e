"""Image pairs as tensors: loading, tiling the lights, batching, PASS subsampling, augmentation.

Each side of a pair (golden, test) is one image: its light files, decoded as RGB
(or greyscale, see :func:`probe_channels`) at ``image_width x image_height``,
tiled spatially as ``dataset.classify.concat_type`` says (:class:`InputGeometry`:
``linear`` stacks them along the height, ``grid`` tiles them row-major). Pairs are
held as ``uint8`` tensors ``[N, 2, C, H, W]`` (index 0 golden, 1 test; C = 1 or 3;
H, W the tiled size). Small and medium sets are decoded once into memory; larger
ones are decoded lazily by DataLoader workers. Augmentation runs on whole batches
on the training device, so it costs little next to the model; normalisation is the
model's first step (so an exported graph carries it), :func:`to_float` only scales.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from automl_deft.errors import WorkspaceError, first_line
from automl_deft.model.align import join_tiles, split_tiles
from automl_deft.model.spec import AugmentationConfig, DatasetClassifySpec, InputGeometry, Spec
from automl_deft.workspace import MAX_LISTED, ImageNaming, defect_mask, row_paths

PRELOAD_LIMIT_BYTES = 2 * 1024**3
"""Decode a dataset into memory when its pixels fit in this many bytes."""

GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
"""PIL modes that hold no colour."""

T = TypeVar("T")

VALIDATE_HINT = "`automl-deft validate WORKSPACE` lists every problem"


def _decode(path: os.PathLike[str] | str, use: Callable[[Image.Image], T]) -> T:
    """``use`` applied to the opened image file, with one-line errors.

    Raises:
        WorkspaceError: the file is missing, unreadable, cannot be decoded, or is
            larger than PIL's decompression-bomb limit (its warning included).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as raw:
                return use(raw)
    except FileNotFoundError:
        raise WorkspaceError(
            f"image file missing: {path}; restore it or remove its row ({VALIDATE_HINT})"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise WorkspaceError(_too_large(path, exc)) from None
    except OSError as exc:
        if exc.errno is not None:  # the file system's refusal, not PIL's
            raise WorkspaceError(
                f"image file {path} cannot be read ({exc.strerror}); fix the file or remove its row"
            ) from None
        raise WorkspaceError(_undecodable(path, exc)) from None
    except (SyntaxError, ValueError, EOFError) as exc:
        raise WorkspaceError(_undecodable(path, exc)) from None


def _read(path: os.PathLike[str] | str, size: tuple[int, int], mode: str = "L") -> np.ndarray:
    """Decode one image file as ``uint8 [C, H, W]`` (``mode`` ``"L"``: C=1, ``"RGB"``: C=3)
    at ``size`` ``(width, height)``, resized bilinearly when it differs.

    Raises:
        WorkspaceError: see :func:`_decode`.
    """
    im = _decode(path, lambda raw: raw.convert(mode))
    if im.size != size:
        im = im.resize(size, Image.Resampling.BILINEAR)
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _holds_no_colour(im: Image.Image) -> bool:
    if im.mode in GREY_MODES:
        return True  # the header says so: nothing is decoded
    if im.mode in ("P", "PA"):  # a palette: grey when every colour it uses is grey
        a = np.asarray(im.convert("RGB"))
        return bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())
    return False


def is_greyscale_file(path: os.PathLike[str] | str) -> bool:
    """Whether an image file holds no colour: a grey PIL mode (read from the header),
    or a palette image whose pixels are all grey. An RGB file counts as colour.

    Raises:
        WorkspaceError: see :func:`_decode`.
    """
    return _decode(path, _holds_no_colour)


def probe_channels(
    frame: pd.DataFrame, images_dir: os.PathLike[str] | str, naming: ImageNaming
) -> int:
    """The colour rule of a dataset: 1 (greyscale) when every light file (golden and
    test) of its first row is greyscale, else 3 (RGB).

    One row decides, so the rule is cheap (headers only) and deterministic for a
    given CSV; a workspace mixes modes only by mistake (each file is converted to the
    chosen mode anyway). An empty frame counts as greyscale.

    Raises:
        WorkspaceError: a file of the first row is missing or unreadable.
    """
    if frame.empty:
        return 1
    first = frame.iloc[:1]
    files = [
        p
        for column in ("golden_path", "input_path")
        for p in row_paths(first, images_dir, naming, column)[0]
    ]
    return 1 if all(is_greyscale_file(p) for p in files) else 3


def resolve_color_mode(spec: Spec, frame: pd.DataFrame, images_dir: os.PathLike[str] | str) -> Spec:
    """``spec`` with ``dataset.classify.color_mode: auto`` decided by :func:`probe_channels`
    on ``frame`` (the training rows); a spec that says ``rgb`` or ``grey`` is returned as is.
    """
    if spec.dataset.classify.color_mode != "auto":
        return spec
    channels = probe_channels(frame, images_dir, spec.naming())
    return spec.with_overrides({"dataset.classify.color_mode": "rgb" if channels == 3 else "grey"})


def tile_images(images: Sequence[np.ndarray], geometry: InputGeometry) -> np.ndarray:
    """One side's light images (``uint8 [C, h, w]`` each, in light order) as the tiled
    ``[C, H, W]`` image of ``geometry``."""
    if len(images) == 1:
        return images[0]
    out = np.empty(geometry.shape, dtype=images[0].dtype)
    h, w = geometry.tile_height, geometry.tile_width
    for i, image in enumerate(images):
        top, left = geometry.tile_origin(i)
        out[:, top : top + h, left : left + w] = image
    return out


def _undecodable(path: os.PathLike[str] | str, exc: BaseException) -> str:
    return (
        f"image file {path} cannot be decoded ({first_line(exc)}); it is empty, truncated or "
        f"not an image: re-export it or remove its row ({VALIDATE_HINT})"
    )


def _too_large(path: os.PathLike[str] | str, exc: BaseException) -> str:
    numbers = re.findall(r"\d+", str(exc))
    size = (
        f"{int(numbers[0]):,} pixels, over the {int(numbers[1]):,}-pixel limit"
        if len(numbers) >= 2
        else first_line(exc)
    )
    return (
        f"image file {path} is too large to decode safely ({size}); "
        "crop or downscale it to the inspection patch size"
    )


def _missing_files(files: list[list[str]]) -> list[str]:
    return [p for p in dict.fromkeys(f for row in files for f in row) if not os.path.isfile(p)]


@dataclass
class PairSource:
    """The pairs and binary targets of one CSV, ready for batching."""

    frame: pd.DataFrame
    targets: torch.Tensor
    """1 for defect rows, 0 for PASS."""
    size: tuple[int, int]
    """``(width, height)`` of one light tile (each file is resized to it)."""
    golden_files: list[list[str]]
    input_files: list[list[str]]
    pixels: torch.Tensor | None = None
    """Preloaded ``uint8 [N, 2, C, H, W]`` (tiled), or None when loaded lazily."""
    geometry: InputGeometry | None = None
    """How the lights of a side are tiled and their colour; None only for a source built
    by hand from ``pixels`` (then their shape is all there is)."""

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        images_dir: os.PathLike[str] | str,
        naming: ImageNaming | InputGeometry,
        size: tuple[int, int] | None = None,
        *,
        preload: bool | None = None,
    ) -> PairSource:
        """Resolve the files of ``frame``; decode them now when they fit in memory.

        Args:
            frame: rows of the dataset CSV schema.
            images_dir: the images root the rows resolve against.
            naming: the :class:`InputGeometry` to load (a model's, see :meth:`for_spec`);
                or, the older form, an :class:`ImageNaming` with ``size``: the lights
                stacked along the height (``linear``), colour by :func:`probe_channels`.
            size: ``(width, height)`` of a light; only with an ``ImageNaming``.
            preload: decode everything now (None: when it fits in
                :data:`PRELOAD_LIMIT_BYTES`).

        Raises:
            WorkspaceError: an image file is missing (all are checked before any is
                decoded), unreadable, undecodable or too large.
        """
        frame = frame.reset_index(drop=True)
        if isinstance(naming, InputGeometry):
            geometry: InputGeometry | None = naming
            files = naming.naming
        else:
            if size is None:
                raise TypeError("PairSource.from_frame: size is required with an ImageNaming")
            geometry, files = None, naming
        golden = [[str(p) for p in ps] for ps in row_paths(frame, images_dir, files, "golden_path")]
        inputs = [[str(p) for p in ps] for ps in row_paths(frame, images_dir, files, "input_path")]
        missing = _missing_files(golden + inputs)
        if missing:
            shown = ", ".join(os.path.relpath(p, images_dir) for p in missing[:MAX_LISTED])
            raise WorkspaceError(
                f"{len(missing)} image file(s) missing under {images_dir} (e.g. {shown}); "
                f"restore them or remove their rows ({VALIDATE_HINT})"
            )
        if geometry is None:
            assert size is not None
            geometry = InputGeometry(
                lights=files.lights,
                ext=files.ext,
                channels=probe_channels(frame, images_dir, files),
                tile_width=size[0],
                tile_height=size[1],
                rows=len(files.lights),
                columns=1,
            )
        targets = torch.from_numpy(defect_mask(frame["label"]).astype(np.int64))
        src = cls(frame, targets, geometry.size, golden, inputs, geometry=geometry)
        nbytes = len(frame) * 2 * math.prod(geometry.shape)
        if preload if preload is not None else nbytes <= PRELOAD_LIMIT_BYTES:
            src.pixels = (
                torch.stack([src.load(i) for i in range(len(frame))])
                if len(frame)
                else torch.zeros((0, 2, *geometry.shape), dtype=torch.uint8)
            )
        return src

    @classmethod
    def for_spec(
        cls,
        frame: pd.DataFrame,
        images_dir: os.PathLike[str] | str,
        spec: Spec,
        *,
        preload: bool | None = None,
    ) -> PairSource:
        """The pairs of ``frame`` as a model trained with ``spec`` sees them
        (``color_mode: auto`` decided on ``frame`` by :func:`probe_channels`)."""
        resolved = resolve_color_mode(spec, frame, images_dir)
        return cls.from_frame(frame, images_dir, resolved.geometry(), preload=preload)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def channels(self) -> int:
        """1 (greyscale) or 3 (RGB)."""
        if self.geometry is not None:
            return self.geometry.channels
        assert self.pixels is not None, "a PairSource needs a geometry or pixels"
        return int(self.pixels.shape[2])

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one side's tiled image."""
        if self.geometry is not None:
            return self.geometry.shape
        assert self.pixels is not None, "a PairSource needs a geometry or pixels"
        c, h, w = self.pixels.shape[2:]
        return int(c), int(h), int(w)

    def load(self, i: int) -> torch.Tensor:
        """Decode row ``i`` to ``uint8 [2, C, H, W]`` (each side's lights tiled)."""
        geometry = self.geometry
        assert geometry is not None, "a hand-built PairSource has no files to load"
        mode = geometry.pil_mode
        sides = [
            tile_images([_read(p, self.size, mode) for p in files], geometry)
            for files in (self.golden_files[i], self.input_files[i])
        ]
        return torch.from_numpy(np.stack(sides))

    def batches(
        self, indices: np.ndarray, batch_size: int, *, workers: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(uint8 pixels [B, 2, C, H, W], targets [B])`` in the order of ``indices``."""
        if self.pixels is not None:
            for start in range(0, len(indices), batch_size):
                idx = torch.from_numpy(indices[start : start + batch_size])
                yield self.pixels[idx], self.targets[idx]
            return
        loader = torch.utils.data.DataLoader(
            _LazyRows(self),
            batch_sampler=[
                indices[s : s + batch_size].tolist() for s in range(0, len(indices), batch_size)
            ],
            num_workers=workers,
        )
        try:
            yield from loader
        except WorkspaceError as exc:
            # A worker's error comes back with its traceback in the message: keep the line.
            raise WorkspaceError(_worker_message(exc)) from None


def _worker_message(exc: WorkspaceError) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught "):
        last = lines[-1]
        name = f"{WorkspaceError.__module__}.{WorkspaceError.__name__}: "
        return last.removeprefix(name)
    return str(exc)


class _LazyRows(torch.utils.data.Dataset):
    def __init__(self, source: PairSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.source.load(i), self.source.targets[i]


def image_size(spec: Spec) -> tuple[int, int]:
    """``(width, height)`` of one light tile (the tiled image is :meth:`Spec.geometry`'s)."""
    return spec.dataset.classify.image_width, spec.dataset.classify.image_height


def epoch_indices(targets: torch.Tensor, fpratio: float, rng: np.random.Generator) -> np.ndarray:
    """One epoch's rows: every defect row plus a ``fpratio`` share of PASS rows, shuffled."""
    y = targets.numpy()
    defects = np.flatnonzero(y == 1)
    passes = np.flatnonzero(y == 0)
    n_pass = min(len(passes), max(1, round(fpratio * len(passes)))) if len(passes) else 0
    chosen = np.concatenate([defects, rng.choice(passes, size=n_pass, replace=False)])
    return rng.permutation(chosen)


def to_float(pixels: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 pairs to float ``golden, test`` in [0, 1] on ``device``."""
    x = pixels.to(device, non_blocking=True).float().div_(255.0)
    return x[:, 0], x[:, 1]


LUMA = (0.299, 0.587, 0.114)
"""ITU-R 601 luma weights: the grey that saturation jitter blends towards."""

_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_INV = torch.linalg.inv(_YIQ)

CROP_MIN_SCALE = 0.8
"""``with_random_crop``: the crop keeps at least this share of a tile's width and height."""
BLUR_SIGMA = (0.1, 1.5)
"""``with_random_blur``: the Gaussian's sigma range, in pixels."""
BLUR_PROBABILITY = 0.5


def augment(
    golden: torch.Tensor,
    test: torch.Tensor,
    cfg: DatasetClassifySpec | AugmentationConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch augmentation of tiled pairs ``[B, C, H, W]`` in [0, 1].

    Geometry (flips, rotations, ``with_random_crop``) is drawn once per pair and
    applied to every light tile of both sides alike, tile by tile: a tile never
    moves to another light's place. Rotations by 90/270 degrees need square tiles;
    with non-square tiles only 180 is drawn. Photometric changes (``random_color``:
    brightness, contrast, then for RGB saturation and hue; ``with_random_blur``) are
    drawn independently per side and per light tile, as each file is its own capture.

    ``cfg`` is the ``dataset.classify`` spec (its ``concat_type``/``grid_map`` say
    where the tiles are); a bare ``AugmentationConfig`` treats the image as one tile.
    ``generator`` lives on the CPU so results do not depend on the device.
    """
    if isinstance(cfg, DatasetClassifySpec):
        aug, (rows, columns) = cfg.augmentation_config, cfg.layout
    else:
        aug, rows, columns = cfg, 1, 1
    if not aug.augment:
        return golden, test
    n = golden.shape[0]
    x = split_tiles(torch.stack([golden, test], dim=1), rows, columns)  # [B, 2, T, C, h, w]
    pair = (n, 1, 1, 1, 1, 1)

    def chance(p: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) < p).to(x.device)

    def uniform(shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
        return (low + torch.rand(shape, generator=generator) * (high - low)).to(x.device)

    if aug.random_flip.enable:
        m = chance(aug.random_flip.hflip_probability).view(pair)
        x = torch.where(m, x.flip(-1), x)
        m = chance(aug.random_flip.vflip_probability).view(pair)
        x = torch.where(m, x.flip(-2), x)
    rot = aug.random_rotate
    if rot.enable and rot.angle_list:
        square = x.shape[-1] == x.shape[-2]
        angles = [a for a in rot.angle_list if a % 360 in ((90, 180, 270) if square else (180,))]
        if angles:
            do = chance(rot.rotate_probability)
            pick = torch.randint(len(angles), (n,), generator=generator).to(x.device)
            for j, angle in enumerate(angles):
                m = (do & (pick == j)).view(pair)
                x = torch.where(m, torch.rot90(x, k=angle // 90, dims=(-2, -1)), x)
    if aug.with_random_crop:
        x = _random_crop(x, uniform)
    col = aug.random_color
    colour = x.shape[3] == 3
    if col.enable and (
        col.brightness > 0 or col.contrast > 0 or (colour and (col.saturation > 0 or col.hue > 0))
    ):
        image = (*x.shape[:3], 1, 1, 1)  # per pair, side and light
        do = uniform(image, 0, 1) < col.color_probability
        b = 1 + uniform(image, -1, 1) * col.brightness
        c = 1 + uniform(image, -1, 1) * col.contrast
        mean = x.mean(dim=(3, 4, 5), keepdim=True)
        jittered = ((x - mean) * c + mean) * b
        if colour and col.saturation > 0:
            s = 1 + uniform(image, -1, 1) * col.saturation
            grey = _luma(jittered)
            jittered = grey + (jittered - grey) * s
        if colour and col.hue > 0:
            jittered = _rotate_hue(jittered, uniform(image, -1, 1) * col.hue)
        x = torch.where(do, jittered.clamp_(0, 1), x)
    if aug.with_random_blur:
        x = _random_blur(x, uniform)
    x = join_tiles(x, rows, columns)
    return x[:, 0], x[:, 1]


def _luma(x: torch.Tensor) -> torch.Tensor:
    """Grey of RGB images ``[..., 3, h, w]`` as ``[..., 1, h, w]``."""
    w = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(3, 1, 1)
    return (x * w).sum(dim=-3, keepdim=True)


def _rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of RGB images ``[..., 3, h, w]`` by ``turns`` (broadcast, in turns)
    in the YIQ plane: luma kept, chroma turned."""
    yiq = torch.einsum("ij,...jhw->...ihw", _YIQ.to(x), x)
    angle = turns.squeeze(-1).squeeze(-1) * (2 * math.pi)  # [..., 1]
    cos, sin = torch.cos(angle), torch.sin(angle)
    i, q = yiq[..., 1, :, :], yiq[..., 2, :, :]
    cos, sin = cos[..., None], sin[..., None]
    turned = torch.stack([yiq[..., 0, :, :], cos * i - sin * q, sin * i + cos * q], dim=-3)
    return torch.einsum("ij,...jhw->...ihw", _YIQ_INV.to(x), turned)


UniformDraw = Callable[[tuple[int, ...], float, float], torch.Tensor]


def _random_crop(x: torch.Tensor, uniform: UniformDraw) -> torch.Tensor:
    """Per pair, one crop (scale ``CROP_MIN_SCALE``-1 of the tile, anywhere inside it)
    resized back to the tile, the same for every tile of both sides."""
    n, sides, tiles, c, h, w = x.shape
    scale = uniform((n,), CROP_MIN_SCALE, 1.0)
    dx = uniform((n,), -1, 1) * (1 - scale)
    dy = uniform((n,), -1, 1) * (1 - scale)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 1, 1] = scale, scale
    theta[:, 0, 2], theta[:, 1, 2] = dx, dy
    theta = theta.repeat_interleave(sides * tiles, dim=0)
    flat = x.reshape(n * sides * tiles, c, h, w)
    grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(x.shape)


def _random_blur(x: torch.Tensor, uniform: UniformDraw) -> torch.Tensor:
    """A Gaussian blur (sigma in ``BLUR_SIGMA``) on a ``BLUR_PROBABILITY`` share of the
    images, drawn per pair, side and light (separable, one kernel per image)."""
    shape = x.shape
    images = math.prod(shape[:3])
    c, h, w = shape[3:]
    do = uniform((images,), 0, 1) < BLUR_PROBABILITY
    sigma = uniform((images,), *BLUR_SIGMA)
    radius = math.ceil(3 * BLUR_SIGMA[1])
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)
    flat = x.reshape(1, images * c, h, w)
    padded = F.pad(flat, (radius, radius, 0, 0), mode="replicate")
    flat_b = F.conv2d(padded, kernel.view(-1, 1, 1, 2 * radius + 1), groups=images * c)
    padded = F.pad(flat_b, (0, 0, radius, radius), mode="replicate")
    flat_b = F.conv2d(padded, kernel.view(-1, 1, 2 * radius + 1, 1), groups=images * c)
    blurred = flat_b.reshape(shape)
    return torch.where(do.view(*shape[:3], 1, 1, 1), blurred, x)
