"""LAP's pytest plugin for plugin authors: a configured `Lap` on a fresh data directory, with a fake LLM.

Load it with `-p lap_core.testing.pytest_plugin` (or `pytest_plugins = ["lap_core.testing.pytest_plugin"]`
in a conftest.py). The fixtures, each overridable by defining one of the same name:

- `lap_plugins`: the plugin objects (modules or instances) to register besides the installed ones
  (default: none; an installed plugin under test loads from its entry point).
- `lap_llm`: the `FakeLLM`, with its default script and no requests recorded (one server per session).
- `lap_data_dir`: a fresh data directory that sandbox users can traverse (pytest's `tmp_path` is 0700).
- `lap_env`: the environment of the `Lap` (not the developer's): the data directory, the fake LLM as
  the gateway, the shared directory of installed harness CLIs. Override it to add variables.
- `lap`: a running `Lap` with `lap_plugins` and `lap_env`, for `@pytest.mark.anyio` tests (on
  asyncio); the sandboxes it made are deleted afterwards.

`HarnessConformance` takes `lap` and `lap_llm` from here: with this plugin, naming the harness is
the whole subclass.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lap_core.testing.fake_llm import FakeLLM

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from lap_core import Lap

GATEWAY_KEY = "sk-fake-gateway"
"""The `LITELLM_API_KEY` of `lap_env` (the fake LLM records it as each request's `key`)."""


@pytest.fixture(scope="session")
def lap_llm_server() -> Iterator[FakeLLM]:
    """The fake LLM's server, one for the test session (use `lap_llm`, which resets it for each test)."""
    server = FakeLLM().start()
    yield server
    server.stop()


@pytest.fixture
def lap_llm(lap_llm_server: FakeLLM) -> FakeLLM:
    """The fake LLM with its default script and no recorded requests."""
    lap_llm_server.reset()
    return lap_llm_server


@pytest.fixture
def lap_plugins() -> list[object]:
    """Plugin objects to register on `lap` besides the installed ones: override to return yours."""
    return []


@pytest.fixture
def lap_data_dir() -> Iterator[Path]:
    """A fresh LAP data directory that sandbox users can traverse (mode 0711), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="lap-test-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _harness_dir() -> str:
    from lap_core._config import default_data_dir

    # Shared across tests and runs (npm installs take minutes), and outside any 0700 home.
    return str(default_data_dir() / "harnesses")


@pytest.fixture
def lap_env(lap_data_dir: Path, lap_llm: FakeLLM) -> dict[str, str]:
    """The environment `lap` reads instead of the process's: override it (asking for it) to add variables."""
    return {
        "LAP_DATA_DIR": str(lap_data_dir),
        "LAP_HARNESS_DIR": os.environ.get("LAP_HARNESS_DIR") or _harness_dir(),
        "LITELLM_API_BASE": lap_llm.url,
        "LITELLM_API_KEY": GATEWAY_KEY,
        "PATH": os.environ.get("PATH", os.defpath),
    }


@pytest.fixture
async def lap(lap_plugins: list[object], lap_env: dict[str, str], anyio_backend: object) -> AsyncIterator[Lap]:
    """A running `Lap` with `lap_plugins` and `lap_env`; the sandboxes it made are deleted afterwards."""
    from lap_core import Lap

    if anyio_backend != "asyncio":
        pytest.skip("LAP runs on asyncio (give an `anyio_backend` fixture returning 'asyncio')")
    async with Lap(plugins=lap_plugins, env=lap_env) as running:
        try:
            yield running
        finally:
            for ref in await running.backend.list():
                await running.backend.delete(ref.name)
