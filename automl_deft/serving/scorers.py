"""Scorers: one interface over a checkpoint, a TorchScript package and an ONNX package.

A :class:`Scorer` turns a :class:`~automl_deft.model.data.PairSource` (uint8
golden/test pairs, each side its lights tiled as the model's
:attr:`Scorer.geometry` says: RGB or greyscale, ``linear`` or ``grid``) into
``siamese_score`` (float64 ``[N]``, defect probability, in the source's row
order). Every scorer does the same preprocessing, ``uint8 / 255``; registration
(per light tile) and normalisation are the model's (inside the exported graph for
packages). It also says how its images are named
(:attr:`Scorer.naming`), their size (:attr:`Scorer.size`, ``(width, height)``) and
the operating threshold it ships with (:attr:`Scorer.threshold`; ``None`` for a
bare checkpoint unless one is given).

* :class:`CheckpointScorer`: the PyTorch model rebuilt from a training checkpoint.
* :class:`TorchScriptScorer`: a TorchScript package (``torch.jit.load``, CPU).
* :class:`OnnxScorer`: an ONNX package on onnxruntime's ``CPUExecutionProvider``.

Package scorers need only the package directory, never the training checkpoint.
:func:`open_scorer` picks the scorer from a path.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from automl_deft.errors import UserError
from automl_deft.model.checkpoint import load_model
from automl_deft.model.data import PairSource, to_float
from automl_deft.model.network import ChangeNetLite
from automl_deft.model.spec import InputGeometry
from automl_deft.model.train import select_device
from automl_deft.serving.manifest import (
    INPUT_NAMES,
    MANIFEST_NAME,
    MODEL_FILES,
    OUTPUT_NAME,
    PackageError,
    check_threshold,
)
from automl_deft.serving.package import Package, load_package
from automl_deft.serving.runtime import load_torchscript, onnx_session
from automl_deft.workspace import ImageNaming

__all__ = [
    "CheckpointScorer",
    "OnnxScorer",
    "Scorer",
    "TorchScriptScorer",
    "open_scorer",
]

_CPU = torch.device("cpu")


class Scorer(abc.ABC):
    """Scores golden/test pairs; see the module docstring."""

    naming: ImageNaming
    """Lights (tile order) and extension of the image files."""
    size: tuple[int, int]
    """``(width, height)`` of one light; each file is loaded at this size."""
    geometry: InputGeometry
    """What the model takes: colour, the lights' tiling, the tile size (load with it)."""
    threshold: float | None
    """The operating threshold (defect when ``score > threshold``), if known."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line: what runs (file, format, runtime)."""

    @abc.abstractmethod
    def score_tensors(self, golden: torch.Tensor, test: torch.Tensor) -> np.ndarray:
        """Scores of one batch: float32 ``[B, C, H, W]`` in [0, 1] → float64 ``[B]``."""

    def score(self, source: PairSource, batch_size: int, *, progress: bool = False) -> np.ndarray:
        """``siamese_score`` of every pair of ``source``, in row order (float64 ``[N]``).

        Raises:
            UserError: a batch size below 1, or pairs at another size, colour or light
                tiling than the model's.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"batch size must be a positive integer, got {batch_size!r}")
        if tuple(source.size) != tuple(self.size):
            raise UserError(
                f"the pairs are loaded at {source.size[0]}x{source.size[1]} but the model "
                f"expects {self.size[0]}x{self.size[1]}; load them at the scorer's size"
            )
        want = self.geometry
        if source.geometry is not None and source.geometry != want:
            raise UserError(
                f"the pairs are loaded as {source.geometry.describe()} but the model expects "
                f"{want.describe()}; load them with the scorer's geometry"
            )
        if source.channels != want.channels:
            raise UserError(
                f"the pairs have {source.channels} channel(s) but the model expects "
                f"{want.channels} ({'RGB' if want.channels == 3 else 'greyscale'}); load them "
                "with the scorer's geometry"
            )
        if tuple(source.shape) != want.shape:
            raise UserError(
                f"the pairs are {'x'.join(map(str, source.shape))} images but the model expects "
                f"{want.describe()}; load them with the scorer's geometry"
            )
        n = len(source)
        out = np.empty(n, dtype=np.float64)
        pos = 0
        with tqdm(total=n, unit="pair", desc="scoring", disable=not progress) as bar:
            for pixels, _ in source.batches(np.arange(n), batch_size):
                golden, test = to_float(pixels, _CPU)
                scores = self.score_tensors(golden, test)
                out[pos : pos + len(scores)] = scores
                pos += len(scores)
                bar.update(len(scores))
        return out


class CheckpointScorer(Scorer):
    """The PyTorch model of a training checkpoint (threshold ``None`` unless given)."""

    def __init__(
        self,
        checkpoint: str | os.PathLike[str],
        *,
        threshold: float | None = None,
        device: str = "cpu",
    ) -> None:
        self.path = Path(checkpoint)
        model, spec, _ = load_model(self.path)
        self.device = select_device(device)
        self.model: ChangeNetLite = model.to(self.device).eval()
        self.backbone = spec.model.backbone.type
        self.geometry = model.geometry
        self.naming = self.geometry.naming
        self.size = self.geometry.size
        self.threshold = None if threshold is None else check_threshold(threshold)

    def describe(self) -> str:
        return (
            f"checkpoint {self.path} ({self.backbone}; torch {torch.__version__} "
            f"on {self.device.type})"
        )

    def score_tensors(self, golden: torch.Tensor, test: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            logits = self.model(golden.to(self.device), test.to(self.device))
            scores = ChangeNetLite.score(logits)
        return scores.cpu().numpy().astype(np.float64)


class _PackageScorer(Scorer):
    def __init__(self, package: Package | str | os.PathLike[str], threshold: float | None) -> None:
        self.package = package if isinstance(package, Package) else load_package(package)
        self.geometry = self.package.geometry
        self.naming = self.package.naming
        self.size = self.package.size
        self.threshold = self.package.threshold if threshold is None else check_threshold(threshold)

    def _what(self) -> str:
        source = self.package.manifest.source
        return f"package {self.package.root} ({source.backbone}, from {source.checkpoint_name})"


class TorchScriptScorer(_PackageScorer):
    """A TorchScript package on the CPU (threshold from ``package.json`` unless given)."""

    def __init__(
        self, package: Package | str | os.PathLike[str], *, threshold: float | None = None
    ) -> None:
        super().__init__(package, threshold)
        if self.package.model_format != "torchscript":
            raise PackageError(
                f"{self.package.root} is a {self.package.model_format} package, not TorchScript"
            )
        self.module = load_torchscript(self.package.model_path)

    def describe(self) -> str:
        return f"TorchScript {self._what()}; torch {torch.__version__} on cpu"

    def score_tensors(self, golden: torch.Tensor, test: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            scores = self.module(golden.float(), test.float())
        return scores.numpy().astype(np.float64)


class OnnxScorer(_PackageScorer):
    """An ONNX package on onnxruntime's CPUExecutionProvider (threshold as above)."""

    def __init__(
        self,
        package: Package | str | os.PathLike[str],
        *,
        threshold: float | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__(package, threshold)
        if self.package.model_format != "onnx":
            raise PackageError(
                f"{self.package.root} is a {self.package.model_format} package, not ONNX"
            )
        self.session = onnx_session(self.package.model_path, threads=threads)

    def describe(self) -> str:
        import onnxruntime

        return f"ONNX {self._what()}; onnxruntime {onnxruntime.__version__} CPUExecutionProvider"

    def score_tensors(self, golden: torch.Tensor, test: torch.Tensor) -> np.ndarray:
        feeds = {
            INPUT_NAMES[0]: np.ascontiguousarray(golden.numpy(), dtype=np.float32),
            INPUT_NAMES[1]: np.ascontiguousarray(test.numpy(), dtype=np.float32),
        }
        (scores,) = self.session.run([OUTPUT_NAME], feeds)
        return np.asarray(scores, dtype=np.float64)


def open_scorer(
    path: str | os.PathLike[str], *, threshold: float | None = None, device: str = "cpu"
) -> Scorer:
    """The scorer for ``path``: a package directory or its ``package.json`` (ONNX or
    TorchScript, by ``model_format``; also the package's model file), else a checkpoint.

    ``threshold`` overrides the package's (and is the checkpoint's; ``None`` otherwise).
    ``device`` applies to checkpoints only (packages run on the CPU).

    Raises:
        UserError: nothing at ``path``; PackageError / CheckpointError for a bad package
            or checkpoint.
    """
    p = Path(path)
    if p.is_file() and p.name in MODEL_FILES.values() and (p.parent / MANIFEST_NAME).is_file():
        p = p.parent
    if p.is_dir() or p.name == MANIFEST_NAME:
        package = load_package(p)
        if package.model_format == "onnx":
            return OnnxScorer(package, threshold=threshold)
        return TorchScriptScorer(package, threshold=threshold)
    if not p.exists():
        raise UserError(f"no model at {p}: pass a package directory or a checkpoint file")
    return CheckpointScorer(p, threshold=threshold, device=device)
