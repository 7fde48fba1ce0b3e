"""What the pre-flight asks the machine: the local docker daemon and the visible GPUs.

Nothing is pulled or started: an image is looked up with ``docker image inspect``
(``PRESENT`` / ``MISSING`` / ``UNKNOWN``), and the GPUs are the CUDA devices torch sees.
On a GPU the run spec's training step is measured (:func:`gpu_step_memory`) to bound
the batch size; the ChangeNet rule of thumb (:func:`gpu_batch_limit`) is the fallback.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from automl_deft.model.memory import StepMemory
    from automl_deft.model.spec import Spec

__all__ = [
    "DOCKER_TIMEOUT_S",
    "GPU_BATCH_RULE",
    "IMAGE_STATUSES",
    "MISSING",
    "PRESENT",
    "RULE_IMAGE_SIDE",
    "RULE_TEXT",
    "UNKNOWN",
    "GpuInfo",
    "ImageProbe",
    "docker_image_probe",
    "gpu_batch_limit",
    "gpu_step_memory",
    "parse_probe",
    "resolve_image_ref",
    "visible_gpus",
]

PRESENT, MISSING, UNKNOWN = "PRESENT", "MISSING", "UNKNOWN"
IMAGE_STATUSES: tuple[str, ...] = (PRESENT, MISSING, UNKNOWN)

DOCKER_TIMEOUT_S = 3.0
"""How long the local docker daemon gets to answer before an image counts as UNKNOWN."""

RULE_IMAGE_SIDE = 224
"""The GPU memory rule of thumb is for the original ChangeNet at 224 px."""
GPU_BATCH_RULE: tuple[tuple[float, int], ...] = ((30.0, 8), (60.0, 16))
"""(GPU memory below this many GB, largest batch the rule allows): 24 GB-class ≤ 8,
48 GB-class ≤ 16. Larger GPUs: the rule says nothing, so nothing is claimed."""
RULE_TEXT = f"ChangeNet at {RULE_IMAGE_SIDE} px: batch ≤ 16 on a 48 GB GPU, ≤ 8 on 24 GB"

ImageProbe = Callable[[str], str]
"""Answers for one fully resolved image reference: ``PRESENT``, ``MISSING`` or
``UNKNOWN``, optionally followed by `` (reason)``."""


# --- container images ---------------------------------------------------------------------


def resolve_image_ref(ref: str) -> str:
    """The fully qualified form docker uses: registry, repository and tag (or digest).

    ``python`` → ``docker.io/library/python:latest``; ``you/app:1`` →
    ``docker.io/you/app:1``; ``ghcr.io/x/y`` → ``ghcr.io/x/y:latest``.
    """
    ref = ref.strip()
    name, at, digest = ref.partition("@")
    parts = name.split("/")
    if len(parts) == 1:
        name = f"docker.io/library/{name}"
    elif not ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        name = f"docker.io/{name}"
    if not at and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return f"{name}{at}{digest}"


def docker_image_probe(timeout_s: float = DOCKER_TIMEOUT_S) -> ImageProbe:
    """A probe that asks the local docker daemon whether it holds an image.

    The daemon is asked once whether it answers (within ``timeout_s``); without a
    ``docker`` CLI or a reachable daemon every image is ``UNKNOWN`` with the reason.
    Nothing is pulled.
    """
    reachable: list[str | None] = []  # filled once: None = reachable, else why not

    def daemon_problem() -> str | None:
        if not reachable:
            if shutil.which("docker") is None:
                reachable.append("no docker CLI")
            else:
                try:
                    done = subprocess.run(
                        ["docker", "version", "--format", "{{.Server.Version}}"],
                        capture_output=True,
                        text=True,
                        timeout=timeout_s,
                        check=False,
                    )
                    ok = done.returncode == 0 and done.stdout.strip() != ""
                    reachable.append(None if ok else "daemon not reachable")
                except (subprocess.TimeoutExpired, OSError):
                    reachable.append("daemon not reachable")
        return reachable[0]

    def probe(ref: str) -> str:
        problem = daemon_problem()
        if problem is not None:
            return f"{UNKNOWN} ({problem})"
        try:
            done = subprocess.run(
                ["docker", "image", "inspect", ref],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"{UNKNOWN} (docker image inspect timed out)"
        except OSError as exc:
            return f"{UNKNOWN} ({exc.__class__.__name__})"
        if done.returncode == 0:
            return PRESENT
        err = done.stderr.strip()
        if "no such image" in err.lower():
            return f"{MISSING} (not in the local docker daemon)"
        first = err.splitlines()[0] if err else f"exit status {done.returncode}"
        return f"{UNKNOWN} ({first})"

    return probe


def parse_probe(answer: str) -> tuple[str, str]:
    """A probe's answer as ``(status, detail)``; anything unexpected is ``UNKNOWN``."""
    word, _, rest = answer.strip().partition(" ")
    status = word.upper()
    detail = rest.strip().removeprefix("(").removesuffix(")").strip()
    if status not in IMAGE_STATUSES:
        return UNKNOWN, f"probe answered {answer.strip()!r}"
    return status, detail


# --- GPU ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuInfo:
    """One visible CUDA device."""

    name: str
    memory_bytes: int

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / 1024**3

    @property
    def memory_gb(self) -> float:
        return self.memory_bytes / 1e9


def visible_gpus() -> list[GpuInfo]:
    """The CUDA devices torch sees (empty on a CPU-only machine)."""
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        out.append(GpuInfo(props.name, int(props.total_memory)))
    return out


def gpu_batch_limit(memory_gb: float) -> int | None:
    """The rule of thumb's largest batch for a GPU of this size (None: the rule is silent)."""
    for below, limit in GPU_BATCH_RULE:
        if memory_gb < below:
            return limit
    return None


def gpu_step_memory(spec: Spec, channels: int) -> StepMemory:
    """A training step of ``spec`` measured on the first visible GPU
    (:func:`automl_deft.model.memory.measure_step_memory`).

    Raises:
        RuntimeError: torch sees no CUDA device; anything the measurement raises.
    """
    import torch

    from automl_deft.model.memory import measure_step_memory

    measured = measure_step_memory(spec, torch.device("cuda", 0), channels=channels)
    if measured is None:
        raise RuntimeError("torch sees no CUDA device")
    return measured
