"""Colour renders of one SMT component on a board patch, under four AOI lights.

A component-level AOI window is drawn in two steps:

1. **The scene** (:class:`Canvas`): three maps of the window — albedo (RGB in
   [0, 1]), metal (how shiny: 0 matte mask or moulding, 1 solder) and height (in
   pixels) — painted from anti-aliased primitives (rounded boxes by signed
   distance, fillets as menisci around a termination clipped to its pad, solder
   domes, glyph textures for markings). :func:`paint_scene` paints a
   :class:`Footprint` (the board design: pads, traces, silkscreen, the part) with a
   :class:`Placement` (where the part really sits and how its solder looks) — so a
   defect is a different placement, and one geometry is seen by every light.
2. **The lights** (:func:`shade`): the surface normal from the height map, then
   ``LowAngleLight`` (a low ring: brightness grows with the slope, so fillet and
   body edges and any 3-D relief light up, flat areas stay dark), ``SolderLight``
   (coaxial: flat shiny metal is bright, slopes and matte surfaces dark),
   ``UniformLight`` (flat diffuse, nearly shadowless, slightly desaturated) and
   ``WhiteLight`` (an off-axis white light: full colour with shading and specular
   highlights).

Every coordinate is in pixels of a ``size``-pixel window (package dimensions are
fractions of the window, so 128 and 224 px show the same scene).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace

import numpy as np

LIGHTS: tuple[str, ...] = ("LowAngleLight", "SolderLight", "UniformLight", "WhiteLight")
"""The four AOI lights, in ``input_map`` order."""

RGB = tuple[float, float, float]

SOLDER: RGB = (0.80, 0.80, 0.82)
TIN: RGB = (0.74, 0.75, 0.78)
COPPER: RGB = (0.80, 0.48, 0.30)
SILK: RGB = (0.90, 0.90, 0.86)
MARK_METAL = {"solder": 1.0, "tin": 0.9, "pad": 0.8, "lead": 0.85}


# -- the 3x5 glyphs of markings and reference designators -------------------------

_GLYPHS: dict[str, tuple[str, ...]] = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "011", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "010", "010", "010"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
    "A": ("010", "101", "111", "101", "101"),
    "C": ("111", "100", "100", "100", "111"),
    "D": ("110", "101", "101", "101", "110"),
    "E": ("111", "100", "110", "100", "111"),
    "F": ("111", "100", "110", "100", "100"),
    "H": ("101", "101", "111", "101", "101"),
    "L": ("100", "100", "100", "100", "111"),
    "M": ("101", "111", "111", "101", "101"),
    "N": ("111", "101", "101", "101", "101"),
    "P": ("111", "101", "111", "100", "100"),
    "Q": ("111", "101", "101", "111", "001"),
    "R": ("110", "101", "110", "101", "101"),
    "S": ("111", "100", "111", "001", "111"),
    "T": ("111", "010", "010", "010", "010"),
    "U": ("101", "101", "101", "101", "111"),
    "X": ("101", "101", "010", "101", "101"),
    "Y": ("101", "101", "010", "010", "010"),
    "Z": ("111", "001", "010", "100", "111"),
}
GLYPH_CHARS = "".join(_GLYPHS)


@functools.lru_cache(maxsize=4096)
def text_bitmap(lines: tuple[str, ...]) -> np.ndarray:
    """Lines of text as a float bitmap (1 = ink), 3x5 glyphs, one column/row of spacing.

    The result is cached and shared: do not modify it.
    """
    width = max(len(line) for line in lines) * 4 - 1
    out = np.zeros((len(lines) * 6 - 1, width), np.float32)
    for r, line in enumerate(lines):
        x0 = (width - (len(line) * 4 - 1)) // 2
        for c, ch in enumerate(line):
            glyph = np.array([[b == "1" for b in row] for row in _GLYPHS[ch]], np.float32)
            out[r * 6 : r * 6 + 5, x0 + c * 4 : x0 + c * 4 + 3] = glyph
    return out


_PADDED: dict[int, np.ndarray] = {}


def _padded(bitmap: np.ndarray) -> np.ndarray:
    """``bitmap`` with a one-pixel empty border (cached per cached bitmap)."""
    key = id(bitmap)
    out = _PADDED.get(key)
    if out is None or out.shape != (bitmap.shape[0] + 2, bitmap.shape[1] + 2):
        out = _PADDED[key] = np.pad(bitmap, 1)
    return out


# -- poses and the canvas ---------------------------------------------------------


@dataclass(frozen=True)
class Pose:
    """A local frame in the window: origin ``(x, y)`` in pixels, rotated ``angle`` degrees."""

    x: float
    y: float
    angle: float = 0.0

    def moved(self, dx: float, dy: float, dangle: float = 0.0) -> Pose:
        return Pose(self.x + dx, self.y + dy, self.angle + dangle)

    def to_window(self, u: float, v: float) -> tuple[float, float]:
        a = math.radians(self.angle)
        c, s = math.cos(a), math.sin(a)
        return self.x + c * u - s * v, self.y + s * u + c * v


@dataclass(frozen=True)
class Box:
    """A rounded box in a pose's local frame: centre ``(u, v)``, half sizes, corner radius."""

    u: float
    v: float
    hu: float
    hv: float
    r: float = 0.0


def _sdf_box(u: np.ndarray, v: np.ndarray, box: Box) -> np.ndarray:
    r = min(box.r, box.hu, box.hv)
    qu = np.abs(u - box.u) - (box.hu - r)
    qv = np.abs(v - box.v) - (box.hv - r)
    outside = np.hypot(np.maximum(qu, 0.0), np.maximum(qv, 0.0))
    return outside + np.minimum(np.maximum(qu, qv), 0.0) - r


def _coverage(d: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a pixel at signed distance ``d`` (pixels) from an edge."""
    return np.clip(0.5 - d, 0.0, 1.0)


class Canvas:
    """Albedo, metal and height maps of one window (see the module docstring).

    ``size`` is the window side that package dimensions scale with; the maps may
    extend ``margin`` pixels past it on every side (a board layer that windows are
    cut from at the camera's offset, see :func:`board_layer`).
    """

    def __init__(self, size: int, base: RGB, gloss: float, margin: int = 0) -> None:
        self.size = size
        self.extent = size + 2 * margin
        n = self.extent
        # channels first: per-pixel maps broadcast over the leading axis (fast in numpy)
        self.albedo = np.empty((3, n, n), np.float32)
        self.albedo[:] = np.asarray(base, np.float32)[:, None, None]
        self.metal = np.full((n, n), gloss, np.float32)
        self.height = np.zeros((n, n), np.float32)
        self._grid = np.arange(n, dtype=np.float32) + 0.5

    def window(self, left: int, top: int) -> Canvas:
        """A copy of the ``size``-pixel window whose upper-left pixel is ``(left, top)``."""
        out = Canvas.__new__(Canvas)
        out.size = out.extent = self.size
        ys, xs = slice(top, top + self.size), slice(left, left + self.size)
        out.albedo = self.albedo[:, ys, xs].copy()
        out.metal = self.metal[ys, xs].copy()
        out.height = self.height[ys, xs].copy()
        out._grid = self._grid[: self.size].copy()
        return out

    def local(
        self, pose: Pose, box: Box, margin: float
    ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
        """The window slice around ``box`` (plus ``margin``) and its pixels' local coordinates."""
        a = math.radians(pose.angle)
        c, s = math.cos(a), math.sin(a)
        ext_u, ext_v = box.hu + margin, box.hv + margin
        cx, cy = pose.to_window(box.u, box.v)
        rx = abs(c) * ext_u + abs(s) * ext_v
        ry = abs(s) * ext_u + abs(c) * ext_v
        x0, x1 = max(0, int(cx - rx) - 1), min(self.extent, int(cx + rx) + 2)
        y0, y1 = max(0, int(cy - ry) - 1), min(self.extent, int(cy + ry) + 2)
        if x0 >= x1 or y0 >= y1:
            return None
        dx = self._grid[None, x0:x1] - pose.x
        dy = self._grid[y0:y1, None] - pose.y
        u = c * dx + s * dy
        v = -s * dx + c * dy
        return (slice(y0, y1), slice(x0, x1)), u, v

    def blend(
        self,
        sl: tuple[slice, slice],
        cov: np.ndarray,
        colour: RGB | None,
        metal: float | None,
    ) -> None:
        if colour is not None:
            patch = self.albedo[:, sl[0], sl[1]]
            patch += (np.asarray(colour, np.float32)[:, None, None] - patch) * cov
        if metal is not None:
            m = self.metal[sl]
            m += (metal - m) * cov

    def box(
        self,
        pose: Pose,
        box: Box,
        colour: RGB | None,
        metal: float | None,
        height: float | None = None,
    ) -> None:
        """A flat-topped box: paints colour/metal, raises the height to ``height``."""
        got = self.local(pose, box, 1.0)
        if got is None:
            return
        sl, u, v = got
        cov = _coverage(_sdf_box(u, v, box))
        self.blend(sl, cov, colour, metal)
        if height is not None:
            np.maximum(self.height[sl], height * cov, out=self.height[sl])

    def dent(self, pose: Pose, u: float, v: float, radius: float, depth: float) -> None:
        """A round dimple (an IC's pin-1 mark) pressed ``depth`` pixels into the surface."""
        got = self.local(pose, Box(u, v, radius, radius), 1.0)
        if got is None:
            return
        sl, uu, vv = got
        rr = np.hypot(uu - u, vv - v) / radius
        bowl = np.clip(1.0 - rr * rr, 0.0, 1.0)
        self.height[sl] -= depth * bowl
        self.blend(sl, np.clip(1.5 - rr * 1.5, 0.0, 1.0) * 0.35, (0.02, 0.02, 0.02), None)

    def texture(
        self, pose: Pose, box: Box, bitmap: np.ndarray, colour: RGB, strength: float = 1.0
    ) -> None:
        """``bitmap`` (1 = ink) stretched over ``box``: markings, silkscreen text."""
        got = self.local(pose, box, 0.0)
        if got is None:
            return
        sl, u, v = got
        rows, cols = bitmap.shape
        tu = (u - (box.u - box.hu)) / (2 * box.hu) * cols - 0.5
        tv = (v - (box.v - box.hv)) / (2 * box.hv) * rows - 0.5
        padded = _padded(bitmap)
        iu = np.floor(tu).astype(np.int32)
        iv = np.floor(tv).astype(np.int32)
        fu = tu - iu
        fv = tv - iv
        iu = np.clip(iu + 1, 0, cols)
        iv = np.clip(iv + 1, 0, rows)
        ink = (
            padded[iv, iu] * (1 - fu) * (1 - fv)
            + padded[iv, iu + 1] * fu * (1 - fv)
            + padded[iv + 1, iu] * (1 - fu) * fv
            + padded[iv + 1, iu + 1] * fu * fv
        )
        inside = (np.abs(u - box.u) <= box.hu) & (np.abs(v - box.v) <= box.hv)
        self.blend(sl, np.where(inside, ink, 0.0) * strength, colour, None)

    def meniscus(
        self,
        pad_pose: Pose,
        pad: Box,
        feature_pose: Pose,
        feature: Box,
        *,
        peak: float,
        reach: float,
        exponent: float,
        spill: float = 0.0,
    ) -> None:
        """A solder fillet: ``peak`` high at ``feature``'s edge, falling to 0 at ``reach``.

        Drawn on the pad, or for excess solder spilling up to ``spill`` pixels past it.
        """
        if peak <= 0 or reach <= 0:
            return
        got = self.local(pad_pose, pad, spill + 1.0)
        if got is None:
            return
        sl, pu, pv = got
        ys, xs = sl
        a = math.radians(feature_pose.angle)
        c, s = math.cos(a), math.sin(a)
        dx = self._grid[None, xs] - feature_pose.x
        dy = self._grid[ys, None] - feature_pose.y
        fu = c * dx + s * dy
        fv = -s * dx + c * dy
        d = _sdf_box(fu, fv, feature)
        rise = np.clip(1.0 - np.maximum(d, 0.0) / reach, 0.0, 1.0) ** exponent
        rise = rise * _coverage(_sdf_box(pu, pv, pad) - spill)
        h = peak * rise
        np.maximum(self.height[sl], h, out=self.height[sl])
        self.blend(sl, np.clip(h / 0.8, 0.0, 1.0), SOLDER, MARK_METAL["solder"])

    def dome(self, pose: Pose, pad: Box, peak: float) -> None:
        """Reflowed solder on a pad nothing was soldered to: a shiny flattened dome."""
        got = self.local(pose, pad, 1.0)
        if got is None:
            return
        sl, u, v = got
        nu = np.abs(u - pad.u) / max(pad.hu, 1e-3)
        nv = np.abs(v - pad.v) / max(pad.hv, 1e-3)
        shape = np.clip(1.0 - nu**4 - nv**4, 0.0, 1.0) ** 0.5
        cov = _coverage(_sdf_box(u, v, pad))
        h = peak * shape * cov
        np.maximum(self.height[sl], h, out=self.height[sl])
        self.blend(sl, cov, SOLDER, MARK_METAL["solder"])

    def ridge(self, pose: Pose, box: Box, peak: float) -> None:
        """A solder bridge: a rounded ridge along ``box``'s u axis."""
        got = self.local(pose, box, 1.0)
        if got is None:
            return
        sl, u, v = got
        across = np.clip(1.0 - ((v - box.v) / max(box.hv, 1e-3)) ** 2, 0.0, 1.0)
        cov = _coverage(_sdf_box(u, v, box))
        h = peak * np.sqrt(across) * cov
        np.maximum(self.height[sl], h, out=self.height[sl])
        self.blend(sl, cov, SOLDER, MARK_METAL["solder"])


# -- packages ---------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    """One part package; lengths are fractions of the window side.

    Chips (``kind == "chip"``) have two terminations along u; gull-wing parts have
    leads leaving the body on the -v/+v sides at the u positions in ``leads``.
    """

    part_type: str
    comp_type: str
    prefix: str
    """Reference-designator prefix (R, C, D, U, Q)."""
    kind: str
    pins: int
    body: tuple[float, float, float]
    """Length (u), width (v) and height of the body."""
    polarised: bool
    term: float = 0.0
    """Chips: termination length at each end."""
    pad: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Pad centre offset (u for chips, v for leads), pad length (along u), pad width."""
    leads: tuple[tuple[float, int], ...] = ()
    """Gull-wing: (u position, side -1/+1) of each lead, pin 1 first."""
    lead_width: float = 0.0
    lead_reach: float = 0.0
    """Gull-wing: how far the toe sits from the body's centre line (v)."""

    @property
    def two_terminal(self) -> bool:
        return self.kind == "chip"


def _soic(part: str, n: int, body_u: float, pitch: float, lead_w: float) -> Package:
    per_side = n // 2
    us = [(i - (per_side - 1) / 2) * pitch for i in range(per_side)]
    # pin 1 at the -u end of the +v side, counting round the body
    leads = tuple((u, +1) for u in us) + tuple((u, -1) for u in reversed(us))
    return Package(
        part,
        "IC",
        "U",
        "gullwing",
        n,
        (body_u, 0.30, 0.10),
        polarised=True,
        pad=(0.245, lead_w * 1.45, 0.13),
        leads=leads,
        lead_width=lead_w,
        lead_reach=0.285,
    )


PACKAGES: dict[str, Package] = {
    p.part_type: p
    for p in (
        Package(
            "R0402", "RES", "R", "chip", 2, (0.44, 0.22, 0.11), False, 0.08, (0.25, 0.20, 0.30)
        ),
        Package(
            "R0603", "RES", "R", "chip", 2, (0.50, 0.26, 0.13), False, 0.09, (0.29, 0.22, 0.34)
        ),
        Package(
            "C0402", "CAP", "C", "chip", 2, (0.44, 0.22, 0.15), False, 0.08, (0.25, 0.20, 0.30)
        ),
        Package(
            "C0603", "CAP", "C", "chip", 2, (0.50, 0.26, 0.17), False, 0.09, (0.29, 0.22, 0.34)
        ),
        Package(
            "SOD-323", "DIODE", "D", "chip", 2, (0.42, 0.24, 0.12), True, 0.06, (0.27, 0.20, 0.28)
        ),
        Package(
            "SOT-23",
            "TRANSISTOR",
            "Q",
            "gullwing",
            3,
            (0.40, 0.18, 0.10),
            polarised=True,
            pad=(0.20, 0.11, 0.13),
            leads=((-0.15, 1), (0.15, 1), (0.0, -1)),
            lead_width=0.07,
            lead_reach=0.235,
        ),
        _soic("SOIC-8", 8, 0.44, 0.105, 0.045),
        _soic("SOIC-14", 14, 0.66, 0.09, 0.04),
    )
}
"""Every package the SMT demo places (``part_type`` → package)."""


# -- a footprint on the board and the part's placement on it ----------------------


@dataclass(frozen=True)
class BoardLook:
    """How one board design looks: mask colour and gloss, pad finish, silkscreen."""

    mask: RGB
    gloss: float
    finish: RGB
    """Colour of bare pad metal (silver HASL or gold ENIG)."""
    silk: bool = True


@dataclass(frozen=True)
class Footprint:
    """The board side of one component: where it goes and what surrounds it (a design)."""

    package: Package
    ref: str
    angle: float
    """Design orientation of the part, degrees (0, 90, 180 or 270)."""
    traces: tuple[tuple[int, float, float], ...]
    """(pad index, direction in degrees, width) of each trace leaving a pad, under mask."""
    vias: tuple[tuple[float, float], ...]
    """Via centres in window fractions."""
    marking: tuple[str, ...]
    """The part's marking text (empty: unmarked)."""
    texture: tuple[tuple[float, ...], ...]
    """A coarse grid of mask-thickness variation (multiplies the mask colour)."""


@dataclass(frozen=True)
class Vendor:
    """What a part looks like from one supplier: body colour, marking ink, pin-1 mark."""

    body: RGB
    ink: float
    """Marking brightness in [0, 1] (0: unmarked)."""
    dot: float
    """Pin-1 dimple radius (fraction of the window) or diode band length."""
    lot: str = ""
    """A lot/date code line under an IC's part marking."""


@dataclass(frozen=True)
class Placement:
    """Where the part sits on its footprint and how it is soldered (PASS or a defect).

    Attributes:
        du, dv, dangle: offset (window fractions) and rotation (degrees) of the part
            from the footprint, in the footprint's frame.
        present: False: the part is missing (pads carry solder domes).
        flipped: the part is rotated 180 degrees (wrong polarity).
        tilt: tombstone angle in degrees (0: flat), lifting the -u end.
        solder: fillet volume factor per pad (1: nominal; < 0.5 starved; > 1.5 excess).
        bridges: pairs of adjacent lead indices joined by solder, with ridge width
            and height (window fractions).
        dome: solder dome height on pads nothing wets (window fraction).
    """

    du: float = 0.0
    dv: float = 0.0
    dangle: float = 0.0
    present: bool = True
    flipped: bool = False
    tilt: float = 0.0
    solder: tuple[float, ...] = ()
    bridges: tuple[tuple[int, int, float, float], ...] = ()
    dome: float = 0.05
    excess_spill: tuple[bool, ...] = field(default=())

    def with_solder(self, solder: tuple[float, ...]) -> Placement:
        return replace(self, solder=solder)


def pad_boxes(pkg: Package, size: int) -> list[Box]:
    """Every pad of ``pkg`` in the footprint's frame (pixels), pin order."""
    s = float(size)
    off, length, width = pkg.pad
    if pkg.kind == "chip":
        return [
            Box(-off * s, 0.0, length * s / 2, width * s / 2, 1.0),
            Box(off * s, 0.0, length * s / 2, width * s / 2, 1.0),
        ]
    return [Box(u * s, side * off * s, length * s / 2, width * s / 2, 1.0) for u, side in pkg.leads]


CAMERA_MARGIN = 0.035
"""Largest camera offset :func:`paint_scene` accepts, as a fraction of the window."""
BOARD_LAYERS_CACHED = 160
"""Board layers kept per process (five boards of 24 components fit)."""


def camera_margin(size: int) -> int:
    """Largest camera offset in pixels for a ``size``-pixel window."""
    return math.ceil(CAMERA_MARGIN * size)


@functools.lru_cache(maxsize=BOARD_LAYERS_CACHED)
def board_layer(fp: Footprint, look: BoardLook, size: int) -> Canvas:
    """The board around ``fp`` (mask, traces, vias, silkscreen, pads), cached.

    It is the same for every window of the component, so it is painted once per
    process with a margin of :func:`camera_margin` pixels, and each window is cut
    from it at its camera offset (:meth:`Canvas.window`). Do not modify it.
    """
    margin = camera_margin(size)
    canvas = Canvas(size, look.mask, look.gloss, margin)
    centre = Pose(size / 2 + margin, size / 2 + margin, fp.angle)
    _paint_board(canvas, fp, look, centre)
    for pad in pad_boxes(fp.package, size):
        canvas.box(centre, pad, look.finish, MARK_METAL["pad"], 0.5)
    return canvas


def paint_scene(
    fp: Footprint,
    look: BoardLook,
    vendor: Vendor,
    place: Placement,
    *,
    size: int,
    offset: tuple[int, int] = (0, 0),
) -> Canvas:
    """The window of ``fp``'s board with the part as ``place`` puts it.

    ``offset`` (whole pixels, at most :func:`camera_margin`) moves the whole window
    content: the camera's registration.

    Raises:
        ValueError: an offset beyond :func:`camera_margin`.
    """
    margin = camera_margin(size)
    if max(abs(offset[0]), abs(offset[1])) > margin:
        raise ValueError(f"camera offset {offset} exceeds {margin} px for a {size}-px window")
    canvas = board_layer(fp, look, size).window(margin - offset[0], margin - offset[1])
    s = float(size)
    pkg = fp.package
    centre = Pose(s / 2 + offset[0], s / 2 + offset[1], fp.angle)
    pads = pad_boxes(pkg, size)
    part = centre.moved(*_rotate(place.du * s, place.dv * s, fp.angle), place.dangle)
    if place.flipped:
        part = part.moved(0.0, 0.0, 180.0)
    solder = place.solder or (1.0,) * len(pads)
    if not place.present:
        for pad in pads:
            canvas.dome(centre, pad, place.dome * s)
    elif pkg.kind == "chip":
        _paint_chip(canvas, fp, vendor, place, centre, part, pads, solder)
    else:
        _paint_gullwing(canvas, fp, vendor, place, centre, part, pads, solder)
    return canvas


def _rotate(u: float, v: float, angle: float) -> tuple[float, float]:
    a = math.radians(angle)
    return math.cos(a) * u - math.sin(a) * v, math.sin(a) * u + math.cos(a) * v


def _paint_board(canvas: Canvas, fp: Footprint, look: BoardLook, centre: Pose) -> None:
    s = float(canvas.size)
    grid = np.asarray(fp.texture, np.float32)
    canvas.albedo *= _upsample(grid, canvas.extent)
    pads = pad_boxes(fp.package, canvas.size)
    r, g, b = (min(1.0, c * 1.35 + 0.03) for c in look.mask)
    lighter = (r, g, b)
    for index, direction, width in fp.traces:
        pad = pads[index]
        pu, pv = _rotate(pad.u, pad.v, fp.angle)
        pose = Pose(centre.x + pu, centre.y + pv, direction)
        canvas.box(pose, Box(s * 0.4, 0.0, s * 0.4, width * s / 2, 0.5), lighter, None, 0.8)
    for vx, vy in fp.vias:
        pose = Pose(centre.x + (vx - 0.5) * s, centre.y + (vy - 0.5) * s)
        r = 0.045 * s
        canvas.box(pose, Box(0, 0, r, r, r), look.finish, MARK_METAL["pad"], 0.6)
        canvas.box(pose, Box(0, 0, r * 0.45, r * 0.45, r * 0.45), (0.03, 0.03, 0.03), 0.0, None)
    if look.silk:
        _paint_silkscreen(canvas, fp, centre)


def _paint_silkscreen(canvas: Canvas, fp: Footprint, centre: Pose) -> None:
    s = float(canvas.size)
    pkg = fp.package
    pads = pad_boxes(pkg, canvas.size)
    hu = max(p.u + p.hu for p in pads) + 0.05 * s
    hv = max(p.v + p.hv for p in pads) + 0.05 * s
    if pkg.kind == "chip":
        hv = max(hv, pkg.body[1] * s / 2 + 0.07 * s)
    line = max(1.2, 0.018 * s)
    # outline: two long sides (leaving the pad ends open, as boards do)
    for side in (-1, 1):
        canvas.box(centre, Box(0, side * hv, hu * 0.55, line / 2), SILK, 0.0, 0.4)
    if pkg.polarised:
        # pin-1 / cathode marker on the silkscreen, at the -u end of the +v side
        u1 = -hu * 0.55 - 0.03 * s if pkg.kind == "chip" else pads[0].u
        v1 = 0.0 if pkg.kind == "chip" else hv + 0.03 * s
        r = 0.022 * s
        canvas.box(centre, Box(u1, v1, r, r if pkg.kind != "chip" else 0.09 * s, r), SILK, 0.0, 0.4)
    ref = text_bitmap((fp.ref,))
    glyph_h = 0.07 * s
    ref_pose = Pose(centre.x, centre.y, 0.0)
    half_w = glyph_h * ref.shape[1] / ref.shape[0] / 2
    canvas.texture(
        ref_pose,
        Box(-s * 0.5 + half_w + 0.04 * s, -s * 0.5 + glyph_h, half_w, glyph_h / 2),
        ref,
        SILK,
    )


def _paint_chip(
    canvas: Canvas,
    fp: Footprint,
    vendor: Vendor,
    place: Placement,
    centre: Pose,
    part: Pose,
    pads: list[Box],
    solder: tuple[float, ...],
) -> None:
    s = float(canvas.size)
    pkg = fp.package
    length, width, thick = (x * s for x in pkg.body)
    term = pkg.term * s
    hl, hw = length / 2, width / 2
    reach = (pkg.pad[0] + pkg.pad[1] / 2 - pkg.body[0] / 2) * s + 0.01 * s
    if place.tilt > 0:
        _paint_tombstone(canvas, pkg, vendor, place, centre, part, pads, solder)
        return
    for end, pad in zip((-1, 1), pads, strict=True):
        k = solder[0 if end < 0 else 1]
        face = Box(end * (hl - term / 2), 0.0, term / 2, hw, 0.6)
        spill = bool(place.excess_spill and place.excess_spill[0 if end < 0 else 1])
        canvas.meniscus(
            centre,
            pad,
            part,
            face,
            peak=min(thick * 0.62 * k, thick * 1.1),
            reach=reach * (1.0 if k <= 1.3 else 1.0 + 0.2 * (k - 1.0)),
            exponent=1.7 if k <= 1.3 else 0.55,
            spill=0.035 * s if spill else 0.0,
        )
    body = Box(0.0, 0.0, hl, hw, 0.6)
    canvas.box(part, body, vendor.body, 0.12, thick)
    for end in (-1, 1):
        canvas.box(
            part,
            Box(end * (hl - term / 2), 0.0, term / 2, hw, 0.6),
            TIN,
            MARK_METAL["tin"],
            thick + 0.6,
        )
    inner = Box(0.0, 0.0, hl - term - 0.01 * s, hw - 0.012 * s)
    if pkg.polarised:
        band = vendor.dot * s
        canvas.box(
            part,
            Box(hl - term - band / 2 - 0.01 * s, 0.0, band / 2, hw - 0.01 * s),
            (0.82, 0.82, 0.80),
            None,
        )
    elif vendor.ink > 0 and pkg.comp_type == "RES":
        _paint_marking(canvas, part, inner, fp.marking, vendor.ink)


def _paint_marking(
    canvas: Canvas, pose: Pose, area: Box, lines: tuple[str, ...], ink: float
) -> None:
    lines = tuple(line for line in lines if line)
    if not lines:
        return
    bitmap = text_bitmap(lines)
    rows, cols = bitmap.shape
    scale = min(2 * area.hu / cols, 2 * area.hv / rows)
    box = Box(area.u, area.v, cols * scale / 2, rows * scale / 2)
    canvas.texture(pose, box, bitmap, (ink, ink, ink * 0.97), 0.9)


def _paint_tombstone(
    canvas: Canvas,
    pkg: Package,
    vendor: Vendor,
    place: Placement,
    centre: Pose,
    part: Pose,
    pads: list[Box],
    solder: tuple[float, ...],
) -> None:
    """A chip standing on its +u end: tilted ``place.tilt`` degrees about that end."""
    s = float(canvas.size)
    length, width, thick = (x * s for x in pkg.body)
    term = pkg.term * s
    hl, hw = length / 2, width / 2
    theta = math.radians(min(place.tilt, 86.0))
    st, ct = math.sin(theta), math.cos(theta)
    # the unwetted pad: a dome; the pulling pad (under the part's +u end): all the solder
    lifted, pulling = (pads[1], pads[0]) if place.flipped else (pads[0], pads[1])
    canvas.dome(centre, lifted, place.dome * s)
    canvas.meniscus(
        centre,
        pulling,
        part,
        Box(hl - term * ct / 2, 0.0, max(term * ct, 1.0) / 2, hw, 0.5),
        peak=thick * 0.7,
        reach=0.09 * s,
        exponent=1.4,
    )
    u_end0 = hl - length * ct  # far end face, bottom edge (projected)
    u_end1 = u_end0 + thick * st  # far end face, top edge = top face's far end
    u_top1 = hl + thick * st  # top face, near (pivot) end
    box = Box((u_end0 + u_top1) / 2, 0.0, (u_top1 - u_end0) / 2, hw)
    got = canvas.local(part, box, 1.0)
    if got is None:
        return
    sl, u, v = got
    end_face = (u >= u_end0) & (u < u_end1)
    frac_end = np.clip((u - u_end0) / max(u_end1 - u_end0, 1e-3), 0.0, 1.0)
    along = np.clip((u_top1 - u) / max(ct, 1e-3), 0.0, length)  # distance from the pivot end
    h = np.where(
        end_face,
        length * st + frac_end * thick * ct,
        thick * ct + along * st,
    )
    cov = _coverage(_sdf_box(u, v, box))
    np.maximum(canvas.height[sl], h * cov, out=canvas.height[sl])
    is_term = end_face | (along <= term) | (along >= length - term)
    colour = np.where(
        is_term,
        np.asarray(TIN, np.float32)[:, None, None],
        np.asarray(vendor.body, np.float32)[:, None, None],
    )
    metal = np.where(is_term, MARK_METAL["tin"], 0.12).astype(np.float32)
    patch = canvas.albedo[:, sl[0], sl[1]]
    patch += (colour - patch) * cov
    m = canvas.metal[sl]
    m += (metal - m) * cov


def _paint_gullwing(
    canvas: Canvas,
    fp: Footprint,
    vendor: Vendor,
    place: Placement,
    centre: Pose,
    part: Pose,
    pads: list[Box],
    solder: tuple[float, ...],
) -> None:
    s = float(canvas.size)
    pkg = fp.package
    bu, bv, thick = (x * s for x in pkg.body)
    lw = pkg.lead_width * s
    reach = pkg.lead_reach * s
    foot_len = 0.07 * s
    feet = [
        Box(u * s, side * (reach - foot_len / 2), lw / 2, foot_len / 2, 0.4)
        for u, side in pkg.leads
    ]
    feet_window = [_part_box_in_footprint(f, place, s) for f in feet]
    wetted = [any(_overlaps(pad, fw) for fw in feet_window) for pad in pads]
    for i, pad in enumerate(pads):
        if not wetted[i]:
            canvas.dome(centre, pad, place.dome * s)
    # fillets around every foot that sits on a pad
    for j, foot in enumerate(feet):
        for i, pad in enumerate(pads):
            if not _overlaps(pad, feet_window[j]):
                continue
            k = solder[i] if i < len(solder) else 1.0
            spill = bool(
                place.excess_spill and i < len(place.excess_spill) and place.excess_spill[i]
            )
            canvas.meniscus(
                centre,
                pad,
                part,
                foot,
                peak=min(0.05 * s * k, 0.11 * s),
                reach=0.045 * s * (1.0 if k <= 1.3 else 1.0 + 0.25 * (k - 1.0)),
                exponent=1.6 if k <= 1.3 else 0.55,
                spill=0.02 * s if spill else 0.0,
            )
    for i, j, half, peak in place.bridges:
        a, b = pads[i], pads[j]
        mid_u, mid_v = (a.u + b.u) / 2, (a.v + b.v) / 2
        canvas.ridge(
            centre,
            Box(
                mid_u,
                mid_v + math.copysign(0.01 * s, mid_v),
                abs(b.u - a.u) / 2 + lw / 2,
                half * s,
                half * s,
            ),
            peak * s,
        )
    # leads: a shoulder falling from the body to the foot
    shoulder = reach - foot_len - bv / 2
    for u, side in pkg.leads:
        lead = Box(u * s, side * (bv / 2 + (reach - bv / 2) / 2), lw / 2, (reach - bv / 2) / 2, 0.3)
        got = canvas.local(part, lead, 1.0)
        if got is None:
            continue
        sl, uu, vv = got
        out = (np.abs(vv) - bv / 2) / max(shoulder, 1e-3)
        rise = np.clip(1.0 - out, 0.0, 1.0)
        h = 0.035 * s + rise * rise * (3 - 2 * rise) * (thick * 0.55)
        cov = _coverage(_sdf_box(uu, vv, lead))
        np.maximum(canvas.height[sl], h * cov, out=canvas.height[sl])
        canvas.blend(sl, cov, TIN, MARK_METAL["lead"])
    body = Box(0.0, 0.0, bu / 2, bv / 2, 0.012 * s)
    canvas.box(part, body, vendor.body, 0.06, thick)
    if pkg.pins > 3:
        canvas.dent(part, -bu / 2 + 0.06 * s, bv / 2 - 0.06 * s, vendor.dot * s, 0.35 * thick)
    if vendor.ink > 0:
        area = Box(0.02 * s if pkg.pins > 3 else 0.0, 0.0, bu / 2 - 0.06 * s, bv / 2 - 0.04 * s)
        code = fp.marking if pkg.pins <= 3 else (_ic_code(pkg), vendor.lot)
        _paint_marking(canvas, part, area, code, vendor.ink)


def _ic_code(pkg: Package) -> str:
    return "LM358" if pkg.pins == 8 else "HC14"


def _part_box_in_footprint(box: Box, place: Placement, s: float) -> Box:
    """``box`` of the part frame seen in the footprint frame (axis-aligned, for overlap)."""
    u, v = box.u, box.v
    if place.flipped:
        u, v = -u, -v
    a = math.radians(place.dangle)
    ru = math.cos(a) * u - math.sin(a) * v + place.du * s
    rv = math.sin(a) * u + math.cos(a) * v + place.dv * s
    return Box(ru, rv, box.hu, box.hv)


def _overlaps(pad: Box, box: Box) -> bool:
    """True when ``box`` covers at least a third of ``pad``'s width and some of its length."""
    ou = min(pad.u + pad.hu, box.u + box.hu) - max(pad.u - pad.hu, box.u - box.hu)
    ov = min(pad.v + pad.hv, box.v + box.hv) - max(pad.v - pad.hv, box.v - box.hv)
    return ou > 0.66 * min(pad.hu, box.hu) and ov > 0.0


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """A coarse grid bilinearly stretched over ``size`` x ``size`` pixels.

    Separable (rows, then columns) and element-wise only, so the result does not
    depend on a BLAS build.
    """
    y0, fy = _knots(grid.shape[0], size)
    x0, fx = _knots(grid.shape[1], size)
    rows = grid[y0] * (1.0 - fy)[:, None] + grid[y0 + 1] * fy[:, None]
    return rows[:, x0] * (1.0 - fx)[None, :] + rows[:, x0 + 1] * fx[None, :]


def _knots(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``size`` pixels: the knot below it and the fraction towards the next."""
    pos = (np.arange(size, dtype=np.float32) + 0.5) / size * (n - 1)
    pos = np.clip(pos, 0.0, n - 1.001)
    lo = pos.astype(np.int32)
    return lo, (pos - lo).astype(np.float32)


# -- the lights -------------------------------------------------------------------


def _unit(x: float, y: float, z: float) -> tuple[float, float, float]:
    n = math.sqrt(x * x + y * y + z * z)
    return x / n, y / n, z / n


_WHITE_DIR = _unit(-0.35, -0.45, 1.0)
"""The white light comes from the upper left, 65 degrees up."""
_WHITE_HALF = _unit(_WHITE_DIR[0], _WHITE_DIR[1], _WHITE_DIR[2] + 1.0)
"""Half-way between the white light and the camera (straight above): specular peak."""
LOW_ANGLE_TINT = np.array([0.72, 0.84, 1.0], np.float32)[:, None, None]
SOLDER_TINT = np.array([1.0, 0.96, 0.86], np.float32)[:, None, None]


def shade(canvas: Canvas) -> dict[str, np.ndarray]:
    """The four lights' images of a scene, float ``(3, H, W)`` in [0, 255] (before exposure).

    Powers are written as products (``x**12`` as cubes of squares of squares): the
    generic power is the slowest step of a render.
    """
    gy, gx = np.gradient(canvas.height)
    slope2 = gx * gx + gy * gy
    nz = 1.0 / np.sqrt(1.0 + slope2)
    nx, ny = -gx * nz, -gy * nz
    albedo, metal = canvas.albedo, canvas.metal

    lx, ly, lz = _WHITE_DIR
    diffuse = np.clip(nx * lx + ny * ly + nz * lz, 0.0, 1.0)
    hx, hy, hz = _WHITE_HALF
    half = np.clip(nx * hx + ny * hy + nz * hz, 0.0, 1.0)
    h2 = half * half
    h8 = h2 * h2
    h8 *= h8
    spec = metal * h8 * h8 * h8  # half**24
    white = albedo * (255.0 * (0.30 + 0.78 * diffuse)) + 140.0 * spec

    grey = (albedo[0] + albedo[1] + albedo[2]) * (0.15 * 0.92 * 255.0 / 3.0)
    uniform = albedo * (0.85 * 0.92 * 255.0)
    uniform += grey + 255.0 * (0.08 * metal + 0.03)

    sin_t = np.sqrt(slope2) * nz
    root = np.sqrt(sin_t)
    rim = sin_t * np.sqrt(root) * (0.25 + 0.75 * metal) * (0.95 * 255.0)  # sin_t**0.75
    low = albedo * (0.10 * 255.0) + rim * LOW_ANGLE_TINT

    z2 = nz * nz
    z4 = z2 * z2
    flat = metal * metal * z4 * z4 * z4 * (0.95 * 255.0)  # nz**12
    solder = albedo * (0.13 * 255.0) + flat * SOLDER_TINT
    return {
        "LowAngleLight": low,
        "SolderLight": solder,
        "UniformLight": uniform,
        "WhiteLight": white,
    }


@dataclass(frozen=True)
class Exposure:
    """Per-light capture drift: gain, white balance, offset, an illumination gradient."""

    gain: float = 1.0
    balance: RGB = (1.0, 1.0, 1.0)
    offset: float = 0.0
    gradient: tuple[float, float] = (0.0, 0.0)
    """Relative brightness change from the window centre to its right and bottom edges."""

    @classmethod
    def draw(cls, rng: np.random.Generator, spread: float) -> Exposure:
        """A drift ``spread`` wide (1: the tested side's, smaller: the golden's)."""
        return cls(
            gain=float(1.0 + rng.uniform(-0.08, 0.08) * spread),
            balance=tuple(float(1.0 + rng.uniform(-0.03, 0.03) * spread) for _ in range(3)),  # type: ignore[arg-type]
            offset=float(rng.uniform(-4.0, 4.0) * spread),
            gradient=(
                float(rng.uniform(-0.05, 0.05) * spread),
                float(rng.uniform(-0.05, 0.05) * spread),
            ),
        )


def expose(img: np.ndarray, exposure: Exposure, noise: np.ndarray | None) -> np.ndarray:
    """A float ``(3, H, W)`` render through a capture's drift and noise, as ``(H, W, 3)`` uint8."""
    size = img.shape[1]
    ramp = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    field_ = 1.0 + exposure.gradient[0] * ramp[None, :] + exposure.gradient[1] * ramp[:, None]
    gain = np.asarray(exposure.balance, np.float32)[:, None, None] * np.float32(exposure.gain)
    out = img * (field_ * gain)
    base = exposure.offset + 0.5
    if noise is not None:
        out += noise + np.float32(base)
    else:
        out += base
    np.clip(out, 0, 255, out=out)
    planes = out.astype(np.uint8)
    return np.stack((planes[0], planes[1], planes[2]), axis=-1)  # 5x faster than a transpose
