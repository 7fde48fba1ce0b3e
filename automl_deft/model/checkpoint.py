"""Self-describing checkpoints: weights plus everything needed to use them.

A checkpoint is a dict saved with ``torch.save``::

    {format, format_version, state_dict, spec, arch, epoch, step, metrics,
     versions, optimizer?, scheduler?, rng?, train_state?}

``spec`` is the resolved training spec, so ``infer`` and ``evaluate`` need
nothing else: with ``arch`` it fixes the input geometry (:func:`input_geometry`:
RGB or greyscale, the lights' ``concat_type``/``grid_map`` tiling, the tile size),
so predict and export rebuild the preprocessing from the checkpoint alone. A
checkpoint written before colour support holds ``color_mode: auto`` and was
trained on greyscale: :func:`spec_of` reads it as ``grey``.

``rng`` (see :func:`capture_rng`) holds every random-number generator state
training draws from, so a resumed run is bit-identical to an uninterrupted one;
checkpoints written before it existed still load. Files are written atomically;
loading checks the format and the architecture and turns every failure into a
one-line :class:`CheckpointError`.
"""

from __future__ import annotations

import logging
import os
import platform
import random
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

import automl_deft
from automl_deft.errors import CheckpointError, SpecError
from automl_deft.io import atomic_path
from automl_deft.jsontypes import Checkpoint
from automl_deft.layout import TrainFiles
from automl_deft.model.network import ChangeNetLite, architecture
from automl_deft.model.spec import InputGeometry, Spec, spec_from_dict

log = logging.getLogger(__name__)

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


RNGOwner = np.random.Generator | torch.Generator
"""A generator a trainer owns (beside the global ones), checkpointed by name."""


def capture_rng(generators: Mapping[str, RNGOwner] | None = None) -> dict[str, Any]:
    """Every RNG state training may draw from, as ``torch.load(weights_only=True)`` reads it.

    The global torch CPU generator (dropout, DataLoader worker seeds), the CUDA
    generators (when CUDA is in use), numpy's and Python's global generators,
    and the trainer's own ``generators`` (numpy ``Generator``s by their
    ``bit_generator.state`` dict, torch ``Generator``s by their state tensor).
    Only tensors, ints, floats, strings, None, lists and dicts: no pickled objects.
    """
    np_state = np.random.get_state(legacy=False)
    version, internal, gauss = random.getstate()
    owned: dict[str, Any] = {}
    for name, gen in (generators or {}).items():
        if isinstance(gen, torch.Generator):
            owned[name] = {"torch": gen.get_state()}
        else:
            owned[name] = {"numpy": _plain(gen.bit_generator.state)}
    return {
        "torch": torch.get_rng_state(),
        "cuda": (
            list(torch.cuda.get_rng_state_all())
            if torch.cuda.is_available() and torch.cuda.is_initialized()
            else []
        ),
        "numpy": _plain(np_state),
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "generators": owned,
    }


def restore_rng(state: Mapping[str, Any], generators: Mapping[str, RNGOwner] | None = None) -> None:
    """Put back what :func:`capture_rng` recorded (the same ``generators`` by name).

    CUDA states are put back only where CUDA is available (a checkpoint from a
    GPU run resumed on CPU trains on CPU anyway).

    Raises:
        CheckpointError: a generator of ``generators`` has no recorded state, or
            the recorded state does not fit it.
    """
    try:
        torch.set_rng_state(state["torch"])
        cuda = state.get("cuda") or []
        if cuda and torch.cuda.is_available():
            count = torch.cuda.device_count()
            if len(cuda) != count:
                log.warning(
                    "the checkpoint holds RNG states of %d CUDA devices, this process sees %d: "
                    "the resumed run may not be bit-identical",
                    len(cuda),
                    count,
                )
            for device, cuda_state in enumerate(cuda[:count]):
                torch.cuda.set_rng_state(cuda_state, device)
        np_state = dict(state["numpy"])
        np_state["state"] = {
            "key": np.asarray(np_state["state"]["key"], dtype=np.uint32),
            "pos": int(np_state["state"]["pos"]),
        }
        np.random.set_state(np_state)
        py = state["python"]
        random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
        owned = state.get("generators", {})
        for name, gen in (generators or {}).items():
            if name not in owned:
                raise CheckpointError(f"the checkpoint holds no RNG state for {name!r}")
            if isinstance(gen, torch.Generator):
                gen.set_state(owned[name]["torch"])
            else:
                gen.bit_generator.state = owned[name]["numpy"]
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"the checkpoint's RNG state is malformed ({type(exc).__name__}: {exc}); "
            "re-train or resume with --no-resume"
        ) from exc


def _plain(obj: Any) -> Any:
    """numpy RNG state as plain Python (arrays to lists, numpy scalars to Python ones)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


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
    """The training spec stored in a checkpoint, ``color_mode`` resolved.

    Raises:
        CheckpointError: the stored spec is invalid, or it comes from a release that fed
            several lights as channels (those weights cannot take tiled lights).
    """
    try:
        spec = spec_from_dict(ckpt["spec"])
    except SpecError as exc:
        raise CheckpointError(f"checkpoint {path} holds an invalid spec: {exc}") from exc
    if spec.dataset.classify.color_mode == "auto":  # before colour support: always greyscale
        lights = spec.dataset.classify.num_input
        if lights > 1 and ckpt["arch"].get("in_channels") == lights:
            raise CheckpointError(
                f"checkpoint {path} was trained by an older release that fed its {lights} "
                "lights as channels; lights are now tiled (concat_type), re-train it"
            )
        spec = spec.with_overrides({"dataset.classify.color_mode": "grey"})
    return spec


def input_geometry(
    ckpt: Checkpoint, path: str | os.PathLike[str] = "<checkpoint>"
) -> InputGeometry:
    """What the checkpoint's model takes: channels, light tiling and tile size."""
    return spec_of(ckpt, path).geometry()


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
