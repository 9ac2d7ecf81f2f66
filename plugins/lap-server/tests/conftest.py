"""Fixtures of the server's tests: a real server over HTTP, on the process backend and scripted harness."""

from __future__ import annotations

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
    from collections.abc import AsyncIterator
    from pathlib import Path

KEY = "test-master-key"


@pytest.fixture
async def api(data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    env = lap_env(
        data_dir,
        LAP_SANDBOX_BACKEND="process",
        LITELLM_API_BASE="http://127.0.0.1:9",
        LITELLM_API_KEY="k",
        MASTER_KEY=KEY,
        LAP_PORT=str(port),
    )
    async with Lap(plugins=[FakesPlugin()], env=env, settings={"server": ServerSettings}) as lap:
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
