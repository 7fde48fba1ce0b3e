"""Defect painters: the six DeepPCB defect types, painted onto a tested image.

A painter finds a site from the layout (a trace to cut, two nets to bridge, free
background for a blob, solid copper for a hole), lines the layout up with the
tested image (which may be misregistered by a pixel), and moves the pixels of
the defect a ``contrast`` fraction of the way from their level to the other
level (copper <-> background). It always makes a visible change or raises
:class:`DefectSiteError`, so callers can re-sample the layout.

:func:`paint_defect` is the building block; :func:`synthesize_sample` makes a
whole golden/tested pair and is what the demo workspace and synthetic-data
stages call. :func:`paint_defect_on_image` paints onto a raster image alone
(a golden image read from disk, no layout): it estimates the copper, the nets
and the trace centrelines from the pixels (:meth:`_Board.from_raster`) and then
runs the same painters and the same site loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from automl_deft.errors import AutomlDeftError, UserError
from automl_deft.synth.render import (
    DEFAULT_SIZE,
    Layout,
    Segment,
    apply_nuisance,
    dilate,
    erode,
    render,
    render_layout,
    render_nets,
    shift_image,
)
from automl_deft.workspace import PASS_LABEL, is_pass

DEFECT_TYPES: tuple[str, ...] = ("open", "short", "mousebite", "spur", "copper", "pin-hole")
"""The defect labels, spelled as in the dataset CSVs."""
SEVERITIES: tuple[str, ...] = ("low", "medium", "high")
ADDS_COPPER = frozenset({"short", "spur", "copper"})
"""Types painted towards the copper level; the others remove copper."""

FULL_CONTRAST = (0.85, 1.0)
LOW_CONTRAST = (0.5, 0.75)
LOW_CONTRAST_PROB = 0.25
"""How often :func:`paint_defect` picks a low contrast when none is given."""

MIN_CHANGED = {"low": 5, "medium": 8, "high": 12}
"""Fewest pixels a defect of each severity must visibly change."""
VISIBLE_FRACTION = 0.25
"""A pixel counts as changed when it moved this fraction of the copper/background gap."""
MAX_SITE_TRIES = 60
"""Sites tried by one painter before it gives up on the layout."""
MAX_LAYOUT_RESAMPLES = 20
"""Layouts tried by :func:`synthesize_sample` before it gives up."""
EDGE_MARGIN = 3
"""Sites stay this many pixels inside the image so the defect is not cropped away."""

# Sizes per severity (pixels). Ranges are inclusive for ints, [lo, hi) for floats.
OPEN_GAP = {"low": (2, 3), "medium": (3, 4), "high": (5, 7)}
MOUSEBITE = {"low": (2, 1.5, 1.5), "medium": (2, 2.0, 2.0), "high": (3, 2.5, 2.5)}
"""(most bites, half-length of a bite, depth of a bite); depth is capped so a trace is never cut."""
SPUR_LEN = {"low": (3, 4), "medium": (4, 6), "high": (6, 9)}
SPUR_WIDTH = {"low": 2, "medium": 2, "high": 3}
COPPER_R = {"low": (1.5, 2.0), "medium": (2.2, 3.0), "high": (3.2, 4.5)}
PINHOLE_R = {"low": (1.4, 1.7), "medium": (1.8, 2.2), "high": (2.3, 3.0)}
SHORT_WIDTH = {"low": 2, "medium": 2, "high": 3}
SHORT_MAX_GAP = 12
"""Longest bridge a short may paint."""

# Trace centrelines of a raster image (:meth:`_Board.from_raster`).
RASTER_SPACING = 3
"""Centreline samples of one trace are at least this many pixels apart."""
RASTER_MIN_ELONGATION = 4.0
"""Ratio of the principal variances of the copper around a sample: below it, a land, not a trace."""
RASTER_TOLERANCE = 1.0
"""Largest change of width or drift of the centre (pixels) along one straight trace piece."""
RASTER_MIN_HALF_LENGTH = 3.0
"""Shortest half-length of a trace piece; longer pieces reach 1.5 trace widths each way."""
PROFILE_STEP = 0.25
"""Sampling step (pixels) of a cross-section through a trace."""

_DIRS8 = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1))


class DefectSiteError(AutomlDeftError):
    """No site on this layout suits the defect; re-sample the layout."""


BBox = tuple[int, int, int, int]
"""``(x0, y0, x1, y1)`` in pixels, ``x1``/``y1`` exclusive (a PIL box)."""


@dataclass(frozen=True)
class SyntheticSample:
    """One synthetic row: the layout, its golden and tested images, and what was painted.

    ``severity`` is empty, ``contrast`` and ``bbox`` are None for a ``PASS`` sample.
    """

    layout: Layout
    golden: np.ndarray
    test: np.ndarray
    label: str
    severity: str
    contrast: float | None
    bbox: BBox | None


def sample_contrast(rng: np.random.Generator, *, low: bool) -> float:
    """A painting contrast, rounded to 0.01 so it survives a CSV round trip exactly."""
    lo, hi = LOW_CONTRAST if low else FULL_CONTRAST
    return round(float(rng.uniform(lo, hi)), 2)


def paint_defect(
    test_img: np.ndarray,
    layout: Layout,
    defect_type: str,
    severity: str,
    rng: np.random.Generator,
    *,
    contrast: float | None = None,
) -> tuple[np.ndarray, BBox]:
    """Paint one defect onto a tested image of ``layout``.

    Args:
        test_img: uint8 tested image (e.g. from :func:`~automl_deft.synth.render.apply_nuisance`);
            it may be misregistered against the layout by a pixel.
        layout: the layout the image shows.
        defect_type: one of :data:`DEFECT_TYPES`.
        severity: one of :data:`SEVERITIES`; sets the defect's size.
        rng: the only source of randomness.
        contrast: fraction of the copper/background gap the defect pixels move,
            in (0, 1]; sampled (:data:`LOW_CONTRAST_PROB` low) when None.

    Returns:
        The new image (the input is not modified) and the bounding box of the
        visibly changed pixels.

    Raises:
        UserError: unknown type or severity, or contrast outside (0, 1].
        DefectSiteError: no site on this layout gives a visible defect.
    """
    contrast = _resolve_contrast(defect_type, severity, rng, contrast)
    board = _Board.of(test_img, layout)
    return _paint_on_board(
        board,
        defect_type,
        severity,
        rng,
        contrast,
        where=f"this {layout.family} layout",
        fix="re-sample the layout",
    )


def paint_defect_on_image(
    test_img: np.ndarray,
    defect_type: str,
    severity: str,
    rng: np.random.Generator,
    *,
    contrast: float | None = None,
    reference: np.ndarray | None = None,
) -> tuple[np.ndarray, BBox]:
    """Paint one defect onto a grayscale image when no layout is known.

    The copper is the bright part of ``reference`` (the golden image, lined up
    with ``test_img`` by the best one-pixel shift) or of ``test_img`` itself;
    nets are its connected components and traces are found as straight pieces
    of copper of even width. The painters and the site loop are those of
    :func:`paint_defect`.

    Args:
        test_img: uint8 grayscale tested image (copper bright), any height and width.
        defect_type: one of :data:`DEFECT_TYPES`.
        severity: one of :data:`SEVERITIES`; sets the defect's size.
        rng: the only source of randomness.
        contrast: fraction of the copper/background gap the defect pixels move,
            in (0, 1]; sampled (:data:`LOW_CONTRAST_PROB` low) when None.
        reference: the golden image of ``test_img`` (same shape); the copper is
            read from it when given, which keeps nuisance out of the nets.

    Returns:
        The new image (the input is not modified) and the bounding box of the
        visibly changed pixels.

    Raises:
        UserError: unknown type or severity, contrast outside (0, 1], an image
            that is not 2-D, or a reference of another shape.
        DefectSiteError: no site on this image gives a visible defect.
    """
    contrast = _resolve_contrast(defect_type, severity, rng, contrast)
    board = _Board.from_raster(test_img, reference)
    return _paint_on_board(
        board, defect_type, severity, rng, contrast, where="this image", fix="try another image"
    )


def _resolve_contrast(
    defect_type: str, severity: str, rng: np.random.Generator, contrast: float | None
) -> float:
    """Check the type and severity; sample the contrast when None and check it."""
    _check_choice("defect type", defect_type, DEFECT_TYPES)
    _check_choice("severity", severity, SEVERITIES)
    if contrast is None:
        contrast = sample_contrast(rng, low=bool(rng.random() < LOW_CONTRAST_PROB))
    if not 0.0 < contrast <= 1.0:
        raise UserError(f"contrast must be in (0, 1], got {contrast}; pass e.g. 0.5")
    return contrast


def _paint_on_board(
    board: _Board,
    defect_type: str,
    severity: str,
    rng: np.random.Generator,
    contrast: float,
    *,
    where: str,
    fix: str,
) -> tuple[np.ndarray, BBox]:
    """The site loop: try sites until one gives a visible defect.

    ``where`` names the board and ``fix`` what the caller should do in the
    :class:`DefectSiteError` message.
    """
    painter = _PAINTERS[defect_type]
    add = defect_type in ADDS_COPPER
    target = board.cu if add else board.bg
    visible = max(12.0, VISIBLE_FRACTION * (board.cu - board.bg))
    for _ in range(MAX_SITE_TRIES):
        region = painter(board, severity, rng)
        if region is None:
            continue
        new = board.img.copy()
        new[region] += contrast * (target - new[region])
        out = np.clip(np.rint(new), 0, 255).astype(np.uint8)
        changed = np.abs(out.astype(np.float32) - board.img) >= visible
        if np.count_nonzero(changed) >= MIN_CHANGED[severity]:
            return out, _bbox(changed)
    raise DefectSiteError(f"no site for a {severity} {defect_type} on {where}; {fix}")


def synthesize_sample(
    family: str,
    label: str,
    rng: np.random.Generator,
    *,
    severity: str = "medium",
    contrast: float | None = None,
    size: int = DEFAULT_SIZE,
) -> SyntheticSample:
    """A golden/tested pair of one board family, defect-free (``PASS``) or with one defect.

    The layout is re-sampled until the defect fits (a ``short`` needs two nets
    close enough to bridge, a ``pin-hole`` needs solid copper).

    Args:
        family: board family (``boardname``), e.g. ``"A"``.
        label: ``PASS`` or one of :data:`DEFECT_TYPES`.
        rng: the only source of randomness; same state, same sample.
        severity: defect size (ignored for ``PASS``).
        contrast: defect contrast; sampled when None.
        size: image side in pixels.

    Raises:
        UserError: unknown family, label, severity or contrast.
        DefectSiteError: no layout out of :data:`MAX_LAYOUT_RESAMPLES` fits the defect.
    """
    if is_pass(label):
        layout = render_layout(family, rng, size)
        golden = render(layout)
        return SyntheticSample(
            layout, golden, apply_nuisance(golden, rng), PASS_LABEL, "", None, None
        )
    _check_choice("defect type", label, DEFECT_TYPES)
    if contrast is None:
        contrast = sample_contrast(rng, low=bool(rng.random() < LOW_CONTRAST_PROB))
    for _ in range(MAX_LAYOUT_RESAMPLES):
        layout = render_layout(family, rng, size)
        golden = render(layout)
        test = apply_nuisance(golden, rng)
        try:
            painted, bbox = paint_defect(test, layout, label, severity, rng, contrast=contrast)
        except DefectSiteError:
            continue
        return SyntheticSample(layout, golden, painted, label, severity, contrast, bbox)
    raise DefectSiteError(
        f"no {family} layout out of {MAX_LAYOUT_RESAMPLES} fits a {severity} {label}; "
        "try another family or severity"
    )


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def _bbox(mask: np.ndarray) -> BBox:
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


@dataclass
class _Board:
    """A tested image and its copper, lined up (``nets`` is shifted onto the image).

    Built from a layout (:meth:`of`) or from pixels alone (:meth:`from_raster`).
    """

    img: np.ndarray
    nets: np.ndarray
    copper: np.ndarray
    cu: float
    bg: float
    segments: list[Segment]
    xx: np.ndarray
    yy: np.ndarray

    @classmethod
    def of(cls, test_img: np.ndarray, layout: Layout) -> _Board:
        img = np.asarray(test_img, dtype=np.float32)
        if img.shape != (layout.size, layout.size):
            raise UserError(
                f"image is {img.shape[1]}x{img.shape[0]} but the layout is "
                f"{layout.size}x{layout.size}; render the layout at the image size"
            )
        return cls._lined_up(img, render_nets(layout), layout.segments())

    @classmethod
    def from_raster(cls, test_img: np.ndarray, reference: np.ndarray | None = None) -> _Board:
        """The board of a grayscale image: copper, nets and traces estimated from pixels."""
        img = np.asarray(test_img, dtype=np.float32)
        if img.ndim != 2 or min(img.shape) < 1:
            raise UserError(
                f"image has shape {img.shape}; paint onto a 2-D grayscale image "
                "(convert colour images to L first)"
            )
        ref = img if reference is None else np.asarray(reference, dtype=np.float32)
        if ref.shape != img.shape:
            raise UserError(
                f"reference has shape {ref.shape} but the image {img.shape}; "
                "pass the golden image of this tested image"
            )
        copper = _bright(ref)
        labels, _ = ndimage.label(copper, structure=np.ones((3, 3), dtype=bool))
        return cls._lined_up(img, labels, _centreline_segments(labels))

    @classmethod
    def _lined_up(cls, img: np.ndarray, nets0: np.ndarray, segments0: list[Segment]) -> _Board:
        """Shift ``nets0`` (and its segments) onto ``img``, then read the two levels."""
        bright = _bright(img)
        # Misregistration is at most a pixel: pick the shift that best explains the image.
        best, best_err = (0, 0), None
        for dy, dx in [(0, 0)] + [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if a or b]:
            err = np.count_nonzero(shift_image(nets0 > 0, dy, dx) != bright)
            if best_err is None or err < best_err:
                best, best_err = (dy, dx), err
        dy, dx = best
        nets = shift_image(nets0, dy, dx)
        copper = nets > 0
        on, off = img[copper & bright], img[~copper & ~bright]
        cu = float(np.median(on)) if on.size else 255.0
        bg = float(np.median(off)) if off.size else 0.0
        segments = [
            Segment(s.x0 + dx, s.y0 + dy, s.x1 + dx, s.y1 + dy, s.width, s.net) for s in segments0
        ]
        h, w = img.shape
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        return cls(img, nets, copper, cu, bg, segments, xx, yy)

    @property
    def height(self) -> int:
        return int(self.img.shape[0])

    @property
    def width(self) -> int:
        return int(self.img.shape[1])

    def trace_site(self, rng: np.random.Generator) -> _TraceSite | None:
        """A random point on a trace centreline, away from the image border."""
        if not self.segments:
            return None
        seg = self.segments[int(rng.integers(len(self.segments)))]
        length = math.hypot(seg.x1 - seg.x0, seg.y1 - seg.y0)
        if length < 1.0:
            return None
        t = float(rng.uniform(0.05, 0.95))
        px, py = seg.x0 + t * (seg.x1 - seg.x0), seg.y0 + t * (seg.y1 - seg.y0)
        m = EDGE_MARGIN + seg.width / 2
        if not (m <= px <= self.width - 1 - m and m <= py <= self.height - 1 - m):
            return None
        ux, uy = (seg.x1 - seg.x0) / length, (seg.y1 - seg.y0) / length
        u = (self.xx - px) * ux + (self.yy - py) * uy
        v = (self.xx - px) * -uy + (self.yy - py) * ux
        return _TraceSite(seg, px, py, ux, uy, u, v, self.nets == seg.net)


@dataclass
class _TraceSite:
    seg: Segment
    px: float
    py: float
    ux: float
    uy: float
    u: np.ndarray
    v: np.ndarray
    net: np.ndarray

    def keeps_across(self, removed: np.ndarray, extent: float) -> bool:
        """True when the trace still has copper across its width all along ``|u| <= extent``."""
        w = self.seg.width
        us = np.arange(-extent, extent + 0.01, 0.5)
        vs = np.arange(-w / 2 - 1, w / 2 + 1.01, 0.5)
        nx, ny = -self.uy, self.ux
        xs = np.rint(self.px + us[:, None] * self.ux + vs[None, :] * nx).astype(int)
        ys = np.rint(self.py + us[:, None] * self.uy + vs[None, :] * ny).astype(int)
        h, w = self.net.shape
        xs, ys = np.clip(xs, 0, w - 1), np.clip(ys, 0, h - 1)
        left = self.net & ~removed
        return bool(left[ys, xs].any(axis=1).all())


def _bright(img: np.ndarray) -> np.ndarray:
    """Copper pixels of a grayscale image: above the middle of its 2nd/98th percentiles."""
    lo, hi = np.percentile(img, (2, 98))
    return np.asarray(img > (lo + hi) / 2 if hi - lo > 40 else img > 127)


def _centreline_segments(nets: np.ndarray) -> list[Segment]:
    """Short straight pieces of trace centreline, found in a map of net ids.

    Seeds are ridge pixels of the copper's distance transform, at least
    :data:`RASTER_SPACING` apart. At each seed the direction is the principal
    axis of the net's copper nearby (a land is too round and is skipped), and a
    cross-section gives the centre and width. A piece is kept when the width and
    centre hold to :data:`RASTER_TOLERANCE` all along it, so it is a plain
    stretch of trace that the trace painters (open, mousebite, spur) can use.
    """
    copper = nets > 0
    dist = np.asarray(ndimage.distance_transform_edt(copper), dtype=np.float32)
    padded = np.pad(dist, 1)
    h, w = dist.shape
    ridge = np.zeros_like(copper)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        b = padded[1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]
        ridge |= (dist >= a) & (dist >= b) & (dist > np.minimum(a, b))
    ridge &= copper
    covered = np.zeros_like(copper)
    out = []
    r = RASTER_SPACING
    for y, x in zip(*np.nonzero(ridge), strict=True):
        if covered[y, x]:
            continue
        covered[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1] = True
        seg = _segment_at(nets, int(x), int(y), float(dist[y, x]))
        if seg is not None:
            out.append(seg)
    return out


def _segment_at(nets: np.ndarray, x: int, y: int, depth: float) -> Segment | None:
    """The straight trace piece through pixel ``(x, y)``, or None on a land or a bend."""
    net = int(nets[y, x])
    r = max(4, math.ceil(2.5 * depth) + 2)
    y0, x0 = max(0, y - r), max(0, x - r)
    ys, xs = np.nonzero(nets[y0 : y + r + 1, x0 : x + r + 1] == net)
    if len(ys) < 5:
        return None
    evals, evecs = np.linalg.eigh(np.cov(np.stack([xs, ys]).astype(np.float64)))
    if evals[1] < RASTER_MIN_ELONGATION * max(float(evals[0]), 1e-6):
        return None
    ux, uy = float(evecs[0, 1]), float(evecs[1, 1])
    mask = (nets == net).astype(np.float32)
    reach = 3.0 * depth + 3.0
    centre, width = _cross_sections(mask, np.array([x]), np.array([y]), (ux, uy), reach)
    if not np.isfinite(centre[0]):
        return None
    cx, cy = x - uy * centre[0], y + ux * centre[0]
    half = max(RASTER_MIN_HALF_LENGTH, 1.5 * float(width[0]))
    t = np.arange(-half, half + 0.01, 1.0)
    drift, widths = _cross_sections(mask, cx + t * ux, cy + t * uy, (ux, uy), reach)
    if not (np.all(np.abs(drift) <= RASTER_TOLERANCE) and np.ptp(widths) <= RASTER_TOLERANCE):
        return None  # NaN (off the copper, a land, the border) fails too
    return Segment(
        round(cx - half * ux, 2),
        round(cy - half * uy, 2),
        round(cx + half * ux, 2),
        round(cy + half * uy, 2),
        max(1, round(float(np.median(widths)))),
        net,
    )


def _cross_sections(
    mask: np.ndarray,
    px: np.ndarray,
    py: np.ndarray,
    direction: tuple[float, float],
    reach: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Centre offset and width of ``mask`` across ``direction`` through each point.

    The mask is sampled bilinearly along the normal ``(-uy, ux)`` every
    :data:`PROFILE_STEP` pixels; an edge is where the samples cross 0.5, so a
    staircase diagonal reads about as wide as a straight trace. Both values are
    NaN where the point is off the copper, or the copper runs on past ``reach``
    (a land) or past the image border.
    """
    ux, uy = direction
    h, w = mask.shape
    n = math.ceil(reach / PROFILE_STEP)
    s = np.arange(-n, n + 1) * PROFILE_STEP
    xs = px[:, None] - uy * s[None, :]
    ys = py[:, None] + ux * s[None, :]
    vals = ndimage.map_coordinates(mask, [ys.ravel(), xs.ravel()], order=1, mode="nearest")
    vals = vals.reshape(xs.shape)
    inside = (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)
    rows = np.arange(len(px))
    reached = []
    for half in (np.s_[:, n:], np.s_[:, n::-1]):  # outwards from the point, each way
        v, ins = vals[half], inside[half]
        off = v < 0.5
        j = np.argmax(off, axis=1)  # first sample off the copper
        ok = off[rows, j] & (j > 0) & ins[rows, j]
        j = np.maximum(j, 1)
        v_in, v_out = v[rows, j - 1], v[rows, j]
        frac = np.clip((v_in - 0.5) / np.maximum(v_in - v_out, 1e-6), 0.0, 1.0)
        reached.append(np.where(ok, (j - 1 + frac) * PROFILE_STEP, np.nan))
    b, a = reached[0], -reached[1]
    return (a + b) / 2, b - a


def _paint_open(b: _Board, severity: str, rng: np.random.Generator) -> np.ndarray | None:
    site = b.trace_site(rng)
    if site is None:
        return None
    lo, hi = OPEN_GAP[severity]
    gap = int(rng.integers(lo, hi + 1))
    w = site.seg.width
    band = (site.u >= -gap / 2) & (site.u < gap / 2) & (np.abs(site.v) <= w / 2 + 2)
    cut = np.count_nonzero(band & site.net)
    if cut < 0.6 * gap * w or cut > 1.8 * gap * (w + 1) + 2:
        return None  # on a land or a junction, not a plain stretch of trace
    return band & dilate(site.net, 1)


def _paint_mousebite(b: _Board, severity: str, rng: np.random.Generator) -> np.ndarray | None:
    site = b.trace_site(rng)
    if site is None:
        return None
    most, half_len, depth = MOUSEBITE[severity]
    w = site.seg.width
    depth = max(1.0, min(depth, w - 1.5))
    n = int(rng.integers(1, most + 1))
    side = 1.0 if rng.random() < 0.5 else -1.0
    sv = side * site.v - w / 2
    region = np.zeros_like(site.net)
    spacing = 2 * half_len + 1.5
    for i in range(n):
        uc = (i - (n - 1) / 2) * spacing + float(rng.uniform(-0.5, 0.5))
        beyond = (sv > 0) & (sv <= 1.5) & (np.abs(site.u - uc) <= half_len)
        if np.count_nonzero(beyond & b.copper) > 0.3 * np.count_nonzero(beyond):
            return None  # this stretch of edge is buried in a land: no edge to bite
        region |= ((site.u - uc) / half_len) ** 2 + (sv / depth) ** 2 <= 1.0
    region &= site.net
    if not region.any() or not site.keeps_across(region, n * spacing / 2 + 1):
        return None
    return region


def _paint_spur(b: _Board, severity: str, rng: np.random.Generator) -> np.ndarray | None:
    site = b.trace_site(rng)
    if site is None:
        return None
    lo, hi = SPUR_LEN[severity]
    length = int(rng.integers(lo, hi + 1))
    width = SPUR_WIDTH[severity]
    w = site.seg.width
    side = 1.0 if rng.random() < 0.5 else -1.0
    sv = side * site.v
    region = (sv >= 0) & (sv <= w / 2 + length) & (np.abs(site.u) <= width / 2) & ~b.copper
    n = np.count_nonzero(region)
    if n < 0.6 * length * width:
        return None
    if (dilate(region, 1) & b.copper & ~site.net).any():
        return None  # would touch another net: that is a short, not a spur
    return region


def _paint_copper(b: _Board, severity: str, rng: np.random.Generator) -> np.ndarray | None:
    r = float(rng.uniform(*COPPER_R[severity]))
    elong = float(rng.uniform(1.0, 1.6))
    a, c = r * elong, r / elong
    reach = math.ceil(a)
    free = ~dilate(b.copper, reach + 2)
    lo = reach + 1
    free[:lo, :] = False
    free[:, :lo] = False
    free[b.height - lo :, :] = False
    free[:, b.width - lo :] = False
    ys, xs = np.nonzero(free)
    if not len(ys):
        return None
    i = int(rng.integers(len(ys)))
    cx, cy = xs[i] + float(rng.uniform(-0.3, 0.3)), ys[i] + float(rng.uniform(-0.3, 0.3))
    th = float(rng.uniform(0.0, math.pi))
    du = (b.xx - cx) * math.cos(th) + (b.yy - cy) * math.sin(th)
    dv = -(b.xx - cx) * math.sin(th) + (b.yy - cy) * math.cos(th)
    return (du / a) ** 2 + (dv / c) ** 2 <= 1.0


def _paint_pinhole(b: _Board, severity: str, rng: np.random.Generator) -> np.ndarray | None:
    r = float(rng.uniform(*PINHOLE_R[severity]))
    k = math.floor(r) + 1  # a square of this radius is copper: the hole keeps a rim
    inner = erode(b.copper, k)
    inner[: EDGE_MARGIN + 1, :] = inner[-EDGE_MARGIN - 1 :, :] = False
    inner[:, : EDGE_MARGIN + 1] = inner[:, -EDGE_MARGIN - 1 :] = False
    ys, xs = np.nonzero(inner)
    if not len(ys):
        return None
    i = int(rng.integers(len(ys)))
    cx, cy = xs[i] + float(rng.uniform(-0.25, 0.25)), ys[i] + float(rng.uniform(-0.25, 0.25))
    return ((b.xx - cx) ** 2 + (b.yy - cy) ** 2 <= r * r) & b.copper


def _paint_short(b: _Board, severity: str, rng: np.random.Generator) -> np.ndarray | None:
    edge = b.copper & dilate(~b.copper, 1)
    ys, xs = np.nonzero(edge)
    if not len(ys):
        return None
    i = int(rng.integers(len(ys)))
    x, y = int(xs[i]), int(ys[i])
    ddx, ddy = _DIRS8[int(rng.integers(len(_DIRS8)))]
    own = int(b.nets[y, x])
    gap = 0
    hit = None
    cx, cy = x, y
    lo = EDGE_MARGIN
    while hit is None:
        cx, cy = cx + ddx, cy + ddy
        if not (lo <= cx < b.width - lo and lo <= cy < b.height - lo):
            return None
        lab = int(b.nets[cy, cx])
        if lab == 0:
            gap += 1
            if gap > SHORT_MAX_GAP:
                return None
        elif lab == own:
            if gap:
                return None  # came back to the same net (e.g. across a via hole)
            x, y = cx, cy  # still inside the starting net: start from its far edge
        else:
            hit = (cx, cy, lab)
    if hit is None or gap == 0:
        return None
    qx, qy, other = hit
    hw = SHORT_WIDTH[severity] / 2 + 0.21
    region = _capsule(b, (x, y), (qx, qy), hw) & ~b.copper
    allowed = (b.nets == own) | (b.nets == other)
    if not region.any() or (dilate(region, 1) & b.copper & ~allowed).any():
        return None
    return region


def _capsule(b: _Board, p: tuple[int, int], q: tuple[int, int], hw: float) -> np.ndarray:
    """Pixels within ``hw`` of the segment p-q."""
    (x0, y0), (x1, y1) = p, q
    vx, vy = x1 - x0, y1 - y0
    ll = float(vx * vx + vy * vy) or 1.0
    t = np.clip(((b.xx - x0) * vx + (b.yy - y0) * vy) / ll, 0.0, 1.0)
    dx, dy = b.xx - (x0 + t * vx), b.yy - (y0 + t * vy)
    return dx * dx + dy * dy <= hw * hw


_PAINTERS: dict[str, Callable[[_Board, str, np.random.Generator], np.ndarray | None]] = {
    "open": _paint_open,
    "short": _paint_short,
    "mousebite": _paint_mousebite,
    "spur": _paint_spur,
    "copper": _paint_copper,
    "pin-hole": _paint_pinhole,
}
