"""``cutpaste``: move real defects of the training set onto other clean training boards.

For each pair:

1. Take a defective training row of the requested label. Its defect is where
   its tested image differs from its golden: the golden is lined up with the
   tested image and differenced as
   :func:`~automl_deft.deft.sdg.difference.change_mask` does (best shift, the
   largest difference over lights and colour channels thresholded at a fraction
   of the golden's dynamic range), and one-pixel-thin
   differences are opened away: on a clean board those are edge jitter and
   etching, and a defect that thin cannot be told from them, so its row is not
   used. The largest blob left (with the thin pixels touching it), grown by
   :data:`PASTE_MARGIN` pixels, is the defect mask.
2. Take a PASS training row (from the weak row's ``boardname``
   :data:`~automl_deft.deft.sdg.base.TARGET_SHARE` of the time) and find where
   its golden looks like the source golden around the defect (RMS difference
   within :data:`MATCH_TOLERANCE` of the dynamic range; the same position is
   one candidate, any matching one is drawn at random).
3. Copy the source tested pixels under the mask onto the PASS row's tested
   image there (accounting for each pair's own misregistration). The PASS
   row's golden is the new pair's golden, copied byte for byte.

Only the mask is pasted, not its bounding box, so no rectangular seam gives the
defect away. Pixels come from training rows only; weak (KPI) rows steer the
choice of board and nothing else. Any number of lights and grayscale or colour
images work: one mask, the same patch position in every light. Rows made by an
earlier SDG run are not used as sources. No options.

``PASS`` requests (``sdg.hard_negatives``) get benign variations of clean training
pairs, checked to stay PASS (:mod:`~automl_deft.deft.sdg.benign`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage, signal

from automl_deft.deft.sdg.base import (
    SOURCE_SEPARATOR,
    PairWriter,
    SDGBackend,
    SDGContext,
    SDGRequest,
    check_options,
    clean_sources,
    is_generated,
    object_name,
    pair_rng,
    pick_source,
    read_image,
    register_sdg_backend,
    row_files,
    warn_short,
    weak_boardnames,
)
from automl_deft.deft.sdg.benign import HardNegatives
from automl_deft.deft.sdg.difference import (
    best_shift,
    change_mask,
    difference_map,
    dynamic_range,
    gray,
)
from automl_deft.workspace import PASS_LABEL, is_pass, normalize_label

MIN_DEFECT_PIXELS = 3
"""Fewest pixels over the threshold for a defect (source) or a visible paste (result)."""
PASTE_MARGIN = 2
"""The defect mask is grown by this many pixels, so its soft edge moves along."""
MATCH_TOLERANCE = 0.25
"""Largest RMS difference, as a fraction of the dynamic range, between the source golden
around the defect and the target golden where it is pasted."""
MAX_TRIES = 8
"""Source/target draws for one pair before it is given up."""


@dataclass(frozen=True)
class _Defect:
    """A defect cut out of one training pair, in the coordinates of its tested image."""

    y0: int
    x0: int
    mask: np.ndarray
    """Pixels to paste, box-sized."""
    patches: list[np.ndarray]
    """Tested pixels of the box, one per light."""
    context: np.ndarray
    """The golden (grayscale, float) under the box, lined up with the tested image."""
    threshold: float


@register_sdg_backend
class CutPaste(SDGBackend):
    """Pastes real training defects onto other clean training pairs (any modality)."""

    name = "cutpaste"

    def supported_labels(self, ctx: SDGContext) -> frozenset[str] | None:
        """The defect labels of the training set, and PASS with ``ctx.hard_negatives``
        (none when it has no clean row to paste onto)."""
        frame = ctx.train_frame
        if clean_sources(ctx).empty:
            return frozenset()
        labels = frame["label"][~is_generated(frame).to_numpy()]
        defects = frozenset(normalize_label(v) for v in labels if not is_pass(v))
        return defects | {PASS_LABEL} if ctx.hard_negatives else defects

    def unsupported_reason(self, label: str, ctx: SDGContext) -> str:
        if label != PASS_LABEL and not clean_sources(ctx).empty:
            return "no training defect of this label to paste (add some, or mine the pool)"
        if clean_sources(ctx).empty:
            return "the training set has no clean PASS row to paste onto"
        return super().unsupported_reason(label, ctx)

    def generate(self, requests: Sequence[SDGRequest], ctx: SDGContext) -> pd.DataFrame:
        """Paste ``count`` defects per request; see the module docstring.

        Raises:
            StageError: ``sdg.options`` is not empty.
        """
        check_options(self.name, ctx.options, ())
        run = _Run(ctx, PairWriter(ctx, self.name), clean_sources(ctx))
        frame = ctx.train_frame
        labels = frame["label"].map(normalize_label)
        usable = ~is_generated(frame) & ~frame["label"].map(is_pass)
        negatives = HardNegatives(ctx, run.writer, self.name)
        for request in requests:
            if request.label == PASS_LABEL:
                if ctx.hard_negatives:
                    negatives.generate(request, ctx.pass_check_max_blob_px)
                continue
            indices = run.writer.claim(request.label, request.count, request.first_index)
            sources = frame[(usable & (labels == request.label)).to_numpy()]
            if sources.empty or run.clean.empty:
                what = "defect" if sources.empty else "PASS"
                warn_short(self.name, request, 0, f"no {what} rows of it in the training set")
                continue
            boards = weak_boardnames(request)
            made = 0
            for index in indices:
                rng = pair_rng(ctx, self.name, request.label, index)
                board = boards[int(rng.integers(len(boards)))] if boards else ""
                made += run.pair(request.label, index, sources, board, rng)
            warn_short(self.name, request, made, "no visible defect or matching board found")
        self.pass_checks = negatives.counts()
        return run.writer.frame()


class _Run:
    """One :meth:`CutPaste.generate` call: the writer and caches of images and defects."""

    def __init__(self, ctx: SDGContext, writer: PairWriter, clean: pd.DataFrame) -> None:
        self.ctx, self.writer, self.clean = ctx, writer, clean
        self.images: dict[Path, np.ndarray] = {}
        self.defects: dict[str, _Defect | None] = {}

    def read(self, paths: list[Path]) -> list[np.ndarray]:
        for p in paths:
            if p not in self.images:
                self.images[p] = read_image(p)
        return [self.images[p] for p in paths]

    def defect(self, row: pd.Series) -> _Defect | None:
        key = f"{row['input_path']}\x1f{row['object_name']}"
        if key not in self.defects:
            tests = self.read(row_files(self.ctx, row, "input_path"))
            goldens = self.read(row_files(self.ctx, row, "golden_path"))
            self.defects[key] = find_defect(tests, goldens)
        return self.defects[key]

    def pair(
        self,
        label: str,
        index: int,
        sources: pd.DataFrame,
        board: str,
        rng: np.random.Generator,
    ) -> int:
        """Make pair ``index``; 1 when written, 0 when every draw failed."""
        for _ in range(MAX_TRIES):
            src = sources.iloc[int(rng.integers(len(sources)))]
            found = self.defect(src)
            if found is None:
                continue
            target = pick_source(self.clean, board, rng)
            golden_files = row_files(self.ctx, target, "golden_path")
            input_files = row_files(self.ctx, target, "input_path")
            pasted = paste_defect(found, self.read(input_files), self.read(golden_files), rng)
            if pasted is None:
                continue
            self.writer.write(
                object_name(self.ctx, label, index),
                label,
                pasted,
                golden_files,
                boardname=str(target.get("boardname", "")),
                source=f"{src['object_name']}{SOURCE_SEPARATOR}{target['object_name']}",
                inputs_like=input_files,
            )
            return 1
        return 0


def find_defect(tests: list[np.ndarray], goldens: list[np.ndarray]) -> _Defect | None:
    """The defect of a training pair (see the module docstring), or None when none shows."""
    if any(t.shape != g.shape for t, g in zip(tests, goldens, strict=True)):
        return None
    diff, threshold, (dy, dx) = difference_map(tests, goldens, photometric=False)
    blob = change_mask(diff, threshold)
    if blob is None:
        return None
    if np.count_nonzero(blob) < MIN_DEFECT_PIXELS:
        return None
    mask = ndimage.binary_dilation(
        blob, structure=np.ones((3, 3), dtype=bool), iterations=PASTE_MARGIN
    )
    g0 = gray(goldens[0])
    h, w = g0.shape
    ys, xs = np.nonzero(mask)
    # The box must lie inside the tested image and, moved back by the shift, inside the golden.
    y0, y1 = max(int(ys.min()), dy, 0), min(int(ys.max()) + 1, h + dy, h)
    x0, x1 = max(int(xs.min()), dx, 0), min(int(xs.max()) + 1, w + dx, w)
    if y1 - y0 < 2 or x1 - x0 < 2:
        return None
    return _Defect(
        y0=y0,
        x0=x0,
        mask=mask[y0:y1, x0:x1],
        patches=[t[y0:y1, x0:x1] for t in tests],
        context=g0[y0 - dy : y1 - dy, x0 - dx : x1 - dx],
        threshold=threshold,
    )


def paste_defect(
    defect: _Defect,
    tests: list[np.ndarray],
    goldens: list[np.ndarray],
    rng: np.random.Generator,
) -> list[np.ndarray] | None:
    """The tested images of a clean pair with ``defect`` pasted where the boards match.

    None when the pair's golden has no place that looks like the defect's
    surroundings, or the paste would not show.
    """
    if len(tests) != len(defect.patches):
        return None
    if any(t.shape[:2] != g.shape[:2] for t, g in zip(tests, goldens, strict=True)):
        return None
    g0 = gray(goldens[0])
    dy, dx = best_shift(g0, gray(tests[0]))
    bh, bw = defect.context.shape
    h, w = g0.shape
    if bh > h or bw > w:
        return None
    rms = _match_rms(g0, defect.context)
    ok = rms <= MATCH_TOLERANCE * max(dynamic_range(g0), dynamic_range(defect.context), 1.0)
    # Golden position p lands on p + shift in the tested image: keep it inside.
    ys, xs = np.nonzero(ok)
    inside = (ys + dy >= 0) & (ys + dy + bh <= h) & (xs + dx >= 0) & (xs + dx + bw <= w)
    ys, xs = ys[inside], xs[inside]
    if not len(ys):
        return None
    i = int(rng.integers(len(ys)))
    py, px = int(ys[i]) + dy, int(xs[i]) + dx
    out = []
    visible = np.zeros((bh, bw), dtype=bool)
    for test, patch in zip(tests, defect.patches, strict=True):
        new = test.copy()
        box = new[py : py + bh, px : px + bw]
        box[defect.mask] = _like(patch, test)[defect.mask]
        d = np.abs(box.astype(np.float32) - test[py : py + bh, px : px + bw].astype(np.float32))
        visible |= (d.max(axis=2) if d.ndim == 3 else d) > defect.threshold
        out.append(new)
    if np.count_nonzero(visible) < MIN_DEFECT_PIXELS:
        return None
    return out


def _like(patch: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``patch`` with as many channels as ``target``."""
    if patch.ndim == target.ndim:
        return patch
    if patch.ndim == 3:
        return np.rint(patch.mean(axis=2)).astype(patch.dtype)
    return np.repeat(patch[..., None], target.shape[2], axis=2)


def _match_rms(image: np.ndarray, template: np.ndarray) -> np.ndarray:
    """RMS difference of ``template`` against every window of ``image`` (``valid`` positions)."""
    th, tw = template.shape
    img = image.astype(np.float64)
    tpl = template.astype(np.float64)
    cross = signal.correlate(img, tpl, mode="valid")
    sq = np.pad(np.cumsum(np.cumsum(img * img, axis=0), axis=1), ((1, 0), (1, 0)))
    win = sq[th:, tw:] - sq[:-th, tw:] - sq[th:, :-tw] + sq[:-th, :-tw]
    ssd = np.maximum(win - 2.0 * cross + float((tpl * tpl).sum()), 0.0)
    return np.sqrt(ssd / tpl.size)
