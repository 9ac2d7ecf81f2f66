"""Shared fixtures for LAP's own tests."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.fixtures"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave the `k8s` tier to tests/k8s/run-tier.sh, which runs it inside the test cluster's network."""
    if os.environ.get("LAP_K8S_TIER"):
        return
    k8s = [item for item in items if item.get_closest_marker("k8s")]
    if k8s:
        config.hook.pytest_deselected(items=k8s)
        items[:] = [item for item in items if not item.get_closest_marker("k8s")]
