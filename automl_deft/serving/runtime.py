"""The two runtimes a package's graph runs on, loaded quietly with one-line errors.

* ONNX: an onnxruntime ``InferenceSession`` on the ``CPUExecutionProvider``.
* TorchScript: ``torch.jit.load`` onto the CPU (its deprecation notice is hidden:
  TorchScript is the format, not a choice made at load time).
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any

import torch

from automl_deft.errors import first_line
from automl_deft.serving.manifest import INPUT_NAMES, PackageError

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["load_torchscript", "onnx_session"]


def onnx_session(
    path: str | os.PathLike[str], *, threads: int | None = None
) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session for a package's graph.

    Raises:
        PackageError: the file is not a loadable ONNX graph with the package's inputs.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        raise PackageError(f"{path} is not a loadable ONNX graph: {first_line(exc)}") from exc
    names = [i.name for i in session.get_inputs()]
    if names != list(INPUT_NAMES):
        raise PackageError(f"{path} takes inputs {names}, expected {list(INPUT_NAMES)}")
    return session


def load_torchscript(path: str | os.PathLike[str]) -> torch.jit.ScriptModule:
    """A package's TorchScript module on the CPU, in eval mode.

    Raises:
        PackageError: the file is not a loadable TorchScript archive.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module: Any = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as exc:
        raise PackageError(f"{path} is not a loadable TorchScript file: {first_line(exc)}") from exc
    module.eval()
    result: torch.jit.ScriptModule = module
    return result
