"""Image pairs as tensors: loading, batching, PASS subsampling, augmentation.

Pairs are held as ``uint8`` tensors ``[N, 2, C, H, W]`` (index 0 golden, 1 test,
C = number of lights). Small and medium sets are decoded once into memory;
larger ones are decoded lazily by DataLoader workers. Augmentation runs on whole
batches on the training device, so it costs little next to the model.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from PIL import Image

from automl_deft.errors import WorkspaceError, first_line
from automl_deft.model.spec import AugmentationConfig, Spec
from automl_deft.workspace import MAX_LISTED, ImageNaming, defect_mask, row_paths

PRELOAD_LIMIT_BYTES = 2 * 1024**3
"""Decode a dataset into memory when its pixels fit in this many bytes."""


VALIDATE_HINT = "`automl-deft validate WORKSPACE` lists every problem"


def _read(path: os.PathLike[str] | str, size: tuple[int, int]) -> np.ndarray:
    """Decode one image file as grayscale ``uint8`` at ``size``.

    Raises:
        WorkspaceError: the file is missing, unreadable, cannot be decoded, or is
            larger than PIL's decompression-bomb limit (its warning included).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as raw:
                im = raw.convert("L")
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
    if im.size != size:
        im = im.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


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
    golden_files: list[list[str]]
    input_files: list[list[str]]
    pixels: torch.Tensor | None = None
    """Preloaded ``uint8 [N, 2, C, H, W]``, or None when loaded lazily."""

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        images_dir: os.PathLike[str] | str,
        naming: ImageNaming,
        size: tuple[int, int],
        *,
        preload: bool | None = None,
    ) -> PairSource:
        """Resolve the files of ``frame``; decode them now when they fit in memory.

        Raises:
            WorkspaceError: an image file is missing (all are checked before any is
                decoded), unreadable, undecodable or too large.
        """
        frame = frame.reset_index(drop=True)
        golden = [
            [str(p) for p in ps] for ps in row_paths(frame, images_dir, naming, "golden_path")
        ]
        inputs = [[str(p) for p in ps] for ps in row_paths(frame, images_dir, naming, "input_path")]
        missing = _missing_files(golden + inputs)
        if missing:
            shown = ", ".join(os.path.relpath(p, images_dir) for p in missing[:MAX_LISTED])
            raise WorkspaceError(
                f"{len(missing)} image file(s) missing under {images_dir} (e.g. {shown}); "
                f"restore them or remove their rows ({VALIDATE_HINT})"
            )
        targets = torch.from_numpy(defect_mask(frame["label"]).astype(np.int64))
        src = cls(frame, targets, size, golden, inputs)
        nbytes = len(frame) * 2 * len(naming.lights) * size[0] * size[1]
        if preload if preload is not None else nbytes <= PRELOAD_LIMIT_BYTES:
            src.pixels = (
                torch.stack([src.load(i) for i in range(len(frame))])
                if len(frame)
                else (torch.zeros((0, 2, len(naming.lights), size[1], size[0]), dtype=torch.uint8))
            )
        return src

    def __len__(self) -> int:
        return len(self.frame)

    def load(self, i: int) -> torch.Tensor:
        """Decode row ``i`` to ``uint8 [2, C, H, W]``."""
        g = np.stack([_read(p, self.size) for p in self.golden_files[i]])
        t = np.stack([_read(p, self.size) for p in self.input_files[i]])
        return torch.from_numpy(np.stack([g, t]))

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
    """``(width, height)`` the model sees."""
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


def augment(
    golden: torch.Tensor,
    test: torch.Tensor,
    cfg: AugmentationConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch augmentation: one geometric transform per pair, applied to both images;
    colour jitter drawn independently per image (lighting differs between captures).

    ``generator`` lives on the CPU so results do not depend on the device.
    """
    if not cfg.augment:
        return golden, test
    n = golden.shape[0]
    x = torch.stack([golden, test], dim=1)  # [B, 2, C, H, W]: geometry shared per pair

    def chance(p: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) < p).to(x.device)

    if cfg.random_flip.enable:
        m = chance(cfg.random_flip.hflip_probability).view(n, 1, 1, 1, 1)
        x = torch.where(m, x.flip(-1), x)
        m = chance(cfg.random_flip.vflip_probability).view(n, 1, 1, 1, 1)
        x = torch.where(m, x.flip(-2), x)
    rot = cfg.random_rotate
    if rot.enable and rot.angle_list:
        square = x.shape[-1] == x.shape[-2]
        angles = [a for a in rot.angle_list if a % 360 in ((90, 180, 270) if square else (180,))]
        if angles:
            do = chance(rot.rotate_probability)
            pick = torch.randint(len(angles), (n,), generator=generator).to(x.device)
            for j, angle in enumerate(angles):
                m = (do & (pick == j)).view(n, 1, 1, 1, 1)
                x = torch.where(m, torch.rot90(x, k=angle // 90, dims=(-2, -1)), x)
    col = cfg.random_color
    if col.enabled and (col.brightness > 0 or col.contrast > 0):
        shape = (n, 2, 1, 1, 1)
        do = (torch.rand(shape, generator=generator) < col.color_probability).to(x.device)
        b = 1 + (torch.rand(shape, generator=generator) * 2 - 1).to(x.device) * col.brightness
        c = 1 + (torch.rand(shape, generator=generator) * 2 - 1).to(x.device) * col.contrast
        mean = x.mean(dim=(2, 3, 4), keepdim=True)
        jittered = ((x - mean) * c + mean) * b
        x = torch.where(do, jittered.clamp_(0, 1), x)
    return x[:, 0], x[:, 1]
