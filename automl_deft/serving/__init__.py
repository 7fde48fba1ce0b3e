"""Self-contained model packages (ONNX, TorchScript) and the scorers that run them.

* :func:`export_package` writes a checkpoint as a package directory: one graph
  (``model.onnx`` or ``model.ts``) taking float32 ``golden``, ``test`` ``[B, C, H, W]``
  in [0, 1] and returning ``siamese_score`` ``[B]``, plus ``package.json``
  (:class:`PackageManifest`: threshold, preprocessing, provenance, versions).
* :func:`preprocessing_of` says what a spec's model expects of its inputs (the
  manifest's ``preprocessing``, also quoted by inference specs and model cards).
* :func:`load_package` reads one back, strictly, and verifies the model's SHA-256.
* :class:`Scorer` is the one scoring interface; :func:`open_scorer` returns a
  :class:`CheckpointScorer`, :class:`TorchScriptScorer` or :class:`OnnxScorer` for a path.

The package format is described in :mod:`automl_deft.serving.manifest`, the
export in :mod:`automl_deft.serving.package`.
"""

from __future__ import annotations

from automl_deft.serving.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    ModelFormat,
    PackageError,
    PackageManifest,
)
from automl_deft.serving.package import Package, export_package, load_package, preprocessing_of
from automl_deft.serving.scorers import (
    CheckpointScorer,
    OnnxScorer,
    Scorer,
    TorchScriptScorer,
    open_scorer,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "CheckpointScorer",
    "ModelFormat",
    "OnnxScorer",
    "Package",
    "PackageError",
    "PackageManifest",
    "Scorer",
    "TorchScriptScorer",
    "export_package",
    "load_package",
    "open_scorer",
    "preprocessing_of",
]
