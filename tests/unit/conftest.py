"""Fixtures of the sandboxd tests (a copy of lap_sandboxd to run, one daemon per module, a client) and
of the LLM proxy's (tests.unit.vault_support)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import pytest

from tests.unit.sandboxd_daemon import ROOT, WAIT, Daemon, running_daemon
from tests.unit.vault_support import elsewhere, gateway, keys, proxy, scopes  # noqa: F401 - fixtures of the proxy tests

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from lap_core._sandbox_client import SandboxClient


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a copy of lap_sandboxd and (a link to) msgspec, and nothing else."""
    lib = tmp_path_factory.mktemp("lib")
    shutil.copytree(ROOT / "lap_sandboxd", lib / "lap_sandboxd", ignore=shutil.ignore_patterns("__pycache__"))
    (lib / "msgspec").symlink_to(Path(msgspec.__file__).parent)
    return lib


@pytest.fixture(scope="module")
def daemon(lib: Path) -> Iterator[Daemon]:
    with running_daemon(lib) as daemon:
        yield daemon


@pytest.fixture
async def client(daemon: Daemon, anyio_backend: str) -> AsyncIterator[SandboxClient]:
    async with daemon.client() as client:
        await client.wait_healthy(WAIT)
        yield client
