"""Followers of one session share its log's tail: one store read per change, not one per follower."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest

from lap_core import Lap, TextDelta, TurnEnd
from lap_core._engine import tails
from tests.fakes.plugin import FakesPlugin
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from lap_core import EventRecord

pytestmark = pytest.mark.anyio


@pytest.fixture
async def lap(data_dir: Path) -> AsyncIterator[Lap]:
    env = lap_env(data_dir, LAP_SANDBOX_BACKEND="process", LITELLM_API_BASE="http://127.0.0.1:9", LITELLM_API_KEY="k")
    async with Lap(plugins=[FakesPlugin()], env=env) as running:
        yield running


def _count_reads(lap: Lap, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    reads: list[int] = []
    real = lap.store.read_events

    async def counted(session_id: str, **kwargs: Any) -> list[EventRecord]:
        reads.append(kwargs.get("after", 0))
        return await real(session_id, **kwargs)

    monkeypatch.setattr(lap.store, "read_events", counted)
    return reads


async def test_many_followers_read_the_store_once_per_change(lap: Lap, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.id)
    first = await lap.sessions.send(session.id, "warm up")  # the sandbox is up before counting
    async for _ in lap.sessions.follow(session.id, until_turn=first.id):
        pass
    reads = _count_reads(lap, monkeypatch)
    start = (await lap.store.get_session(session.id)).last_seq
    received: list[list[EventRecord]] = []

    async def follower(turn_id: str) -> None:
        received.append([r async for r in lap.sessions.follow(session.id, after=start, until_turn=turn_id)])

    turn = await lap.sessions.send(session.id, "hello there")
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            for _ in range(200):
                tasks.start_soon(follower, turn.id)
    expected = await lap.store.read_events(session.id, after=start)
    assert isinstance(expected[-1].event, TurnEnd)
    assert all(got == expected for got in received)
    assert len(received) == 200
    # One read per append (and per poll) at most, shared by the 200 followers; not 200 per append.
    assert len(reads) - 1 <= 4 * len(expected), reads


async def test_a_follower_behind_the_tail_catches_up_in_order(lap: Lap) -> None:
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.id)
    count = tails.TAIL_RECORDS * 3 + 7
    live: list[EventRecord] = []

    async def live_follower() -> None:
        async for record in lap.sessions.follow(session.id):
            live.append(record)
            if len(live) == count:
                return

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(live_follower)
            for index in range(0, count, 50):
                await lap.store.append_events(
                    session.id, [TextDelta(text=str(n)) for n in range(index, min(count, index + 50))]
                )
                lap.sessions._bus.notify(session.id)
        late = []
        async for record in lap.sessions.follow(session.id, after=5):
            late.append(record)
            if record.seq == count:
                break
    assert [r.seq for r in live] == list(range(1, count + 1))
    assert [r.seq for r in late] == list(range(6, count + 1))
    assert [r.event for r in late] == [TextDelta(text=str(n)) for n in range(5, count)]
