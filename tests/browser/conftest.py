"""Browser fixtures: Debian's Chromium driven by Playwright, skipped when either is missing.

Playwright's own browser downloads are never used: the context runs /usr/bin/chromium (Debian's
`chromium` package; IGD_CHROMIUM overrides the path) headless, with a fresh profile per test and
no background network traffic. Screenshots go to build/test-artefacts/ (git-ignored; the
IGD_TEST_ARTEFACTS environment variable overrides the folder).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

try:
    from playwright.async_api import async_playwright

    HAVE_PLAYWRIGHT = True
except ImportError:  # the test extra installs it
    HAVE_PLAYWRIGHT = False

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, ViewportSize

CHROMIUM = Path(os.environ.get("IGD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-default-browser-check",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}


def _skip_reason() -> str | None:
    if not HAVE_PLAYWRIGHT:
        return "playwright is not installed (pip install playwright: the test extra)"
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """A headless Debian Chromium with a fresh user-data-dir, light colour scheme, English, UTC."""
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
            locale="en-GB",
            timezone_id="UTC",
            color_scheme="light",
            reduced_motion="reduce",
            service_workers="block",
        )
        context.set_default_timeout(10_000)
        try:
            yield context
        finally:
            await context.close()


@pytest.fixture
def artefacts(request: pytest.FixtureRequest) -> Path:
    """The folder kept after the run for screenshots (created on demand)."""
    configured = os.environ.get("IGD_TEST_ARTEFACTS")
    folder = Path(configured) if configured else request.config.rootpath / "build/test-artefacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
