"""How much GPU memory a training step of a spec takes, measured rather than guessed.

A step's peak memory is close to linear in the batch size: a fixed part (weights,
their EMA copy, gradients, optimizer state, cuDNN workspaces) plus a per-sample
part (activations kept for the backward pass, the batch and its augmentation).
:func:`measure_step_memory` runs the trainer's own step
(:func:`~automl_deft.model.train.train_step`: channels-last, the autocast dtype
training would use, AdamW state, augmentation) on random inputs of the spec's tiled
shape at two batch sizes and solves for both parts; :func:`batch_limit` turns them
into the largest batch that fits a GPU's free memory with some headroom. On the CPU
nothing is measured (None): its memory is the host's, and nothing warns about it.

The measurement runs the uncompiled model; ``train.compile`` usually needs less.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from automl_deft.model.data import augment
from automl_deft.model.network import ChangeNetLite
from automl_deft.model.spec import Spec
from automl_deft.model.train import (
    MB,
    amp_dtype_for,
    build_optimizer,
    make_ema,
    model_inputs,
    place_model,
    to_model_layout,
    train_step,
)

__all__ = [
    "DEFAULT_HEADROOM",
    "MEASURED_BATCHES",
    "StepMemory",
    "batch_limit",
    "from_peaks",
    "measure_step_memory",
]

MEASURED_BATCHES = (2, 4)
"""The two batch sizes a measurement runs (small: it must fit on any GPU)."""
DEFAULT_HEADROOM = 0.9
"""Share of the free memory a batch may plan to use (allocator fragmentation and the
CUDA context's own growth take the rest)."""


@dataclass(frozen=True)
class StepMemory:
    """A training step's peak memory for one spec on one device: ``fixed + per_sample * B``."""

    fixed_bytes: float
    per_sample_bytes: float
    free_bytes: int
    """The device's free memory when the measurement started (before the model existed)."""
    device_name: str = ""

    def peak_bytes(self, batch: int) -> float:
        """The predicted peak of one step at ``batch``."""
        return self.fixed_bytes + self.per_sample_bytes * batch

    def batch_limit(
        self, free_bytes: float | None = None, headroom: float = DEFAULT_HEADROOM
    ) -> int:
        """:func:`batch_limit` for ``free_bytes`` (default: the free memory measured)."""
        free = self.free_bytes if free_bytes is None else free_bytes
        return batch_limit(free, self.fixed_bytes, self.per_sample_bytes, headroom)

    def describe(self) -> str:
        """``X MB/sample + Y MB`` (decimal megabytes)."""
        return f"{self.per_sample_bytes / MB:.1f} MB/sample + {self.fixed_bytes / MB:.0f} MB"


def batch_limit(
    free_bytes: float, fixed: float, per_sample: float, headroom: float = DEFAULT_HEADROOM
) -> int:
    """The largest batch whose predicted peak ``fixed + per_sample * B`` stays within
    ``headroom`` of ``free_bytes`` (0: not even one sample fits).

    Raises:
        ValueError: ``per_sample`` is not positive or ``headroom`` is outside (0, 1].
    """
    if per_sample <= 0:
        raise ValueError(f"per-sample bytes must be positive, not {per_sample}")
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom must be in (0, 1], not {headroom}")
    return max(0, math.floor((free_bytes * headroom - fixed) / per_sample))


def from_peaks(peaks: Mapping[int, float], free_bytes: int, device_name: str = "") -> StepMemory:
    """The line through two ``{batch size: peak bytes}`` measurements.

    Raises:
        ValueError: not exactly two batch sizes, or the larger batch did not take more
            memory (a per-sample cost cannot be read from them).
    """
    if len(peaks) != 2:
        raise ValueError(f"need peaks at exactly two batch sizes, got {sorted(peaks)}")
    (b1, p1), (b2, p2) = sorted(peaks.items())
    if p2 <= p1:
        raise ValueError(
            f"the step at batch {b2} peaked at {p2 / MB:.1f} MB, not above batch {b1}'s "
            f"{p1 / MB:.1f} MB; no per-sample cost can be read from that"
        )
    per_sample = (p2 - p1) / (b2 - b1)
    return StepMemory(
        fixed_bytes=max(0.0, p1 - per_sample * b1),
        per_sample_bytes=per_sample,
        free_bytes=free_bytes,
        device_name=device_name,
    )


def measure_step_memory(
    spec: Spec,
    device: torch.device,
    *,
    channels: int | None = None,
    batch_sizes: tuple[int, int] = MEASURED_BATCHES,
) -> StepMemory | None:
    """Measure a training step's peak memory for ``spec`` on a CUDA ``device``.

    One warm-up step (it allocates the optimizer state and picks cuDNN algorithms),
    then one step at each of ``batch_sizes``, each on random ``uint8`` pairs of
    ``spec.geometry(channels)``'s shape; the peaks are counted above what the device
    held before the model was built.

    Args:
        spec: the training spec (its pretrained weights are not read: they do not
            change the memory).
        device: where to measure; a CPU device measures nothing.
        channels: 1 or 3, required while ``dataset.classify.color_mode`` is ``auto``.
        batch_sizes: the two batch sizes to run.

    Returns:
        The fixed and per-sample bytes, or None on the CPU.

    Raises:
        SpecError: ``color_mode: auto`` without ``channels``.
        ValueError: see :func:`from_peaks`.
        torch.cuda.OutOfMemoryError: even the small batches do not fit.
    """
    if device.type != "cuda":
        return None
    geometry = spec.geometry(channels)
    spec = spec.with_overrides(
        {
            "dataset.classify.color_mode": "rgb" if geometry.channels == 3 else "grey",
            "model.backbone.pretrained": False,
            "train.pretrained_model_path": None,
        }
    )
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    free = int(torch.cuda.mem_get_info(device)[0])
    try:
        peaks = _step_peaks(spec, device, batch_sizes)
    finally:
        torch.cuda.empty_cache()  # the model, its optimizer and the batches are gone
    return from_peaks(peaks, free, torch.cuda.get_device_name(device))


def _step_peaks(spec: Spec, device: torch.device, batch_sizes: tuple[int, int]) -> dict[int, float]:
    """Peak bytes of one training step at each batch size, above what the device held
    before the model was built (after one warm-up step at the first size)."""
    base = torch.cuda.memory_allocated(device)
    model = place_model(ChangeNetLite(spec), device).train()
    ema = make_ema(model, spec.train.ema_decay)
    optimizer = build_optimizer(model, spec)
    amp_dtype = amp_dtype_for(device, spec)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    weight = torch.tensor(spec.train.classify.cls_weight, device=device)
    generator = torch.Generator().manual_seed(0)
    shape = spec.geometry().shape

    def step(batch: int) -> float:
        pixels = torch.randint(0, 256, (batch, 2, *shape), dtype=torch.uint8, generator=generator)
        torch.cuda.reset_peak_memory_stats(device)
        golden, test = augment(*model_inputs(pixels, device), spec.dataset.classify, generator)
        golden, test = to_model_layout(golden, device), to_model_layout(test, device)
        y = torch.arange(batch, device=device) % 2
        train_step(model, golden, test, y, optimizer, scaler, weight, amp_dtype)
        if ema is not None:
            ema.update_parameters(model)
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - base)

    step(batch_sizes[0])
    return {b: step(b) for b in batch_sizes}
