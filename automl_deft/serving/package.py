"""Export a checkpoint as a self-contained model package, and load one back.

:func:`export_package` turns a training checkpoint into a directory holding one
graph (ONNX or TorchScript), ``package.json`` (:class:`PackageManifest`, the
format is described in :mod:`automl_deft.serving.manifest`) and any extra text
files (the model card). The graph is the whole model a line needs:

    golden, test  float32 [B, C, H, W] in [0, 1]  (B dynamic; C = lights)
      → registration (test shifted onto golden) → normalisation → encoder
      → difference module → head → softmax[:, 1]
    siamese_score float32 [B]  (defect when > threshold)

ONNX uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``):
it traces the model's data-dependent registration (an ``argmin`` over shifts and
advanced indexing) into plain ONNX ops with a dynamic batch axis and needs no
``onnxscript``. TorchScript is ``torch.jit.trace``. Both are traced at batch 2
and checked at batch 3 against the checkpoint model before anything is written.

The package is built in a temporary directory beside ``out_dir`` and renamed
onto it, so ``out_dir`` is either absent, or a complete package. An existing
non-empty ``out_dir`` is refused. :func:`load_package` checks the manifest
strictly and the model file's SHA-256, so a modified or truncated graph is refused.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import logging
import os
import platform
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import torch
from torch import nn

import automl_deft
from automl_deft.errors import InfrastructureError
from automl_deft.io import atomic_write_json, fsync_dir
from automl_deft.model.checkpoint import load_model
from automl_deft.model.network import ChangeNetLite, input_normalisation, model_channels
from automl_deft.model.spec import InputGeometry, Spec
from automl_deft.serving.manifest import (
    FORMAT,
    FORMAT_VERSION,
    INPUT_NAMES,
    MANIFEST_NAME,
    MODEL_FILES,
    OUTPUT_NAME,
    ModelFormat,
    Normalisation,
    PackageError,
    PackageManifest,
    Preprocessing,
    Registration,
    SourceInfo,
    TensorInfo,
    check_threshold,
    is_plain_name,
    sha256_file,
)
from automl_deft.serving.runtime import load_torchscript, onnx_session
from automl_deft.workspace import ImageNaming

__all__ = [
    "DEFAULT_OPSET",
    "MAX_OPSET",
    "MIN_OPSET",
    "Package",
    "ScoreGraph",
    "export_package",
    "load_package",
    "prepare_for_export",
    "preprocessing_of",
]

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
MIN_OPSET = 13
MAX_OPSET = 20
"""The TorchScript-based ONNX exporter writes opsets up to 20."""

TRACE_BATCH = 2
CHECK_BATCH = 3
CHECK_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Package:
    """A loaded (verified) model package: its directory and its manifest."""

    root: Path
    manifest: PackageManifest

    @property
    def model_path(self) -> Path:
        return self.root / self.manifest.model_file

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def model_format(self) -> ModelFormat:
        return self.manifest.model_format

    @property
    def threshold(self) -> float:
        return self.manifest.threshold

    @property
    def naming(self) -> ImageNaming:
        return self.manifest.naming

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of one light tile."""
        return self.manifest.size

    @property
    def geometry(self) -> InputGeometry:
        """What the graph takes (:class:`InputGeometry`), from the manifest: the lights and
        tile size of ``preprocessing``, the colour of ``channels_per_light``, and the
        tiling (rows x columns of tiles) from the ``golden`` input's shape.

        Raises:
            PackageError: the input shape is not a whole number of light tiles.
        """
        return geometry_of_manifest(self.manifest, str(self.manifest_path))


class ScoreGraph(nn.Module):
    """The exported graph: ``(golden, test) → siamese_score [B]`` (softmax inside)."""

    def __init__(self, model: ChangeNetLite) -> None:
        super().__init__()
        self.model = model

    def forward(self, golden: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
        return ChangeNetLite.score(self.model(golden, test))


def prepare_for_export(model: ChangeNetLite) -> ScoreGraph:
    """An eval-mode copy of ``model`` wrapped as :class:`ScoreGraph`, ready to trace.

    EfficientNet blocks may hold ``MemoryEfficientSwish`` (a custom autograd Function
    that neither exporter handles); the copy gets the plain, numerically identical
    ``Swish`` in its place. Only those modules are swapped: ``set_swish(False)`` would
    also replace EfficientNet-*Lite*'s ReLU6 activations with Swish and change the model.
    The caller's model is left as it is.
    """
    graph = ScoreGraph(copy.deepcopy(model)).eval()
    try:
        from efficientnet_lite_pytorch.utils import MemoryEfficientSwish, Swish
    except ImportError:  # pragma: no cover - a dependency of the project
        return graph
    for parent in list(graph.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, MemoryEfficientSwish):
                setattr(parent, name, Swish())
    for p in graph.parameters():
        p.requires_grad_(False)
    return graph


# --- export ---------------------------------------------------------------------------------


def export_package(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    fmt: ModelFormat,
    *,
    threshold: float,
    extra_files: Mapping[str, str] | None = None,
    opset: int | None = None,
) -> Package:
    """Export ``checkpoint`` as a package in ``out_dir`` (see the module docstring).

    Args:
        checkpoint: a checkpoint written by training (``best_val.pt``).
        out_dir: the package directory to create; must be absent or empty.
        fmt: ``"onnx"`` or ``"torchscript"``.
        threshold: the operating threshold shipped with the model (defect when
            ``siamese_score > threshold``), a probability in [0, 1].
        extra_files: more files to ship, name → text (e.g. ``{"MODEL_CARD.md": card}``).
        opset: ONNX opset (default 17, 13-20); only for ``fmt="onnx"``.

    Raises:
        PackageError: a bad argument, or ``out_dir`` exists and is not empty.
        CheckpointError: the checkpoint is missing or corrupt.
        InfrastructureError: the exported graph disagrees with the checkpoint model.
    """
    if fmt not in get_args(ModelFormat):
        raise PackageError(f"unknown package format {fmt!r}; use 'onnx' or 'torchscript'")
    threshold = check_threshold(threshold, PackageError)
    if opset is not None and fmt != "onnx":
        raise PackageError("opset applies to ONNX packages only; leave it unset for TorchScript")
    opset_used = None
    if fmt == "onnx":
        opset_used = DEFAULT_OPSET if opset is None else opset
        if isinstance(opset_used, bool) or not isinstance(opset_used, int):
            raise PackageError(f"opset must be an integer, got {opset_used!r}")
        if not MIN_OPSET <= opset_used <= MAX_OPSET:
            raise PackageError(
                f"ONNX opset {opset_used} is not supported; use {MIN_OPSET}-{MAX_OPSET} "
                f"(default {DEFAULT_OPSET})"
            )
    extras = _check_extra_files(extra_files or {}, MODEL_FILES[fmt])
    out = Path(out_dir)
    _refuse_non_empty(out)

    model, spec, _ = load_model(checkpoint)
    channels, height, width = model.geometry.shape  # the tiled image
    graph = prepare_for_export(model)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        model_path = tmp / MODEL_FILES[fmt]
        example = _example_inputs(TRACE_BATCH, channels, height, width, seed=0)
        if fmt == "onnx":
            assert opset_used is not None
            _export_onnx(graph, example, model_path, opset_used)
        else:
            _export_torchscript(graph, example, model_path)
        _self_check(graph, fmt, model_path, _example_inputs(CHECK_BATCH, channels, height, width))

        extra_sha: dict[str, str] = {}
        for name, text in extras.items():
            (tmp / name).write_text(text, encoding="utf-8")
            extra_sha[name] = sha256_file(tmp / name)
        manifest = _manifest(
            model,
            spec,
            fmt=fmt,
            model_sha256=sha256_file(model_path),
            threshold=threshold,
            checkpoint=Path(checkpoint),
            opset=opset_used,
            extra_sha=extra_sha,
        )
        atomic_write_json(tmp / MANIFEST_NAME, manifest.to_json())
        for path in tmp.iterdir():
            _fsync_file(path)
        os.chmod(tmp, 0o777 & ~_umask())
        fsync_dir(tmp)
        _install(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(out.parent)
    log.info("exported %s package %s (%s)", fmt, out, manifest.source.backbone)
    return Package(out, manifest)


def _check_extra_files(extra: Mapping[str, str], model_file: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, text in extra.items():
        if not isinstance(name, str) or not is_plain_name(name):
            raise PackageError(f"extra file name {name!r} must be a plain file name (no '/', '.')")
        if name in (MANIFEST_NAME, model_file):
            raise PackageError(f"extra file name {name!r} is reserved for the package itself")
        if not isinstance(text, str):
            raise PackageError(f"extra file {name!r} must be text, got {type(text).__name__}")
        out[name] = text
    return out


def _refuse_non_empty(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise PackageError(f"{out} exists and is not a directory; choose a new package directory")
    if out.is_dir() and any(out.iterdir()):
        raise PackageError(
            f"{out} exists and is not empty; choose a new package directory or remove it"
        )


def _install(tmp: Path, out: Path) -> None:
    """Rename the finished package onto ``out`` (absent or an empty directory)."""
    try:
        os.replace(tmp, out)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise PackageError(
                f"{out} was filled while the package was built; choose a new package directory"
            ) from exc
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _example_inputs(
    batch: int, channels: int, height: int, width: int, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Golden and a slightly shifted, noisy test (registration sees a real offset)."""
    gen = torch.Generator().manual_seed(seed)
    golden = torch.rand((batch, channels, height, width), generator=gen)
    test = torch.roll(golden, shifts=(1, -1), dims=(2, 3))
    test = (test + 0.05 * torch.randn(test.shape, generator=gen)).clamp_(0, 1)
    return golden, test


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Hide the exporters' deprecation and tracer notes (logged at debug level)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        log.debug("export: %s: %s", w.category.__name__, str(w.message).splitlines()[0])


def _export_onnx(
    graph: ScoreGraph, example: tuple[torch.Tensor, torch.Tensor], path: Path, opset: int
) -> None:
    import onnx

    batch = {0: "batch"}
    with _quiet_export(), torch.no_grad():
        torch.onnx.export(
            graph,
            example,
            str(path),
            dynamo=False,
            export_params=True,
            opset_version=opset,
            do_constant_folding=True,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAMES[0]: batch, INPUT_NAMES[1]: batch, OUTPUT_NAME: batch},
        )
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:  # pragma: no cover - an exporter bug
        first = str(exc).strip().splitlines()[0]
        raise InfrastructureError(f"the exported ONNX graph is invalid: {first}") from exc


def _export_torchscript(
    graph: ScoreGraph, example: tuple[torch.Tensor, torch.Tensor], path: Path
) -> None:
    with _quiet_export(), torch.no_grad():
        traced = torch.jit.trace(graph, example)
        traced = torch.jit.freeze(traced.eval())
        torch.jit.save(traced, str(path))


def _self_check(
    graph: ScoreGraph,
    fmt: ModelFormat,
    path: Path,
    example: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """The saved graph, loaded back, scores a batch of another size like the model."""
    golden, test = example
    with torch.no_grad():
        want = graph(golden, test).numpy()
        if fmt == "onnx":
            feeds = {INPUT_NAMES[0]: golden.numpy(), INPUT_NAMES[1]: test.numpy()}
            got = np.asarray(onnx_session(path).run([OUTPUT_NAME], feeds)[0])
        else:
            got = load_torchscript(path)(golden, test).numpy()
    if got.shape != want.shape or not np.allclose(got, want, atol=CHECK_TOLERANCE, rtol=0):
        diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("nan")
        raise InfrastructureError(
            f"the exported {fmt} graph disagrees with the checkpoint model (shape "
            f"{got.shape} vs {want.shape}, max difference {diff:.3g}); this is an exporter bug"
        )


def preprocessing_of(spec: Spec) -> Preprocessing:
    """What a model trained with ``spec`` expects of its inputs (``package.json``'s
    ``preprocessing``; also what an inference spec and a model card state)."""
    cfg = spec.dataset.classify
    geometry = spec.geometry(model_channels(spec))
    colour = (
        "RGB (PIL Image.convert('RGB'))"
        if geometry.channels == 3
        else "greyscale (PIL Image.convert('L'))"
    )
    return Preprocessing(
        image_width=cfg.image_width,
        image_height=cfg.image_height,
        lights=list(geometry.lights),
        ext=geometry.ext,
        registration=Registration(max_shift=int(spec.model.classify.align_max_shift)),
        normalisation=_normalisation(spec, geometry.channels),
        channels_per_light=geometry.channels,
        concat_type="linear" if geometry.columns == 1 else "grid",
        tiles_x=geometry.columns,
        colour=f"{colour}; then {_tiling(geometry)}",
    )


def _tiling(geometry: InputGeometry) -> str:
    c, h, w = geometry.shape
    if geometry.num_tiles == 1:
        return f"one light, a {c}x{h}x{w} image"
    order = ", ".join(geometry.lights)
    if geometry.columns == 1:
        how = "stacked top to bottom (concat_type linear)"
    else:
        how = (
            f"tiled row-major into {geometry.columns} across x {geometry.rows} down "
            "(concat_type grid)"
        )
    return f"the lights ({order}) {how} into one {c}x{h}x{w} image"


def geometry_of_manifest(manifest: PackageManifest, where: str = MANIFEST_NAME) -> InputGeometry:
    """The :class:`InputGeometry` a package's graph takes (see :attr:`Package.geometry`).

    Raises:
        PackageError: the ``golden`` input's shape is not ``[-1, C, rows*h, columns*w]``
            for the manifest's tile size, with ``rows*columns`` lights.
    """
    pre = manifest.preprocessing
    shape = manifest.inputs[0].shape
    w, h = pre.image_width, pre.image_height
    n = len(pre.lights)
    ok = len(shape) == 4 and shape[1] == pre.channels_per_light in (1, 3)
    rows, columns = (shape[2] // h, shape[3] // w) if ok else (0, 0)
    if not ok or shape[2] % h or shape[3] % w or rows * columns != n:
        raise PackageError(
            f"{where}: input shape {shape} is not {n} light tile(s) of {w}x{h} with "
            f"{pre.channels_per_light} channel(s); the package is inconsistent, export it again"
        )
    return InputGeometry(
        lights=tuple(pre.lights),
        ext=pre.ext,
        channels=pre.channels_per_light,
        tile_width=w,
        tile_height=h,
        rows=rows,
        columns=columns,
    )


def _normalisation(spec: Spec, channels: int) -> Normalisation:
    backbone = spec.model.backbone.type
    aug = spec.dataset.classify.augmentation_config
    mean, std = input_normalisation(
        backbone, channels, tuple(aug.rgb_input_mean), tuple(aug.rgb_input_std)
    )
    if backbone == "cnn_small":
        if channels == 1:
            method = f"(x - {mean[0]}) / {std[0]} (greyscale, cnn_small)"
        else:
            method = "(x - mean) / std per RGB channel (rgb_input_mean/std, cnn_small)"
        return Normalisation(mean=list(mean), std=list(std), method=method)
    if backbone == "efficientnet_lite0":
        return Normalisation(
            mean=list(mean),
            std=list(std),
            method=(
                "greyscale repeated to RGB; then (x - mean) / std per RGB channel "
                "(rgb_input_mean/std, ImageNet's by default; efficientnet_lite0)"
            ),
        )
    raise InfrastructureError(  # pragma: no cover - a new backbone must say how it normalises
        f"no normalisation description for backbone {backbone!r}"
    )


def _versions(fmt: ModelFormat) -> dict[str, str]:
    out = {
        "automl_deft": automl_deft.__version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
    }
    if fmt == "onnx":
        import onnx
        import onnxruntime

        out["onnx"] = str(onnx.__version__)
        out["onnxruntime"] = str(onnxruntime.__version__)
    return out


def _manifest(
    model: ChangeNetLite,
    spec: Spec,
    *,
    fmt: ModelFormat,
    model_sha256: str,
    threshold: float,
    checkpoint: Path,
    opset: int | None,
    extra_sha: dict[str, str],
) -> PackageManifest:
    preprocessing = preprocessing_of(spec)
    geometry = model.geometry
    image = [-1, *geometry.shape]
    lights = _tiling(geometry)
    return PackageManifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        model_format=fmt,
        model_file=MODEL_FILES[fmt],
        model_sha256=model_sha256,
        threshold=threshold,
        inputs=[
            TensorInfo(
                "golden",
                "float32",
                image,
                f"the golden (reference) image: {lights}; uint8 / 255",
            ),
            TensorInfo(
                "test",
                "float32",
                image,
                f"the image under test, laid out as golden: {lights}; uint8 / 255",
            ),
        ],
        outputs=[
            TensorInfo(
                OUTPUT_NAME,
                "float32",
                [-1],
                "defect probability (softmax of the two logits, index 1)",
            )
        ],
        preprocessing=preprocessing,
        source=SourceInfo(
            checkpoint_sha256=sha256_file(checkpoint),
            backbone=str(model.arch["backbone"]),
            arch=dict(model.arch),
            checkpoint_name=checkpoint.name,
        ),
        versions=_versions(fmt),
        opset=opset,
        extra_files=extra_sha,
    )


# --- load -----------------------------------------------------------------------------------


def load_package(path: str | os.PathLike[str]) -> Package:
    """Read and verify the package at ``path`` (its directory or its ``package.json``).

    Raises:
        PackageError: missing directory, manifest or model file; invalid JSON; a
            manifest that fails the strict checks; a model file whose SHA-256
            differs from ``model_sha256`` (modified or truncated).
    """
    p = Path(path)
    root, manifest_path = (p.parent, p) if p.name == MANIFEST_NAME else (p, p / MANIFEST_NAME)
    if not root.is_dir():
        raise PackageError(f"model package not found: {root}; export one first or fix the path")
    if not manifest_path.is_file():
        raise PackageError(
            f"{root} is not a model package (no {MANIFEST_NAME}); pass a directory written "
            "by export_package"
        )
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PackageError(f"cannot read {manifest_path} ({type(exc).__name__})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PackageError(
            f"{manifest_path} is not valid JSON ({exc.msg}, line {exc.lineno}); "
            "the package is corrupt, export it again"
        ) from exc
    manifest = PackageManifest.from_json(data, str(manifest_path))
    model_path = root / manifest.model_file
    if not model_path.is_file():
        raise PackageError(f"{model_path} is missing; the package is incomplete, export it again")
    actual = sha256_file(model_path)
    if actual != manifest.model_sha256:
        raise PackageError(
            f"{model_path} does not match {MANIFEST_NAME} (sha256 {actual[:12]}…, expected "
            f"{manifest.model_sha256[:12]}…); the package was modified or is corrupt, "
            "export it again"
        )
    return Package(root, manifest)
