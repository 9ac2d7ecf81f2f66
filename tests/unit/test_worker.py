"""The worker runs turns from the store's durable queue: queued by anyone, run once, in order."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from lap_core import Error, Lap, TurnEnd, UserMessage
from lap_core.models import Job, TurnRecord
from tests.fakes.plugin import FakesPlugin
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


def _env(data_dir: Path) -> dict[str, str]:
    return lap_env(data_dir, LAP_SANDBOX_BACKEND="process", LITELLM_API_BASE="http://127.0.0.1:9", LITELLM_API_KEY="k")


async def test_turns_queued_where_no_worker_runs_are_run_by_a_worker_later(data_dir: Path) -> None:
    async with Lap(plugins=[FakesPlugin()], env=_env(data_dir), run_turns=False) as web:
        agent = await web.agents.create("a", harness="script", model="m")
        session = await web.sessions.create(agent.id)
        first = await web.sessions.send(session.id, "one")
        second = await web.sessions.send(session.id, "two")
        assert [j.status for j in await web.store.list_jobs(session_id=session.id)] == ["queued", "queued"]
    async with Lap(plugins=[FakesPlugin()], env=_env(data_dir)) as worker:
        with anyio.fail_after(20):
            records = [r async for r in worker.sessions.follow(session.id, until_turn=second.id)]
        ends = [r for r in records if isinstance(r.event, TurnEnd)]
        assert [(r.turn_id, r.event.status) for r in ends] == [(first.id, "completed"), (second.id, "completed")]
        with anyio.fail_after(5):  # the job is finished just after the turn's last event
            while [j.status for j in await worker.store.list_jobs(session_id=session.id)] != ["done", "done"]:
                await anyio.sleep(0.05)
        for ref in await worker.backend.list():
            await worker.backend.delete(ref.name)


async def test_a_turn_whose_worker_died_is_ended_not_run_twice(data_dir: Path) -> None:
    async with Lap(plugins=[FakesPlugin()], env=_env(data_dir), run_turns=False) as web:
        agent = await web.agents.create("a", harness="script", model="m")
        session = await web.sessions.create(agent.id)
        # A worker that leased the turn, started it, and died: its lease runs out.
        turn, _ = await web.store.start_turn(
            TurnRecord(id="turn_orphan", session_id=session.id),
            UserMessage(text="hello"),
            job=Job(id="job_orphan", kind="turn", session_id=session.id, payload={"turn_id": "turn_orphan"}),
        )
        assert await web.store.lease_job("dead-worker", lease_seconds=0.2) is not None
        await web.store.finish_turn(turn.id, "running")
    await anyio.sleep(0.3)
    plugin = FakesPlugin()
    async with Lap(plugins=[plugin], env=_env(data_dir)) as worker:
        with anyio.fail_after(20):
            records = [r async for r in worker.sessions.follow(session.id, until_turn=turn.id)]
        assert isinstance(records[-2].event, Error)
        assert records[-2].event.code == "turn_interrupted"
        assert records[-1].event == TurnEnd(status="failed", reason=records[-2].event.message)
        assert plugin.harness.seen_native_ids == []  # the harness never ran it a second time
        with anyio.fail_after(5):
            while (job := await worker.store.get_job("job_orphan")).status == "leased":
                await anyio.sleep(0.05)
        assert (job.status, job.attempts) == ("failed", 2)
        assert (await worker.store.get_turn(turn.id)).status == "failed"
        after = [r async for r in worker.sessions.stream(session.id, "still usable")]
        assert after[-1].event == TurnEnd(status="completed")
        for ref in await worker.backend.list():
            await worker.backend.delete(ref.name)
