"""The engine's API is complete for what the server does: keys, usage, health, lists that do not stop at a page."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from lap_core import DiskUsage, InvalidInput, Lap, NotFound
from tests.fakes.plugin import FakesPlugin
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio


@pytest.fixture
async def lap(data_dir: Path) -> AsyncIterator[Lap]:
    env = lap_env(data_dir, LITELLM_API_BASE="http://127.0.0.1:9", LITELLM_API_KEY="k")
    async with Lap(plugins=[FakesPlugin()], env=env, run_turns=False) as running:
        yield running


async def test_keys_are_shown_once_stored_hashed_and_revoked_at_once(lap: Lap) -> None:
    team = await lap.teams.create("beta")
    record, key = await lap.keys.create("ci", team_id=team.id)
    assert key.startswith(f"lapk_{record.prefix}_")
    assert key.rpartition("_")[2] not in record.secret_hash  # only a hash is kept
    assert await lap.keys.authenticate(key) == record
    assert await lap.keys.authenticate(key + "x") is None
    assert await lap.keys.authenticate(f"lapk_{record.prefix}_") is None
    assert await lap.keys.authenticate("Bearer nonsense") is None
    assert await lap.keys.list(team_id=team.id) == [record]
    assert await lap.keys.list() == []  # the default team's
    assert record in await lap.keys.list(team_id=None)  # every team's
    with pytest.raises(NotFound):
        await lap.keys.delete(record.id)  # not the default team's
    await lap.keys.delete(record.id, team_id=team.id)
    assert await lap.keys.authenticate(key) is None
    with pytest.raises(NotFound):
        await lap.keys.create("ci", team_id="team_missing")
    with pytest.raises(InvalidInput):
        await lap.keys.create(" ")


async def test_lists_return_every_item_not_one_page(lap: Lap) -> None:
    for i in range(130):  # more than the store's default page of 100
        await lap.agents.create(f"a{i:03}", harness="script", model="m")
    agent = await lap.agents.get("a000")
    for _ in range(105):
        await lap.sessions.create(agent.id)
    assert len(await lap.agents.list()) == 130
    assert [a.name for a in await lap.agents.list(limit=2, offset=3)] == ["a003", "a004"]
    assert len(await lap.sessions.list()) == 105
    assert len(await lap.sessions.list(limit=10)) == 10


async def test_usage_and_health(lap: Lap) -> None:
    (totals,) = await lap.usage.totals()
    assert totals.calls == 0
    await lap.health()


def test_a_volume_is_full_when_almost_nothing_is_left() -> None:
    mib = 1024 * 1024
    assert DiskUsage(used=57 * mib, limit=64 * mib).full  # 7 MiB back after ENOSPC: still full
    assert not DiskUsage(used=40 * mib, limit=64 * mib).full
    assert DiskUsage(used=10_100 * mib, limit=10_240 * mib).full  # under 2 % of a large one
    assert not DiskUsage(used=9_000 * mib, limit=10_240 * mib).full
