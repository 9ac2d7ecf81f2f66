"""The browser tier: the dashboard in Debian's Chromium driven by Playwright (marker `browser`).

Needs `apt-get install -y chromium` and the `playwright` package (never `playwright install`:
it drives /usr/bin/chromium). Without them the tests are skipped.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.server import CHROMIUM, CHROMIUM_ARGS, LiveServer, live_server

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives the dashboard in a real Chromium (Playwright)")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium (Debian's), shared by a module's tests."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no {CHROMIUM}: apt-get install -y chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def server(data_dir: Path) -> Iterator[LiveServer]:
    """A fresh LAP server of the test's own."""
    with live_server(data_dir) as running:
        yield running
