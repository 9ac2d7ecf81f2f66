"""Web and worker as separate runtimes on one PostgreSQL database: the queue and the live fan-out."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from lap_core import HarnessSession, Lap, TurnEnd
from lap_core._engine import sessions
from lap_core._engine import worker as worker_module
from tests.fakes.plugin import FakesPlugin
from tests.fixtures import cleanup_sandboxes, lap_env

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


def _env(data_dir: Path, pg_database: str) -> dict[str, str]:
    """Web and worker runtimes on one PostgreSQL database, the process backend, no gateway."""
    return lap_env(
        data_dir,
        DATABASE_URL=pg_database,
        LAP_SANDBOX_BACKEND="process",
        LITELLM_API_BASE="http://127.0.0.1:9",
        LITELLM_API_KEY="k",
    )


async def test_a_web_runtime_follows_turns_a_worker_runs_live(
    data_dir: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the cross-process notification, a follower would wait this long to look again.
    monkeypatch.setattr(sessions, "FOLLOW_POLL", 60.0)
    monkeypatch.setattr(sessions, "FOLLOW_POLL_WATCHED", 60.0)
    env = _env(data_dir, pg_database)
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
            await cleanup_sandboxes(worker)


async def test_an_abort_sent_to_the_web_runtime_stops_the_turn_in_the_worker(
    data_dir: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the cross-process notification, the worker would look at the flag this late.
    monkeypatch.setattr(worker_module, "ABORT_POLL", 60.0)
    env = _env(data_dir, pg_database)
    async with Lap(plugins=[FakesPlugin()], env=env, run_turns=False, migrate=True) as web:
        agent = await web.agents.create("a", harness="script", model="m")
        session = await web.sessions.create(agent.id)
        async with Lap(plugins=[FakesPlugin()], env=env) as worker:
            turn = await web.sessions.send(session.id, "hang")
            with anyio.fail_after(15):
                async for record in web.sessions.follow(session.id):
                    if isinstance(record.event, HarnessSession):
                        break
                await anyio.sleep(0.3)
                assert await web.sessions.abort(session.id)
                records = [r async for r in web.sessions.follow(session.id, until_turn=turn.id)]
            assert records[-1].event == TurnEnd(status="aborted", reason="aborted by the user")
            interrupted = await web.sessions.send(session.id, "hang")
            with anyio.fail_after(15):
                async for record in web.sessions.follow(session.id, after=interrupted.user_seq):
                    if isinstance(record.event, HarnessSession):
                        break
                await anyio.sleep(0.3)
                last = await web.sessions.send(session.id, "hello", on_busy="interrupt")
                records = [
                    r async for r in web.sessions.follow(session.id, after=interrupted.user_seq - 1, until_turn=last.id)
                ]
            ends = [(r.turn_id, r.event.status) for r in records if isinstance(r.event, TurnEnd)]
            assert ends == [(interrupted.id, "aborted"), (last.id, "completed")]
            await cleanup_sandboxes(worker)
