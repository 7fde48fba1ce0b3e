"""A resumed training is bit-identical to the uninterrupted one.

Dropout draws from torch's global RNG, PASS subsampling from the trainer's numpy
Generator, augmentation from its own torch Generator: every one of them must be
checkpointed, so that a run killed anywhere (even inside an epoch) and resumed
from ``latest.pt`` ends with the same history and the same weights, bit for bit.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import automl_deft.model.train as train_mod
from automl_deft.model.checkpoint import load_checkpoint, save_checkpoint
from automl_deft.model.spec import Spec, load_spec
from automl_deft.model.train import train
from automl_deft.workspace import Workspace, read_dataset_csv

# Dropout on, every augmentation on, PASS subsampling on: all RNG consumers in play.
OVERRIDES: dict[str, Any] = {
    "train.num_epochs": 3,
    "dataset.classify.batch_size": 16,
    "dataset.classify.fpratio_sampling": 0.5,
    "dataset.classify.image_width": 32,  # small images: fast on 2 CPU cores
    "dataset.classify.image_height": 32,
    "model.classify.dropout": 0.3,
    "dataset.classify.augmentation_config.augment": True,
    "dataset.classify.augmentation_config.random_color.enabled": True,
}


class Killed(Exception):
    """Stands in for SIGKILL in the in-process test."""


def _spec(ws: Path, **extra: Any) -> Spec:
    spec = load_spec(Workspace.at(ws).spec_path, {**OVERRIDES, **extra})
    assert spec.model.classify.dropout > 0 and spec.dataset.classify.augmentation_config.augment
    return spec


def _frames(ws: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    w = Workspace.at(ws)
    return read_dataset_csv(w.train_csv), read_dataset_csv(w.val_csv)


def _observer(epoch: int, metrics: dict[str, Any]) -> None:
    """An epoch callback that, like an HPO reporter might, draws from the global RNGs."""
    torch.rand(7)
    np.random.rand(3)
    random.random()


def assert_same_run(a: Path, b: Path) -> None:
    """Same history bytes, same weights (deployed, raw and optimizer state), bit for bit."""
    assert (a / "history.json").read_bytes() == (b / "history.json").read_bytes()
    for name in ("latest.pt", "best_val.pt"):
        ca, cb = load_checkpoint(a / name), load_checkpoint(b / name)
        assert (ca["epoch"], ca["step"], ca["metrics"]) == (cb["epoch"], cb["step"], cb["metrics"])
        assert ca["state_dict"].keys() == cb["state_dict"].keys()
        for key, tensor in ca["state_dict"].items():
            assert torch.equal(tensor, cb["state_dict"][key]), f"{name}: {key} differs"
    la, lb = load_checkpoint(a / "latest.pt"), load_checkpoint(b / "latest.pt")
    raw_a, raw_b = la["train_state"]["raw_state_dict"], lb["train_state"]["raw_state_dict"]
    for key, tensor in raw_a.items():
        assert torch.equal(tensor, raw_b[key]), f"raw weights: {key} differs"
    for pid, st in la["optimizer"]["state"].items():
        for key, value in st.items():
            assert torch.equal(value, lb["optimizer"]["state"][pid][key]), f"optim {pid}.{key}"


@pytest.mark.parametrize(
    "lazy", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["preloaded", "lazy-loader"]
)
def test_in_process_kill_inside_an_epoch_resumes_bit_identically(
    tiny_ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lazy: bool
) -> None:
    if lazy:  # decode in DataLoader workers (the loader seeds them from the global RNG)
        monkeypatch.setattr("automl_deft.model.data.PRELOAD_LIMIT_BYTES", 0)
    spec = _spec(tiny_ws, **({"dataset.classify.workers": 1} if lazy else {}))
    tr, va = _frames(tiny_ws)
    images = Workspace.at(tiny_ws).images_dir
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"

    train(spec, tr, va, images, whole, progress=False, on_epoch_end=_observer)

    # Die inside epoch 2, after one optimizer step of it: dropout, sampling and
    # augmentation RNGs have all moved past the state saved at the end of epoch 1.
    armed, calls = [False], [0]
    real_augment = train_mod.augment

    def augment_then_die(*args: Any, **kwargs: Any) -> Any:
        if armed[0]:
            calls[0] += 1
            if calls[0] == 2:
                raise Killed
        return real_augment(*args, **kwargs)

    def observe_and_arm(epoch: int, metrics: dict[str, Any]) -> None:
        _observer(epoch, metrics)
        armed[0] = True

    monkeypatch.setattr(train_mod, "augment", augment_then_die)
    with pytest.raises(Killed):
        train(spec, tr, va, images, resumed, progress=False, on_epoch_end=observe_and_arm)
    assert load_checkpoint(resumed / "latest.pt")["epoch"] == 1
    monkeypatch.setattr(train_mod, "augment", real_augment)

    torch.manual_seed(1234)  # whatever the process did meanwhile must not matter
    result = train(spec, tr, va, images, resumed, progress=False, on_epoch_end=_observer)
    assert result.epochs_run == 2
    assert_same_run(whole, resumed)


def test_checkpoint_without_rng_state_still_resumes_with_a_warning(
    tiny_ws: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = _spec(tiny_ws, **{"train.num_epochs": 2, "dataset.classify.fpratio_sampling": 0.2})
    tr, va = _frames(tiny_ws)
    images = Workspace.at(tiny_ws).images_dir

    def stop(epoch: int, metrics: dict[str, Any]) -> None:
        raise Killed

    with pytest.raises(Killed):
        train(spec, tr, va, images, tmp_path, progress=False, on_epoch_end=stop)
    latest = tmp_path / "latest.pt"
    ckpt = load_checkpoint(latest)
    assert "rng" in ckpt  # every checkpoint write now records the RNG states
    # An older release's checkpoint: no "rng" (its train_state keeps the two generators).
    old = {k: v for k, v in ckpt.items() if k not in ("rng", "format", "format_version")}
    save_checkpoint(latest, old)
    with caplog.at_level(logging.WARNING, logger="automl_deft.model.train"):
        result = train(spec, tr, va, images, tmp_path, progress=False)
    assert result.epochs_run == 1
    assert "not bit-identical" in caplog.text


# --- a real SIGKILL of `automl-deft train` ------------------------------------------------


def _cli(ws: Path, out: Path) -> list[str]:
    sets = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in OVERRIDES.items()]
    return [
        sys.executable,
        "-m",
        "automl_deft.cli",
        "train",
        str(ws),
        *[arg for s in sets for arg in ("--set", s)],
        "-o",
        str(out),
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _run_logging_times(cmd: list[str]) -> dict[str, float]:
    """Run to completion; when each "epoch N/M" log line arrived."""
    seen: dict[str, float] = {}
    with subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=_env()
    ) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("epoch "):
                seen[line.split()[1]] = time.monotonic()
    assert proc.returncode == 0, f"training failed (rc {proc.returncode})"
    return seen


@pytest.mark.slow
def test_sigkill_inside_an_epoch_then_resume_is_byte_identical(
    tiny_ws: Path, tmp_path: Path
) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    times = _run_logging_times(_cli(tiny_ws, whole))
    epoch_seconds = times["2/3"] - times["1/3"]

    proc = subprocess.Popen(
        _cli(tiny_ws, killed),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=_env(),
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("epoch 1/3"):
                break
        # Epoch 1 is logged before latest.pt and history.json are written: wait for
        # them, then a third of an epoch, to be well inside epoch 2.
        deadline = time.monotonic() + 120
        while not (killed / "history.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "epoch 1 never saved"
            time.sleep(0.02)
        time.sleep(epoch_seconds / 3)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(killed / "latest.pt")["epoch"] == 1, "not killed inside epoch 2"

    resumed = subprocess.run(
        _cli(tiny_ws, killed), capture_output=True, text=True, env=_env(), check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stderr and "after epoch 1" in resumed.stderr
    assert_same_run(whole, killed)
