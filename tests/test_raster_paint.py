"""Defect painting on a raster image alone (no layout): ``paint_defect_on_image``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from automl_deft.errors import UserError
from automl_deft.synth.defects import (
    DEFECT_TYPES,
    DefectSiteError,
    _Board,
    paint_defect,
    paint_defect_on_image,
)
from automl_deft.synth.render import BOARD_FAMILIES, apply_nuisance, render, render_layout

SOLID_COPPER_FAMILIES = ("A", "B", "D", "F")
"""Families whose boards nearly always have copper wide enough for a pin-hole
(C and E are thin traces and vias; the layout painter fails there as often)."""


def _pair(family: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    golden = render(render_layout(family, rng))
    return golden, apply_nuisance(golden, rng)


def _components(img: np.ndarray) -> int:
    return int(ndimage.label(img > 127, structure=np.ones((3, 3), dtype=bool))[1])


@pytest.mark.parametrize("defect_type", DEFECT_TYPES)
def test_visible_change_inside_bbox_and_input_untouched(defect_type: str) -> None:
    painted = 0
    for family in BOARD_FAMILIES:
        golden, test = _pair(family, 3)
        before = test.copy()
        try:
            out, (x0, y0, x1, y1) = paint_defect_on_image(
                test, defect_type, "medium", np.random.default_rng(5), reference=golden
            )
        except DefectSiteError:
            continue
        painted += 1
        np.testing.assert_array_equal(test, before)
        assert out.shape == test.shape and out.dtype == np.uint8
        diff = np.abs(out.astype(int) - test.astype(int))
        assert diff[y0:y1, x0:x1].max() >= 40
        outside = diff.copy()
        outside[y0:y1, x0:x1] = 0
        assert outside.max() < 12  # sub-visible rounding at most, never a second defect
    assert painted >= 4


@pytest.mark.parametrize("defect_type", DEFECT_TYPES)
def test_success_rate_on_random_goldens(defect_type: str) -> None:
    ok = 0
    for i in range(20):
        family = SOLID_COPPER_FAMILIES[i % len(SOLID_COPPER_FAMILIES)]
        golden, test = _pair(family, 100 + i)
        rng = np.random.default_rng(i)
        severity = ("low", "medium", "high")[i % 3]
        try:
            paint_defect_on_image(test, defect_type, severity, rng, reference=golden)
            ok += 1
        except DefectSiteError:
            pass
    assert ok >= 16, f"{defect_type}: {ok}/20"


def test_deterministic_per_seed() -> None:
    golden, test = _pair("C", 11)
    for defect_type in DEFECT_TYPES:
        a = paint_defect_on_image(
            test, defect_type, "high", np.random.default_rng(2), reference=golden
        )
        b = paint_defect_on_image(
            test, defect_type, "high", np.random.default_rng(2), reference=golden
        )
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1] == b[1]


def test_topology_of_full_contrast_defects() -> None:
    """An open splits a trace, a short joins two nets, a copper blob adds a component."""
    expected = {"open": 1, "short": -1, "copper": 1, "spur": 0, "mousebite": 0}
    for defect_type, delta in expected.items():
        for seed in range(4):
            golden, _ = _pair("B", seed)
            out, _ = paint_defect_on_image(
                golden, defect_type, "high", np.random.default_rng(seed), contrast=1.0
            )
            assert _components(out) - _components(golden) == delta, (defect_type, seed)


def test_raster_traces_match_the_layout() -> None:
    """Centreline pieces read from pixels lie on layout traces, with the layout's width."""
    for family in BOARD_FAMILIES:
        layout = render_layout(family, np.random.default_rng(0))
        board = _Board.from_raster(render(layout))
        assert board.segments, family
        widths = {s.width for s in layout.segments()}
        for seg in board.segments:
            assert any(abs(seg.width - w) <= 1 for w in widths), (family, seg)
            mx, my = round((seg.x0 + seg.x1) / 2), round((seg.y0 + seg.y1) / 2)
            assert board.copper[my, mx]


def test_no_reference_and_non_square_images() -> None:
    """Without a golden the copper is read from the tested image; any height and width."""
    _, test = _pair("A", 4)
    wide = np.concatenate([test, test[:, :20]], axis=1)
    for image in (wide, wide.T.copy()):
        h, w = image.shape
        for defect_type in DEFECT_TYPES:
            for seed in range(2):
                try:
                    out, (x0, y0, x1, y1) = paint_defect_on_image(
                        image, defect_type, "medium", np.random.default_rng(seed)
                    )
                except DefectSiteError:
                    continue
                assert out.shape == (h, w)
                assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h


def test_no_site_and_bad_inputs() -> None:
    blank = np.zeros((64, 64), dtype=np.uint8)
    with pytest.raises(DefectSiteError, match="no site for a low open on this image"):
        paint_defect_on_image(blank, "open", "low", np.random.default_rng(0))
    with pytest.raises(UserError, match="unknown defect type 'scratch'"):
        paint_defect_on_image(blank, "scratch", "low", np.random.default_rng(0))
    with pytest.raises(UserError, match="2-D grayscale"):
        paint_defect_on_image(
            np.zeros((8, 8, 3), np.uint8), "open", "low", np.random.default_rng(0)
        )
    with pytest.raises(UserError, match="pass the golden image"):
        paint_defect_on_image(blank, "open", "low", np.random.default_rng(0), reference=blank[:9])


def test_layout_painter_still_names_the_layout() -> None:
    layout = render_layout("A", np.random.default_rng(0))
    blank = np.zeros((layout.size, layout.size), dtype=np.uint8)
    empty = type(layout)(layout.family, layout.size, (), (), ())
    with pytest.raises(DefectSiteError, match="on this A layout; re-sample the layout"):
        paint_defect(blank, empty, "open", "low", np.random.default_rng(0))
