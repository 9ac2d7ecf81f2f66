"""The worker runs turns from the store's durable queue: queued by anyone, run once, in order."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from lap_core import Error, HarnessSession, Job, Lap, Status, StoreError, TextDelta, TurnEnd, TurnRecord, UserMessage
from lap_core._engine import worker as worker_module
from tests.fakes.plugin import FakesPlugin
from tests.fakes.shared import SharedFakesPlugin, stop_all
from tests.fixtures import cleanup_sandboxes, lap_env

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from lap_core import EventRecord

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


async def test_a_worker_that_stops_hands_its_turn_to_the_next_which_resumes_it(data_dir: Path) -> None:
    env = lap_env(
        data_dir,
        LAP_SANDBOX_BACKEND="shared-process",
        LAP_SHUTDOWN_GRACE="0",
        LITELLM_API_BASE="http://127.0.0.1:9",
        LITELLM_API_KEY="k",
    )
    try:
        async with Lap(plugins=[SharedFakesPlugin()], env=env) as first:
            agent = await first.agents.create("a", harness="script", model="m")
            session = await first.sessions.create(agent.id)
            turn = await first.sessions.send(session.id, "stream: 20")
            with anyio.fail_after(20):
                async for record in first.sessions.follow(session.id):
                    if record.event == TextDelta(text="line 3\n"):
                        break
        # `first` has stopped: its turn is handed back, still running in the sandbox.
        job = (await _jobs(env, session.id))[0]
        assert (job.status, job.attempts) == ("queued", 1)
        async with Lap(plugins=[SharedFakesPlugin()], env=env, run_turns=False) as admin:
            # As if an attempt had stored the id it was told but died before logging it.
            await admin.store.update_session(session.id, native_session_id="native-7")
        async with Lap(plugins=[SharedFakesPlugin()], env=env) as second:
            with anyio.fail_after(20):
                records = [r async for r in second.sessions.follow(session.id, until_turn=turn.id)]
            texts = [r.event.text for r in records if isinstance(r.event, TextDelta)]
            assert texts == [f"line {n}\n" for n in range(1, 21)]  # each once, in order
            assert records[-1].event == TurnEnd(status="completed")
            assert [r.event for r in records if isinstance(r.event, Status)][-1].phase == "turn_resumed"
            assert [r.seq for r in records] == list(range(1, len(records) + 1))
            ref = (await second.backend.list({"lap.session": session.id}))[0]
            async with await second.backend.connect(ref.name) as sandbox:
                ran = await sandbox.exec(["cat", "streams.log"])
            assert ran.stdout.split() == [turn.id]  # the process ran once, followed by two workers
            assert (await second.store.get_job(job.id)).status == "done"
            # The resumed harness went on from the session as it was before the turn.
            assert second.harnesses["script"].seen_native_ids == [None]  # type: ignore[attr-defined]
            assert [r.event for r in records if isinstance(r.event, HarnessSession)] == [
                HarnessSession(native_session_id="native-1")
            ]
    finally:
        stop_all(data_dir)


async def test_a_turn_taken_over_before_its_reply_logs_each_harness_event_once(data_dir: Path) -> None:
    # Issue 12: the take-over replayed harness_session, the only event the log held yet, a second time.
    env = lap_env(
        data_dir,
        LAP_SANDBOX_BACKEND="shared-process",
        LAP_SHUTDOWN_GRACE="0",
        LITELLM_API_BASE="http://127.0.0.1:9",
        LITELLM_API_KEY="k",
    )
    try:
        async with Lap(plugins=[SharedFakesPlugin()], env=env) as first:
            agent = await first.agents.create("a", harness="script", model="m")
            session = await first.sessions.create(agent.id)
            turn = await first.sessions.send(session.id, "stream: 3 after 3")
            with anyio.fail_after(20):
                async for record in first.sessions.follow(session.id):
                    if isinstance(record.event, HarnessSession):
                        break  # the process is quiet for 3 s: hand the turn over now
        async with Lap(plugins=[SharedFakesPlugin()], env=env) as second:
            with anyio.fail_after(20):
                records = [r async for r in second.sessions.follow(session.id, until_turn=turn.id)]
        assert [type(r.event).__name__ for r in records] == [
            "UserMessage",
            "Status",  # sandbox_creating
            "Status",  # sandbox_ready
            "HarnessSession",
            "Status",  # turn_resumed
            "TextDelta",
            "TextDelta",
            "TextDelta",
            "TurnEnd",
        ]
        assert [r.event.phase for r in records if isinstance(r.event, Status)][-1] == "turn_resumed"
        assert [r.event.text for r in records if isinstance(r.event, TextDelta)] == ["line 1\n", "line 2\n", "line 3\n"]
    finally:
        stop_all(data_dir)


async def test_a_worker_re_attaching_to_a_replayed_start_over_hands_the_harness_what_it_got(data_dir: Path) -> None:
    env = lap_env(
        data_dir,
        LAP_SANDBOX_BACKEND="shared-process",
        LAP_SHUTDOWN_GRACE="0",
        LITELLM_API_BASE="http://127.0.0.1:9",
        LITELLM_API_KEY="k",
    )
    try:
        async with Lap(plugins=[SharedFakesPlugin()], env=env) as first:
            agent = await first.agents.create("a", harness="script", model="m")
            session = await first.sessions.create(agent.id)
            assert [r async for r in first.sessions.stream(session.id, "stream: 2")][-1].event == TurnEnd()
            turn = await first.sessions.send(session.id, "stream: 20")
            thirds = 0
            with anyio.fail_after(30):
                async for record in first.sessions.follow(session.id, after=turn.user_seq - 1):
                    if record.event != TextDelta(text="line 3\n"):
                        continue
                    thirds += 1
                    if thirds == 2:
                        break  # the start-over runs: hand it over now
                    ref = (await first.backend.list({"lap.session": session.id}))[0]
                    async with await first.backend.connect(ref.name) as sandbox:
                        # No copy of the harness's session from before the turn: the start-over replays.
                        assert (await sandbox.exec(["rm", "-r", ".lap-native-state"])).exit_code == 0
                        os.kill((await sandbox.health()).pid, signal.SIGKILL)
        async with Lap(plugins=[SharedFakesPlugin()], env=env) as second:
            with anyio.fail_after(30):
                records = [r async for r in second.sessions.follow(session.id, until_turn=turn.id)]
            # The start-over began a new harness session: re-attached, the harness is told none either.
            assert second.harnesses["script"].seen_native_ids == [None]  # type: ignore[attr-defined]
        phases = [r.event.phase for r in records if isinstance(r.event, Status)]
        assert phases[-2:] == ["turn_restarted", "turn_resumed"]
        restart = max(
            i for i, r in enumerate(records) if isinstance(r.event, Status) and r.event.phase == "turn_restarted"
        )
        after = [r.event for r in records[restart:] if not isinstance(r.event, Status)]
        assert after[0] == HarnessSession(native_session_id="native-1")
        assert after[1:] == [*(TextDelta(text=f"line {n}\n") for n in range(1, 21)), TurnEnd()]  # each once
    finally:
        stop_all(data_dir)


async def _jobs(env: dict[str, str], session_id: str) -> list[Job]:
    async with Lap(plugins=[SharedFakesPlugin()], env=env, run_turns=False) as admin:
        return await admin.store.list_jobs(session_id=session_id)


async def test_a_turn_that_keeps_losing_its_worker_is_failed_not_retried_forever(data_dir: Path) -> None:
    async with Lap(plugins=[FakesPlugin()], env=_env(data_dir), run_turns=False) as web:
        agent = await web.agents.create("a", harness="script", model="m")
        session = await web.sessions.create(agent.id)
        turn, _ = await web.store.start_turn(
            TurnRecord(id="turn_orphan", session_id=session.id),
            UserMessage(text="hello"),
            job=Job(id="job_orphan", kind="turn", session_id=session.id, payload={"turn_id": "turn_orphan"}),
        )
        for _ in range(worker_module.MAX_ATTEMPTS):  # workers that leased it, started it, and died
            assert await web.store.lease_job("dead-worker", lease_seconds=0.01) is not None
            await anyio.sleep(0.02)
        await web.store.set_turn_status(turn.id, "running")
    plugin = FakesPlugin()
    async with Lap(plugins=[plugin], env=_env(data_dir)) as worker:
        with anyio.fail_after(20):
            records = [r async for r in worker.sessions.follow(session.id, until_turn=turn.id)]
        assert isinstance(records[-2].event, Error)
        assert records[-2].event.code == "turn_interrupted"
        assert records[-1].event == TurnEnd(status="failed", reason=records[-2].event.message)
        assert plugin.harness.seen_native_ids == []  # the harness never ran it again
        with anyio.fail_after(5):
            while (job := await worker.store.get_job("job_orphan")).status == "leased":
                await anyio.sleep(0.05)
        assert (job.status, job.attempts) == ("failed", worker_module.MAX_ATTEMPTS + 1)
        after = [r async for r in worker.sessions.stream(session.id, "still usable")]
        assert after[-1].event == TurnEnd(status="completed")
        await cleanup_sandboxes(worker)


async def test_a_store_outage_mid_turn_pauses_the_turn_and_it_resumes_once(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env(data_dir) | {"LAP_JOB_LEASE": "1"}
    async with Lap(plugins=[FakesPlugin()], env=env) as lap:
        agent = await lap.agents.create("a", harness="script", model="m")
        session = await lap.sessions.create(agent.id)
        down = anyio.Event()
        store = lap.store

        def failing(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def call(*args: Any, **kwargs: Any) -> Any:
                if down.is_set():
                    raise StoreError("the database is restarting")
                return await method(*args, **kwargs)

            return call

        for name in (
            "append_events",
            "read_events",
            "get_turn",
            "set_turn_status",
            "update_session",
            "lease_job",
            "heartbeat_job",
            "finish_job",
            "release_job",
            "get_session",
            "get_agent",
        ):
            monkeypatch.setattr(store, name, failing(getattr(store, name)))
        turn = await lap.sessions.send(session.id, "stream: 30")
        received: list[EventRecord] = []
        with anyio.fail_after(30):
            async for record in lap.sessions.follow(session.id, until_turn=turn.id):
                received.append(record)
                if record.event == TextDelta(text="line 5\n"):
                    down.set()  # the store goes away mid-turn, for two seconds
                    await anyio.sleep(2)
                    down = anyio.Event()
        texts = [r.event.text for r in received if isinstance(r.event, TextDelta)]
        assert texts == [f"line {n}\n" for n in range(1, 31)]  # each once, in order: nothing lost or repeated
        assert received[-1].event == TurnEnd(status="completed")
        assert [r.seq for r in received] == list(range(1, len(received) + 1))
        with anyio.fail_after(5):  # the job is finished just after the turn's last event
            while (job := (await lap.store.list_jobs(session_id=session.id))[0]).status == "leased":
                await anyio.sleep(0.05)
        assert (job.status, job.attempts) == ("done", 2)
        await cleanup_sandboxes(lap)


async def test_a_job_that_does_not_fit_its_kind_fails_with_a_message_and_the_worker_goes_on(data_dir: Path) -> None:
    async with Lap(plugins=[FakesPlugin()], env=_env(data_dir)) as lap:
        agent = await lap.agents.create("a", harness="script", model="m")
        session = await lap.sessions.create(agent.id)
        await lap.store.queue_job(Job(id="job_bad", kind="turn", session_id=session.id, payload={"turn": 1}))
        lap.sessions._worker.wake()
        with anyio.fail_after(20):
            while (bad := (await lap.store.list_jobs(session_id=session.id))[0]).status != "failed":
                await anyio.sleep(0.05)
        assert "of kind 'turn' cannot be run" in bad.error
        reply = [r async for r in lap.sessions.stream(session.id, "hello")]
        assert reply[-1].event == TurnEnd(status="completed")
        await cleanup_sandboxes(lap)
