"""`lap usage`, run as a user runs it, over usage recorded in the data directory's store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio

from lap_core import Team, UsageRecord, new_id
from lap_sql import SqlStore
from tests.fixtures import lap_env
from tests.integration.test_cli import lap

if TYPE_CHECKING:
    from pathlib import Path


async def _record(data_dir: Path, agent_id: str) -> None:
    async with SqlStore(f"sqlite:///{data_dir / 'lap.db'}") as store:
        await store.create_team(Team(id="team_b", name="beta"))
        for team, agent, day, tokens, cost in (
            ("team_default", agent_id, 1, 1000, 0.5),
            ("team_default", agent_id, 2, 2500, None),
            ("team_b", "agt_other", 2, 40, 0.125),
        ):
            at = datetime(2025, 4, day, 12, tzinfo=UTC)
            record = UsageRecord(
                id=new_id("use"),
                at=at,
                team_id=team,
                agent_id=agent,
                session_id="ses_1",
                model="m1",
                input_tokens=tokens,
                output_tokens=10,
                cost_usd=cost,
            )
            await store.record_usage(record)


def test_lap_usage_shows_totals_and_groups(data_dir: Path) -> None:
    env = lap_env(data_dir)
    assert "no model calls recorded" in lap(env, "usage").stdout  # (and the store is made)
    created = lap(env, "agents", "create", "--name", "coder", "--harness", "opencode", "--model", "m1")
    agent_id = created.stdout.split("(")[1].split(")")[0]
    anyio.run(_record, data_dir, agent_id)

    everything = lap(env, "usage").stdout.splitlines()
    assert everything[0].split() == ["calls", "input", "output", "cached", "cost"]
    assert everything[1].split() == ["3", "3,540", "30", "0", "$0.6250*"]
    assert "1 call(s) without a cost" in everything[2]

    by_team_day = lap(env, "usage", "--by", "team,day").stdout.splitlines()
    assert [line.split() for line in by_team_day[:5]] == [
        ["team", "day", "calls", "input", "output", "cached", "cost"],
        ["beta", "2025-04-02", "1", "40", "10", "0", "$0.1250"],
        ["default", "2025-04-01", "1", "1,000", "10", "0", "$0.5000"],
        ["default", "2025-04-02", "1", "2,500", "10", "0", "$0.0000*"],
        ["total", "3", "3,540", "30", "0", "$0.6250*"],
    ]
    by_agent = lap(env, "usage", "--agent", "coder", "--since", "2025-04-02", "--by", "agent").stdout.splitlines()
    assert by_agent[1].split() == ["coder", "1", "2,500", "10", "0", "$0.0000*"]
    of_team = lap(env, "usage", "--team", "beta", "--until", "2025-04-03T00:00:00").stdout.splitlines()
    assert of_team[1].split() == ["1", "40", "10", "0", "$0.1250"]

    bad_group = lap(env, "usage", "--by", "week")
    assert bad_group.returncode == 2
    assert "unknown group 'week'" in bad_group.stderr
    ghost = lap(env, "usage", "--team", "ghost")
    assert ghost.returncode == 1
    assert "team 'ghost' not found" in ghost.stderr
