"""Board layouts of six synthetic families and their binarised renders.

A :class:`Layout` is a list of copper primitives in pixel coordinates (traces as
polylines with a width, pads, vias). Every primitive belongs to a *net*; two nets
never come closer than the family's clearance, so "two separate copper
features" (what a ``short`` bridges) is well defined.

:func:`render` gives the golden image (copper 255, background 0);
:func:`apply_nuisance` turns a golden image into a defect-free *tested* image
(misregistration, edge jitter, speckle, intensity variation).
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from automl_deft.errors import UserError

COPPER = 255
BACKGROUND = 0
DEFAULT_SIZE = 64

MAX_LAYOUT_TRIES = 20
"""Attempts at a layout with enough nets before giving up (never reached in practice)."""

SHIFT_PROB = 0.5
"""Probability that a tested image is misregistered by one pixel."""
EDGE_FLIPS = (1, 6)
"""Range of copper-edge pixels flipped in a tested image (inclusive)."""
ETCH_PROB = 0.7
"""Probability that a region of the tested board is over- or under-etched by one pixel."""
ETCH_REGION = (0.35, 0.9)
"""Side of the etched region as a fraction of the image side."""
SPECKLE = (0, 4)
"""Range of isolated speckle pixels in a tested image (inclusive)."""
SPECKLE_DELTA = (40, 90)
"""How far a speckle pixel moves from its level towards the other level."""
COPPER_LEVEL = (230, 255)
BACKGROUND_LEVEL = (0, 20)
GRADIENT = 5.0
"""Largest illumination change (grey levels) from the image centre to a corner."""
NOISE_SIGMA = 1.5


@dataclass(frozen=True)
class Trace:
    """A copper track: a polyline of ``(x, y)`` points drawn ``width`` pixels wide."""

    points: tuple[tuple[float, float], ...]
    width: int
    net: int


@dataclass(frozen=True)
class Pad:
    """A filled land: a disc (``round``) or a rounded square (``square``) of half-size ``r``."""

    x: float
    y: float
    r: float
    shape: str
    net: int


@dataclass(frozen=True)
class Via:
    """A plated hole: a disc of radius ``r`` with a background hole of radius ``hole``."""

    x: float
    y: float
    r: float
    hole: float
    net: int


@dataclass(frozen=True)
class Segment:
    """One straight piece of a trace (what defect painters cut, bite and grow spurs on)."""

    x0: float
    y0: float
    x1: float
    y1: float
    width: int
    net: int


@dataclass(frozen=True)
class Layout:
    """The copper of one board patch; ``render`` turns it into pixels."""

    family: str
    size: int
    traces: tuple[Trace, ...]
    pads: tuple[Pad, ...]
    vias: tuple[Via, ...]

    @property
    def n_nets(self) -> int:
        nets = {p.net for p in self.traces} | {p.net for p in self.pads}
        return len(nets | {v.net for v in self.vias})

    def segments(self) -> list[Segment]:
        """Every straight piece of every trace."""
        out = []
        for t in self.traces:
            for (x0, y0), (x1, y1) in itertools.pairwise(t.points):
                out.append(Segment(x0, y0, x1, y1, t.width, t.net))
        return out


@dataclass(frozen=True)
class FamilyStyle:
    """How one board family looks.

    Attributes:
        description: one line for humans.
        width: trace width range in pixels (inclusive).
        clearance: smallest gap between two nets in pixels.
        pitch_extra: extra bus pitch beyond ``width + clearance`` (inclusive range).
        orient: weights of the bus direction: ``h`` 0°, ``v`` 90°, ``d`` 45°, ``a`` 135°.
        n_bus: number of parallel bus traces tried (inclusive range).
        jog: probability that the bus makes a 45° jog.
        end_inside: probability that a bus trace ends inside the patch on a land.
        land_via: probability that such a land is a via instead of a pad.
        pad_r: pad half-size range (inclusive).
        pad_shape: ``round``, ``square`` or ``mixed``.
        n_stray: number of cross traces tried (inclusive range).
        n_pads: number of lone pads (SMD lands) tried (inclusive range).
        n_vias: number of lone vias tried (inclusive range).
        via_r: via outer radius range (inclusive).
    """

    description: str
    width: tuple[int, int]
    clearance: int
    pitch_extra: tuple[int, int]
    orient: dict[str, float]
    n_bus: tuple[int, int]
    jog: float
    end_inside: float
    land_via: float
    pad_r: tuple[int, int]
    pad_shape: str
    n_stray: tuple[int, int]
    n_pads: tuple[int, int]
    n_vias: tuple[int, int]
    via_r: tuple[int, int]


FAMILIES: dict[str, FamilyStyle] = {
    "A": FamilyStyle(
        description="fine-pitch horizontal bus, round lands",
        width=(2, 3),
        clearance=3,
        pitch_extra=(0, 2),
        orient={"h": 0.85, "v": 0.15},
        n_bus=(4, 8),
        jog=0.3,
        end_inside=0.3,
        land_via=0.2,
        pad_r=(4, 5),
        pad_shape="round",
        n_stray=(0, 1),
        n_pads=(0, 1),
        n_vias=(0, 1),
        via_r=(3, 4),
    ),
    "B": FamilyStyle(
        description="vertical bus of medium traces, square lands",
        width=(3, 4),
        clearance=3,
        pitch_extra=(1, 4),
        orient={"v": 0.85, "h": 0.15},
        n_bus=(3, 6),
        jog=0.2,
        end_inside=0.5,
        land_via=0.3,
        pad_r=(4, 6),
        pad_shape="square",
        n_stray=(0, 1),
        n_pads=(0, 2),
        n_vias=(0, 2),
        via_r=(4, 5),
    ),
    "C": FamilyStyle(
        description="diagonal routing with jogs to horizontal/vertical",
        width=(3, 4),
        clearance=3,
        pitch_extra=(1, 3),
        orient={"d": 0.45, "a": 0.45, "h": 0.1},
        n_bus=(3, 6),
        jog=0.6,
        end_inside=0.3,
        land_via=0.3,
        pad_r=(4, 5),
        pad_shape="round",
        n_stray=(0, 2),
        n_pads=(0, 1),
        n_vias=(0, 2),
        via_r=(3, 4),
    ),
    "D": FamilyStyle(
        description="wide power traces and large square lands",
        width=(5, 7),
        clearance=4,
        pitch_extra=(2, 6),
        orient={"h": 0.5, "v": 0.5},
        n_bus=(2, 3),
        jog=0.2,
        end_inside=0.6,
        land_via=0.2,
        pad_r=(6, 8),
        pad_shape="square",
        n_stray=(0, 1),
        n_pads=(1, 2),
        n_vias=(1, 3),
        via_r=(4, 5),
    ),
    "E": FamilyStyle(
        description="thin mixed-direction traces in a via field",
        width=(2, 2),
        clearance=3,
        pitch_extra=(1, 4),
        orient={"h": 0.25, "v": 0.25, "d": 0.25, "a": 0.25},
        n_bus=(2, 4),
        jog=0.4,
        end_inside=0.6,
        land_via=0.8,
        pad_r=(4, 4),
        pad_shape="round",
        n_stray=(1, 2),
        n_pads=(0, 1),
        n_vias=(3, 7),
        via_r=(3, 4),
    ),
    "F": FamilyStyle(
        description="SMD land grid with short jogged stubs",
        width=(3, 5),
        clearance=3,
        pitch_extra=(3, 6),
        orient={"h": 0.5, "v": 0.5},
        n_bus=(2, 3),
        jog=0.6,
        end_inside=0.8,
        land_via=0.1,
        pad_r=(5, 7),
        pad_shape="mixed",
        n_stray=(0, 1),
        n_pads=(3, 6),
        n_vias=(0, 2),
        via_r=(4, 5),
    ),
}
"""Board families by ``boardname``."""

BOARD_FAMILIES: tuple[str, ...] = tuple(FAMILIES)

_DIRECTIONS = {
    "h": (1.0, 0.0),
    "v": (0.0, 1.0),
    "d": (math.sqrt(0.5), math.sqrt(0.5)),
    "a": (-math.sqrt(0.5), math.sqrt(0.5)),
}


def render_layout(family: str, rng: np.random.Generator, size: int = DEFAULT_SIZE) -> Layout:
    """Sample a random layout of one board family.

    Nets are placed one by one and kept only when they clear every earlier net by
    the family's clearance, so the result always has separate, non-touching nets.

    Args:
        family: one of :data:`BOARD_FAMILIES`.
        rng: the only source of randomness (same state, same layout).
        size: image side in pixels.

    Raises:
        UserError: unknown family.
    """
    if family not in FAMILIES:
        raise UserError(
            f"unknown board family {family!r}; choose one of {', '.join(BOARD_FAMILIES)}"
        )
    style = FAMILIES[family]
    for _ in range(MAX_LAYOUT_TRIES):
        layout = _LayoutBuilder(family, style, rng, size).build()
        if layout.n_nets >= 2 and layout.traces:
            return layout
    return layout


def render(layout: Layout) -> np.ndarray:
    """The golden image of a layout: uint8, copper 255, background 0."""
    return np.where(render_nets(layout) > 0, COPPER, BACKGROUND).astype(np.uint8)


def render_nets(layout: Layout) -> np.ndarray:
    """A uint8 map of net ids (0 = background); same pixels as :func:`render`."""
    im = Image.new("L", (layout.size, layout.size), 0)
    draw = ImageDraw.Draw(im)
    for t in layout.traces:
        _draw_trace(draw, t, t.net)
    for p in layout.pads:
        _draw_pad(draw, p, p.net)
    for v in layout.vias:
        _draw_disc(draw, v.x, v.y, v.r, v.net)
    for v in layout.vias:
        _draw_disc(draw, v.x, v.y, v.hole, 0)
    return np.asarray(im, dtype=np.uint8).copy()


def apply_nuisance(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Turn a golden image into a defect-free tested image.

    Benign differences a real AOI system sees between a good board and its
    golden reference: a 1-px misregistration (probability :data:`SHIFT_PROB`),
    a few flipped pixels along copper edges, sparse isolated speckle, and
    non-binary levels (copper 230–255, background 0–20, a mild illumination
    gradient and sensor noise).

    Args:
        img: a (nearly) binary uint8 image, copper bright.
        rng: the only source of randomness.

    Returns:
        A new uint8 image of the same shape.
    """
    copper = np.asarray(img) > 127
    h, w = copper.shape
    edges = _edge_pixels(copper)
    ys, xs = np.nonzero(edges)
    if len(ys):
        k = min(len(ys), int(rng.integers(EDGE_FLIPS[0], EDGE_FLIPS[1] + 1)))
        pick = rng.choice(len(ys), size=k, replace=False)
        copper = copper.copy()
        copper[ys[pick], xs[pick]] = ~copper[ys[pick], xs[pick]]
    if rng.random() < ETCH_PROB:
        copper = etch_copper(copper, rng)
    if rng.random() < SHIFT_PROB:
        dy, dx = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)][
            int(rng.integers(8))
        ]
        copper = shift_image(copper, dy, dx)

    cu = rng.uniform(*COPPER_LEVEL)
    bg = rng.uniform(*BACKGROUND_LEVEL)
    out = np.where(copper, cu, bg).astype(np.float32)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    amp = rng.uniform(0.0, GRADIENT)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (math.cos(angle) * (xx - w / 2) + math.sin(angle) * (yy - h / 2)) / (max(h, w) / 2)
    out += amp * ramp
    out += rng.normal(0.0, NOISE_SIGMA, size=out.shape).astype(np.float32)
    n_speckle = int(rng.integers(SPECKLE[0], SPECKLE[1] + 1))
    if n_speckle:
        sy = rng.integers(0, h, size=n_speckle)
        sx = rng.integers(0, w, size=n_speckle)
        delta = rng.uniform(*SPECKLE_DELTA, size=n_speckle)
        out[sy, sx] += np.where(copper[sy, sx], -delta, delta)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def etch_copper(copper: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Move copper edges facing one direction by one pixel inside a random rectangle.

    Over-etching (edges recede) and under-etching (edges grow) are the benign
    width variation every real board shows. They leave long, one-pixel-thin
    differences along edges: large for a pixel difference, harmless for a
    board. Edges recede only where the copper is at least three pixels wide, so
    etching never cuts a trace (that would be an ``open``).
    """
    h, w = copper.shape
    rh = int(h * rng.uniform(*ETCH_REGION))
    rw = int(w * rng.uniform(*ETCH_REGION))
    y0 = int(rng.integers(0, h - rh + 1))
    x0 = int(rng.integers(0, w - rw + 1))
    region = np.zeros_like(copper)
    region[y0 : y0 + rh, x0 : x0 + rw] = True
    dy, dx = ((0, 1), (0, -1), (1, 0), (-1, 0))[int(rng.integers(4))]
    if rng.random() < 0.5:  # under-etch: copper grows into the neighbour pixel
        changed = copper | shift_image(copper, dy, dx)
    else:  # over-etch: edge pixels facing (dy, dx) recede where the copper is wide
        facing = ~shift_image(copper, -dy, -dx)
        wide = shift_image(copper, dy, dx) & shift_image(copper, 2 * dy, 2 * dx)
        changed = copper & ~(facing & wide)
    return np.where(region, changed, copper)


def shift_image(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``out[y, x] = a[y - dy, x - dx]``; the uncovered border repeats the edge."""
    if dy == 0 and dx == 0:
        return a.copy()
    h, w = a.shape
    k = max(abs(dy), abs(dx))
    p = np.pad(a, k, mode="edge")
    return p[k - dy : k - dy + h, k - dx : k - dx + w].copy()


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a ``(2r+1)``-square (separable running max, no SciPy needed)."""
    out = np.asarray(mask, dtype=bool)
    for axis in (1, 0):
        src = out
        out = src.copy()
        for s in range(1, radius + 1):
            if axis == 1:
                out[:, s:] |= src[:, :-s]
                out[:, :-s] |= src[:, s:]
            else:
                out[s:, :] |= src[:-s, :]
                out[:-s, :] |= src[s:, :]
    return out


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion by a ``(2r+1)``-square (outside the image counts as background)."""
    if radius <= 0:
        return np.asarray(mask, dtype=bool).copy()
    padded = np.pad(~np.asarray(mask, dtype=bool), radius, constant_values=True)
    return ~dilate(padded, radius)[radius:-radius, radius:-radius]


def _edge_pixels(copper: np.ndarray) -> np.ndarray:
    """Pixels on either side of a copper/background boundary."""
    grown = dilate(copper, 1)
    shrunk = erode(copper, 1)
    return grown & ~shrunk


def _draw_trace(draw: ImageDraw.ImageDraw, t: Trace, fill: int) -> None:
    draw.line(list(t.points), fill=fill, width=t.width, joint="curve")


def _draw_pad(draw: ImageDraw.ImageDraw, p: Pad, fill: int) -> None:
    if p.shape == "square":
        box = (p.x - p.r, p.y - p.r, p.x + p.r, p.y + p.r)
        draw.rounded_rectangle(box, radius=max(1.0, p.r / 3), fill=fill)
    else:
        _draw_disc(draw, p.x, p.y, p.r, fill)


def _draw_disc(draw: ImageDraw.ImageDraw, x: float, y: float, r: float, fill: int) -> None:
    draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)


class _LayoutBuilder:
    """Places nets one at a time, rejecting any that would violate the clearance."""

    def __init__(self, family: str, style: FamilyStyle, rng: np.random.Generator, size: int):
        self.family = family
        self.style = style
        self.rng = rng
        self.size = size
        self.blocked = np.zeros((size, size), dtype=bool)
        self.traces: list[Trace] = []
        self.pads: list[Pad] = []
        self.vias: list[Via] = []
        self.next_net = 1

    def build(self) -> Layout:
        s, rng = self.style, self.rng
        self._bus()
        for _ in range(int(rng.integers(s.n_stray[0], s.n_stray[1] + 1))):
            self._stray()
        for _ in range(int(rng.integers(s.n_pads[0], s.n_pads[1] + 1))):
            self._lone_pad()
        for _ in range(int(rng.integers(s.n_vias[0], s.n_vias[1] + 1))):
            self._lone_via()
        return Layout(
            self.family, self.size, tuple(self.traces), tuple(self.pads), tuple(self.vias)
        )

    # -- placement -----------------------------------------------------------

    def _try_net(self, traces: list[Trace], pads: list[Pad], vias: list[Via]) -> bool:
        """Keep the net if it clears every earlier one; net ids are dense from 1."""
        if self.next_net > 255:
            return False
        centres = [(p.x, p.y) for p in pads] + [(v.x, v.y) for v in vias]
        if any(self._is_blocked(x, y) for x, y in centres):
            return False  # cheap early reject: a land centre already sits in the keep-out
        im = Image.new("L", (self.size, self.size), 0)
        draw = ImageDraw.Draw(im)
        for t in traces:
            _draw_trace(draw, t, 255)
        for p in pads:
            _draw_pad(draw, p, 255)
        for v in vias:
            _draw_disc(draw, v.x, v.y, v.r, 255)
        mask = np.asarray(im) > 0
        if not mask.any() or (mask & self.blocked).any():
            return False
        self.blocked |= dilate(mask, self.style.clearance)
        net = self.next_net
        self.next_net += 1
        self.traces += [Trace(t.points, t.width, net) for t in traces]
        self.pads += [Pad(p.x, p.y, p.r, p.shape, net) for p in pads]
        self.vias += [Via(v.x, v.y, v.r, v.hole, net) for v in vias]
        return True

    def _is_blocked(self, x: float, y: float) -> bool:
        xi, yi = round(x), round(y)
        return 0 <= xi < self.size and 0 <= yi < self.size and bool(self.blocked[yi, xi])

    def _direction(self) -> str:
        keys = list(self.style.orient)
        cum = list(itertools.accumulate(self.style.orient[k] for k in keys))
        pick = bisect.bisect_right(cum, float(self.rng.random()) * cum[-1])
        return keys[min(pick, len(keys) - 1)]

    def _land(self, x: float, y: float, width: int) -> tuple[list[Pad], list[Via]]:
        s, rng = self.style, self.rng
        if rng.random() < s.land_via:
            r = max(float(rng.integers(s.via_r[0], s.via_r[1] + 1)), width / 2 + 1.5)
            return [], [Via(x, y, r, self._hole(r), 0)]
        r = max(float(rng.integers(s.pad_r[0], s.pad_r[1] + 1)), width / 2 + 1.5)
        return [Pad(x, y, r, self._pad_shape(), 0)], []

    def _hole(self, r: float) -> float:
        return max(1.0, round(r * float(self.rng.uniform(0.35, 0.5)), 1))

    def _pad_shape(self) -> str:
        if self.style.pad_shape == "mixed":
            return "square" if self.rng.random() < 0.6 else "round"
        return self.style.pad_shape

    def _bus(self) -> None:
        s, rng, size = self.style, self.rng, self.size
        key = self._direction()
        dx, dy = _DIRECTIONS[key]
        nx, ny = -dy, dx
        width = int(rng.integers(s.width[0], s.width[1] + 1))
        pitch = width + s.clearance + int(rng.integers(s.pitch_extra[0], s.pitch_extra[1] + 1))
        c = size / 2 - 0.5
        reach = size * 0.75
        n_bus = int(rng.integers(s.n_bus[0], s.n_bus[1] + 1))
        first = -((n_bus - 1) / 2) * pitch + float(rng.uniform(-pitch, pitch))
        jog = rng.random() < s.jog
        sigma = 1.0 if rng.random() < 0.5 else -1.0
        jog_at = float(rng.uniform(-size / 4, size / 4))
        jog_len = float(pitch * rng.integers(1, 3))
        stagger = sigma * (1.0 - math.sqrt(2.0)) * pitch
        for k in range(n_bus):
            off = first + k * pitch
            ox, oy = c + off * nx, c + off * ny
            start = (ox - reach * dx, oy - reach * dy)
            if jog:
                a = jog_at + k * stagger
                b = (ox + a * dx, oy + a * dy)
                step = jog_len / math.sqrt(2.0)
                e = (b[0] + step * (dx + sigma * nx), b[1] + step * (dy + sigma * ny))
                pts = [start, b, e, (e[0] + reach * dx, e[1] + reach * dy)]
            else:
                pts = [start, (ox + reach * dx, oy + reach * dy)]
            pads: list[Pad] = []
            vias: list[Via] = []
            if rng.random() < s.end_inside:
                pts, end = _cut_polyline(pts, float(rng.uniform(0.45, 0.8)))
                pads, vias = self._land(end[0], end[1], width)
            pts = [(round(x, 2), round(y, 2)) for x, y in pts]
            self._try_net([Trace(tuple(pts), width, 0)], pads, vias)

    def _stray(self) -> None:
        """A short trace in another direction, a land at each end inside the patch."""
        s, rng, size = self.style, self.rng, self.size
        for _ in range(4):
            key = self._direction()
            if rng.random() < 0.6:
                key = {"h": "v", "v": "h", "d": "a", "a": "d"}[key]
            dx, dy = _DIRECTIONS[key]
            width = int(rng.integers(s.width[0], s.width[1] + 1))
            x0, y0 = rng.uniform(6, size - 6, size=2)
            length = float(rng.uniform(size / 4, size / 1.5))
            x1, y1 = x0 + length * dx, y0 + length * dy
            pads, vias = self._land(float(x0), float(y0), width)
            if 0 <= x1 < size and 0 <= y1 < size:
                p2, v2 = self._land(float(x1), float(y1), width)
                pads, vias = pads + p2, vias + v2
            pts = ((round(float(x0), 2), round(float(y0), 2)), (round(x1, 2), round(y1, 2)))
            if self._try_net([Trace(pts, width, 0)], pads, vias):
                return

    def _lone_pad(self) -> None:
        s, rng, size = self.style, self.rng, self.size
        for _ in range(6):
            r = float(rng.integers(s.pad_r[0], s.pad_r[1] + 1))
            x, y = (round(float(v), 1) for v in rng.uniform(r, size - 1 - r, size=2))
            if self._try_net([], [Pad(x, y, r, self._pad_shape(), 0)], []):
                return

    def _lone_via(self) -> None:
        s, rng, size = self.style, self.rng, self.size
        for _ in range(6):
            r = float(rng.integers(s.via_r[0], s.via_r[1] + 1))
            x, y = (round(float(v), 1) for v in rng.uniform(r, size - 1 - r, size=2))
            if self._try_net([], [], [Via(x, y, r, self._hole(r), 0)]):
                return


def _cut_polyline(
    pts: list[tuple[float, float]], frac: float
) -> tuple[list[tuple[float, float]], tuple[float, float]]:
    """The first ``frac`` of a polyline (by length) and its new end point."""
    lengths = [math.dist(a, b) for a, b in itertools.pairwise(pts)]
    target = frac * sum(lengths)
    out = [pts[0]]
    for (a, b), seg in zip(itertools.pairwise(pts), lengths, strict=True):
        if target <= seg:
            t = target / seg if seg else 0.0
            end = (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]))
            out.append(end)
            return out, end
        out.append(b)
        target -= seg
    return out, pts[-1]
