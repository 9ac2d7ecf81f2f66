"""What a sandbox's environment holds: `CONTAINER_ENV_` variables, secrets' stubs (never values), the harness's own.

The engine on the process backend, with a script harness that sets variables of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from lap_core import ConfigError, HydratePayload, Lap, ToolResult
from lap_core._vault import StubKeys
from tests.fakes.plugin import FakesPlugin
from tests.fakes.script_harness import ScriptHarness
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from lap_core import Agent, LLMAccess

pytestmark = pytest.mark.anyio
VALUE = "ghp_real-token-value-never-in-a-sandbox"


class EnvHarness(ScriptHarness):
    """The script harness, plus variables of its own (which must win)."""

    def hydrate(self, agent: Agent, llm: LLMAccess) -> HydratePayload:
        return HydratePayload(workdir=".", env={"SHARED": "harness", "LITELLM_API_KEY": llm.api_key})


@pytest.fixture
async def lap(data_dir: Path) -> AsyncIterator[Lap]:
    plugin = FakesPlugin()
    plugin.harness = EnvHarness()
    env = lap_env(
        data_dir,
        LAP_SANDBOX_BACKEND="process",
        LITELLM_API_BASE="http://127.0.0.1:9",
        LITELLM_API_KEY="k",
        CONTAINER_ENV_REGION="eu-west-1",
        CONTAINER_ENV_SHARED="operator",
        CONTAINER_ENV_GH_TOKEN="operator",
        CONTAINER_ENV_EMPTY="",
    )
    async with Lap(plugins=[plugin], env=env) as running:
        yield running


async def _environment(lap: Lap, session_id: str) -> dict[str, str]:
    """Run `env` as a turn's process in the session's sandbox; return the variables it printed."""
    with anyio.fail_after(30):
        records = [record async for record in lap.sessions.stream(session_id, "run: env")]
    [result] = [record.event for record in records if isinstance(record.event, ToolResult)]
    return dict(line.split("=", 1) for line in result.output.splitlines() if "=" in line)


async def test_the_sandbox_holds_stubs_and_passed_variables_with_the_harness_on_top(lap: Lap, data_dir: Path) -> None:
    coder = await lap.agents.create("coder", harness="script", model="m")
    other = await lap.agents.create("other", harness="script", model="m")
    team_wide = await lap.secrets.create("GH_TOKEN", VALUE, hosts=["github.com"])
    npm = await lap.secrets.create(
        "NPM_TOKEN", "npm-value-of-coder-only", hosts=["registry.npmjs.org"], agent_id="coder"
    )
    await lap.secrets.create("DEPLOY_KEY", "deploy-value-of-other", hosts=["deploy.test"], agent_id=other.id)
    shared_value = "a-secret-named-like-the-harness-variable"
    shared = await lap.secrets.create("SHARED", shared_value, hosts=["x.test"])
    session = await lap.sessions.create(coder.id)

    env = await _environment(lap, session.id)
    generation = (await lap.store.get_session(session.id)).sandbox_generation
    keys = StubKeys.from_file(data_dir / "secrets" / "vault.key")
    assert env["GH_TOKEN"] == keys.secret_stub(session.id, generation, team_wide.id)  # the stub beats the operator
    assert env["NPM_TOKEN"] == keys.secret_stub(session.id, generation, npm.id)
    assert env["GH_TOKEN"].startswith("lapsec_")
    assert len(env["GH_TOKEN"]) == len("lapsec_") + 32
    assert env["GH_TOKEN"] != env["NPM_TOKEN"]
    assert "DEPLOY_KEY" not in env  # another agent's secret
    assert env["REGION"] == "eu-west-1"  # CONTAINER_ENV_REGION, prefix stripped
    assert env["EMPTY"] == ""
    assert env["SHARED"] == "harness"  # the harness's own variable wins over a secret and the operator's
    assert env["LITELLM_API_KEY"] == keys.issue(session.id, generation)
    assert not any(name.startswith("CONTAINER_ENV_") for name in env)
    assert shared.id not in env.values()
    values = (VALUE, "npm-value-of-coder-only", "deploy-value-of-other", shared_value)
    history = str(await lap.sessions.history(session.id))
    for value in values:
        assert value not in str(env)
        assert value not in history

    # A stub names its sandbox: a new sandbox (a new generation) holds new stubs.
    job = await lap.sessions.restart(session.id)
    with anyio.fail_after(30):
        while (await lap.store.get_job(job.id)).status != "done":
            await anyio.sleep(0.05)
    again = await _environment(lap, session.id)
    assert again["GH_TOKEN"] == keys.secret_stub(session.id, generation + 1, team_wide.id) != env["GH_TOKEN"]

    # What the platform gets: the values, the agent's own and its team's.
    got = {item.secret.name: item.value for item in await lap.secrets.values_for(coder)}
    assert got == {"GH_TOKEN": VALUE, "NPM_TOKEN": "npm-value-of-coder-only", "SHARED": shared_value}


async def test_an_agents_own_secret_wins_over_the_teams(lap: Lap, data_dir: Path) -> None:
    coder = await lap.agents.create("coder", harness="script", model="m")
    await lap.secrets.create("TOKEN", "team-wide-value", hosts=["a.test"])
    own = await lap.secrets.create("TOKEN", "agents-own-value", hosts=["b.test"], agent_id=coder.id)
    session = await lap.sessions.create(coder.id)
    env = await _environment(lap, session.id)
    keys = StubKeys.from_file(data_dir / "secrets" / "vault.key")
    generation = (await lap.store.get_session(session.id)).sandbox_generation
    assert env["TOKEN"] == keys.secret_stub(session.id, generation, own.id)
    [value] = await lap.secrets.values_for(coder)
    assert (value.secret.id, value.value) == (own.id, "agents-own-value")
    assert "agents-own-value" not in repr(value)


async def test_reserved_container_env_names_stop_the_start(data_dir: Path) -> None:
    env = lap_env(
        data_dir,
        LAP_SANDBOX_BACKEND="process",
        CONTAINER_ENV_PATH="/evil",
        CONTAINER_ENV_LITELLM_API_BASE="http://elsewhere",
        CONTAINER_ENV_LAP_ANYTHING="x",
        CONTAINER_ENV_HTTPS_PROXY="http://mine",
        CONTAINER_ENV_https_proxy="http://mine",
        CONTAINER_ENV_OPENAI_API_KEY="sk-x",
        CONTAINER_ENV_npm_config_proxy="http://mine",
        CONTAINER_ENV_="x",
        CONTAINER_ENV_FINE="ok",
    )
    with pytest.raises(ConfigError) as caught:
        async with Lap(plugins=[FakesPlugin()], env=env, run_turns=False):
            pass
    problems = caught.value.problems
    assert set(problems) == {
        "CONTAINER_ENV_PATH",
        "CONTAINER_ENV_LITELLM_API_BASE",
        "CONTAINER_ENV_LAP_ANYTHING",
        "CONTAINER_ENV_HTTPS_PROXY",
        "CONTAINER_ENV_https_proxy",
        "CONTAINER_ENV_OPENAI_API_KEY",
        "CONTAINER_ENV_npm_config_proxy",
        "CONTAINER_ENV_",
    }
    assert "PATH is reserved: the sandbox's own" in problems["CONTAINER_ENV_PATH"]
    assert "the egress gateway's proxy and CA settings" in problems["CONTAINER_ENV_https_proxy"]
    assert "not an environment variable name" in problems["CONTAINER_ENV_"]
    for variable in problems:
        assert variable in caught.value.message
