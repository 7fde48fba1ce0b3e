"""Registration: shift the test image onto its golden image by the best integer offset.

AOI captures are never perfectly registered; a one- or two-pixel offset turns
every copper edge into a "difference". Both the trained model and the zero-shot
scorer remove it the same way: try every offset up to ``max_shift`` pixels and
keep the one with the smallest mean absolute difference.
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
