"""A second synthetic workspace: colour, component-level SMT AOI under four lights.

:func:`generate_smt_workspace` (``automl-deft demo-workspace DIR --kind smt``)
writes the same layout as the bare-board demo (:mod:`automl_deft.synth.demo`:
five CSVs with the untouched hold-out, the images, ``specs/baseline_spec.yaml``,
``README.md``), with the same planning, seeding, worker pool and uniqueness
check (it is a :class:`~automl_deft.synth.demo.DemoKind`), but each row is one
SMT component in the TAO layout: four RGB JPEG lights per side,
``{object_name}_{light}.jpg`` with lights :data:`LIGHTS`, 128 px by default.

What a row shows (:mod:`automl_deft.synth.smt_render` draws it):

* a part — chip resistor or capacitor (0402/0603-like: body colour,
  terminations, a value code on resistors), a SOD-323-like diode (cathode band),
  a SOT-23 transistor or an SOIC-8/14 IC (black moulding, gull-wing leads, pin-1
  dimple, part and lot code) — soldered on pads of a green or blue solder-mask
  patch with traces, vias and silkscreen (outline, polarity mark, reference);
* benign nuisance on every tested image, PASS or not: a few pixels of camera
  misregistration, sub-pixel placement jitter, solder volume variation, a
  different vendor's body shade or marking ink (or none), another lot code,
  per-light exposure, white balance and illumination drift, sensor noise, JPEG;
* on defect rows one of :data:`SMT_DEFECT_TYPES`, painted into the scene
  geometry, so every light sees the same defect: ``missing`` (bare pads with
  solder), ``shift`` (misplaced and skewed), ``tombstone`` (a chip lifted on one
  end, up to standing), ``bridge`` (solder joining adjacent leads),
  ``insufficient`` (starved or absent fillets), ``excess`` (solder blobs spilling
  past the pad), ``polarity`` (a polarised part rotated 180 degrees). Severity
  (low/medium/high) sets the size of the fault; ``bbox`` is the box of the pixels
  it changes (against the same tested image without it).

The sets shift on purpose, like the bare-board demo's: training and validation
hold boards A-D only with ``tombstone`` and ``polarity`` rare and few low-severity
defects; the KPI set, the mining pool and the hold-out hold all five boards (E:
a dark-blue board with its own part mix) and all seven types in even measure.

Measured on 2 CPU cores shared with other jobs (load average 5-7): ``tiny``
(654 rows, 5,232 JPEGs) 5.8 s in one process (6.3 s of CPU); ``small`` (4,434
rows, 35,472 JPEGs) 47.7 s with two workers, 42 s of CPU in all (28 s user, 14 s
system: creating 35k files on ext4 is a third of it), i.e. about 21-25 s on two
idle cores. A row's time: painting ~1 ms a scene (the board around a part is
painted once per process and cut at the camera offset), four lights ~0.3 ms,
JPEG ~0.2 ms an image, file creation ~0.4 ms an image.

Extra CSV columns beyond the workspace schema: ``boardname`` (board design
A-E), ``comp_type_1`` (RES, CAP, DIODE, TRANSISTOR, IC), ``comp_name``
(reference designator), ``part_type`` (package), ``number_of_pins``,
``project``, ``severity`` and ``bbox`` (``"x0 y0 x1 y1"``, ``x1``/``y1``
exclusive; both empty for PASS).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from automl_deft.errors import SpecError, UserError
from automl_deft.holdout import HOLDOUT_FRACTION
from automl_deft.io import atomic_write_text
from automl_deft.jsontypes import SpecTree
from automl_deft.model.spec import default_spec_dict, save_spec, spec_from_dict
from automl_deft.synth.demo import (
    DemoKind,
    DemoSummary,
    DrawJob,
    DrawnRow,
    RowPlan,
    SplitPlan,
    build_workspace,
    rel_dirs,
)
from automl_deft.synth.smt_render import (
    LIGHTS,
    PACKAGES,
    BoardLook,
    Exposure,
    Footprint,
    Package,
    Placement,
    Vendor,
    expose,
    paint_scene,
    shade,
)
from automl_deft.workspace import HOLDOUT_ROLE, PASS_LABEL, REQUIRED_COLUMNS, resolve_image_path
from automl_deft.yamlio import dump_yaml

SMT_DEFECT_TYPES: tuple[str, ...] = (
    "missing",
    "shift",
    "tombstone",
    "bridge",
    "insufficient",
    "excess",
    "polarity",
)
"""Defect labels of the SMT demo (lower case, as workspaces normalise them)."""

SMT_SEVERITIES: tuple[str, ...] = ("low", "medium", "high")
DEFAULT_SMT_SIZE = 128
SIZE_RANGE = (128, 224)
"""Supported window sides in pixels (inclusive)."""
IMAGE_EXT = ".jpg"
JPEG_QUALITY = 90
"""Fixed JPEG settings (no ``optimize``, no EXIF): the same pixels give the same bytes."""
NOISE_SIGMA = 2.0
"""Sensor noise (grey levels) of every capture, before JPEG."""

SMT_COLUMNS: tuple[str, ...] = (
    *REQUIRED_COLUMNS,
    "boardname",
    "comp_type_1",
    "comp_name",
    "part_type",
    "number_of_pins",
    "project",
    "severity",
    "bbox",
)

COMPONENTS_PER_BOARD = 24
DESIGN_STREAM = 101
"""Mixed into the seeds of the board designs (row seeds use split ids 0-4)."""
CAMERA_SHIFT = 3
"""Largest misregistration of a tested window, whole pixels at 128 px (either axis)."""
PLACEMENT_JITTER = 0.006
"""Largest benign placement offset of a part, window fraction (about 0.8 px at 128)."""
ROTATION_JITTER = 0.8
"""Largest benign placement rotation, degrees."""
SOLDER_VARIATION = (0.85, 1.15)
"""Benign fillet volume factors."""
VENDOR_CHANGE_PROB = 0.3
"""Probability that the tested part comes from another vendor than the golden one."""
LOT_CHANGE_PROB = 0.5
"""Probability that a tested IC carries another lot code than the golden one."""

CHANGE_LEVEL = 30.0
"""A pixel counts as changed by a defect when one light moves it this much (0-255)."""
MIN_CHANGED = {"low": 20, "medium": 35, "high": 60}
"""Fewest changed pixels of a defect at 128 px (scaled by area for other sizes)."""
MAX_DEFECT_TRIES = 8

SHIFT = {"low": 0.035, "medium": 0.06, "high": 0.10}
SKEW = {"low": 0.0, "medium": 3.0, "high": 8.0}
TILT = {"low": (15.0, 25.0), "medium": (35.0, 55.0), "high": (75.0, 86.0)}
STARVED = {"low": 0.4, "medium": 0.18, "high": 0.0}
EXCESS = {"low": 1.8, "medium": 2.4, "high": 3.2}
BRIDGE = {"low": (0.02, 0.03), "medium": (0.026, 0.04), "high": (0.032, 0.05)}
"""Half width and height of a solder bridge (window fractions)."""
MISSING_DOME = {"low": 0.05, "medium": 0.035, "high": 0.015}
POLARITY_MARK = {"low": 0.018, "medium": 0.026, "high": 0.034}
"""Pin-1 dimple radius (ICs) on a polarity row; a diode's band is twice as long."""


# -- board designs ----------------------------------------------------------------

HASL = (0.78, 0.78, 0.80)
ENIG = (0.86, 0.70, 0.36)


@dataclass(frozen=True)
class BoardDesign:
    """One board family: its look, its project and the parts it carries (weights)."""

    name: str
    project: str
    look: BoardLook
    parts: tuple[tuple[str, float], ...]


BOARD_DESIGNS: dict[str, BoardDesign] = {
    d.name: d
    for d in (
        BoardDesign(
            "A",
            "motor-drive",
            BoardLook((0.13, 0.38, 0.20), 0.25, HASL),
            (("R0402", 3), ("C0402", 3), ("C0603", 2), ("SOT-23", 2)),
        ),
        BoardDesign(
            "B",
            "power-supply",
            BoardLook((0.09, 0.28, 0.14), 0.35, HASL),
            (("R0603", 3), ("C0603", 3), ("SOD-323", 2), ("SOT-23", 2)),
        ),
        BoardDesign(
            "C",
            "sensor-hub",
            BoardLook((0.16, 0.42, 0.24), 0.2, ENIG),
            (("R0402", 3), ("C0402", 3), ("SOIC-8", 2), ("SOD-323", 1)),
        ),
        BoardDesign(
            "D",
            "radio-module",
            BoardLook((0.10, 0.22, 0.46), 0.3, ENIG),
            (("C0402", 3), ("R0402", 2), ("SOIC-8", 2), ("SOIC-14", 2)),
        ),
        BoardDesign(
            "E",
            "display-ctrl",
            BoardLook((0.07, 0.14, 0.32), 0.1, HASL),
            (("R0603", 2), ("C0603", 2), ("SOIC-14", 2), ("SOD-323", 2), ("SOT-23", 1)),
        ),
    )
}
"""The five board families of the SMT demo (E is never in training)."""
SMT_FAMILIES: tuple[str, ...] = tuple(BOARD_DESIGNS)

CAP_BODIES = ((0.62, 0.52, 0.38), (0.55, 0.45, 0.33), (0.70, 0.60, 0.45), (0.48, 0.42, 0.36))
RES_BODIES = ((0.07, 0.07, 0.08), (0.11, 0.10, 0.09), (0.09, 0.09, 0.12))
MOULD_BODIES = ((0.09, 0.09, 0.10), (0.13, 0.13, 0.14), (0.11, 0.10, 0.10))
DIODE_BODIES = ((0.08, 0.08, 0.09), (0.16, 0.15, 0.14))


def supports(pkg: Package, label: str) -> bool:
    """Whether a defect type can happen to a part of package ``pkg``."""
    if label == "tombstone":
        return pkg.two_terminal
    if label == "bridge":
        return not pkg.two_terminal
    if label == "polarity":
        return pkg.polarised
    return True


@functools.lru_cache(maxsize=64)
def board_components(seed: int, family: str) -> tuple[Footprint, ...]:
    """The components of one board design (the same for every row of the family)."""
    design = BOARD_DESIGNS[family]
    names = [p for p, _ in design.parts]
    weights = np.array([w for _, w in design.parts], float)
    counters: dict[str, int] = {}
    out = []
    fam = SMT_FAMILIES.index(family)
    for j in range(COMPONENTS_PER_BOARD):
        rng = np.random.default_rng(np.random.SeedSequence([seed, DESIGN_STREAM, fam, j]))
        # every part of the mix at least once, then by weight
        part = (
            names[j] if j < len(names) else names[rng.choice(len(names), p=weights / weights.sum())]
        )
        pkg = PACKAGES[part]
        counters[pkg.prefix] = counters.get(pkg.prefix, 0) + 1
        ref = f"{pkg.prefix}{counters[pkg.prefix] + 10 * fam}"
        n_pads = 2 if pkg.two_terminal else pkg.pins
        traces = tuple(
            (i, float(_trace_direction(pkg, i, rng)), float(rng.uniform(0.03, 0.05)))
            for i in range(n_pads)
            if rng.random() < 0.7
        )
        corners = [(0.1, 0.1), (0.9, 0.1), (0.1, 0.9), (0.9, 0.9)]
        vias = tuple(corners[k] for k in rng.permutation(4)[: int(rng.integers(0, 3))])
        marking = (f"{rng.integers(1, 10)}{rng.integers(0, 10)}{rng.integers(0, 6)}",)
        texture = tuple(tuple(float(x) for x in row) for row in 1.0 + rng.normal(0, 0.04, (5, 5)))
        angle = float(rng.choice([0.0, 90.0, 180.0, 270.0]))
        out.append(Footprint(pkg, ref, angle, traces, vias, marking, texture))
    return tuple(out)


def _trace_direction(pkg: Package, pad: int, rng: np.random.Generator) -> float:
    """Traces leave a chip's pads outward along u and a lead's pad outward along v."""
    if pkg.two_terminal:
        return 180.0 if pad == 0 else 0.0
    side = pkg.leads[pad][1]
    return 90.0 if side > 0 else 270.0


def _draw_vendor(rng: np.random.Generator, pkg: Package) -> Vendor:
    palette = {
        "CAP": CAP_BODIES,
        "RES": RES_BODIES,
        "DIODE": DIODE_BODIES,
    }.get(pkg.comp_type, MOULD_BODIES)
    body = palette[int(rng.integers(len(palette)))]
    unmarked = pkg.comp_type == "CAP" or rng.random() < 0.15
    ink = 0.0 if unmarked else float(rng.uniform(0.55, 0.8))
    dot = float(rng.uniform(0.022, 0.03) if pkg.kind != "chip" else rng.uniform(0.045, 0.065))
    return Vendor(body, ink, dot, _lot(rng))


def _lot(rng: np.random.Generator) -> str:
    return "".join(str(int(d)) for d in rng.integers(0, 10, 4))


# -- one row ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Side:
    """Everything one capture (golden or tested) of the component depends on."""

    vendor: Vendor
    place: Placement
    offset: tuple[int, int]
    """Camera misregistration, whole pixels (the part's own jitter is sub-pixel)."""
    exposures: tuple[Exposure, ...]
    noise: tuple[np.ndarray, ...]
    """One noise field per light."""


def _benign_place(rng: np.random.Generator, n_pads: int, spread: float) -> Placement:
    j = PLACEMENT_JITTER * spread
    return Placement(
        du=float(rng.uniform(-j, j)),
        dv=float(rng.uniform(-j, j)),
        dangle=float(rng.uniform(-ROTATION_JITTER, ROTATION_JITTER) * spread),
        solder=tuple(float(x) for x in rng.uniform(*SOLDER_VARIATION, n_pads)),
    )


def _defect_place(
    rng: np.random.Generator, pkg: Package, label: str, severity: str, place: Placement
) -> Placement:
    """``place`` (a benign placement) with one defect of ``label`` at ``severity``."""
    n_pads = len(place.solder)
    if label == "missing":
        return replace(place, present=False, dome=MISSING_DOME[severity] * rng.uniform(0.8, 1.2))
    if label == "shift":
        m = SHIFT[severity] * rng.uniform(0.9, 1.25)
        phi = rng.uniform(0, 2 * np.pi)
        skew = SKEW[severity] * rng.uniform(0.5, 1.0) * rng.choice([-1, 1])
        return replace(
            place,
            du=place.du + float(m * np.cos(phi)),
            dv=place.dv + float(m * np.sin(phi)),
            dangle=place.dangle + float(skew),
        )
    if label == "tombstone":
        return replace(
            place, tilt=float(rng.uniform(*TILT[severity])), flipped=bool(rng.random() < 0.5)
        )
    if label == "polarity":
        return replace(place, flipped=True)
    if label == "bridge":
        pairs = [
            (i, i + 1) for i in range(len(pkg.leads) - 1) if pkg.leads[i][1] == pkg.leads[i + 1][1]
        ]
        first = int(rng.integers(len(pairs)))
        chosen = [pairs[first]]
        if severity == "high" and first + 1 < len(pairs) and pairs[first + 1][0] == pairs[first][1]:
            chosen.append(pairs[first + 1])
        half, peak = BRIDGE[severity]
        return replace(
            place,
            bridges=tuple((i, j, half, peak * float(rng.uniform(0.9, 1.1))) for i, j in chosen),
        )
    solder = list(place.solder)
    if label == "insufficient":
        count = {
            "low": 1,
            "medium": 1 if pkg.two_terminal else 2,
            "high": 2 if pkg.two_terminal else 3,
        }
        for i in rng.permutation(n_pads)[: min(count[severity], n_pads)]:
            solder[int(i)] = STARVED[severity] * float(rng.uniform(0.8, 1.2))
        return replace(place, solder=tuple(solder))
    if label == "excess":
        count = {"low": 1, "medium": 1, "high": 2}
        spill = [False] * n_pads
        for i in rng.permutation(n_pads)[: min(count[severity], n_pads)]:
            solder[int(i)] = EXCESS[severity] * float(rng.uniform(0.9, 1.1))
            spill[int(i)] = severity != "low"
        return replace(place, solder=tuple(solder), excess_spill=tuple(spill))
    raise UserError(
        f"unknown SMT defect type {label!r}; choose one of {', '.join(SMT_DEFECT_TYPES)}"
    )


def _noise(rng: np.random.Generator, size: int) -> tuple[np.ndarray, ...]:
    """Sensor noise of the four captures of one side: one draw, seen four ways.

    The transposed and mirrored views are as random as fresh draws for a light's
    image, at a quarter of the cost.
    """
    # uniform noise of the same sigma: after JPEG it looks the same as Gaussian, and
    # drawing it costs a sixth
    base = (rng.random((size, size), dtype=np.float32) - 0.5) * np.float32(NOISE_SIGMA * 12**0.5)
    return base, base.T, base[::-1], base[:, ::-1]


def _render(
    size: int, fp: Footprint, look: BoardLook, side: _Side, place: Placement
) -> dict[str, np.ndarray]:
    return shade(paint_scene(fp, look, side.vendor, place, size=size, offset=side.offset))


def _jpegs(renders: dict[str, np.ndarray], side: _Side) -> list[bytes]:
    out = []
    for i, light in enumerate(LIGHTS):
        pixels = expose(renders[light], side.exposures[i], side.noise[i])
        buf = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(
            buf, format="JPEG", quality=JPEG_QUALITY, optimize=False, subsampling="4:2:0"
        )
        out.append(buf.getvalue())
    return out


def _changed(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> np.ndarray:
    """Pixels where any light differs by :data:`CHANGE_LEVEL` or more."""
    return np.stack([np.abs(a[k] - b[k]).max(axis=0) for k in LIGHTS]).max(axis=0) >= CHANGE_LEVEL


def _draw_smt_row(
    plan: RowPlan, seed: int, size: int, images_dir: Path, *, attempt: int
) -> DrawnRow:
    """Draw one SMT row from its own seed and write its eight JPEGs."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, plan.split_id, plan.index, attempt]))
    design = BOARD_DESIGNS[plan.family]
    eligible = [
        fp for fp in board_components(seed, plan.family) if supports(fp.package, plan.label)
    ]
    fp = eligible[int(rng.integers(len(eligible)))]
    pkg = fp.package
    n_pads = 2 if pkg.two_terminal else pkg.pins
    scale = size / DEFAULT_SMT_SIZE

    golden_vendor = _draw_vendor(rng, pkg)
    test_vendor = golden_vendor if rng.random() >= VENDOR_CHANGE_PROB else _draw_vendor(rng, pkg)
    if pkg.comp_type == "IC" and rng.random() < LOT_CHANGE_PROB:
        test_vendor = replace(test_vendor, lot=_lot(rng))
    if plan.label == "polarity":
        mark = POLARITY_MARK[plan.severity] * (1.0 if pkg.kind != "chip" else 2.0)
        golden_vendor = replace(golden_vendor, dot=mark)
        test_vendor = replace(test_vendor, dot=mark)
    golden = _Side(
        golden_vendor,
        _benign_place(rng, n_pads, 0.5),
        (0, 0),
        tuple(Exposure.draw(rng, 0.4) for _ in LIGHTS),
        _noise(rng, size),
    )
    shift = round(CAMERA_SHIFT * scale)
    test = _Side(
        test_vendor,
        _benign_place(rng, n_pads, 1.0),
        (int(rng.integers(-shift, shift + 1)), int(rng.integers(-shift, shift + 1))),
        tuple(Exposure.draw(rng, 1.0) for _ in LIGHTS),
        _noise(rng, size),
    )
    clean = _render(size, fp, design.look, test, test.place)
    renders, bbox = clean, ""
    if plan.label != PASS_LABEL:
        need = MIN_CHANGED[plan.severity] * scale * scale
        best: tuple[int, dict[str, np.ndarray], np.ndarray] | None = None
        for _ in range(MAX_DEFECT_TRIES):
            place = _defect_place(rng, pkg, plan.label, plan.severity, test.place)
            drawn = _render(size, fp, design.look, test, place)
            changed = _changed(drawn, clean)
            n = int(changed.sum())
            if best is None or n > best[0]:
                best = (n, drawn, changed)
            if n >= need:
                break
        assert best is not None
        _, renders, changed = best
        ys, xs = np.nonzero(changed)
        if len(xs):
            bbox = f"{xs.min()} {ys.min()} {xs.max() + 1} {ys.max() + 1}"
    test_dir, golden_dir = rel_dirs(plan)
    object_name = f"{plan.split}_{plan.index:06d}"
    sides = (
        (test_dir, _jpegs(renders, test)),
        (golden_dir, _jpegs(_render(size, fp, design.look, golden, golden.place), golden)),
    )
    for rel, blobs in sides:
        for light, data in zip(LIGHTS, blobs, strict=True):
            resolve_image_path(images_dir, rel, object_name, light, IMAGE_EXT).write_bytes(data)
    digest = hashlib.sha1(b"".join(sides[0][1]), usedforsecurity=False).hexdigest()
    record = {
        "input_path": test_dir,
        "golden_path": golden_dir,
        "label": plan.label,
        "object_name": object_name,
        "boardname": plan.family,
        "comp_type_1": pkg.comp_type,
        "comp_name": fp.ref,
        "part_type": pkg.part_type,
        "number_of_pins": str(pkg.pins),
        "project": design.project,
        "severity": plan.severity,
        "bbox": bbox,
    }
    return DrawnRow(plan, record, digest)


def _draw_smt_job(job: DrawJob) -> list[DrawnRow]:
    return [_draw_smt_row(p, job.seed, job.size, job.images_dir, attempt=0) for p in job.plans]


# -- the sets, the spec, the README -----------------------------------------------

_EVEN = dict.fromkeys(SMT_DEFECT_TYPES, 1.0)
_TRAIN_FAMILIES = ("A", "B", "C", "D")
_TRAIN = SplitPlan(
    "train",
    "train",
    0,
    pass_share=0.85,
    families=_TRAIN_FAMILIES,
    type_weights={
        "missing": 0.18,
        "shift": 0.2,
        "tombstone": 0.06,
        "bridge": 0.14,
        "insufficient": 0.2,
        "excess": 0.16,
        "polarity": 0.06,
    },
    severity_weights={"low": 0.2, "medium": 0.45, "high": 0.35},
    low_contrast_share=0.0,
)
_KPI = SplitPlan(
    "kpi", "kpi_test", 2, 0.92, SMT_FAMILIES, _EVEN, {"low": 0.4, "medium": 0.35, "high": 0.25}, 0.0
)
SMT_SPLITS: tuple[SplitPlan, ...] = (
    _TRAIN,
    replace(_TRAIN, name="val", role="validation", split_id=1),
    _KPI,
    SplitPlan(
        "pool", "mining_pool", 3, 0.7, SMT_FAMILIES, _EVEN, dict.fromkeys(SMT_SEVERITIES, 1.0), 0.0
    ),
    replace(_KPI, name="holdout", role=HOLDOUT_ROLE, split_id=4),
)
"""The five sets of the SMT demo, in the order they are drawn (hold-out last)."""

_TAO_KEYS = ("concat_type", "grid_map")
_TAO_AUG_KEYS = ("rgb_input_mean", "rgb_input_std")


def smt_spec_dict(size: int = DEFAULT_SMT_SIZE) -> SpecTree:
    """The baseline spec of an SMT workspace: four RGB JPEG lights, TAO's keys."""
    spec = default_spec_dict()
    classify = spec["dataset"]["classify"]
    classify.update(
        {
            "image_ext": IMAGE_EXT,
            "num_input": len(LIGHTS),
            "input_map": {light: i for i, light in enumerate(LIGHTS)},
            "concat_type": "linear",
            "grid_map": {"x": 2, "y": 2},
            "image_width": size,
            "image_height": size,
        }
    )
    classify["augmentation_config"].update(
        {"rgb_input_mean": [0.485, 0.456, 0.406], "rgb_input_std": [0.229, 0.224, 0.225]}
    )
    # The camera moves up to CAMERA_SHIFT px between golden and test: register that far.
    spec["model"]["classify"]["align_max_shift"] = CAMERA_SHIFT
    return spec


def _write_smt_spec(path: Path, size: int) -> None:
    spec = smt_spec_dict(size)
    try:
        save_spec(spec, path)
    except SpecError:
        # TODO(lead): remove this branch once automl_deft.model.spec knows concat_type,
        # grid_map and rgb_input_mean/std. Until then every other key is still checked
        # (the spec without those keys must load), and the YAML is written as built.
        stripped = smt_spec_dict(size)
        classify = stripped["dataset"]["classify"]
        for key in _TAO_KEYS:
            classify.pop(key)
        for key in _TAO_AUG_KEYS:
            classify["augmentation_config"].pop(key)
        spec_from_dict(stripped)
        atomic_write_text(path, dump_yaml(spec))


def _readme(summary: DemoSummary, size: int) -> str:
    lines = [
        "# Synthetic SMT AOI demo workspace",
        "",
        "Generated by `automl-deft demo-workspace --kind smt` "
        f"(seed {summary.seed}, scale `{summary.scale}`, {size}x{size} RGB JPEGs).",
        "",
        "Component-level AOI windows in the TAO layout: each row is one SMT part",
        "(0402/0603 chip resistors and capacitors, SOD-323 diodes, SOT-23, SOIC-8/14)",
        "on a solder-mask board patch, seen under four lights",
        f"(`{{object_name}}_{{light}}{IMAGE_EXT}`, lights {', '.join(LIGHTS)}) for the",
        "golden (reference) and the tested board. Tested images carry benign nuisance",
        "(camera misregistration, placement jitter, solder volume, vendor body shade",
        "and marking, per-light exposure drift, noise, JPEG); defect rows carry one of",
        f"{', '.join(SMT_DEFECT_TYPES)}, with a severity and the box of changed pixels.",
        "",
        "The sets differ on purpose: training/validation hold boards A-D only, few",
        "`tombstone`/`polarity` and few subtle defects; the KPI test set and the mining",
        "pool hold all five boards and all seven types, the KPI set more low-severity ones.",
        "",
        "`kpi/holdout_set.csv` is the untouched hold-out: more rows of the KPI distribution",
        f"({HOLDOUT_FRACTION:.0%} of all of them, the same label and family mix). No phase",
        "reads it; only the final step scores it: the number to trust for unseen boards.",
        "",
        "```",
        summary.table(),
        "```",
        "",
    ]
    return "\n".join(lines)


SMT_KIND = DemoKind(
    name="smt",
    splits=SMT_SPLITS,
    defect_types=SMT_DEFECT_TYPES,
    columns=SMT_COLUMNS,
    draw_job=_draw_smt_job,
    draw_row=_draw_smt_row,
    write_spec=_write_smt_spec,
    readme=_readme,
)
"""The colour, four-light component demo: ``--kind smt``."""


def generate_smt_workspace(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    scale: str = "small",
    force: bool = False,
    size: int = DEFAULT_SMT_SIZE,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DemoSummary:
    """Write a complete synthetic SMT AOI workspace (four RGB JPEG lights per side).

    Same contract as :func:`~automl_deft.synth.demo.generate_demo_workspace`: images
    first and CSVs last, the same seed gives byte-identical files whatever
    ``workers`` is.

    Args:
        root: the workspace directory (created when missing).
        seed: non-negative; the same seed gives byte-identical files.
        scale: ``tiny``, ``small`` or ``medium`` (rows as the bare-board demo's).
        force: replace an existing workspace's CSVs, images, spec and README.
        size: window side in pixels, within :data:`SIZE_RANGE`.
        workers: processes drawing rows (None: automatic). Does not change the output.
        progress: called as ``progress(rows_done, rows_total)`` while drawing.

    Raises:
        UserError: a size outside :data:`SIZE_RANGE`, an unknown scale, a negative
            seed, or ``root`` already holds a workspace and ``force`` is False.
    """
    lo, hi = SIZE_RANGE
    if not lo <= size <= hi:
        raise UserError(
            f"--size {size} is outside {lo}..{hi} for --kind smt; pass a size in that range"
        )
    return build_workspace(
        SMT_KIND,
        root,
        seed=seed,
        scale=scale,
        force=force,
        size=size,
        workers=workers,
        progress=progress,
    )
