"""``procedural-pcb``: paint a defect of the weak label onto a clean training golden.

For each pair: take a PASS row of the training set (from the weak row's board
family :data:`~automl_deft.deft.sdg.base.TARGET_SHARE` of the time), read its
golden image, make a tested image with benign nuisance
(:func:`~automl_deft.synth.render.apply_nuisance`), and paint the defect with
:func:`~automl_deft.synth.defects.paint_defect_on_image`. The weak row's
``severity`` and contrast band (low or full, when its ``contrast`` is known) set
the defect's size and contrast; without them, low and medium severities and low
contrasts are favoured, since those are the misses RCA tends to find.

Painting works on single-channel copper images, so the backend paints the six
:data:`~automl_deft.synth.defects.DEFECT_TYPES` for single-light greyscale
workspaces only. ``PASS`` requests (``sdg.hard_negatives``, the default) get benign
variations of clean training pairs, checked to stay PASS
(:mod:`~automl_deft.deft.sdg.benign`), in any workspace: several lights, greyscale
or colour. In a colour workspace (RGB training images, or
``dataset.classify.color_mode: rgb``) it makes PASS pairs only (grey defect pairs in
a colour training set would teach the model that "grey" means "defect"); with hard
negatives off it is refused outright with one line (:meth:`ProceduralPCB.refusal`,
raised as a :class:`~automl_deft.errors.StageError`). ``cutpaste`` paints colour
defects. It takes no options.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from automl_deft.deft.sdg.base import (
    PairWriter,
    SDGBackend,
    SDGContext,
    SDGRequest,
    check_options,
    clean_sources,
    object_name,
    pair_rng,
    pick_source,
    read_image,
    register_sdg_backend,
    row_files,
    warn_short,
    workspace_channels,
)
from automl_deft.deft.sdg.benign import HardNegatives
from automl_deft.errors import StageError
from automl_deft.synth.defects import (
    DEFECT_TYPES,
    FULL_CONTRAST,
    SEVERITIES,
    DefectSiteError,
    paint_defect_on_image,
    sample_contrast,
)
from automl_deft.synth.render import apply_nuisance
from automl_deft.workspace import PASS_LABEL

DEFAULT_SEVERITIES: tuple[str, ...] = ("low", "medium")
"""Drawn evenly when the weak row has no usable ``severity``."""
LOW_CONTRAST_SHARE = 0.5
"""Share of low-contrast defects when the weak row has no usable ``contrast``."""
MAX_SOURCE_TRIES = 8
"""Clean rows tried for one pair before it is given up (no site for the defect)."""


@register_sdg_backend
class ProceduralPCB(SDGBackend):
    """Paints synthetic defects onto clean training goldens (single-light copper images)."""

    name = "procedural-pcb"

    def refusal(self, ctx: SDGContext) -> str | None:
        """One line when the workspace is colour and hard negatives are off (see the
        module docstring), else None."""
        if workspace_channels(ctx) == 1 or ctx.hard_negatives:
            return None
        return (
            f"the {self.name} SDG backend paints greyscale images only and this workspace is "
            f"colour ({self._colour_why(ctx)}); set deft.sdg.backend: cutpaste, which pastes "
            "real training defects in colour under every light"
        )

    @staticmethod
    def _colour_why(ctx: SDGContext) -> str:
        if ctx.color_mode == "rgb":
            return "dataset.classify.color_mode is 'rgb'"
        return "its training images are RGB"

    def supported_labels(self, ctx: SDGContext) -> frozenset[str] | None:
        """The six painted defect types on single-light greyscale images, and PASS with
        ``ctx.hard_negatives`` (any lights, greyscale or colour).

        Raises:
            StageError: a colour workspace without hard negatives (:meth:`refusal`).
        """
        self._refuse(ctx)
        negatives = frozenset({PASS_LABEL}) if ctx.hard_negatives else frozenset()
        if workspace_channels(ctx) != 1 or len(ctx.naming.lights) != 1:
            return negatives
        return frozenset(DEFECT_TYPES) | negatives

    def unsupported_reason(self, label: str, ctx: SDGContext) -> str:
        if label == PASS_LABEL:
            return super().unsupported_reason(label, ctx)
        if workspace_channels(ctx) != 1:
            return (
                f"{self.name} paints greyscale defects only and this workspace is colour "
                f"({self._colour_why(ctx)}); deft.sdg.backend: cutpaste makes colour defects"
            )
        if len(ctx.naming.lights) != 1:
            return f"{self.name} paints single-light images only; cutpaste works under every light"
        return f"not a painted type (painted: {', '.join(DEFECT_TYPES)}); mine it or use cutpaste"

    def generate(self, requests: Sequence[SDGRequest], ctx: SDGContext) -> pd.DataFrame:
        """Paint ``count`` pairs per request, or make PASS pairs; see the module docstring.

        Raises:
            StageError: ``sdg.options`` is not empty, or a colour workspace without hard
                negatives (:meth:`refusal`).
        """
        check_options(self.name, ctx.options, ())
        self._refuse(ctx)
        writer = PairWriter(ctx, self.name)
        supported = self.supported_labels(ctx) or frozenset()
        sources = clean_sources(ctx)
        negatives = HardNegatives(ctx, writer, self.name)
        cache: dict[str, np.ndarray] = {}
        for request in requests:
            if request.label == PASS_LABEL and PASS_LABEL in supported:
                negatives.generate(request, ctx.pass_check_max_blob_px)
                continue
            indices = writer.claim(request.label, request.count, request.first_index)
            if request.label not in supported:
                warn_short(self.name, request, 0, self.unsupported_reason(request.label, ctx))
                continue
            if sources.empty:
                warn_short(self.name, request, 0, "no PASS rows in the training set")
                continue
            made = 0
            for index in indices:
                made += self._one(request, ctx, writer, sources, index, cache)
            warn_short(self.name, request, made, "no defect site on the clean rows tried")
        self.pass_checks = negatives.counts()
        return writer.frame()

    def _refuse(self, ctx: SDGContext) -> None:
        why = self.refusal(ctx)
        if why is not None:
            raise StageError(why)

    def _one(
        self,
        request: SDGRequest,
        ctx: SDGContext,
        writer: PairWriter,
        sources: pd.DataFrame,
        index: int,
        cache: dict[str, np.ndarray],
    ) -> int:
        """Paint pair ``index``; 1 when written, 0 when no clean row gave a site."""
        rng = pair_rng(ctx, self.name, request.label, index)
        weak = _weak_row(request, rng)
        severity, contrast = _severity_and_contrast(weak, rng)
        boardname = weak.get("boardname", "")
        for _ in range(MAX_SOURCE_TRIES):
            src = pick_source(sources, boardname, rng)
            path = row_files(ctx, src, "golden_path")[0]
            key = str(path)
            if key not in cache:
                cache[key] = read_image(path, gray=True)
            golden = cache[key]
            test = apply_nuisance(golden, rng)
            try:
                painted, _ = paint_defect_on_image(
                    test, request.label, severity, rng, contrast=contrast, reference=golden
                )
            except DefectSiteError:
                continue
            writer.write(
                object_name(ctx, request.label, index),
                request.label,
                [painted],
                [golden],
                boardname=str(src.get("boardname", "")),
                source=str(src["object_name"]),
            )
            return 1
        return 0


def _weak_row(request: SDGRequest, rng: np.random.Generator) -> dict[str, str]:
    """The metadata of one weak row, drawn at random (empty when there are none)."""
    if request.weak_rows.empty:
        return {}
    row = request.weak_rows.iloc[int(rng.integers(len(request.weak_rows)))]
    return {k: str(row[k]).strip() for k in ("boardname", "severity", "contrast") if k in row}


def _severity_and_contrast(weak: dict[str, str], rng: np.random.Generator) -> tuple[str, float]:
    """The weak row's severity and contrast band when known, else the defaults above."""
    severity = weak.get("severity", "").lower()
    if severity not in SEVERITIES:
        severity = DEFAULT_SEVERITIES[int(rng.integers(len(DEFAULT_SEVERITIES)))]
    try:
        seen = float(weak.get("contrast", ""))
    except ValueError:
        seen = float("nan")
    low = seen < FULL_CONTRAST[0] if 0.0 < seen <= 1.0 else rng.random() < LOW_CONTRAST_SHARE
    return severity, sample_contrast(rng, low=bool(low))
