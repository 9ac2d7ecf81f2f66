"""Fixtures for LAP's own tests: data directories, prerequisites, installed harness CLIs, runtimes."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import asyncpg  # type: ignore[import-untyped]
import pytest

from lap_core import Lap
from lap_core._config import default_data_dir
from tests.fakes.litellm import LiteLLMProxy
from tests.fakes.llm_server import FakeLLM

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

# Where `bin/setup` installs the harness CLIs, so the tests reuse them; it is outside the
# repository on purpose: sandbox users must reach it, and a clone may live under a 0700 home.
HARNESS_CACHE = default_data_dir() / "harnesses"


def require(ok: bool, what: str) -> None:
    """Skip a test whose prerequisite is missing, except under `bin/test`, where it fails instead."""
    if ok:
        return
    if os.environ.get("LAP_REQUIRE_ALL_TIERS"):
        pytest.fail(f"prerequisite missing: {what} (bin/setup installs it)")
    pytest.skip(f"prerequisite missing: {what}")


def unmount_under(path: Path) -> None:
    """Unmount what is mounted below `path` (volumes of sandboxes a test left behind)."""
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(f"{path}/")), reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A fresh LAP data directory that sandbox users can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="lap-test-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    unmount_under(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def bwrap() -> None:
    """Require bubblewrap."""
    require(shutil.which("bwrap") is not None, "bubblewrap (apt-get install bubblewrap)")


@pytest.fixture(scope="session")
def harness_root() -> Path:
    """The shared directory of installed harness CLIs (installed once, cached across runs)."""
    require(shutil.which("npm") is not None, "npm (apt-get install npm)")
    from lap_claude_code import ClaudeCodeHarness
    from lap_codex import CodexHarness
    from lap_core._install import install_harness
    from lap_opencode import OpencodeHarness

    for name, harness in (
        ("opencode", OpencodeHarness()),
        ("claude-code", ClaudeCodeHarness()),
        ("codex", CodexHarness()),
    ):
        anyio.run(install_harness, HARNESS_CACHE, name, harness)
    return HARNESS_CACHE


def lap_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """Return an environment for a `Lap` in `data_dir` (tests never read the developer's env)."""
    return {"LAP_DATA_DIR": str(data_dir), "LAP_HARNESS_DIR": str(HARNESS_CACHE), "PATH": os.environ["PATH"], **extra}


async def cleanup_sandboxes(lap: Lap) -> None:
    """Delete every sandbox of a test's LAP (sandboxes outlive the runtime on purpose)."""
    for ref in await lap.backend.list():
        await lap.backend.delete(ref.name)


@pytest.fixture
async def e2e_lap(
    data_dir: Path, bwrap: None, harness_root: Path, litellm_proxy: LiteLLMProxy, llm: FakeLLM
) -> AsyncIterator[Lap]:
    """A LAP on the local backend, its gateway a real LiteLLM proxy in front of the fake LLM."""
    env = lap_env(
        data_dir,
        LITELLM_API_BASE=litellm_proxy.url,
        LITELLM_API_KEY=litellm_proxy.master_key,
    )
    async with Lap(env=env) as lap:
        try:
            yield lap
        finally:
            await cleanup_sandboxes(lap)


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLLM]:
    """The scripted fake LLM, for the whole test session."""
    server = FakeLLM().start()
    yield server
    server.stop()


@pytest.fixture
def llm(fake_llm: FakeLLM) -> FakeLLM:
    """The fake LLM with the default script and no recorded requests."""
    fake_llm.reset()
    return fake_llm


@pytest.fixture(scope="session")
def litellm_proxy(fake_llm: FakeLLM) -> Iterator[LiteLLMProxy]:
    """A real LiteLLM proxy in front of the fake LLM (fails, never skips, if it cannot start)."""
    proxy = LiteLLMProxy(fake_llm.url)
    try:
        proxy.start()
    except RuntimeError as error:
        pytest.fail(f"the LiteLLM proxy did not start: {error}")
    yield proxy
    proxy.stop()


PG_ADMIN = os.environ.get("DATABASE_URL_TEST", "postgresql://postgres@127.0.0.1:5432/test").rsplit("/", 1)[0]


async def _pg_admin(sql: str) -> None:
    connection = await asyncpg.connect(f"{PG_ADMIN}/postgres", timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture
def pg_database() -> Iterator[str]:
    """The URL of a fresh PostgreSQL database, dropped afterwards."""
    name = f"lap_test_{secrets.token_hex(4)}"
    try:
        asyncio.run(_pg_admin(f"CREATE DATABASE {name}"))
    except (OSError, asyncpg.PostgresError) as error:
        require(False, f"PostgreSQL at {PG_ADMIN}: {error}")
    yield f"{PG_ADMIN}/{name}"
    asyncio.run(_pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
