"""`lap.teams`: teams are validated, changed whole, and a team's egress policy is its agents' default."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import msgspec
import pytest

from lap_core import Budget, Conflict, EgressPolicy, InvalidInput, Lap
from lap_core._engine.sandboxes import egress_scope
from lap_core._vault import StubKeys
from tests.fakes.plugin import FakesPlugin
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio


@pytest.fixture
async def lap(data_dir: Path) -> AsyncIterator[Lap]:
    env = lap_env(data_dir, ENCRYPTION_KEY=secrets.token_hex(32))
    async with Lap(plugins=[FakesPlugin()], env=env, run_turns=False) as running:
        yield running


async def test_a_team_is_validated_and_changed_whole(lap: Lap) -> None:
    team = await lap.teams.create("alpha", budget=Budget(tokens_per_month=10))
    assert await lap.teams.get(team.id) == team
    assert team in await lap.teams.list()
    with pytest.raises(InvalidInput) as bad:
        await lap.teams.create("no spaces here", egress=EgressPolicy(allow=["*"], presets=["nope"]))
    assert set(bad.value.details) == {"name", "egress"}  # every problem at once
    with pytest.raises(Conflict):
        await lap.teams.create("alpha")
    policy = EgressPolicy(presets=["developer"])
    changed = await lap.teams.update(msgspec.structs.replace(team, egress=policy))
    assert (changed.egress, changed.budget) == (policy, Budget(tokens_per_month=10))
    assert (await lap.teams.get(team.id)).egress == policy


async def test_an_agent_without_a_policy_gets_its_teams(lap: Lap) -> None:
    keys = StubKeys(secrets.token_bytes(32))
    team = await lap.teams.create("beta", egress=EgressPolicy(allow=["git.test"]))
    plain = await lap.agents.create("plain", harness="script", model="m", team_id=team.id)
    own = EgressPolicy(allow=["pypi.test"])
    strict = await lap.agents.create("strict", harness="script", model="m", team_id=team.id, egress=own)
    elsewhere = await lap.agents.create("elsewhere", harness="script", model="m")  # the default team: none

    async def policy_of(agent_id: str, team_id: str) -> EgressPolicy:
        session = await lap.sessions.create(agent_id, team_id=team_id)
        scope = await egress_scope(lap.store, lap.secrets, keys, session.id)
        assert scope is not None
        return scope.policy

    assert await policy_of(plain.id, team.id) == EgressPolicy(allow=["git.test"])
    assert await policy_of(strict.id, team.id) == own  # the agent's own policy wins, whole
    assert await policy_of(elsewhere.id, elsewhere.team_id) == EgressPolicy()  # nowhere but the LLM
    await lap.teams.update(msgspec.structs.replace(team, egress=None))
    assert await policy_of(plain.id, team.id) == EgressPolicy()
