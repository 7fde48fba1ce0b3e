"""The GPU training path: what the CPU can check (the CPU path untouched, the memory
arithmetic, the preflight's measured rule with a fake measurement, the benchmark's
no-GPU line) and, marked ``gpu``, what needs CUDA (channels-last, bf16, the device
cache, pinned host batches, ``peak_mem_mb``, a real measurement, ``torch.compile``)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

import automl_deft.model.train as train_mod
from automl_deft import preflight
from automl_deft.errors import SpecError
from automl_deft.hpo.search import AutomlConfig
from automl_deft.model.checkpoint import load_checkpoint
from automl_deft.model.data import PairSource
from automl_deft.model.memory import (
    DEFAULT_HEADROOM,
    StepMemory,
    batch_limit,
    from_peaks,
    measure_step_memory,
)
from automl_deft.model.network import ChangeNetLite
from automl_deft.model.spec import Spec, load_spec
from automl_deft.model.train import (
    compiler_problem,
    fits_on_device,
    loader_workers,
    model_inputs,
    place_model,
    to_model_layout,
    train,
    training_forward,
)
from automl_deft.preflight import GpuInfo, build_preflight
from automl_deft.run_config import RunConfig
from automl_deft.workspace import Workspace, read_dataset_csv

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
FAST: dict[str, Any] = {
    "train.num_epochs": 2,
    "dataset.classify.batch_size": 16,
    "dataset.classify.image_width": 32,
    "dataset.classify.image_height": 32,
}


def _spec(ws: Path, **extra: Any) -> Spec:
    return load_spec(Workspace.at(ws).spec_path, {**FAST, **extra})


def _frames(ws: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    w = Workspace.at(ws)
    return read_dataset_csv(w.train_csv), read_dataset_csv(w.val_csv)


# --- CPU: the CPU path is the one it always was -----------------------------------------


def test_gpu_helpers_leave_the_cpu_path_alone(tiny_ws: Path, tmp_path: Path) -> None:
    spec = _spec(tiny_ws, **{"dataset.classify.color_mode": "grey"})
    assert Spec().train.compile is False and spec.train.compile is False
    model = ChangeNetLite(spec)
    assert place_model(model, CPU) is model
    assert training_forward(model, spec, CPU) is model  # no torch.compile wrapper
    pixels = torch.randint(0, 256, (3, 2, 1, 32, 32), dtype=torch.uint8)
    golden, test = model_inputs(pixels, CPU)
    assert torch.equal(golden, pixels[:, 0].float() / 255) and not golden.is_pinned()
    assert torch.equal(test, pixels[:, 1].float() / 255)
    assert to_model_layout(golden, CPU) is golden
    cfg = spec.dataset.classify
    assert cfg.workers == 0
    src = PairSource.for_spec(_frames(tiny_ws)[0], Workspace.at(tiny_ws).images_dir, spec)
    before = src.pixels
    assert train_mod.cache_on_device([src], CPU) == [False] and src.pixels is before
    assert loader_workers(cfg, CPU, src) == 0

    tr, va = _frames(tiny_ws)
    result = train(spec, tr, va, Workspace.at(tiny_ws).images_dir, tmp_path, progress=False)
    assert [sorted(h) for h in result.history] == [sorted(result.history[0])] * 2
    assert all("peak_mem_mb" not in h for h in result.history)  # measured on CUDA only
    state = load_checkpoint(result.latest_checkpoint)
    assert state["spec"]["train"]["compile"] is False
    assert all(t.is_contiguous() for t in state["state_dict"].values())


def test_gpu_compile_without_a_compiler_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(train_mod.shutil, "which", lambda name: None)
    spec = Spec().with_overrides({"train.compile": True, "dataset.classify.color_mode": "grey"})
    with pytest.raises(
        SpecError,
        match=r"^train\.compile is true but no C\+\+ compiler \(g\+\+\) is on PATH for "
        r"torch\.compile on the CPU; install one .* or set train\.compile: false$",
    ):
        training_forward(ChangeNetLite(spec), spec, CPU)
    assert compiler_problem(torch.device("cuda")) == (
        "no C compiler (cc, gcc or clang) is on PATH for Triton"
    )
    monkeypatch.setattr(train_mod.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert compiler_problem(CPU) is None and compiler_problem(torch.device("cuda")) is None


def test_gpu_loader_workers_are_chosen_for_a_lazy_set_on_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rule alone (no CUDA needed): 0 on CUDA with a lazy set → CPUs - 1, in 1..8."""
    cfg = Spec().dataset.classify
    lazy = PairSource(pd.DataFrame(), torch.zeros(0), (8, 8), [], [])
    preloaded = PairSource(
        pd.DataFrame(), torch.zeros(0), (8, 8), [], [], pixels=torch.zeros(0, 2, 1, 8, 8)
    )
    cuda = torch.device("cuda")
    for cpus, want in ((1, 1), (2, 1), (4, 3), (64, train_mod.AUTO_WORKERS_MAX)):
        monkeypatch.setattr(train_mod, "usable_cpus", lambda n=cpus: n)
        assert loader_workers(cfg, cuda, lazy) == want
    assert loader_workers(cfg, cuda, preloaded) == 0
    assert loader_workers(cfg, CPU, lazy) == 0
    three = Spec().with_overrides({"dataset.classify.workers": 3}).dataset.classify
    assert loader_workers(three, cuda, lazy) == 3


# --- CPU: the memory arithmetic ---------------------------------------------------------


def test_gpu_memory_arithmetic() -> None:
    step = from_peaks({4: 1.4e9, 2: 1.2e9}, free_bytes=10 * 10**9, device_name="fake")
    assert step.per_sample_bytes == pytest.approx(1e8)
    assert step.fixed_bytes == pytest.approx(1e9)
    assert step.peak_bytes(8) == pytest.approx(1.8e9)
    assert step.describe() == "100.0 MB/sample + 1000 MB"
    # floor((10 GB * 0.9 - 1 GB) / 0.1 GB) = 80; with 5 GB free: floor(3.5 / 0.1) = 35
    assert batch_limit(10e9, 1e9, 1e8) == 80 == step.batch_limit()
    assert step.batch_limit(5e9) == 35
    assert batch_limit(10e9, 1e9, 1e8, headroom=1.0) == 90
    assert batch_limit(0.5e9, 1e9, 1e8) == 0  # the fixed part alone does not fit
    assert DEFAULT_HEADROOM == 0.9
    with pytest.raises(ValueError, match="per-sample bytes must be positive, not 0"):
        batch_limit(1e9, 0, 0)
    with pytest.raises(ValueError, match="headroom must be in"):
        batch_limit(1e9, 0, 1, headroom=1.5)
    with pytest.raises(ValueError, match="not above batch 2's"):
        from_peaks({2: 1.2e9, 4: 1.2e9}, free_bytes=1)
    with pytest.raises(ValueError, match="exactly two batch sizes"):
        from_peaks({2: 1.0}, free_bytes=1)


def test_gpu_device_cache_rule() -> None:
    """Sets go to the GPU in order while they fit in a quarter of the free memory."""
    assert fits_on_device([30, 50, None, 30], 400) == [True, True, False, False]
    assert fits_on_device([101, 60], 400) == [False, True]
    assert fits_on_device([100, 1], 400) == [True, False]
    assert fits_on_device([], 400) == []


def test_gpu_memory_is_not_measured_on_the_cpu() -> None:
    assert measure_step_memory(Spec(), CPU, channels=1) is None


# --- CPU: the preflight's rule with a fake GPU and a fake measurement --------------------


def _build(ws: Path, config: RunConfig) -> preflight.Preflight:
    return build_preflight(
        ws, config, check_images=False, image_probe=lambda ref: "PRESENT", env={}
    )


def test_gpu_preflight_bounds_the_batch_by_a_measured_peak(
    tiny_ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[Spec, int]] = []

    def fake_measure(spec: Spec, channels: int) -> StepMemory:
        asked.append((spec, channels))
        return StepMemory(fixed_bytes=2e9, per_sample_bytes=1e9, free_bytes=40 * 10**9)

    monkeypatch.setattr(preflight, "visible_gpus", lambda: [GpuInfo("A100", 40 * 10**9)])
    monkeypatch.setattr(preflight.probes, "gpu_step_memory", fake_measure)
    pf = _build(tiny_ws, RunConfig(automl=AutomlConfig(batch_size=48)))
    (spec, channels), *_ = asked
    assert channels == 1 and spec.dataset.classify.color_mode == "grey"  # resolved
    # The tiny workspace's decoded sets (120 pairs of 1x64x64, 983,040 bytes) stay on
    # the GPU: floor(((40e9 - 983,040) * 0.9 - 2e9) / 1e9) = floor(33.999) = 33.
    (line,) = [x for x in pf.sections[0].lines if x.startswith("GPU memory rule:")]
    assert line == (
        "GPU memory rule: batch ≤ 33 by a measured peak of 1000.0 MB/sample + 2000 MB "
        "(this run's spec on A100; 90% of 40.0 GB free, 1 MB of it for the data cache)"
    )
    assert pf.sections[0].data["gpu_batch_limit"] == 33
    assert pf.sections[0].data["gpu_batch_limit_measured"] is True
    (warning,) = pf.warnings
    assert warning.startswith(
        "batch size 48 exceeds the measured GPU memory limit for A100 (batch ≤ 33 by a "
        "measured peak of 1000.0 MB/sample + 2000 MB"
    )
    assert warning.endswith(
        "lower automl.batch_size / deft.batch_size, or training runs out of memory"
    )
    assert _build(tiny_ws, RunConfig(automl=AutomlConfig(batch_size=32))).warnings == []


def test_gpu_preflight_falls_back_to_the_rule_of_thumb_and_says_why(
    tiny_ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(spec: Spec, channels: int) -> StepMemory:
        raise RuntimeError("CUDA error: out of memory\n(a long traceback)")

    monkeypatch.setattr(preflight, "visible_gpus", lambda: [GpuInfo("RTX 4090", 24 * 10**9)])
    monkeypatch.setattr(preflight.probes, "gpu_step_memory", failing)
    pf = _build(tiny_ws, RunConfig(automl=AutomlConfig(batch_size=32)))
    assert (
        f"GPU memory rule: {preflight.RULE_TEXT} (rule of thumb: the measurement failed: "
        "CUDA error: out of memory)"
    ) in pf.sections[0].lines
    assert pf.sections[0].data["gpu_batch_limit"] == 8
    assert pf.sections[0].data["gpu_batch_limit_measured"] is False
    (warning,) = pf.warnings
    assert warning.startswith("batch size 32 exceeds the GPU memory rule of thumb for RTX 4090")


def test_gpu_preflight_without_a_gpu_measures_nothing(
    tiny_ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(spec: Spec, channels: int) -> StepMemory:
        raise AssertionError("measured without a GPU")

    monkeypatch.setattr(preflight, "visible_gpus", lambda: [])
    monkeypatch.setattr(preflight.probes, "gpu_step_memory", never)
    pf = _build(tiny_ws, RunConfig())
    assert f"GPU memory rule: {preflight.RULE_TEXT}" in pf.sections[0].lines
    assert "gpu_batch_limit" not in pf.sections[0].data


# --- CPU: the benchmark says it needs CUDA ------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the benchmark runs for real")
def test_gpu_benchmark_on_cpu_prints_one_line_and_exits_0() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_train.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "no GPU: nothing measured (this benchmark needs CUDA)\n"


# --- CUDA ---------------------------------------------------------------------------------


class _Spy:
    """Records what the training steps and the host-to-device copies saw."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.steps: list[dict[str, Any]] = []
        self.copies: list[dict[str, bool]] = []
        self.cached: list[list[bool]] = []
        real_step, real_float = train_mod.train_step, train_mod.to_float
        real_cache = train_mod.cache_on_device

        def step(forward: Any, golden: torch.Tensor, test: torch.Tensor, *args: Any) -> Any:
            conv = next(m for m in forward.modules() if isinstance(m, torch.nn.Conv2d))
            self.steps.append(
                {
                    "inputs_nhwc": golden.is_contiguous(memory_format=torch.channels_last)
                    and test.is_contiguous(memory_format=torch.channels_last),
                    "weights_nhwc": conv.weight.is_contiguous(memory_format=torch.channels_last),
                    "amp_dtype": args[-1],
                    "device": golden.device.type,
                }
            )
            return real_step(forward, golden, test, *args)

        def to_float(pixels: torch.Tensor, device: torch.device) -> Any:
            self.copies.append({"cuda": pixels.is_cuda, "pinned": pixels.is_pinned()})
            return real_float(pixels, device)

        def cache(sources: Any, device: torch.device) -> list[bool]:
            self.cached.append(real_cache(sources, device))
            return self.cached[-1]

        monkeypatch.setattr(train_mod, "train_step", step)
        monkeypatch.setattr(train_mod, "to_float", to_float)
        monkeypatch.setattr(train_mod, "cache_on_device", cache)


@pytest.mark.gpu
def test_gpu_training_uses_channels_last_autocast_and_the_device_cache(
    tiny_ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Spy(monkeypatch)
    spec = _spec(tiny_ws, **{"train.device": "cuda", "train.amp": True})
    tr, va = _frames(tiny_ws)
    result = train(spec, tr, va, Workspace.at(tiny_ws).images_dir, tmp_path, progress=False)
    want = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert spy.steps and all(
        s == {"inputs_nhwc": True, "weights_nhwc": True, "amp_dtype": want, "device": "cuda"}
        for s in spy.steps
    )
    assert spy.cached == [[True, True]]  # the tiny sets fit: gathered on the GPU
    assert spy.copies and all(c["cuda"] for c in spy.copies)
    peaks = [h["peak_mem_mb"] for h in result.history]
    assert len(peaks) == 2 and all(isinstance(p, float) and p > 0 for p in peaks)
    state = load_checkpoint(result.latest_checkpoint)  # saved on the CPU, usual layout
    assert all(t.device.type == "cpu" and t.is_contiguous() for t in state["state_dict"].values())


@pytest.mark.gpu
def test_gpu_lazy_set_decodes_in_workers_and_copies_from_pinned_memory(
    tiny_ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("automl_deft.model.data.PRELOAD_LIMIT_BYTES", 0)
    spy = _Spy(monkeypatch)
    chosen: list[int] = []
    real_workers = train_mod.loader_workers

    def workers(*args: Any) -> int:
        chosen.append(real_workers(*args))
        return chosen[-1]

    monkeypatch.setattr(train_mod, "loader_workers", workers)
    spec = _spec(tiny_ws, **{"train.device": "cuda", "train.num_epochs": 1})
    tr, va = _frames(tiny_ws)
    train(spec, tr, va, Workspace.at(tiny_ws).images_dir, tmp_path, progress=False)
    assert spy.cached == [[False, False]]
    assert chosen and chosen[0] >= 1
    assert spy.copies and all(c["pinned"] and not c["cuda"] for c in spy.copies)


@pytest.mark.gpu
def test_gpu_step_memory_is_measured_for_real(tiny_ws: Path) -> None:
    spec = load_spec(Workspace.at(tiny_ws).spec_path)
    step = measure_step_memory(spec, torch.device("cuda"), channels=1)
    assert step is not None
    assert step.per_sample_bytes > 0 and step.fixed_bytes > 0
    assert step.free_bytes > 0 and step.device_name
    assert step.batch_limit() >= 4  # the measured batches fit, so a limit below them is wrong


@pytest.mark.gpu
def test_gpu_compiled_training_runs(tiny_ws: Path, tmp_path: Path) -> None:
    if compiler_problem(torch.device("cuda")) is not None:
        pytest.skip("no C compiler for Triton")
    spec = _spec(tiny_ws, **{"train.device": "cuda", "train.compile": True, "train.num_epochs": 1})
    tr, va = _frames(tiny_ws)
    result = train(spec, tr, va, Workspace.at(tiny_ws).images_dir, tmp_path, progress=False)
    loss = result.history[0]["train_loss"]
    assert isinstance(loss, float) and math.isfinite(loss)
    state = load_checkpoint(result.best_checkpoint)
    assert not any(k.startswith("_orig_mod.") for k in state["state_dict"])
