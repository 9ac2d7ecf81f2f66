"""Fixtures of tests through the server: a real server over HTTP, on the process backend and scripted harness."""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest
import uvicorn

from lap_core import Lap
from lap_server import ServerSettings, create_app
from tests.fakes.litellm import free_port
from tests.fakes.plugin import FakesPlugin
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

KEY = "test-master-key"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> dict[str, str]:
    """The API tests run on the embedded SQLite file and on a fresh PostgreSQL database."""
    return {"DATABASE_URL": request.getfixturevalue("pg_database")} if request.param == "postgres" else {}


@pytest.fixture
async def api(data_dir: Path, database: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    env = lap_env(
        data_dir,
        LAP_SANDBOX_BACKEND="process",
        LITELLM_API_BASE="http://127.0.0.1:9",
        LITELLM_API_KEY="k",
        MASTER_KEY=KEY,
        LAP_PORT=str(port),
        **database,
    )
    async with Lap(plugins=[FakesPlugin()], env=env, settings={"server": ServerSettings}, migrate=True) as lap:
        server = uvicorn.Server(
            uvicorn.Config(create_app(lap, lap.settings_of("server")), port=port, log_level="warning", lifespan="off")
        )
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.serve)
            while not server.started:
                await anyio.sleep(0.01)
            headers = {"Authorization": f"Bearer {KEY}"}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
                yield client
            server.should_exit = True


@contextlib.asynccontextmanager
async def serve_api(
    data_dir: Path, *plugins: object, run_turns: bool = True, **env: str
) -> AsyncIterator[httpx.AsyncClient]:
    """Like `api`, with plugins and environment variables of a test's own (`run_turns=False`: no worker)."""
    port = free_port()
    full_env = lap_env(
        data_dir,
        LAP_SANDBOX_BACKEND="process",
        LITELLM_API_BASE="http://127.0.0.1:9",
        LITELLM_API_KEY="k",
        MASTER_KEY=KEY,
        LAP_PORT=str(port),
        **env,
    )
    lap_plugins = [FakesPlugin(), *plugins]
    async with Lap(plugins=lap_plugins, env=full_env, settings={"server": ServerSettings}, run_turns=run_turns) as lap:
        server = uvicorn.Server(
            uvicorn.Config(create_app(lap, lap.settings_of("server")), port=port, log_level="warning", lifespan="off")
        )
        stopped = anyio.Event()

        async def run() -> None:
            try:
                await server.serve()
            finally:
                stopped.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run)
            while not server.started:
                await anyio.sleep(0.01)
            headers = {"Authorization": f"Bearer {KEY}"}
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as c:
                    yield c
            finally:
                # Stop the server cleanly even when the test failed (else its socket is left open).
                server.should_exit = True
                with anyio.move_on_after(10, shield=True):
                    await stopped.wait()


@pytest.fixture
def serve(data_dir: Path) -> Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]:
    """`serve(*plugins, run_turns=..., **env)`: a server of the test's own, as `async with`."""
    return functools.partial(serve_api, data_dir)
