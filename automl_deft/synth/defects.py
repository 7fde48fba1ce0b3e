"""Defect painters: the six DeepPCB defect types, painted onto a tested image.

A painter finds a site from the layout (a trace to cut, two nets to bridge, free
background for a blob, solid copper for a hole), lines the layout up with the
tested image (which may be misregistered by a pixel), and moves the pixels of
the defect a ``contrast`` fraction of the way from their level to the other
level (copper <-> background). It always makes a visible change or raises
:class:`DefectSiteError`, so callers can re-sample the layout.

:func:`paint_defect` is the building block; :func:`synthesize_sample` makes a
whole golden/tested pair and is what the demo workspace and synthetic-data
stages call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

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
    _check_choice("defect type", defect_type, DEFECT_TYPES)
    _check_choice("severity", severity, SEVERITIES)
    if contrast is None:
        contrast = sample_contrast(rng, low=bool(rng.random() < LOW_CONTRAST_PROB))
    if not 0.0 < contrast <= 1.0:
        raise UserError(f"contrast must be in (0, 1], got {contrast}; pass e.g. 0.5")
    board = _Board.of(test_img, layout)
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
    raise DefectSiteError(
        f"no site for a {severity} {defect_type} on this {layout.family} layout; "
        "re-sample the layout"
    )


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
    """A tested image and its layout, lined up (``nets`` is shifted onto the image)."""

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
        lo, hi = np.percentile(img, (2, 98))
        bright = img > (lo + hi) / 2 if hi - lo > 40 else img > 127
        nets0 = render_nets(layout)
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
            Segment(s.x0 + dx, s.y0 + dy, s.x1 + dx, s.y1 + dy, s.width, s.net)
            for s in layout.segments()
        ]
        yy, xx = np.mgrid[0 : layout.size, 0 : layout.size].astype(np.float32)
        return cls(img, nets, copper, cu, bg, segments, xx, yy)

    @property
    def size(self) -> int:
        return self.img.shape[0]

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
        if not (m <= px <= self.size - 1 - m and m <= py <= self.size - 1 - m):
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
        size = self.net.shape[0]
        xs, ys = np.clip(xs, 0, size - 1), np.clip(ys, 0, size - 1)
        left = self.net & ~removed
        return bool(left[ys, xs].any(axis=1).all())


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
    lo, hi = reach + 1, b.size - 1 - reach - 1
    free[:lo, :] = False
    free[:, :lo] = False
    free[hi + 1 :, :] = False
    free[:, hi + 1 :] = False
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
    lo, hi = EDGE_MARGIN, b.size - EDGE_MARGIN
    while hit is None:
        cx, cy = cx + ddx, cy + ddy
        if not (lo <= cx < hi and lo <= cy < hi):
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
