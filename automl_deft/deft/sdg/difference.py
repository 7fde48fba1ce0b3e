"""The registered difference of a golden/tested pair, judged without the model.

A pair's *registered difference* is what is left when the golden is lined up with
the tested image (best whole-pixel shift up to :func:`shift_radius`) and, for the
photometric form, each light and colour channel of the golden is fitted to the
tested image by a gain and an offset (least squares): misregistration, exposure,
white balance and illumination drift are taken out, a defect is not. The largest
value over lights and channels is thresholded at :data:`DIFF_FRACTION` of the
golden's dynamic range (at least :data:`MIN_DIFF` grey levels) and one-pixel-thin
differences are opened away (on a clean board those are edge jitter and etching).
The largest connected blob left is :func:`largest_change`.

``cutpaste`` cuts its defects with :func:`change_mask` (no photometric fit: a real
defect of the training set, as it was captured); the SDG stage's independent PASS
check (:func:`pass_check`) and the hygiene checks use :func:`largest_change`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MAX_SHIFT = 2
"""Largest misregistration (pixels) removed before differencing a 64-pixel pair; larger
images are searched further in proportion (:func:`shift_radius`)."""
SHIFT_REFERENCE_SIZE = 64
"""The image side :data:`MAX_SHIFT` is meant for."""
DIFF_FRACTION = 0.4
"""A pixel has changed when it moved this fraction of the golden's dynamic range."""
MIN_DIFF = 25.0
"""... and at least this many grey levels (flat images have no range to speak of)."""

_SQUARE = np.ones((3, 3), dtype=bool)


def gray(image: np.ndarray) -> np.ndarray:
    """``image`` as float32 greyscale (the mean of its channels)."""
    a = image.astype(np.float32)
    return a.mean(axis=2) if a.ndim == 3 else a


def dynamic_range(gray_image: np.ndarray) -> float:
    """The 2nd to 98th percentile spread of a greyscale image."""
    lo, hi = np.percentile(gray_image, (2, 98))
    return float(hi - lo)


def shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``out[y, x] = a[y - dy, x - dx]`` on the first two axes; the border repeats the edge."""
    if dy == 0 and dx == 0:
        return a
    k = max(abs(dy), abs(dx))
    pad = [(k, k), (k, k)] + [(0, 0)] * (a.ndim - 2)
    p = np.pad(a, pad, mode="edge")
    h, w = a.shape[:2]
    return p[k - dy : k - dy + h, k - dx : k - dx + w]


def shift_radius(shape: tuple[int, ...]) -> int:
    """The misregistration searched for in an image of ``shape`` (``(H, W, ...)``):
    :data:`MAX_SHIFT` up to :data:`SHIFT_REFERENCE_SIZE` pixels a side, growing with the
    smaller side above it (a camera's few pixels of offset are more pixels at a finer
    resolution: 4 at 128 px, where the SMT workspace's captures move by up to 3)."""
    side = min(shape[0], shape[1])
    return max(MAX_SHIFT, round(MAX_SHIFT * side / SHIFT_REFERENCE_SIZE))


def best_shift(golden: np.ndarray, test: np.ndarray) -> tuple[int, int]:
    """The ``(dy, dx)`` that best moves greyscale ``golden`` onto ``test`` (ties: the
    smallest shift)."""
    r = shift_radius(golden.shape)
    h, w = golden.shape
    if h <= 2 * r or w <= 2 * r:
        return 0, 0
    inner = np.s_[r : h - r, r : w - r]
    shifts = sorted(
        ((a, b) for a in range(-r, r + 1) for b in range(-r, r + 1)),
        key=lambda s: (abs(s[0]) + abs(s[1]), s),
    )
    errs = [float(np.abs(shift(golden, a, b)[inner] - test[inner]).mean()) for a, b in shifts]
    return shifts[int(np.argmin(errs))]


def _fit(golden: np.ndarray, test: np.ndarray, inner: tuple[slice, slice]) -> np.ndarray:
    """``golden`` (float, one channel) mapped onto ``test`` by a least-squares gain/offset."""
    g, t = golden[inner].ravel(), test[inner].ravel()
    var = float(g.var())
    if var < 1e-6:
        return golden + float(t.mean() - g.mean())
    gain = float(((g - g.mean()) * (t - t.mean())).mean()) / var
    return gain * (golden - float(g.mean())) + float(t.mean())


def difference_map(
    tests: Sequence[np.ndarray], goldens: Sequence[np.ndarray], *, photometric: bool
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """The registered difference (largest over lights and channels), its change
    threshold and the shift found; the border the shift search cannot see is zero.

    ``photometric``: fit each golden light and channel to the tested one first.
    """
    g0, t0 = gray(goldens[0]), gray(tests[0])
    dy, dx = best_shift(g0, t0)
    r = shift_radius(g0.shape)
    h, w = g0.shape
    inner = np.s_[r : max(r + 1, h - r), r : max(r + 1, w - r)]
    diff = np.zeros(g0.shape, dtype=np.float32)
    for t, g in zip(tests, goldens, strict=True):
        tf = t.astype(np.float32)
        gf = shift(g, dy, dx).astype(np.float32)
        if tf.ndim == 2:
            tf, gf = tf[..., None], gf[..., None]
        if gf.shape[2] != tf.shape[2]:  # a grey golden beside a colour test (or the reverse)
            tf, gf = tf.mean(axis=2, keepdims=True), gf.mean(axis=2, keepdims=True)
        for c in range(tf.shape[2]):
            ref = _fit(gf[..., c], tf[..., c], inner) if photometric else gf[..., c]
            diff = np.maximum(diff, np.abs(tf[..., c] - ref))
    diff[:r], diff[h - r :], diff[:, :r], diff[:, w - r :] = 0, 0, 0, 0
    threshold = max(MIN_DIFF, DIFF_FRACTION * dynamic_range(g0))
    return diff, threshold, (dy, dx)


def change_blobs(diff: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The changed pixels (over ``threshold``) and the blobs left once one-pixel-thin
    differences are opened away: ``(over, labels)`` with ``labels`` 0 off every blob."""
    over = diff > threshold
    core = ndimage.binary_opening(over, structure=np.ones((2, 2), dtype=bool))
    labels, _ = ndimage.label(core, structure=_SQUARE)
    return over, labels


def change_mask(diff: np.ndarray, threshold: float) -> np.ndarray | None:
    """The largest blob with the thin changed pixels that touch it (None: no blob)."""
    over, labels = change_blobs(diff, threshold)
    if not labels.any():
        return None
    sizes = np.bincount(labels.ravel())[1:]
    blob = labels == int(np.argmax(sizes)) + 1
    return blob | (ndimage.binary_dilation(blob, structure=_SQUARE) & over)


def largest_change(tests: Sequence[np.ndarray], goldens: Sequence[np.ndarray]) -> int:
    """Pixels of the largest blob of the registered, photometrically normalised
    difference (0: nothing but thin lines and noise changed). Images of different
    sizes count as one whole-image change."""
    if any(t.shape[:2] != g.shape[:2] for t, g in zip(tests, goldens, strict=True)):
        return int(tests[0].shape[0] * tests[0].shape[1])
    diff, threshold, _ = difference_map(tests, goldens, photometric=True)
    mask = change_mask(diff, threshold)
    return 0 if mask is None else int(np.count_nonzero(mask))


@dataclass(frozen=True)
class PassCheck:
    """The independent PASS check of one generated pair (see :func:`pass_check`)."""

    ok: bool
    blob_px: int
    """The generated pair's :func:`largest_change`."""
    source_blob_px: int | None
    """Its source pair's (a labelled PASS), when known."""
    limit_px: int

    def provenance(self) -> str:
        """The ``sdg_check`` text recorded on the row."""
        src = "" if self.source_blob_px is None else f", source pair {self.source_blob_px} px"
        verdict = "passed" if self.ok else "failed"
        limit = f"limit {self.limit_px}{src}"
        return f"pass-check {verdict}: largest change {self.blob_px} px ({limit})"


def pass_check(
    tests: Sequence[np.ndarray],
    goldens: Sequence[np.ndarray],
    *,
    max_blob_px: int,
    source_tests: Sequence[np.ndarray] | None = None,
) -> PassCheck:
    """Whether a generated PASS pair is still a PASS, by a rule that ignores the model:
    its :func:`largest_change` is at most ``max_blob_px`` or at most that of the PASS
    pair it was made from (``source_tests`` against the same goldens): the variation
    added no localised change beyond what a labelled good pair already shows."""
    blob = largest_change(tests, goldens)
    source = None if source_tests is None else largest_change(source_tests, goldens)
    limit = max(max_blob_px, source or 0)
    return PassCheck(ok=blob <= limit, blob_px=blob, source_blob_px=source, limit_px=limit)
