"""Registration: shift the test image onto its golden image by the best integer offset.

AOI captures are never perfectly registered; a one- or two-pixel offset turns
every copper edge into a "difference". Both the trained model and the zero-shot
scorer remove it the same way: try every offset up to ``max_shift`` pixels and
keep the one with the smallest mean absolute difference (over all channels, so
an RGB pair is registered by its colour as well as its brightness).

Tiled multi-light images (:class:`~automl_deft.model.spec.InputGeometry`) are
registered light by light (:func:`register_tiles`): each light tile is shifted on
its own, with its own replicated edges, so no pixel ever comes from a neighbouring
light's tile.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def shifted_stack(image: torch.Tensor, max_shift: int) -> torch.Tensor:
    """All integer shifts of ``image [B, C, H, W]`` as ``[S, B, C, H, W]`` (edges replicated)."""
    r = max_shift
    h, w = image.shape[-2:]
    padded = F.pad(image, (r, r, r, r), mode="replicate")
    return torch.stack(
        [
            padded[..., r + dy : r + dy + h, r + dx : r + dx + w]
            for dy in range(-r, r + 1)
            for dx in range(-r, r + 1)
        ]
    )


@torch.no_grad()
def best_shift_index(
    golden: torch.Tensor, candidates: torch.Tensor, max_shift: int
) -> torch.Tensor:
    """Per sample, the index into ``candidates`` closest to ``golden`` (border ignored)."""
    r = max_shift
    h, w = golden.shape[-2:]
    inner = (..., slice(r, h - r), slice(r, w - r))
    err = (candidates[inner] - golden[inner].unsqueeze(0)).abs().mean(dim=(2, 3, 4))  # [S, B]
    return err.argmin(dim=0)


def register(golden: torch.Tensor, test: torch.Tensor, max_shift: int) -> torch.Tensor:
    """``test`` moved onto ``golden`` by the best integer shift (per sample)."""
    if max_shift <= 0:
        return test
    candidates = shifted_stack(test, max_shift)
    idx = best_shift_index(golden, candidates, max_shift)
    return candidates[idx, torch.arange(test.shape[0], device=test.device)]


def split_tiles(x: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """Tiled images ``[..., C, rows*h, columns*w]`` → their tiles ``[..., rows*columns, C, h, w]``
    (row-major: tile ``i`` is row ``i // columns``, column ``i % columns``)."""
    *lead, c, hh, ww = x.shape
    h, w = hh // rows, ww // columns
    n = len(lead)
    lead = [-1, *lead[1:]] if n else []  # -1: an exported graph keeps a dynamic batch axis
    t = x.reshape(*lead, c, rows, h, columns, w)
    t = t.permute(*range(n), n + 1, n + 3, n, n + 2, n + 4)
    return t.reshape(*lead, rows * columns, c, h, w)


def join_tiles(t: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """The inverse of :func:`split_tiles`."""
    *lead, _, c, h, w = t.shape
    n = len(lead)
    lead = [-1, *lead[1:]] if n else []
    x = t.reshape(*lead, rows, columns, c, h, w)
    x = x.permute(*range(n), n + 2, n, n + 3, n + 1, n + 4)
    return x.reshape(*lead, c, rows * h, columns * w)


def register_tiles(
    golden: torch.Tensor, test: torch.Tensor, max_shift: int, rows: int, columns: int
) -> torch.Tensor:
    """:func:`register` for tiled images ``[B, C, rows*h, columns*w]``: every light tile of
    ``test`` is moved onto the same tile of ``golden`` by its own best shift."""
    if max_shift <= 0:
        return test
    if rows == columns == 1:
        return register(golden, test, max_shift)
    c, h, w = test.shape[1], test.shape[2] // rows, test.shape[3] // columns
    moved = register(
        split_tiles(golden, rows, columns).reshape(-1, c, h, w),
        split_tiles(test, rows, columns).reshape(-1, c, h, w),
        max_shift,
    )
    return join_tiles(moved.reshape(-1, rows * columns, c, h, w), rows, columns)
