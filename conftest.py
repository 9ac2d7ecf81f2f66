"""Shared fixtures for LAP's own tests."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.fixtures"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
