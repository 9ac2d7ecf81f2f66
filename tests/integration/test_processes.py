"""Web and worker as separate runtimes on one PostgreSQL database: the queue and the live fan-out."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from lap_core import Lap, TurnEnd
from lap_core._engine import sessions
from tests.fakes.plugin import FakesPlugin
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


async def test_a_web_runtime_follows_turns_a_worker_runs_live(
    data_dir: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the cross-process notification, a follower would wait this long to look again.
    monkeypatch.setattr(sessions, "FOLLOW_POLL", 60.0)
    env = lap_env(
        data_dir,
        DATABASE_URL=pg_database,
        LAP_SANDBOX_BACKEND="process",
        LITELLM_API_BASE="http://127.0.0.1:9",
        LITELLM_API_KEY="k",
    )
    async with Lap(plugins=[FakesPlugin()], env=env, run_turns=False, migrate=True) as web:
        agent = await web.agents.create("a", harness="script", model="m")
        session = await web.sessions.create(agent.id)
        async with Lap(plugins=[FakesPlugin()], env=env) as worker:
            with anyio.fail_after(15):
                records = [r async for r in web.sessions.stream(session.id, "hello")]
                again = [r async for r in web.sessions.stream(session.id, "again")]
            assert records[-1].event == TurnEnd(status="completed")
            assert again[-1].event == TurnEnd(status="completed")
            assert [r.seq for r in records + again] == list(range(1, len(records) + len(again) + 1))
            for ref in await worker.backend.list():
                await worker.backend.delete(ref.name)
