"""``package.json``: the typed manifest of an exported model package.

A package is a directory::

    <package>/
      package.json     this manifest
      model.onnx       or model.ts (TorchScript); the graph named by ``model_file``
      MODEL_CARD.md …  any extra text files the exporter was given (``extra_files``)

The manifest says everything a consumer needs to run the graph without the
training checkpoint or this project's code::

    {
      "format": "automl-deft-package", "format_version": 1,
      "model_format": "onnx" | "torchscript", "model_file": "model.onnx",
      "model_sha256": "<hex>", "threshold": 0.42,
      "decision": "defect when siamese_score > threshold",
      "inputs":  [{"name": "golden", "dtype": "float32", "shape": [-1, C, H, W], …},
                  {"name": "test", …}],
      "outputs": [{"name": "siamese_score", "dtype": "float32", "shape": [-1], …}],
      "preprocessing": {"image_width": W, "image_height": H, "lights": [...], "ext": ".png",
                        "channels_per_light": 1 | 3, "concat_type": "linear" | "grid",
                        "tiles_x": 1, "colour": …, "resize": …,
                        "scale": "uint8 / 255",
                        "registration": {"max_shift": 2, "in_graph": true, "method": …},
                        "normalisation": {"mean": [...], "std": [...], "in_graph": true,
                                          "method": …}},
      "source": {"checkpoint_name": "best_val.pt", "checkpoint_sha256": "<hex>",
                 "arch": {...}, "backbone": "cnn_small"},
      "versions": {"automl_deft": …, "torch": …, "onnx": …, "onnxruntime": …},
      "opset": 17,
      "extra_files": {"MODEL_CARD.md": "<sha256>"}
    }

Shape ``-1`` is the dynamic batch axis. The caller does only what the graph does
not: read each light's file as RGB (``channels_per_light`` 3) or greyscale (1),
resize it to ``image_width × image_height`` when it differs, join the lights in
``lights`` order into one image per side as ``concat_type`` says (``linear``:
stacked top to bottom, so ``H = len(lights) × image_height``; ``grid``: row-major
tiles, ``tiles_x`` across), and divide by 255. Registration (test shifted onto
golden, per light tile) and normalisation happen inside the graph.
:meth:`PackageManifest.from_json` is strict: an unknown or missing key and a wrong
type are one-line :class:`PackageError` messages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np

from automl_deft.errors import UserError
from automl_deft.records import Record
from automl_deft.workspace import ImageNaming

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "INPUT_NAMES",
    "MANIFEST_NAME",
    "MODEL_FILES",
    "OUTPUT_NAME",
    "ModelFormat",
    "Normalisation",
    "PackageError",
    "PackageManifest",
    "Preprocessing",
    "Registration",
    "SourceInfo",
    "TensorInfo",
    "check_threshold",
    "is_plain_name",
    "sha256_file",
]

FORMAT = "automl-deft-package"
FORMAT_VERSION = 1
MANIFEST_NAME = "package.json"

ModelFormat = Literal["onnx", "torchscript"]
MODEL_FILES: dict[str, str] = {"onnx": "model.onnx", "torchscript": "model.ts"}
"""The model file's name in a package, per ``model_format``."""
INPUT_NAMES = ("golden", "test")
OUTPUT_NAME = "siamese_score"


class PackageError(UserError):
    """A model package is missing, corrupt, modified, or cannot be written."""


LOWEST_THRESHOLD = math.nextafter(0.0, -math.inf)
"""The KPI's flag-every-row threshold when the lowest score is 0 (just below 0)."""


def check_threshold(value: Any, error: type[UserError] = UserError) -> float:
    """``value`` as a threshold: a finite number in [0, 1] (or :data:`LOWEST_THRESHOLD`).

    Raises:
        error: not a number, or outside that range.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise error(f"threshold must be a number, got {value!r}")
    out = float(value)
    if not (math.isfinite(out) and LOWEST_THRESHOLD <= out <= 1.0):
        raise error(f"threshold {out!r} is not a probability in [0, 1]")
    return out


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class TensorInfo(Record):
    """One graph input or output. ``shape`` uses -1 for the dynamic batch axis."""

    name: str
    dtype: str
    shape: list[int]
    description: str = ""


@dataclass(frozen=True)
class Registration(Record):
    """How the test image is registered onto the golden one (inside the graph)."""

    max_shift: int
    in_graph: bool = True
    method: str = (
        "test shifted by the integer offset (|dx|, |dy| <= max_shift, edges replicated) "
        "with the smallest mean absolute difference to golden"
    )


@dataclass(frozen=True)
class Normalisation(Record):
    """How the [0, 1] inputs are normalised before the encoder (inside the graph)."""

    mean: list[float]
    std: list[float]
    in_graph: bool = True
    method: str = ""


@dataclass(frozen=True)
class Preprocessing(Record):
    """What the caller does to image files before the graph (and what the graph does)."""

    image_width: int
    image_height: int
    lights: list[str]
    """Light names in tile order: tile ``i`` is the file ``<object>_<lights[i]><ext>``."""
    ext: str
    registration: Registration
    normalisation: Normalisation
    channels_per_light: int = 1
    """1 (greyscale) or 3 (RGB): the channels of each light's image (and of the input)."""
    concat_type: str = "linear"
    """How the lights are joined into one image per side: ``linear`` (stacked top to
    bottom in ``lights`` order) or ``grid`` (row-major, ``tiles_x`` across)."""
    tiles_x: int = 1
    """Tiles across (1 for ``linear``); tiles down = ``len(lights) / tiles_x``."""
    colour: str = "greyscale (PIL Image.convert('L'))"
    resize: str = "PIL bilinear to image_width x image_height when the file's size differs"
    scale: str = "uint8 / 255"


@dataclass(frozen=True)
class SourceInfo(Record):
    """The checkpoint the package was exported from."""

    checkpoint_sha256: str
    backbone: str
    arch: dict[str, Any] = field(default_factory=dict)
    checkpoint_name: str = ""


@dataclass(frozen=True)
class PackageManifest(Record):
    """``package.json`` (see the module docstring)."""

    format: str
    format_version: int
    model_format: ModelFormat
    model_file: str
    model_sha256: str
    threshold: float
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    preprocessing: Preprocessing
    source: SourceInfo
    versions: dict[str, str]
    decision: str = "defect when siamese_score > threshold"
    opset: int | None = None
    extra_files: dict[str, str] = field(default_factory=dict)
    """Extra text files shipped alongside (name → sha256), e.g. the model card."""

    @property
    def naming(self) -> ImageNaming:
        """How the images the model scores are named (lights in channel order)."""
        return ImageNaming(lights=tuple(self.preprocessing.lights), ext=self.preprocessing.ext)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` the graph expects."""
        return self.preprocessing.image_width, self.preprocessing.image_height

    @classmethod
    def from_json(cls, data: Any, where: str | None = None) -> Self:
        """The manifest from parsed JSON, strictly.

        Raises:
            PackageError: not a package manifest, another format version, an unknown or
                missing key, a wrong type, or inconsistent values (naming ``where``).
        """
        noun = where or MANIFEST_NAME
        if not isinstance(data, dict):
            raise PackageError(f"{noun}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise PackageError(
                f"{noun} is not an automl-deft package manifest (format {data.get('format')!r}, "
                f"expected {FORMAT!r}); export one with automl_deft.serving.export_package"
            )
        if data.get("format_version") != FORMAT_VERSION:
            raise PackageError(
                f"{noun} has package format version {data.get('format_version')!r}, this release "
                f"reads version {FORMAT_VERSION}; export the package again with this release"
            )
        missing = _missing_keys(cls, data, "")
        if missing:
            raise PackageError(f"{noun}: missing key {missing!r}")
        try:
            manifest = super().from_json(data, noun)
        except UserError as exc:
            raise PackageError(str(exc)) from exc
        manifest.check(noun)
        return manifest

    def check(self, noun: str = MANIFEST_NAME) -> None:
        """Value checks the types alone do not make.

        Raises:
            PackageError: the first inconsistent value.
        """
        problems: list[str] = []
        if self.model_file != MODEL_FILES[self.model_format]:
            problems.append(
                f"model_file {self.model_file!r} is not {MODEL_FILES[self.model_format]!r} "
                f"(model_format {self.model_format!r})"
            )
        try:
            check_threshold(self.threshold)
        except UserError as exc:
            problems.append(str(exc))
        if len(self.model_sha256) != 64:
            problems.append("model_sha256 is not a SHA-256 hex digest")
        pre = self.preprocessing
        if pre.image_width <= 0 or pre.image_height <= 0 or not pre.lights:
            problems.append("preprocessing needs image_width, image_height > 0 and >= 1 light")
        if [t.name for t in self.inputs] != list(INPUT_NAMES):
            problems.append(f"inputs must be {list(INPUT_NAMES)}")
        if [t.name for t in self.outputs] != [OUTPUT_NAME]:
            problems.append(f"outputs must be [{OUTPUT_NAME!r}]")
        for name in self.extra_files:
            if not is_plain_name(name):
                problems.append(f"extra file {name!r} is not a plain file name")
        if problems:
            raise PackageError(f"{noun}: {problems[0]}")


def is_plain_name(name: str) -> bool:
    """A file name with no directory part that a package may hold."""
    return (
        bool(name)
        and name not in (".", "..")
        and not name.startswith(".")
        and Path(name).name == name
        and "/" not in name
        and "\\" not in name
    )


def _missing_keys(tp: Any, data: Any, path: str) -> str | None:
    """The dotted path of the first required dataclass field absent from ``data``."""
    if not (dataclasses.is_dataclass(tp) and isinstance(data, dict)):
        return None
    hints = typing.get_type_hints(tp)
    for f in dataclasses.fields(tp):
        key = f"{path}.{f.name}" if path else f.name
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.name not in data:
            if required:
                return key
            continue
        inner = hints[f.name]
        value = data[f.name]
        if typing.get_origin(inner) is list and isinstance(value, list):
            (item,) = typing.get_args(inner)
            for i, v in enumerate(value):
                found = _missing_keys(item, v, f"{key}[{i}]")
                if found:
                    return found
        else:
            found = _missing_keys(inner, value, key)
            if found:
                return found
    return None
