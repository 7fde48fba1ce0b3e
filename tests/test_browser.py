"""The AutoML page and the run report in a real headless browser (Debian's Chromium).

Skipped, with the reason in one line, where Chromium or Playwright is not installed
(``apt-get install -y chromium``; Playwright comes with the dev extras).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from automl_deft.testing.browser import browser_unavailable, check_page

UNAVAILABLE = browser_unavailable()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")

SCREENSHOT = "report_screenshot.png"


@pytest.fixture(scope="module")
def pipeline_run(tiny_ws: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finalized run (Phase 1 → DEFT → Phase 3 → finalize) with its report rendered."""
    from automl_deft.deft.report import render_report
    from tests.deft.test_report import _make_pipeline_run, scored_frames

    root = tmp_path_factory.mktemp("browser") / "run_20261126_140208"
    _make_pipeline_run(root, tiny_ws, scored_frames(tiny_ws), phase3_wins=True)
    render_report(root)
    return root


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        # Not a blank page: a rendered report or AutoML page has many distinct colours.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50
        return image.size


def test_automl_page_renders_clean(tmp_path: Path) -> None:
    from automl_deft.hpo.report import leaderboard, render_report
    from automl_deft.io import atomic_write_text
    from automl_deft.layout import SearchLayout
    from tests.test_automl_page import _result

    result = _result(tmp_path)
    page = SearchLayout(result.results_dir).report
    atomic_write_text(page, render_report(result, leaderboard(result, []), {"lr": 1.0}))
    shot = result.results_dir / "automl_report_screenshot.png"
    seen = check_page(
        page,
        expected=("Optimisation history", "Guards", "Leaderboard", "Parameter importance"),
        screenshot=shot,
    )
    assert seen.ok, seen.problems
    assert seen.title == "Phase 3 AutoML search"
    assert seen.headings[0].startswith("Phase 3 AutoML search")
    width, height = _png_size(shot)
    assert width == 1280 and height == seen.height_px


def test_run_report_renders_clean(pipeline_run: Path) -> None:
    from automl_deft.deft.report import SECTION_TITLES, report_path

    root = pipeline_run
    shot = root / SCREENSHOT
    seen = check_page(
        report_path(root),
        expected=("automl-deft run report", *SECTION_TITLES, "Untouched hold-out"),
        screenshot=shot,
    )
    assert seen.ok, seen.problems
    assert seen.title == f"automl-deft run report: {root.name}"
    width, height = _png_size(shot)
    assert width == 1280 and height == seen.height_px > 5000


def test_a_broken_page_is_reported(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>x</title></head><body><h2>Here</h2>"
        "<script>console.error('boom'); undefinedFunction();</script></body></html>",
        encoding="utf-8",
    )
    seen = check_page(page, expected=("Here", "Missing"))
    assert seen.console_errors == ["boom"]
    assert len(seen.page_errors) == 1 and "undefinedFunction" in seen.page_errors[0]
    assert seen.missing == ["Missing"] and not seen.ok
    assert seen.screenshot is None
