"""The browser tier: the dashboard in Debian's Chromium driven by Playwright (marker `browser`).

Needs `apt-get install -y chromium` and the `playwright` package (never `playwright install`:
it drives /usr/bin/chromium); bin/setup installs both. Without them the tests are skipped, and
under bin/test they fail.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.server import CHROMIUM, CHROMIUM_ARGS, LiveServer, live_server
from tests.fixtures import require

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium (Debian's), shared by a module's tests."""
    require(importlib.util.find_spec("playwright") is not None, "the playwright package (bin/setup)")
    require(os.path.exists(CHROMIUM), f"{CHROMIUM} (apt-get install -y chromium)")
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def server(data_dir: Path) -> Iterator[LiveServer]:
    """A fresh LAP server of the test's own."""
    with live_server(data_dir) as running:
        yield running
