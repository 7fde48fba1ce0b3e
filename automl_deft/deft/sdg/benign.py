"""Hard negatives: benign variations of clean training pairs that look like the false alarms.

FAR at 100% recall is a false-alarm metric: once every defect is caught, what is
left to fix is good boards that look bad. RCA's weak ``PASS`` rows are those
boards. For each requested PASS pair this module

1. *measures* what one weak PASS row shows (:func:`measure`): how far its tested
   image is misregistered from its golden, the exposure (gain and offset per light
   and colour channel, so white balance too), the illumination gradient and the
   sensor noise left after that, and how many one-pixel-thin edge changes
   (etching) and isolated specks it has. These are a dozen numbers; no pixel of a
   weak (KPI) row is copied anywhere — mining reads the same images to embed them;
2. takes a clean PASS pair of the training set (the weak row's ``boardname``
   :data:`~automl_deft.deft.sdg.base.TARGET_SHARE` of the time), measures it the
   same way, and applies to its tested image what the weak row shows *beyond* it
   (:func:`vary`): the weak row's misregistration, its exposure and white balance
   relative to the source's, the extra gradient and noise, and on greyscale bare
   boards over/under-etching and specks when the weak row has more of them — each
   bounded by :data:`BOUNDS`, the nuisance model's limits. A variation the model
   would not see (:meth:`Variation.visible`: a shift alone, which the model registers,
   or an exposure change under 3%) is drawn again within the bounds;
3. checks the result with the independent PASS check
   (:func:`~automl_deft.deft.sdg.difference.pass_check`: the registered,
   photometrically normalised difference from the golden has no blob larger than the
   limit or than the source pair's own) and draws again when it fails.

No defect painter is called. The golden is the source's, copied byte for byte; a
JPEG workspace's tested image is re-encoded with its source's settings, as every
generated image is. The row's ``sdg_check`` provenance records the check and what
was applied. Without readable weak rows a profile is drawn from :data:`BOUNDS`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from automl_deft.deft.sdg.base import (
    PairWriter,
    SDGContext,
    SDGRequest,
    clean_sources,
    object_name,
    pair_rng,
    pick_source,
    read_image,
    row_files,
    warn_short,
)
from automl_deft.deft.sdg.difference import (
    best_shift,
    change_blobs,
    difference_map,
    gray,
    pass_check,
    shift,
    shift_radius,
)
from automl_deft.synth.render import etch_copper
from automl_deft.workspace import PASS_LABEL

log = logging.getLogger(__name__)

MAX_TRIES = 6
"""Weak-row/source draws for one PASS pair before it is given up."""
MAX_PROFILES = 64
"""Weak rows measured per request (drawn evenly); enough to span what they show."""
MIN_GAIN_CHANGE = 0.03
"""Least exposure (or white-balance) change that counts as a variation; below it a pair is
a near duplicate of its source (the hygiene check refuses those)."""
MIN_GRADIENT = 3.0
"""Least illumination gradient (grey levels) that counts as a variation."""
MIN_NOISE = 1.5
"""Least added noise sigma (grey levels) that counts as a variation."""


@dataclass(frozen=True)
class Bounds:
    """The nuisance model's limits: what a good board may show and still be good."""

    gain: tuple[float, float] = (0.75, 1.33)
    """Exposure change relative to the source, per light."""
    white_balance: tuple[float, float] = (0.85, 1.18)
    """Per-channel gain relative to the light's mean gain (colour only)."""
    offset: float = 25.0
    """Grey levels of exposure offset added."""
    gradient: float = 20.0
    """Largest illumination gradient added, grey levels from centre to edge."""
    noise: float = 8.0
    """Largest sensor noise sigma added, grey levels."""
    specks: int = 6
    """Most isolated specks added."""


BOUNDS = Bounds()


@dataclass(frozen=True)
class Profile:
    """What one pair shows against its golden (see :func:`measure`)."""

    shift: tuple[int, int]
    gains: tuple[tuple[float, ...], ...]
    """Per light, per channel: tested ≈ gain × golden + offset."""
    offsets: tuple[tuple[float, ...], ...]
    gradient: tuple[float, ...]
    """Per light: the amplitude of the residual's best plane (centre to edge)."""
    noise: tuple[float, ...]
    """Per light: robust sigma of the residual's fine structure."""
    thin_px: int
    """Changed pixels in one-pixel-thin lines (edge jitter, etching)."""
    specks: int
    """Isolated changed pixels."""


def measure(tests: Sequence[np.ndarray], goldens: Sequence[np.ndarray]) -> Profile:
    """The nuisance :class:`Profile` of a pair (images as read: ``(H, W)`` or ``(H, W, 3)``)."""
    g0, t0 = gray(goldens[0]), gray(tests[0])
    dy, dx = best_shift(g0, t0)
    r = shift_radius(g0.shape)
    h, w = g0.shape
    inner = np.s_[r : max(r + 1, h - r), r : max(r + 1, w - r)]
    gains, offsets, gradients, noises = [], [], [], []
    for t, g in zip(tests, goldens, strict=True):
        tf = _channels(t.astype(np.float32))
        gf = _channels(shift(g, dy, dx).astype(np.float32))
        n = min(tf.shape[2], gf.shape[2])
        gl, ol, resid = [], [], np.zeros(tf.shape[:2], dtype=np.float32)
        for c in range(n):
            a, b = _gain_offset(gf[..., c][inner], tf[..., c][inner])
            gl.append(a)
            ol.append(b)
            resid += tf[..., c] - (a * gf[..., c] + b)
        resid = resid[inner] / n
        gains.append(tuple(gl))
        offsets.append(tuple(ol))
        gradients.append(_plane_amplitude(resid))
        fine = resid - ndimage.median_filter(resid, size=3)
        noises.append(float(1.4826 * np.median(np.abs(fine - np.median(fine)))))
    diff, threshold, _ = difference_map(tests, goldens, photometric=True)
    over, blobs = change_blobs(diff, threshold)
    thin = over & (blobs == 0)
    neighbours = ndimage.convolve(thin.astype(np.int8), np.ones((3, 3), np.int8), mode="constant")
    specks = int(np.count_nonzero(thin & (neighbours == 1)))
    return Profile(
        shift=(dy, dx),
        gains=tuple(gains),
        offsets=tuple(offsets),
        gradient=tuple(gradients),
        noise=tuple(noises),
        thin_px=int(np.count_nonzero(thin)) - specks,
        specks=specks,
    )


def _channels(a: np.ndarray) -> np.ndarray:
    return a[..., None] if a.ndim == 2 else a


def _gain_offset(golden: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    g, t = golden.ravel().astype(np.float64), test.ravel().astype(np.float64)
    var = float(g.var())
    if var < 1e-6:
        return 1.0, float(t.mean() - g.mean())
    gain = float(((g - g.mean()) * (t - t.mean())).mean()) / var
    return gain, float(t.mean() - gain * g.mean())


def _plane_amplitude(resid: np.ndarray) -> float:
    """Centre-to-edge amplitude of the least-squares plane through ``resid``."""
    h, w = resid.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    half = max(h, w) / 2
    design = np.stack([(xx - w / 2) / half, (yy - h / 2) / half, np.ones_like(xx)], axis=-1)
    coef, *_ = np.linalg.lstsq(design.reshape(-1, 3), resid.ravel().astype(np.float64), rcond=None)
    return float(math.hypot(coef[0], coef[1]))


@dataclass(frozen=True)
class Variation:
    """What :func:`vary` applied, for the row's provenance."""

    shift: tuple[int, int]
    gain: float
    """Mean exposure gain applied (1: none)."""
    white_balance: float
    """Largest per-channel deviation from the light's gain (0: none or greyscale)."""
    gradient: float
    noise: float
    etched: bool
    specks: int

    def visible(self) -> bool:
        """Whether the model sees anything new: a shift alone does not count (the model
        registers every pair), nor an exposure change under :data:`MIN_GAIN_CHANGE`, a
        gradient under :data:`MIN_GRADIENT` or noise under :data:`MIN_NOISE` levels."""
        return bool(
            abs(self.gain - 1.0) >= MIN_GAIN_CHANGE
            or self.white_balance >= MIN_GAIN_CHANGE
            or self.gradient >= MIN_GRADIENT
            or self.noise >= MIN_NOISE
            or self.etched
            or self.specks
        )

    def text(self) -> str:
        parts = [f"shift {self.shift[0]:+d},{self.shift[1]:+d}", f"gain {self.gain:.2f}"]
        if self.white_balance:
            parts.append(f"white balance ±{self.white_balance:.2f}")
        parts += [f"gradient {self.gradient:.1f}", f"noise {self.noise:.1f}"]
        if self.etched:
            parts.append("etch")
        if self.specks:
            parts.append(f"{self.specks} specks")
        return "nuisance " + ", ".join(parts)


def vary(
    tests: Sequence[np.ndarray],
    source: Profile,
    target: Profile,
    rng: np.random.Generator,
    *,
    bare_board: bool,
    bounds: Bounds = BOUNDS,
) -> tuple[list[np.ndarray], Variation]:
    """The source's tested images with what ``target`` shows beyond ``source`` (module
    docstring, step 2). ``bare_board``: greyscale copper images (etch and specks apply)."""
    out: list[np.ndarray] = []
    h, w = tests[0].shape[:2]
    radius = shift_radius((h, w))
    dy = int(np.clip(target.shift[0], -radius, radius)) - source.shift[0]
    dx = int(np.clip(target.shift[1], -radius, radius)) - source.shift[1]
    angle = rng.uniform(0.0, 2.0 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (math.cos(angle) * (xx - w / 2) + math.sin(angle) * (yy - h / 2)) / (max(h, w) / 2)
    etch = bare_board and target.thin_px > source.thin_px
    specks = min(bounds.specks, max(0, target.specks - source.specks)) if bare_board else 0
    gains, wb_dev, grads, noises = [], 0.0, [], []
    for i, test in enumerate(tests):
        j = min(i, len(target.gains) - 1, len(source.gains) - 1)
        img = shift(test, dy, dx).astype(np.float32)
        if etch and img.ndim == 2:
            img = _etch(img, rng)
        a = _channels(img)
        tg, sg = np.asarray(target.gains[j]), np.asarray(source.gains[j])
        n = a.shape[2]
        ratio = np.resize(tg, n) / np.maximum(np.resize(sg, n), 1e-3)
        mean = float(np.clip(ratio.mean(), *bounds.gain))
        balance = np.clip(ratio / max(float(ratio.mean()), 1e-3), *bounds.white_balance)
        if n == 1:
            balance = np.ones(1)
        wb_dev = max(wb_dev, float(np.abs(balance - 1.0).max()))
        to = np.resize(np.asarray(target.offsets[j]), n)
        so = np.resize(np.asarray(source.offsets[j]), n)
        shift_level = np.clip((to - so).mean(), -bounds.offset, bounds.offset)
        level = a.mean(axis=(0, 1))
        a = (a - level) * (mean * balance) + level + shift_level
        grad = min(bounds.gradient, max(0.0, target.gradient[j] - source.gradient[j]))
        sigma = min(bounds.noise, math.sqrt(max(0.0, target.noise[j] ** 2 - source.noise[j] ** 2)))
        a = a + (grad * ramp)[..., None]
        if sigma > 0:
            a = a + rng.normal(0.0, sigma, size=a.shape).astype(np.float32)
        gains.append(mean)
        grads.append(grad)
        noises.append(sigma)
        out.append(a)
    if specks:
        ys, xs = rng.integers(0, h, size=specks), rng.integers(0, w, size=specks)
        delta = rng.uniform(40.0, 90.0, size=specks)
        for a in out:
            bright = a[ys, xs, 0] > a[..., 0].mean()
            a[ys, xs, :] += np.where(bright, -delta, delta)[:, None]
    images = [
        np.clip(np.rint(a if t.ndim == 3 else a[..., 0]), 0, 255).astype(np.uint8)
        for a, t in zip(out, tests, strict=True)
    ]
    return images, Variation(
        shift=(dy, dx),
        gain=float(np.mean(gains)),
        white_balance=round(wb_dev, 3),
        gradient=float(np.mean(grads)),
        noise=float(np.mean(noises)),
        etched=etch,
        specks=specks,
    )


def _etch(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Over- or under-etch a greyscale copper image: the copper mask (above the midpoint
    of the dark and bright levels) moved one pixel along one direction in a region,
    changed pixels set to the image's own copper or background level."""
    lo, hi = np.percentile(img, (5, 95))
    copper = img > (lo + hi) / 2
    if not copper.any() or copper.all():
        return img
    moved = etch_copper(copper, rng)
    cu, bg = float(np.median(img[copper])), float(np.median(img[~copper]))
    out = img.copy()
    out[moved & ~copper] = cu
    out[~moved & copper] = bg
    return out


def random_profile(like: Profile, rng: np.random.Generator, bounds: Bounds = BOUNDS) -> Profile:
    """A target when no weak row can be measured: ``like`` (the source) with a draw of
    every family within ``bounds``."""
    radius = 2
    gains = tuple(tuple(float(g) * rng.uniform(0.85, 1.18) for g in light) for light in like.gains)
    return Profile(
        shift=(int(rng.integers(-radius, radius + 1)), int(rng.integers(-radius, radius + 1))),
        gains=gains,
        offsets=like.offsets,
        gradient=tuple(g + rng.uniform(0.0, bounds.gradient / 2) for g in like.gradient),
        noise=tuple(math.hypot(n, rng.uniform(0.0, bounds.noise / 2)) for n in like.noise),
        thin_px=like.thin_px + int(rng.random() < 0.5),
        specks=like.specks + int(rng.integers(0, 3)),
    )


class HardNegatives:
    """Makes the PASS pairs of one request for a backend (see the module docstring)."""

    def __init__(self, ctx: SDGContext, writer: PairWriter, backend: str) -> None:
        self.ctx, self.writer, self.backend = ctx, writer, backend
        self.sources = clean_sources(ctx)
        self.images: dict[str, np.ndarray] = {}
        self.refused = 0
        """Pairs the PASS check refused (each was drawn again)."""
        self.checked = 0

    def counts(self) -> dict[str, int]:
        """The PASS check's counts so far (empty when it checked nothing)."""
        return {"checked": self.checked, "refused": self.refused} if self.checked else {}

    def read(self, paths: Sequence[Path]) -> list[np.ndarray]:
        for p in paths:
            if str(p) not in self.images:
                self.images[str(p)] = read_image(p)
        return [self.images[str(p)] for p in paths]

    def profiles(self, request: SDGRequest) -> list[tuple[str, Profile]]:
        """(boardname, profile) of up to :data:`MAX_PROFILES` weak rows (unreadable: skipped)."""
        weak = request.weak_rows
        if weak.empty or not {"input_path", "golden_path", "object_name"} <= set(weak.columns):
            return []
        step = max(1, math.ceil(len(weak) / MAX_PROFILES))
        out = []
        for _, row in weak.iloc[::step].iterrows():
            try:
                tests = [read_image(p) for p in row_files(self.ctx, row, "input_path")]
                goldens = [read_image(p) for p in row_files(self.ctx, row, "golden_path")]
            except (OSError, ValueError) as exc:
                log.info("weak row %s not measured: %s", row.get("object_name"), exc)
                continue
            if any(t.shape[:2] != g.shape[:2] for t, g in zip(tests, goldens, strict=True)):
                continue
            out.append((str(row.get("boardname", "")).strip(), measure(tests, goldens)))
        return out

    def generate(self, request: SDGRequest, max_blob_px: int) -> int:
        """Write up to ``request.count`` PASS pairs; returns how many."""
        indices = self.writer.claim(PASS_LABEL, request.count, request.first_index)
        if self.sources.empty:
            warn_short(self.backend, request, 0, "no PASS rows in the training set")
            return 0
        profiles = self.profiles(request)
        made = 0
        for index in indices:
            made += self._one(index, profiles, max_blob_px)
        warn_short(self.backend, request, made, "every variation drawn failed the PASS check")
        return made

    def _one(self, index: int, profiles: list[tuple[str, Profile]], max_blob_px: int) -> int:
        ctx = self.ctx
        rng = pair_rng(ctx, self.backend, PASS_LABEL, index)
        for _ in range(MAX_TRIES):
            board, target = profiles[int(rng.integers(len(profiles)))] if profiles else ("", None)
            src = pick_source(self.sources, board, rng)
            input_files = row_files(ctx, src, "input_path")
            golden_files = row_files(ctx, src, "golden_path")
            tests, goldens = self.read(input_files), self.read(golden_files)
            if any(t.shape[:2] != g.shape[:2] for t, g in zip(tests, goldens, strict=True)):
                continue
            own = measure(tests, goldens)
            bare = all(t.ndim == 2 for t in tests)
            new, applied = vary(
                tests, own, target or random_profile(own, rng), rng, bare_board=bare
            )
            if not applied.visible():  # this weak row shows no more than the source does
                target = None
                new, applied = vary(tests, own, random_profile(own, rng), rng, bare_board=bare)
                if not applied.visible():
                    continue
            check = pass_check(new, goldens, max_blob_px=max_blob_px, source_tests=tests)
            self.checked += 1
            if not check.ok:
                self.refused += 1
                continue
            why = "like a weak PASS row" if target is not None else "drawn within the bounds"
            self.writer.write(
                object_name(ctx, PASS_LABEL, index),
                PASS_LABEL,
                new,
                golden_files,
                boardname=str(src.get("boardname", "")),
                source=str(src["object_name"]),
                inputs_like=input_files,
                check=f"{check.provenance()}; {applied.text()} ({why}); no defect painted",
            )
            return 1
        return 0
