"""The training loop: read top to bottom.

``train()`` fits a :class:`ChangeNetLite` on one CSV, validates on another every
``validation_interval`` epochs with the project KPI (FAR at 100% recall), and
keeps two checkpoints in ``out_dir``: ``best_val.pt`` (lowest validation
far_pct, ties broken by val_loss) and ``latest.pt`` (with optimizer state, for
resuming). A killed run re-started on the same ``out_dir`` resumes after the
last finished epoch; a finished run returns at once.

Resuming is bit-identical to never having stopped, wherever the kill fell (even
inside an epoch): ``latest.pt`` records every RNG state training draws from
(torch CPU/CUDA: dropout and DataLoader worker seeds; the numpy Generator of the
PASS subsampling; the augmentation Generator; numpy's and Python's globals),
captured after validation, and the epoch callback cannot perturb them: they are
put back after it, so the next epoch starts from exactly the saved state in a
fresh run and in a resumed one.

Warm start (``train.pretrained_model_path``) loads *weights only*: the epoch
counter starts at 0, so a fine-tuning run always trains its full budget.

On CUDA (and only there; the CPU path is exactly the one above) training also
uses: channels-last weights and inputs; bf16 autocast where the GPU supports it,
else fp16 with a gradient scaler (``train.amp``); the decoded ``uint8`` sets moved
once to the GPU when they fit in :data:`DEVICE_CACHE_SHARE` of its free memory
(batches are then gathered on the device), else host batches copied from pinned
memory; DataLoader workers for a lazily decoded set (:func:`loader_workers`);
and each epoch's peak GPU memory in the log line and history (``peak_mem_mb``).
``train.compile: true`` runs the training step through ``torch.compile`` on
either device.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from automl_deft import console
from automl_deft.application import EpochCallback, EpochMetrics, metric_value
from automl_deft.errors import CheckpointError, SpecError, WorkspaceError
from automl_deft.io import atomic_write_json, fsync_dir
from automl_deft.jsontypes import Checkpoint, JSONObject
from automl_deft.kpi import compute_kpi
from automl_deft.model.allocator import keep_freed_memory
from automl_deft.model.checkpoint import (
    BEST_NAME,
    LATEST_NAME,
    RNGOwner,
    capture_rng,
    load_checkpoint,
    load_weights_into,
    restore_rng,
    save_checkpoint,
)
from automl_deft.model.data import (
    PairSource,
    augment,
    epoch_indices,
    resolve_color_mode,
    to_float,
)
from automl_deft.model.network import ChangeNetLite
from automl_deft.model.spec import DatasetClassifySpec, Spec

log = logging.getLogger(__name__)

MB = 1e6
"""Bytes in a megabyte, as ``peak_mem_mb`` counts them."""
DEVICE_CACHE_SHARE = 0.25
"""A decoded ``uint8`` set moves to the GPU when it needs at most this share of the
GPU's free memory (training and validation sets together); the rest stays for
activations, so a large batch never has to compete with the cache."""
AUTO_WORKERS_MAX = 8
"""At most this many DataLoader workers when ``dataset.classify.workers`` is 0 on CUDA."""


@dataclass
class TrainResult:
    """What a training run produced."""

    out_dir: Path
    best_checkpoint: Path
    latest_checkpoint: Path
    best_metrics: EpochMetrics
    history: list[EpochMetrics] = field(default_factory=list)
    epochs_run: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0

    def to_dict(self) -> JSONObject:
        """What ``train_summary.json`` holds (paths as strings)."""
        d = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


def select_device(preference: str = "auto") -> torch.device:
    """``cuda`` when asked for or available (``auto``), else ``cpu``."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise SpecError("train.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(model: torch.nn.Module, spec: Spec) -> torch.optim.Optimizer:
    o = spec.train.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if o.optim == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    cls = torch.optim.AdamW if o.optim == "adamw" else torch.optim.Adam
    return cls(params, lr=o.lr, betas=(o.momentum, 0.999), weight_decay=o.weight_decay)


def lr_factor(step: int, total: int, warmup: int, policy: str) -> float:
    """Multiplier of the base learning rate at ``step`` (linear warm-up, then the policy)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if policy == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if policy == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def check_training_data(train: PairSource, spec: Spec) -> None:
    """The training set needs both classes and at least one full batch."""
    n_def = int(train.targets.sum())
    if n_def == 0 or n_def == len(train):
        raise WorkspaceError("training set has a single class; it needs both PASS and defect rows")
    if spec.dataset.classify.batch_size > len(train):
        raise SpecError(
            f"dataset.classify.batch_size ({spec.dataset.classify.batch_size}) is larger than "
            f"the training set ({len(train)} rows); lower it"
        )


@torch.no_grad()
def predict(
    model: ChangeNetLite,
    source: PairSource,
    device: torch.device,
    batch_size: int,
    *,
    amp_dtype: torch.dtype | None = None,
) -> tuple[np.ndarray, float]:
    """Scores (defect probability) for every row and the mean unweighted CE loss."""
    model.eval()
    scores, loss_sum = [], 0.0
    order = np.arange(len(source))
    for pixels, y in source.batches(order, batch_size):
        golden, test = (to_model_layout(x, device) for x in model_inputs(pixels, device))
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=bool(amp_dtype)):
            logits = model(golden, test)
        y = y.to(device)
        loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        scores.append(ChangeNetLite.score(logits).cpu())
    out = torch.cat(scores).numpy().astype(np.float64) if scores else np.zeros(0)
    return out, loss_sum / max(1, len(source))


def validation_metrics(
    scores: np.ndarray, labels: pd.Series, targets: torch.Tensor, val_loss: float
) -> EpochMetrics:
    """far_pct (the KPI), val_loss, and per-class prediction counts (collapse check):
    at 0.5 (the classifier's own decision) and at the KPI's recall-100 threshold."""
    kpi = compute_kpi(labels, scores)
    y = targets.numpy()
    pred = scores > 0.5
    point = kpi.recall100
    at_threshold = (
        {"PASS": point.tn + point.fn, "defect": point.tp + point.fp} if point is not None else None
    )
    return {
        "far_pct": kpi.far_pct,
        "threshold": kpi.threshold,
        "val_loss": val_loss,
        "pred_counts": {"PASS": int((~pred).sum()), "defect": int(pred.sum())},
        "pred_counts_at_threshold": at_threshold,
        "accuracy_at_0.5": float((pred == (y == 1)).mean()) if len(y) else None,
    }


def _rank(metrics: EpochMetrics) -> tuple[float, float]:
    far, loss = metric_value(metrics, "far_pct"), metric_value(metrics, "val_loss")
    return (math.inf if far is None else far, math.inf if loss is None else loss)


def amp_dtype_for(device: torch.device, spec: Spec) -> torch.dtype | None:
    """The autocast dtype: bf16 where the GPU supports it, else fp16 (with a gradient
    scaler); None (fp32) on the CPU or with ``train.amp: false``."""
    if device.type != "cuda" or not spec.train.amp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# --- the CUDA path: each helper is the identity (or nothing) on the CPU -------------------


Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(golden, test) -> logits``: a model, or its ``torch.compile`` wrapper."""


def place_model(model: ChangeNetLite, device: torch.device) -> ChangeNetLite:
    """``model`` on ``device``; on CUDA with channels-last weights (convolutions on
    tensor cores prefer NHWC; checkpoints are saved contiguous all the same)."""
    if device.type == "cuda":
        # Module.to takes memory_format at run time; torch's stubs do not list it.
        return model.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model.to(device)


def model_inputs(pixels: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``uint8 [B, 2, C, H, W]`` pairs as float ``golden, test`` on ``device``
    (:func:`~automl_deft.model.data.to_float`); a host batch bound for CUDA is copied
    from pinned memory, so the copy runs asynchronously."""
    if device.type == "cuda" and not pixels.is_cuda and not pixels.is_pinned():
        pixels = pixels.pin_memory()
    return to_float(pixels, device)


def to_model_layout(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch ``[B, C, H, W]`` in the layout the model's weights use (channels-last on CUDA)."""
    if device.type == "cuda":
        return x.contiguous(memory_format=torch.channels_last)
    return x


def fits_on_device(
    set_bytes: list[int | None], free_bytes: float, share: float = DEVICE_CACHE_SHARE
) -> list[bool]:
    """Which decoded sets (their sizes in bytes, in order; None: decoded lazily) go to the
    GPU: each one that still fits in ``share`` of ``free_bytes`` after those before it."""
    budget, fits = share * free_bytes, []
    for n in set_bytes:
        fits.append(n is not None and n <= budget)
        budget -= n if fits[-1] and n is not None else 0
    return fits


def cache_on_device(sources: list[PairSource], device: torch.device) -> list[bool]:
    """Move the preloaded ``uint8`` pixels of the sources that :func:`fits_on_device` picks
    to the GPU, once; per source, whether it moved. Batches of a moved source are then
    gathered on the device (no host copy per step). Nothing moves on the CPU."""
    if device.type != "cuda":
        return [False] * len(sources)
    sizes = [None if s.pixels is None else s.pixels.nbytes for s in sources]
    moved = fits_on_device(sizes, torch.cuda.mem_get_info(device)[0])
    for src, move in zip(sources, moved, strict=True):
        if move and src.pixels is not None:
            src.pixels = src.pixels.to(device)
    return moved


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS says, else the count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def loader_workers(cfg: DatasetClassifySpec, device: torch.device, source: PairSource) -> int:
    """DataLoader workers decoding a lazily loaded set: ``dataset.classify.workers``.

    Left at 0 on CUDA with a lazy set, it is one fewer than the usable CPUs (the main
    process keeps one to drive the GPU), at least 1 and at most :data:`AUTO_WORKERS_MAX`
    (more rarely help JPEG decoding keep up and each holds a copy of the file lists).
    A preloaded set needs none; on the CPU 0 stays 0 (decoding in the main process).
    """
    if cfg.workers or device.type != "cuda" or source.pixels is not None:
        return cfg.workers
    return max(1, min(AUTO_WORKERS_MAX, usable_cpus() - 1))


def compiler_problem(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot build kernels for ``device`` here (None: it can).

    Inductor compiles CPU kernels with ``$CXX`` (default ``g++``; ``clang++`` on macOS),
    and Triton builds its CUDA launcher with a C compiler (``$CC``, ``cc``, ``gcc``,
    ``clang``).
    """
    if device.type == "cuda":
        names = [os.environ.get("CC") or "cc", "gcc", "clang"]
        if not any(shutil.which(n) for n in names):
            return "no C compiler (cc, gcc or clang) is on PATH for Triton"
        return None
    cxx = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
    if shutil.which(cxx) is None:
        return f"no C++ compiler ({cxx}) is on PATH for torch.compile on the CPU"
    return None


def training_forward(model: ChangeNetLite, spec: Spec, device: torch.device) -> Forward:
    """What computes the training logits: ``model`` itself, or with ``train.compile`` its
    ``torch.compile`` wrapper (same parameters; validation and checkpoints use ``model``).

    Raises:
        SpecError: ``train.compile`` is true and the compiler it needs is missing.
    """
    if not spec.train.compile:
        return model
    problem = compiler_problem(device)
    if problem is not None:
        raise SpecError(
            f"train.compile is true but {problem}; install one (e.g. apt-get install g++, "
            "or set CXX/CC) or set train.compile: false"
        )
    return cast(Forward, torch.compile(model))


def train_step(
    forward: Forward,
    golden: torch.Tensor,
    test: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    class_weight: torch.Tensor,
    amp_dtype: torch.dtype | None,
) -> torch.Tensor:
    """One optimizer step on a batch (autocast when ``amp_dtype``; the loss in fp32);
    returns the weighted cross-entropy loss (still attached to the graph)."""
    with torch.autocast(
        golden.device.type, dtype=amp_dtype or torch.float32, enabled=bool(amp_dtype)
    ):
        logits = forward(golden, test)
    loss = F.cross_entropy(logits.float(), y, weight=class_weight)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA only)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float | None:
    """The most GPU memory tensors held since :func:`reset_peak_memory`, in MB
    (None on the CPU, where nothing is measured)."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / MB, 1)


def train(
    spec: Spec,
    train_frame: pd.DataFrame,
    val_frame: pd.DataFrame,
    images_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = True,
    progress: bool | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Train, validate each epoch, keep best-validation and latest checkpoints.

    Args:
        spec: the resolved training spec (saved into every checkpoint).
        train_frame: training rows (dataset CSV schema).
        val_frame: validation rows; must hold both classes for far_pct.
        images_dir: the images root both CSVs resolve against.
        out_dir: where checkpoints, ``history.json`` and ``train_summary.json`` go.
        resume: continue from ``out_dir/latest.pt`` when it exists.
        progress: show a progress bar (None: only on a terminal).
        on_epoch_end: called with (epoch, metrics) after each validation.

    Raises:
        WorkspaceError, SpecError, CheckpointError: bad data, spec, or checkpoint.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keep_freed_memory()  # no page-fault storm per step on the CPU (see model/allocator.py)
    seed_everything(spec.train.seed)
    device = select_device(spec.train.device)
    amp_dtype = amp_dtype_for(device, spec)
    spec = resolve_color_mode(spec, train_frame, images_dir)  # RGB or grey, from the images
    cfg = spec.dataset.classify

    train_src = PairSource.from_frame(train_frame, images_dir, spec.geometry())
    val_src = PairSource.from_frame(val_frame, images_dir, spec.geometry())
    check_training_data(train_src, spec)

    model = ChangeNetLite(spec)
    if spec.train.pretrained_model_path:
        ckpt = load_checkpoint(spec.train.pretrained_model_path)
        load_weights_into(model, ckpt, spec.train.pretrained_model_path)
    model = place_model(model, device)
    forward = training_forward(model, spec, device)
    on_device = cache_on_device([train_src, val_src], device)
    workers = loader_workers(cfg, device, train_src)
    if device.type == "cuda":
        log.info(
            "CUDA: autocast %s, channels-last, sets on the GPU: train %s, val %s; "
            "loader workers %d%s",
            "off (fp32)" if amp_dtype is None else str(amp_dtype).removeprefix("torch."),
            "yes" if on_device[0] else "no",
            "yes" if on_device[1] else "no",
            workers,
            ", torch.compile" if spec.train.compile else "",
        )
    ema = make_ema(model, spec.train.ema_decay)
    optimizer = build_optimizer(model, spec)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    class_weight = torch.tensor(spec.train.classify.cls_weight, device=device)

    steps_per_epoch = math.ceil(
        len(epoch_indices(train_src.targets, cfg.fpratio_sampling, np.random.default_rng(0)))
        / cfg.batch_size
    )
    total_steps = steps_per_epoch * spec.train.num_epochs
    warmup = steps_per_epoch * spec.train.optim.warmup_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup, spec.train.optim.policy)
    )

    rng = np.random.default_rng(spec.train.seed)
    aug_gen = torch.Generator().manual_seed(spec.train.seed)
    owned: dict[str, RNGOwner] = {"epoch_indices": rng, "augment": aug_gen}
    start_epoch, step = 0, 0
    history: list[EpochMetrics] = []
    best: EpochMetrics = {}
    latest_path, best_path = out / LATEST_NAME, out / BEST_NAME
    if not resume:
        set_previous_run_aside(out)
    if resume and latest_path.exists():
        state = load_checkpoint(latest_path)
        if state["spec"] != spec.to_dict():
            raise CheckpointError(
                f"{out} holds a run with a different spec; use another output directory "
                "or --no-resume to start over"
            )
        model.load_state_dict(state["train_state"]["raw_state_dict"])
        if ema is not None:
            ema.module.load_state_dict(state["state_dict"])
            ema.n_averaged.fill_(state["train_state"]["ema_steps"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        train_state = state["train_state"]
        if "grad_scaler" in train_state:
            scaler.load_state_dict(train_state["grad_scaler"])
        history, best = train_state["history"], train_state["best"]
        start_epoch, step = state["epoch"], state["step"]
        # Last, so that nothing above (model init, EMA copy) moves the restored RNGs.
        if "rng" in state:
            restore_rng(state["rng"], owned)
        else:
            rng.bit_generator.state = json.loads(train_state["numpy_rng"])
            aug_gen.set_state(train_state["torch_rng"])
            log.warning(
                "%s was written without global RNG state (an older release): resuming, but "
                "dropout draws differ, so the result is not bit-identical to an "
                "uninterrupted run",
                latest_path,
            )
        log.info("resuming %s after epoch %d", out, start_epoch)

    t0 = time.perf_counter()
    images_seen = 0
    for epoch in range(start_epoch + 1, spec.train.num_epochs + 1):
        model.train()
        reset_peak_memory(device)
        indices = epoch_indices(train_src.targets, cfg.fpratio_sampling, rng)
        loss_sum = torch.zeros((), device=device)
        last_far = history[-1].get("far_pct") if history else None
        bar = console.bar(
            len(indices),
            f"epoch {epoch}/{spec.train.num_epochs}",
            progress=progress,
            postfix=None if last_far is None else {"val FAR": f"{last_far:.2f}%"},
        )
        for pixels, y in train_src.batches(indices, cfg.batch_size, workers=workers):
            golden, test = augment(*model_inputs(pixels, device), cfg, aug_gen)
            golden, test = to_model_layout(golden, device), to_model_layout(test, device)
            y = y.to(device, non_blocking=True)
            loss = train_step(forward, golden, test, y, optimizer, scaler, class_weight, amp_dtype)
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            loss_sum += loss.detach() * len(y)
            images_seen += 2 * len(y)
            bar.update(len(y))
        bar.close()
        record: EpochMetrics = {
            "epoch": epoch,
            "step": step,
            "train_loss": float(loss_sum) / max(1, len(indices)),
            "lr": cast(float, scheduler.get_last_lr()[0]),  # a float for LambdaLR
        }
        last = epoch == spec.train.num_epochs
        validated = epoch % spec.train.validation_interval == 0 or last
        if validated:
            scores, val_loss = predict(
                deployed(model, ema), val_src, device, cfg.batch_size * 2, amp_dtype=amp_dtype
            )
            record.update(
                validation_metrics(scores, val_src.frame["label"], val_src.targets, val_loss)
            )
        peak_mb = peak_memory_mb(device)  # training and validation of this epoch
        if peak_mb is not None:
            record["peak_mem_mb"] = peak_mb
        # The state the next epoch starts from, in this run and in one resumed from here.
        rng_state = capture_rng(owned)
        if validated and (not best or _rank(record) < _rank(best)):
            best = dict(record)
            payload = _payload(deployed(model, ema), spec, epoch, step, record)
            payload.update(rng=rng_state)
            save_checkpoint(best_path, payload)
        history.append(record)
        far = record.get("far_pct")
        log.info(
            "epoch %d/%d  train_loss=%.4f  val_far=%s  val_loss=%s%s",
            epoch,
            spec.train.num_epochs,
            record["train_loss"],
            "n/a" if far is None else f"{far:.2f}%",
            f"{record['val_loss']:.4f}" if "val_loss" in record else "n/a",
            "" if peak_mb is None else f"  peak_mem={peak_mb:.0f} MB",
        )
        if epoch % spec.train.checkpoint_interval == 0 or last:
            payload = _payload(deployed(model, ema), spec, epoch, step, record)
            resume_state: dict[str, Any] = {
                "raw_state_dict": _cpu_state(model),
                "ema_steps": int(ema.n_averaged) if ema is not None else 0,
                # Also in ``rng``; kept so that older releases can still resume.
                "numpy_rng": json.dumps(rng.bit_generator.state),
                "torch_rng": aug_gen.get_state(),
                "history": plain(history),
                "best": plain(best),
            }
            if scaler.is_enabled():
                resume_state["grad_scaler"] = scaler.state_dict()
            payload.update(
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                rng=rng_state,
                train_state=resume_state,
            )
            save_checkpoint(latest_path, payload)
            atomic_write_json(out / "history.json", history)
        if on_epoch_end is not None and "far_pct" in record:
            on_epoch_end(epoch, record)
            # A callback that draws random numbers must not steer training: a run
            # resumed after this epoch never calls it for this epoch.
            restore_rng(rng_state, owned)

    seconds = time.perf_counter() - t0
    result = TrainResult(
        out_dir=out,
        best_checkpoint=best_path,
        latest_checkpoint=latest_path,
        best_metrics=best,
        history=history,
        epochs_run=spec.train.num_epochs - start_epoch,
        seconds=seconds,
        images_per_second=images_seen / seconds if seconds > 0 and images_seen else 0.0,
    )
    atomic_write_json(out / "train_summary.json", result.to_dict())
    return result


PREVIOUS_RUNS = "previous_runs"
"""Where ``train(resume=False)`` moves the run it replaces: ``out/previous_runs/<UTC time>/``."""
RUN_FILES = (LATEST_NAME, "train_summary.json", "history.json", BEST_NAME)
"""A training folder's own files, in the order they are moved aside (``latest.pt`` first)."""


def set_previous_run_aside(out: Path) -> Path | None:
    """Move the run in ``out`` (its :data:`RUN_FILES`) into ``out/previous_runs/<UTC time>/``
    so that a run from scratch starts without it; nothing is deleted.

    One rename per file, ``latest.pt`` first: a kill part-way leaves every file
    whole (here or aside) and no ``latest.pt`` to resume the old run from; a file
    still here is then overwritten by the next run's own. Returns the folder
    (None: ``out`` held no run).
    """
    present = [name for name in RUN_FILES if (out / name).exists()]
    if not present:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside, n = out / PREVIOUS_RUNS / stamp, 1
    while aside.exists():  # two fresh starts within one second
        n += 1
        aside = out / PREVIOUS_RUNS / f"{stamp}-{n}"
    aside.mkdir(parents=True)
    for name in present:
        os.replace(out / name, aside / name)
    fsync_dir(out)
    log.warning("starting over (no resume): the previous run in %s is now in %s", out, aside)
    return aside


def make_ema(model: ChangeNetLite, decay: float) -> AveragedModel | None:
    """An exponential moving average of the weights (and BN buffers), or None when off.

    FAR at 100% recall hinges on the hardest few defects, so it jumps from epoch
    to epoch; the averaged weights move smoothly and are what gets validated,
    checkpointed and deployed.
    """
    if decay <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def deployed(model: ChangeNetLite, ema: AveragedModel | None) -> ChangeNetLite:
    """The network that is validated and saved: the EMA copy when enabled."""
    return model if ema is None else ema.module  # type: ignore[return-value]


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # contiguous(): channels-last CUDA weights are saved in the usual layout
    # (a no-op for the CPU path's tensors, which are contiguous already).
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _payload(
    model: ChangeNetLite, spec: Spec, epoch: int, step: int, metrics: EpochMetrics
) -> Checkpoint:
    return {
        "state_dict": _cpu_state(model),
        "spec": spec.to_dict(),
        "arch": model.arch,
        "epoch": epoch,
        "step": step,
        "metrics": plain(metrics),
    }


def plain(obj: Any) -> Any:
    """Plain Python values (no numpy scalars), as ``weights_only`` checkpoint loading requires."""
    return json.loads(json.dumps(obj, default=float))
