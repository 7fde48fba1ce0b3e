"""The SDG backend interface, its registry, the budget split, and what backends share.

A backend turns :class:`SDGRequest` s (a defect label, how many pairs, and the
RCA weak rows of that label as *metadata*) into new golden/tested pairs for the
training set. Every backend writes its images the same way (:class:`PairWriter`:
the workspace naming rule, atomic writes, one row per pair with the provenance
columns :data:`SDG_COLUMNS`) and draws its sources the same way
(:func:`clean_sources`, :func:`pick_source`), so the built-ins differ only in how
they make the defective image.

Leakage rule: generated *pixels* come from the training set only. Weak rows are
KPI-set rows; a backend may read their metadata (``boardname``, ``severity``,
``contrast``) to decide *what* to generate, never their images.
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import pandas as pd
from PIL import Image, JpegImagePlugin

from automl_deft.errors import SpecError, StageError, UserError
from automl_deft.io import atomic_copy, atomic_path
from automl_deft.workspace import (
    PASS_LABEL,
    REQUIRED_COLUMNS,
    ImageNaming,
    is_pass,
    relative_image_dir,
    resolve_image_path,
)

log = logging.getLogger(__name__)

SDG_COLUMNS: tuple[str, ...] = ("sdg_backend", "sdg_source", "sdg_check")
"""Provenance columns on generated rows: the backend's name, the source rows' object names,
and for a PASS pair the independent PASS check and the variation applied."""
ROW_COLUMNS: tuple[str, ...] = (*REQUIRED_COLUMNS, "boardname", *SDG_COLUMNS)
"""Columns of the frame :meth:`SDGBackend.generate` returns, in order."""
OBJECT_PREFIX = "sdg_it"
"""Generated object names start with this (``sdg_it{iteration}_{label}_{index:04d}``)."""
SOURCE_SEPARATOR = ";"
"""Joins the object names in ``sdg_source`` when a pair has several source rows."""
TARGET_SHARE = 0.8
"""How often a source is drawn from the rows whose ``boardname`` matches the weak row's
(when there are any); the rest come from every clean row, so the new data stays varied."""


@dataclass(frozen=True)
class SDGContext:
    """Everything a backend needs besides the requests.

    Attributes:
        images_dir: the workspace images root; every CSV path is relative to it.
        naming: lights and extension of image files (from the training spec).
        image_size: ``(width, height)`` the model reads; generated images are
            written at the size of their source images.
        train_frame: the current training rows (dataset CSV schema, all str):
            the source of clean PASS goldens and of real defective pairs.
        out_images_dir: generated images go under here.
        work_dir: request/response files and logs go here.
        seed: with ``iteration``, fixes every random choice.
        iteration: the DEFT iteration (part of every object name).
        options: backend settings from the config (``sdg.options``).
        color_mode: the training spec's ``dataset.classify.color_mode``: ``rgb`` or
            ``grey`` as the model reads the images, ``auto`` decided from the training
            images (:func:`workspace_channels`).
        hard_negatives: ``sdg.hard_negatives``: PASS is a target (benign variations of
            clean pairs, :mod:`~automl_deft.deft.sdg.benign`).
        pass_check_max_blob_px: ``sdg.pass_check_max_blob_px``, the independent PASS
            check's limit (:func:`~automl_deft.deft.sdg.difference.pass_check`).
    """

    images_dir: Path
    naming: ImageNaming
    image_size: tuple[int, int]
    train_frame: pd.DataFrame
    out_images_dir: Path
    work_dir: Path
    seed: int = 0
    iteration: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)
    color_mode: str = "auto"
    hard_negatives: bool = True
    pass_check_max_blob_px: int = 4


@dataclass(frozen=True)
class SDGRequest:
    """Generate ``count`` pairs of one label.

    Attributes:
        label: normalised defect label (lower case), e.g. ``"open"``.
        count: how many pairs to generate.
        weak_rows: the RCA weak rows of this label from the KPI set (dataset
            columns + ``siamese_score`` + ``weakness``). Only their metadata (and, for
            PASS, nuisance numbers measured on them) may steer generation; their pixels
            must never reach training data.
    """

    label: str
    count: int
    weak_rows: pd.DataFrame
    first_index: int = 0
    """Number the pairs from here (a top-up request continues an earlier one's numbering)."""


class SDGBackend(ABC):
    """Makes new defective pairs for the labels the model is weak on."""

    name: ClassVar[str]

    @abstractmethod
    def supported_labels(self, ctx: SDGContext) -> frozenset[str] | None:
        """The normalised labels this backend can generate in ``ctx``; None means any label."""

    def refusal(self, ctx: SDGContext) -> str | None:
        """Why this backend can make nothing at all for ``ctx``'s workspace, as one line
        that names the fix (e.g. greyscale-only painting asked for a colour workspace),
        or None (the default) when it can work there.

        A loop can ask before its first stage; a backend that refuses also raises it
        as a :class:`~automl_deft.errors.StageError` from :meth:`supported_labels` and
        :meth:`generate`, so it never writes images that do not fit the workspace.
        """
        del ctx
        return None

    def unsupported_reason(self, label: str, ctx: SDGContext) -> str:
        """Why this backend makes no pair of ``label`` in ``ctx`` (for the stage line,
        the state and the report); override to name the fix."""
        if label == PASS_LABEL and not ctx.hard_negatives:
            return "sdg.hard_negatives is false"
        return f"the {self.name} backend does not make {label!r} pairs here"

    pass_checks: dict[str, int]
    """After :meth:`generate`: the independent PASS check's counts of generated PASS
    pairs (``checked``, ``refused``; a refused pair was drawn again), when it ran any."""

    @abstractmethod
    def generate(self, requests: Sequence[SDGRequest], ctx: SDGContext) -> pd.DataFrame:
        """Write the pairs and return one row per pair (columns :data:`ROW_COLUMNS`).

        A request that cannot be met in full (too few sources) yields fewer rows
        and a logged warning.

        Raises:
            StageError: bad options or a failed generator; the message says what to fix.
        """


_B = TypeVar("_B", bound=type[SDGBackend])

SDG_BACKENDS: dict[str, type[SDGBackend]] = {}
"""Backend name → class; filled by :func:`register_sdg_backend`."""


def register_sdg_backend(cls: _B) -> _B:
    """Class decorator: make a backend available to :func:`get_sdg_backend` by its ``name``.

    Raises:
        UserError: another class already holds the name.
    """
    name = getattr(cls, "name", "")
    if not name:
        raise UserError(f"{cls.__qualname__} has no name; set the class attribute 'name'")
    other = SDG_BACKENDS.get(name)
    if other is not None and other is not cls:
        raise UserError(f"SDG backend name {name!r} is taken by {other.__qualname__}")
    SDG_BACKENDS[name] = cls
    return cls


def get_sdg_backend(name: str) -> SDGBackend:
    """A new instance of the backend registered as ``name``.

    Raises:
        SpecError: unknown name (the message lists the registered ones).
    """
    try:
        cls = SDG_BACKENDS[name]
    except KeyError:
        raise SpecError(
            f"unknown SDG backend {name!r}; choose one of {', '.join(sorted(SDG_BACKENDS))}"
        ) from None
    return cls()


def allocate_budget(total: int, need: Mapping[str, int]) -> dict[str, int]:
    """Split ``total`` pairs across labels in proportion to ``need`` (largest remainder).

    Labels with no need get 0. Every label with need gets at least one pair while
    ``total`` allows; when it does not, the labels with the most need (then by
    name) get one each. Ties always break by label name, so the split is
    deterministic.

    Args:
        total: pairs to hand out.
        need: per label, how many weak samples asked for it.

    Returns:
        Per label of ``need`` (same order), its share; the shares sum to ``total``
        when any label has need, else they are all 0.

    Raises:
        UserError: ``total`` is negative.
    """
    if total < 0:
        raise UserError(f"SDG budget must be >= 0, got {total}; set sdg.num_sdg to 0 or more")
    out = dict.fromkeys(need, 0)
    wanted = sorted((lab for lab, n in need.items() if n > 0), key=lambda lab: (-need[lab], lab))
    if not wanted or total == 0:
        return out
    if total <= len(wanted):
        for lab in wanted[:total]:
            out[lab] = 1
        return out
    weight = sum(need[lab] for lab in wanted)
    exact = {lab: total * need[lab] / weight for lab in wanted}
    for lab in wanted:
        out[lab] = max(1, int(exact[lab]))
    while sum(out.values()) > total:  # the minimum of one pushed a few labels over
        lab = max(
            (lab for lab in wanted if out[lab] > 1), key=lambda lab: (out[lab] - exact[lab], lab)
        )
        out[lab] -= 1
    by_remainder = sorted(wanted, key=lambda lab: (-(exact[lab] - out[lab]), lab))
    for lab in by_remainder[: total - sum(out.values())]:
        out[lab] += 1
    return out


# -- what the built-in backends share -------------------------------------------------


def check_options(backend: str, options: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """Refuse option keys a backend does not know (a typo would silently do nothing).

    Raises:
        StageError: naming the unknown keys and the known ones.
    """
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        known = ", ".join(allowed) if allowed else "none"
        raise StageError(
            f"unknown sdg.options for the {backend} backend: {', '.join(unknown)}; "
            f"known options: {known}"
        )


def label_slug(label: str) -> str:
    """``label`` lower-cased as a file-name part: ``[a-z0-9-]``, plus a checksum when any
    character had to be replaced (so two labels never share a slug)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", label.lower()).strip("-")
    if slug != label.lower():
        slug = f"{slug or 'label'}-{zlib.crc32(label.encode()):08x}"
    return slug


def object_name(ctx: SDGContext, label: str, index: int) -> str:
    """The object name of generated pair ``index`` of ``label`` (unique within an iteration)."""
    return f"{OBJECT_PREFIX}{ctx.iteration}_{label_slug(label)}_{index:04d}"


def pair_rng(ctx: SDGContext, backend: str, label: str, index: int) -> np.random.Generator:
    """The generator of one pair: fixed by seed, iteration, backend, label and index only,
    so a pair does not change when another request is added or fails."""
    key = [
        ctx.seed & 0xFFFFFFFF,
        ctx.iteration & 0xFFFFFFFF,
        zlib.crc32(backend.encode()),
        zlib.crc32(label.encode()),
        index,
    ]
    return np.random.default_rng(np.random.SeedSequence(key))


def is_generated(frame: pd.DataFrame) -> pd.Series:
    """Rows an earlier SDG run made (by provenance column or object name)."""
    made = frame["object_name"].astype(str).str.startswith(OBJECT_PREFIX)
    if "sdg_backend" in frame.columns:
        made |= frame["sdg_backend"].astype(str).str.strip() != ""
    return made


def clean_sources(ctx: SDGContext) -> pd.DataFrame:
    """The PASS rows of the training set that SDG may build on (generated rows left out)."""
    frame = ctx.train_frame
    keep = frame["label"].map(is_pass) & ~is_generated(frame)
    return frame[keep.to_numpy()].reset_index(drop=True)


def weak_boardnames(request: SDGRequest) -> list[str]:
    """The non-empty ``boardname`` of each weak row, in row order (repeats kept)."""
    if "boardname" not in request.weak_rows.columns:
        return []
    names = request.weak_rows["boardname"].astype(str).str.strip()
    return [n for n in names if n]


def pick_source(rows: pd.DataFrame, boardname: str, rng: np.random.Generator) -> pd.Series:
    """One row of ``rows``: from those of ``boardname`` :data:`TARGET_SHARE` of the time."""
    if boardname and "boardname" in rows.columns:
        same = np.flatnonzero(rows["boardname"].astype(str).to_numpy() == boardname)
        if len(same) and rng.random() < TARGET_SHARE:
            return rows.iloc[int(same[rng.integers(len(same))])]
    return rows.iloc[int(rng.integers(len(rows)))]


def row_files(ctx: SDGContext, row: pd.Series, column: str) -> list[Path]:
    """The files of one row's ``column`` (``input_path`` or ``golden_path``), one per light."""
    return [
        resolve_image_path(ctx.images_dir, row[column], row["object_name"], light, ctx.naming.ext)
        for light in ctx.naming.lights
    ]


def read_image(path: str | os.PathLike[str], *, gray: bool = False) -> np.ndarray:
    """An image as uint8: ``(H, W)`` grayscale, or ``(H, W, 3)`` for colour unless ``gray``."""
    with Image.open(path) as raw:
        colour = not gray and raw.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV")
        im = raw.convert("RGB" if colour else "L")
    return np.asarray(im, dtype=np.uint8).copy()


def workspace_channels(ctx: SDGContext) -> int:
    """3 when the model reads the images as colour, 1 for greyscale: ``ctx.color_mode``
    when it is ``rgb`` or ``grey``, else :func:`~automl_deft.model.data.probe_channels`
    on the training rows (the rule training itself applies).

    Raises:
        WorkspaceError: ``auto`` and a file of the first training row is missing or unreadable.
    """
    from automl_deft.model.data import probe_channels

    if ctx.color_mode in ("rgb", "grey"):
        return 3 if ctx.color_mode == "rgb" else 1
    return probe_channels(ctx.train_frame, ctx.images_dir, ctx.naming)


def write_image(
    path: str | os.PathLike[str], image: np.ndarray, *, like: str | os.PathLike[str] | None = None
) -> None:
    """Encode ``image`` in the format of ``path``'s extension, atomically.

    ``like``: the file ``image`` was made from. When both are JPEG, ``image`` is encoded
    with ``like``'s quantization tables and chroma subsampling, so the pixels nothing
    changed come back within a few grey levels (PIL's default quality would blur the
    whole image, a give-away the pasted defect's golden, copied as it is, lacks).
    """
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"cannot write {path.suffix!r} images; use e.g. '.png' as image_ext")
    params = _jpeg_settings(like, image) if fmt == "JPEG" and like is not None else {}
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format=fmt, **params)


def _jpeg_settings(like: str | os.PathLike[str], image: np.ndarray) -> dict[str, Any]:
    """The save options that re-encode ``image`` as ``like`` was encoded (none when
    ``like`` is not a JPEG file)."""
    with Image.open(like) as raw:
        if not isinstance(raw, JpegImagePlugin.JpegImageFile):
            return {}
        params: dict[str, Any] = {"qtables": raw.quantization}
        sampling = JpegImagePlugin.get_sampling(raw)
    if image.ndim == 3 and sampling != -1:
        params["subsampling"] = sampling
    return params


class PairWriter:
    """Writes generated pairs under ``ctx.out_images_dir/<backend>/`` and collects their rows.

    A row is recorded only after all its files are on disk, so the returned frame
    never points at a missing file.
    """

    def __init__(self, ctx: SDGContext, backend: str) -> None:
        self.ctx = ctx
        self.backend = backend
        self.input_dir = Path(ctx.out_images_dir) / backend / "input"
        self.golden_dir = Path(ctx.out_images_dir) / backend / "golden"
        self.input_rel = relative_image_dir(ctx.images_dir, self.input_dir)
        self.golden_rel = relative_image_dir(ctx.images_dir, self.golden_dir)
        self.rows: list[dict[str, str]] = []
        self._next: dict[str, int] = {}

    def claim(self, label: str, count: int, first: int = 0) -> range:
        """Reserve ``count`` pair indices of ``label`` from ``first`` on (requests of one
        label share a numbering)."""
        start = max(self._next.get(label, 0), first)
        self._next[label] = start + count
        return range(start, start + count)

    def files(self, name: str) -> tuple[list[Path], list[Path]]:
        """Where pair ``name``'s input and golden files go, one per light."""
        naming = self.ctx.naming
        return (
            [
                resolve_image_path(self.ctx.images_dir, self.input_rel, name, light, naming.ext)
                for light in naming.lights
            ],
            [
                resolve_image_path(self.ctx.images_dir, self.golden_rel, name, light, naming.ext)
                for light in naming.lights
            ],
        )

    def write(
        self,
        name: str,
        label: str,
        inputs: Sequence[np.ndarray | Path],
        goldens: Sequence[np.ndarray | Path],
        *,
        boardname: str = "",
        source: str = "",
        inputs_like: Sequence[Path] | None = None,
        check: str = "",
    ) -> dict[str, str]:
        """Write one pair (an array is encoded, a path copied), one image per light; record it.

        ``inputs_like``: per light, the file an input array was made from; it is encoded
        with that file's settings (see :func:`write_image`). ``check``: the ``sdg_check``
        provenance (a PASS pair's independent check).
        """
        input_files, golden_files = self.files(name)
        like: dict[str, Sequence[Path | None]] = {
            "golden": [None] * len(golden_files),
            "input": inputs_like if inputs_like is not None else [None] * len(input_files),
        }
        for side, images, files in (
            ("golden", goldens, golden_files),
            ("input", inputs, input_files),
        ):
            for image, dst, src in zip(images, files, like[side], strict=True):
                if isinstance(image, Path):
                    atomic_copy(image, dst)
                else:
                    write_image(dst, image, like=src)
        row = {
            "input_path": self.input_rel,
            "golden_path": self.golden_rel,
            "label": label,
            "object_name": name,
            "boardname": boardname,
            "sdg_backend": self.backend,
            "sdg_source": source,
            "sdg_check": check,
        }
        self.rows.append(row)
        return row

    def frame(self) -> pd.DataFrame:
        """The rows written so far (columns :data:`ROW_COLUMNS`, all str)."""
        return pd.DataFrame(self.rows, columns=list(ROW_COLUMNS), dtype=str)


def warn_short(backend: str, request: SDGRequest, made: int, why: str) -> None:
    """Log that a request got fewer pairs than it asked for."""
    if made < request.count:
        log.warning(
            "%s: generated %d of %d %r pairs (%s)", backend, made, request.count, request.label, why
        )
