"""A real bwrap sandbox's environment: the stubs of the agent's secrets and the `CONTAINER_ENV_` variables.

The value of a secret is nowhere in the sandbox: not in any process's environment, nor in a file
the agent can read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from lap_core import Lap, ToolResult
from lap_core._vault import StubKeys
from tests.fakes.plugin import FakesPlugin
from tests.fixtures import cleanup_sandboxes, lap_env

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = [pytest.mark.anyio, pytest.mark.bwrap]
VALUE = "ghp_real-token-value-never-in-a-bwrap-sandbox-4d2c"


@pytest.fixture
async def lap(data_dir: Path, bwrap: None) -> AsyncIterator[Lap]:
    env = lap_env(
        data_dir,
        LITELLM_API_BASE="http://127.0.0.1:9",
        LITELLM_API_KEY="sk-gateway-key",
        CONTAINER_ENV_REGION="eu-west-1",
        CONTAINER_ENV_GH_TOKEN="the operator's, under the stub",
    )
    async with Lap(plugins=[FakesPlugin()], env=env) as running:
        try:
            yield running
        finally:
            await cleanup_sandboxes(running)


async def _run(lap: Lap, session_id: str, command: str) -> str:
    with anyio.fail_after(60):
        records = [record async for record in lap.sessions.stream(session_id, f"run: {command}")]
    [result] = [record.event for record in records if isinstance(record.event, ToolResult)]
    return result.output


async def test_a_real_sandbox_holds_the_stub_and_never_the_value(lap: Lap, data_dir: Path) -> None:
    agent = await lap.agents.create("coder", harness="script", model="m")
    secret = await lap.secrets.create("GH_TOKEN", VALUE, hosts=["github.com"], agent_id=agent.id)
    session = await lap.sessions.create(agent.id)

    output = await _run(lap, session.id, "env; id -u")
    env = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    generation = (await lap.store.get_session(session.id)).sandbox_generation
    stub = StubKeys.from_file(data_dir / "secrets" / "vault.key").secret_stub(session.id, generation, secret.id)
    assert env["GH_TOKEN"] == stub
    assert env["REGION"] == "eu-west-1"
    assert env["HOME"] == "/home/agent"  # the sandbox's own, untouched
    assert output.splitlines()[-1] != "0"  # an unprivileged user, in a real bwrap sandbox

    # Every process's environment and command line, every file the agent can read, searched for the
    # value; given in two halves, so that no command line of the search itself holds it.
    half = len(VALUE) // 2
    search = (
        f"A={VALUE[:half]}; B={VALUE[half:]}; printf '%s%s' $A $B | grep -l -a -r -F -f /dev/stdin"
        " /proc/[0-9]*/environ /proc/[0-9]*/cmdline /workspace /home/agent /tmp /run /etc 2>/dev/null; echo searched"
    )
    assert await _run(lap, session.id, search) == "searched"
    planted = f"A={VALUE[:half]}; B={VALUE[half:]}; printf '%s%s' $A $B > /tmp/planted; {search}"
    assert await _run(lap, session.id, planted) == "/tmp/planted\nsearched"  # the search finds what is there
    assert await _run(lap, session.id, f"grep -c -a -F {stub} /proc/self/environ") == "1"
