"""The reconciler keeps sandboxes and sessions in step: orphans, vanished sandboxes, stuck bring-ups, idle sessions."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
import pytest

from lap_core import Lap, SandboxSpec, StartProcess, Status, ToolResult, TurnEnd
from lap_core._engine import reconciler, tails
from lap_core._engine.sandboxes import sandbox_name
from tests.fakes.plugin import FakesPlugin
from tests.fixtures import cleanup_sandboxes, lap_env

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from lap_core import Session

pytestmark = pytest.mark.anyio
IDLE = 1.0


@pytest.fixture
async def lap(data_dir: Path, request: pytest.FixtureRequest) -> AsyncIterator[Lap]:
    env = lap_env(
        data_dir,
        LAP_SANDBOX_BACKEND=getattr(request, "param", "process"),
        LITELLM_API_BASE="http://127.0.0.1:9",
        LITELLM_API_KEY="k",
        SESSION_IDLE_TIMEOUT=str(IDLE),
        LAP_RECONCILE_INTERVAL="0.2",
        LAP_SANDBOX_START_TIMEOUT="0.5",
    )
    async with Lap(plugins=[FakesPlugin()], env=env) as running:
        yield running
        await cleanup_sandboxes(running)


async def _session_with_sandbox(lap: Lap) -> Session:
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.id)
    reply = [r async for r in lap.sessions.stream(session.id, "run: echo kept > notes.txt")]
    assert reply[-1].event == TurnEnd(status="completed")
    return await lap.sessions.get(session.id)


async def _until(check: Callable[[], object], seconds: float = 10) -> None:
    with anyio.fail_after(seconds):
        while not await check():  # type: ignore[misc]
            await anyio.sleep(0.05)


async def test_an_idle_session_is_suspended_and_the_next_message_resumes_it(lap: Lap) -> None:
    session = await _session_with_sandbox(lap)
    name = sandbox_name(session.id)

    async def suspended() -> bool:
        return (await lap.sessions.get(session.id)).status == "suspended"

    await _until(suspended)
    assert await lap.backend.status(name) is None  # the sandbox is gone, its workspace kept
    assert "idle since" in (await lap.sessions.get(session.id)).status_detail
    assert lap.decisions.counts["queue_suspend", f"idle for {IDLE:.0f} s"] >= 1
    assert lap.decisions.counts["suspend", "idle"] == 1
    reply = [r async for r in lap.sessions.stream(session.id, "run: cat notes.txt")]
    assert reply[-1].event == TurnEnd(status="completed")
    assert [r.event.output for r in reply if isinstance(r.event, ToolResult)] == ["kept"]
    assert (await lap.sessions.get(session.id)).status == "ready"


@pytest.mark.parametrize("lap", ["process-suspend"], indirect=True)
async def test_a_backend_that_can_suspend_suspends_and_resumes_the_same_sandbox(lap: Lap) -> None:
    session = await _session_with_sandbox(lap)
    name = sandbox_name(session.id)

    async def suspended() -> bool:
        return (await lap.sessions.get(session.id)).status == "suspended"

    await _until(suspended)
    ref = await lap.backend.status(name)
    assert ref is not None
    assert ref.state == "suspended"  # suspended by the backend, not deleted
    reply = [r async for r in lap.sessions.stream(session.id, "run: cat notes.txt")]
    assert reply[-1].event == TurnEnd(status="completed")
    assert [r.event.output for r in reply if isinstance(r.event, ToolResult)] == ["kept"]
    phases = [r.event.phase for r in reply if isinstance(r.event, Status)]
    assert phases == ["sandbox_resuming"]  # not created again: no clone, no new stub keys
    assert lap.backend.resumed == [name]  # type: ignore[attr-defined]
    assert (await lap.sessions.get(session.id)).sandbox_generation == session.sandbox_generation


async def test_an_open_stream_or_a_running_process_keeps_a_session_awake(
    lap: Lap, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tails, "ACTIVITY_TOUCH", 0.2)
    followed = await _session_with_sandbox(lap)
    agent = await lap.agents.get("a")
    working = await lap.sessions.create(agent.id)
    assert [r async for r in lap.sessions.stream(working.id, "hello")][-1].event == TurnEnd(status="completed")
    async with await lap.backend.connect(sandbox_name(working.id)) as sandbox:
        await sandbox.start_process(StartProcess(id="dev-server", argv=["sleep", "60"]))

    async def follow() -> None:
        async for _ in lap.sessions.follow(followed.id, heartbeat=0.1):
            pass

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(follow)
        await anyio.sleep(IDLE * 3)
        tasks.cancel_scope.cancel()
    assert (await lap.sessions.get(followed.id)).status == "ready"
    assert (await lap.sessions.get(working.id)).status == "ready"
    assert lap.decisions.counts["keep", "a process is running in the sandbox"] >= 1
    assert await lap.backend.status(sandbox_name(working.id)) is not None


async def test_orphans_vanished_sandboxes_and_stuck_bring_ups(lap: Lap) -> None:
    await lap.backend.create(
        SandboxSpec(name="lap-orphan", harness="script", volume="ses_gone", labels={"lap.session": "ses_gone"})
    )
    session = await _session_with_sandbox(lap)
    await lap.backend.delete(sandbox_name(session.id))  # behind LAP's back
    agent = await lap.agents.get("a")
    stuck = await lap.sessions.create(agent.id)
    await lap.store.update_session(stuck.id, status="starting")

    async def reconciled() -> bool:
        states = [(await lap.sessions.get(s.id)).status for s in (session, stuck)]
        return await lap.backend.status("lap-orphan") is None and states == ["suspended", "failed"]

    await _until(reconciled)
    assert "vanished" in (await lap.sessions.get(session.id)).status_detail
    assert "did not come up" in (await lap.sessions.get(stuck.id)).status_detail
    counts = lap.decisions.counts
    assert counts["delete_sandbox", "its session no longer exists"] == 1
    assert counts["mark_suspended", "the sandbox vanished"] == 1
    assert counts["fail_bring_up", "stuck starting with no worker on it"] == 1
    # Both come back with the next message.
    for again in (session, stuck):
        assert [r async for r in lap.sessions.stream(again.id, "hello")][-1].event == TurnEnd(status="completed")


async def test_finished_jobs_are_pruned_after_their_retention(lap: Lap, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconciler, "JOB_RETENTION", timedelta(0))
    session = await _session_with_sandbox(lap)

    async def pruned() -> bool:
        return not await lap.store.list_jobs(session_id=session.id)

    await _until(pruned)
    assert lap.decisions.counts["prune_jobs", "finished over 0 days ago"] >= 1
