"""The project's HTML pages in a real headless browser: Debian's Chromium, driven by Playwright.

The report and the AutoML pages are self-contained files a person opens in a
browser (and the Kubeflow UI shows in a sandboxed frame). A string check cannot see
what a browser sees: a console error, an uncaught exception, a broken resource, a
heading that is not rendered. :func:`check_page` opens one local file, collects
those, reads the rendered headings and writes a full-page screenshot.

Playwright drives the system Chromium (``apt-get install chromium``) through
``executable_path``; Playwright's own browser download is never used (it needs
the network). :func:`browser_unavailable` says in one line why a check cannot run,
so a test can skip with it.

Example::

    from automl_deft.testing.browser import check_page

    page = check_page("run/DEFT_Loop_Report.html", expected=("Phase 1 AutoML",),
                      screenshot="run/report_screenshot.png")
    assert page.ok, page.problems
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from automl_deft.errors import InfrastructureError, UserError

__all__ = [
    "CHROMIUM_NAMES",
    "INSTALL_HINT",
    "PAGE_TIMEOUT_S",
    "VIEWPORT",
    "PageCheck",
    "browser_unavailable",
    "check_page",
    "find_chromium",
]

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
"""Executables tried on ``PATH``, in order (``AUTOML_DEFT_CHROMIUM`` names one explicitly)."""
CHROMIUM_ENV = "AUTOML_DEFT_CHROMIUM"
INSTALL_HINT = "apt-get install -y chromium"
PAGE_TIMEOUT_S = 60
"""Longest wait for a page to load (the report inlines every image: it can be a few MB)."""
VIEWPORT = (1280, 900)
"""A laptop screen: the pages must read well at this width."""
LAUNCH_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage")
"""Root in a container has no user namespace for the sandbox, no GPU, a small /dev/shm."""


@dataclass(frozen=True)
class PageCheck:
    """What the browser saw on one page."""

    path: Path
    title: str
    headings: list[str]
    """The text of every rendered ``h1``–``h3``, in page order."""
    missing: list[str]
    """Expected headings that are not among :attr:`headings`."""
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    """Uncaught exceptions."""
    failed_requests: list[str] = field(default_factory=list)
    screenshot: Path | None = None
    height_px: int = 0
    """The rendered page's full height."""

    @property
    def problems(self) -> list[str]:
        """One line per problem (empty when the page is clean)."""
        return (
            [f"console error: {e}" for e in self.console_errors]
            + [f"uncaught exception: {e}" for e in self.page_errors]
            + [f"failed request: {e}" for e in self.failed_requests]
            + [f"missing heading: {h!r}" for h in self.missing]
        )

    @property
    def ok(self) -> bool:
        return not self.problems


def find_chromium() -> str | None:
    """The Chromium executable: ``$AUTOML_DEFT_CHROMIUM``, else the first of
    :data:`CHROMIUM_NAMES` on ``PATH`` (None when there is none)."""
    explicit = os.environ.get(CHROMIUM_ENV)
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def browser_unavailable() -> str | None:
    """Why :func:`check_page` cannot run here, in one line (None when it can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: pip install -c constraints.txt -e '.[dev]'"
    if find_chromium() is None:
        return f"Chromium is not installed: {INSTALL_HINT} (or set {CHROMIUM_ENV})"
    return None


def check_page(
    path: str | os.PathLike[str],
    *,
    expected: Sequence[str] = (),
    screenshot: str | os.PathLike[str] | None = None,
    viewport: tuple[int, int] = VIEWPORT,
    timeout_s: float = PAGE_TIMEOUT_S,
) -> PageCheck:
    """Open the local HTML file ``path`` in headless Chromium and report what it saw.

    Args:
        path: the page (a local file).
        expected: headings (``h1``–``h3`` text, exact after stripping) that must render.
        screenshot: where to write a full-page PNG (parents created); None for none.
        viewport: the window's (width, height) in CSS pixels.
        timeout_s: the longest wait for the page to load.

    Raises:
        UserError: ``path`` is not a file.
        InfrastructureError: Playwright or Chromium is missing, or the browser failed.
    """
    page_path = Path(path).resolve()
    if not page_path.is_file():
        raise UserError(f"{page_path} not found; render the page first")
    why = browser_unavailable()
    if why is not None:
        raise InfrastructureError(why)
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    console: list[str] = []
    uncaught: list[str] = []
    failed: list[str] = []
    shot = Path(screenshot) if screenshot is not None else None
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=find_chromium(), headless=True, args=list(LAUNCH_ARGS)
            )
            try:
                page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
                page.on(
                    "console",
                    lambda msg: console.append(msg.text) if msg.type == "error" else None,
                )
                page.on("pageerror", lambda exc: uncaught.append(str(exc)))
                page.on(
                    "requestfailed",
                    lambda req: failed.append(f"{req.url[:120]} ({req.failure})"),
                )
                page.goto(page_path.as_uri(), wait_until="load", timeout=timeout_s * 1000)
                title = page.title()
                headings = [
                    " ".join(t.split()) for t in page.locator("h1, h2, h3").all_inner_texts()
                ]
                height = int(page.evaluate("document.documentElement.scrollHeight"))
                if shot is not None:
                    shot.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(shot), full_page=True)
            finally:
                browser.close()
    except PlaywrightError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InfrastructureError(f"headless Chromium failed on {page_path}: {first}") from exc
    missing = [h for h in expected if h not in headings]
    return PageCheck(
        path=page_path,
        title=title,
        headings=headings,
        missing=missing,
        console_errors=console,
        page_errors=uncaught,
        failed_requests=failed,
        screenshot=shot,
        height_px=height,
    )
