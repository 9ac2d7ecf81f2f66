"""schemathesis against the server's own OpenAPI spec: no 5xx, responses match the schema."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from lap_core import Lap
from lap_server import ServerSettings, create_app
from tests.fakes.litellm import free_port
from tests.fakes.plugin import FakesPlugin
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

KEY = "schemathesis-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server in a thread of its own (schemathesis calls it synchronously), with an agent and a session."""
    data_dir: Path = tmp_path_factory.mktemp("lap")
    data_dir.chmod(0o711)
    port = free_port()
    env = lap_env(
        data_dir,
        LAP_SANDBOX_BACKEND="process",
        LITELLM_API_BASE="http://127.0.0.1:9",
        LITELLM_API_KEY="k",
        MASTER_KEY=KEY,
        LAP_RATE_LIMIT="0",  # schemathesis sends hundreds of requests on one key
    )
    holder: dict[str, Any] = {}

    async def serve() -> None:
        async with Lap(plugins=[FakesPlugin()], env=env, settings={"server": ServerSettings}) as lap:
            config = uvicorn.Config(
                create_app(lap, lap.settings_of("server")), port=port, log_level="warning", lifespan="off"
            )
            holder["server"] = server = uvicorn.Server(config)
            server.install_signal_handlers = False  # type: ignore[attr-defined]
            await server.serve()
            for ref in await lap.backend.list():
                await lap.backend.delete(ref.name)

    thread = threading.Thread(target=anyio.run, args=(serve,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/healthz")
            break
        except httpx.TransportError:
            time.sleep(0.05)
    agent = httpx.post(f"{url}/api/agents", headers=HEADERS, json={"name": "a", "harness": "script", "model": "m"})
    httpx.post(f"{url}/api/sessions", headers=HEADERS, json={"agent_id": agent.json()["id"]})
    yield url
    holder["server"].should_exit = True
    thread.join(15)


@pytest.fixture(scope="module")
def api_schema(base_url: str) -> schemathesis.BaseSchema:
    # The event stream never ends on its own: it is tested in test_api.py, not here.
    return schemathesis.openapi.from_url(f"{base_url}/schema/openapi.json").exclude(path_regex=r".*/events$")


def test_the_api_never_fails_and_matches_its_schema(api_schema: schemathesis.BaseSchema) -> None:
    # Driven by hand: schemathesis's pytest integration does not run on this pytest.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(
                headers=HEADERS, checks=[not_a_server_error, response_schema_conformance], timeout=20
            )

        check()
