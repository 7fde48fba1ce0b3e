"""Self-describing checkpoints: weights plus everything needed to use them.

A checkpoint is a dict saved with ``torch.save``::

    {format, format_version, state_dict, spec, arch, epoch, step, metrics,
     versions, optimizer?, scheduler?, rng?, train_state?}

``spec`` is the resolved training spec, so ``infer`` and ``evaluate`` need
nothing else. Files are written atomically; loading checks the format and the
architecture and turns every failure into a one-line :class:`CheckpointError`.
"""

from __future__ import annotations

import os
import platform
import zipfile
from pathlib import Path

import torch

import automl_deft
from automl_deft.errors import CheckpointError, SpecError
from automl_deft.io import atomic_path
from automl_deft.jsontypes import Checkpoint
from automl_deft.layout import TrainFiles
from automl_deft.model.network import ChangeNetLite, architecture
from automl_deft.model.spec import Spec, spec_from_dict

FORMAT = "automl-deft-checkpoint"
FORMAT_VERSION = 1
BEST_NAME = TrainFiles.BEST
LATEST_NAME = TrainFiles.LATEST


def versions() -> dict[str, str]:
    """Library versions recorded in every checkpoint."""
    return {
        "automl_deft": automl_deft.__version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
    }


def save_checkpoint(path: str | os.PathLike[str], payload: Checkpoint) -> None:
    """Write a checkpoint atomically (``format`` and ``versions`` are filled in)."""
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(), **payload}
    with atomic_path(path) as tmp:
        torch.save(full, tmp)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and sanity-check a checkpoint.

    Raises:
        CheckpointError: missing file, corrupt/truncated file, not a checkpoint of
            this project, or a format version this release cannot read.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}; train first or fix the path")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}); "
            "re-train or point to another checkpoint"
        ) from exc
    except Exception as exc:  # torch raises UnpicklingError and others for foreign pickles
        raise CheckpointError(
            f"checkpoint {path} cannot be read safely ({type(exc).__name__}); "
            "it is not a checkpoint written by automl-deft"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an automl-deft checkpoint (no {FORMAT!r} header); "
            "pass a file written by `automl-deft train`"
        )
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {ckpt.get('format_version')}, this release "
            f"reads version {FORMAT_VERSION}; re-train with this release"
        )
    for key in ("state_dict", "spec", "arch"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {path} lacks {key!r}; it is incomplete, re-train")
    return ckpt


def spec_of(ckpt: Checkpoint, path: str | os.PathLike[str] = "<checkpoint>") -> Spec:
    """The training spec stored in a checkpoint."""
    try:
        return spec_from_dict(ckpt["spec"])
    except SpecError as exc:
        raise CheckpointError(f"checkpoint {path} holds an invalid spec: {exc}") from exc


def load_weights_into(model: ChangeNetLite, ckpt: Checkpoint, path: str | os.PathLike[str]) -> None:
    """Copy a checkpoint's weights into ``model``; the architectures must match exactly."""
    diffs = [
        f"{k}: checkpoint {ckpt['arch'].get(k)!r} vs model {v!r}"
        for k, v in model.arch.items()
        if ckpt["arch"].get(k) != v
    ]
    if diffs:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model ({'; '.join(diffs)}); pin these spec "
            "values to the checkpoint's or train from scratch"
        )
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {path} weights do not load: {first}") from exc


def load_model(path: str | os.PathLike[str]) -> tuple[ChangeNetLite, Spec, Checkpoint]:
    """Rebuild the model a checkpoint was trained as, with its weights (on CPU, eval mode)."""
    ckpt = load_checkpoint(path)
    spec = spec_of(ckpt, path)
    if architecture(spec) != ckpt["arch"]:
        raise CheckpointError(f"checkpoint {path}: its spec and its arch record disagree")
    # The weights come from the checkpoint: never fetch pretrained backbone weights again.
    model = ChangeNetLite(spec.with_overrides({"model.backbone.pretrained": False}))
    load_weights_into(model, ckpt, path)
    model.eval()
    return model, spec, ckpt
