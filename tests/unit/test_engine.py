"""The engine's turn contract, with real sandboxd processes (no isolation) and a scripted harness."""

from __future__ import annotations

import os
import re
import signal
from typing import TYPE_CHECKING

import anyio
import pytest

from lap_core import (
    Conflict,
    Error,
    HarnessSession,
    InvalidInput,
    Lap,
    NotFound,
    Status,
    TextDelta,
    ToolCall,
    ToolResult,
    TurnEnd,
    UserMessage,
)
from tests.fakes.plugin import FakesPlugin
from tests.fakes.process_backend import ProcessBackend
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from lap_core import EventRecord

pytestmark = pytest.mark.anyio


@pytest.fixture
def plugin() -> FakesPlugin:
    return FakesPlugin()


@pytest.fixture
async def lap(data_dir: Path, plugin: FakesPlugin) -> AsyncIterator[Lap]:
    env = lap_env(data_dir, LAP_SANDBOX_BACKEND="process", LITELLM_API_BASE="http://127.0.0.1:9", LITELLM_API_KEY="k")
    async with Lap(plugins=[plugin], env=env) as running:
        yield running


async def _turn(lap: Lap, session_id: str, text: str) -> list[EventRecord]:
    with anyio.fail_after(30):
        return [record async for record in lap.sessions.stream(session_id, text)]


def _kinds(records: list[EventRecord]) -> list[str]:
    return [type(record.event).__name__ for record in records]


async def test_a_turn_is_logged_in_order_and_ends_once(lap: Lap) -> None:
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.name)
    records = await _turn(lap, session.id, "run: echo hello; echo world")
    assert _kinds(records) == [
        "UserMessage",
        "Status",
        "Status",
        "HarnessSession",
        "ToolCall",
        "ToolResult",
        "TextDelta",
        "TurnEnd",
    ]
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert isinstance(records[0].event, UserMessage)
    assert records[1].event == Status(phase="sandbox_creating", detail=records[1].event.detail)  # type: ignore[union-attr]
    assert isinstance(records[4].event, ToolCall)
    assert records[5].event == ToolResult(call_id="c1", output="hello\nworld")
    assert records[-1].event == TurnEnd(status="completed")
    assert {r.turn_id for r in records} == {records[0].turn_id}
    assert await lap.sessions.history(session.id) == records
    stored = await lap.sessions.get(session.id)
    assert (stored.status, stored.native_session_id) == ("ready", "native-1")


async def test_the_next_turn_resumes_the_native_session_in_the_same_sandbox(lap: Lap, plugin: FakesPlugin) -> None:
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.id)
    await _turn(lap, session.id, "one")
    second = await _turn(lap, session.id, "two")
    assert plugin.harness.seen_native_ids == [None, "native-1"]
    assert not any(isinstance(r.event, Status) and r.event.phase == "sandbox_creating" for r in second)
    assert plugin.backend is not None
    assert len(plugin.backend.created) == 1
    assert "".join(r.event.text for r in second if isinstance(r.event, TextDelta)) == "you said: two"


async def test_a_failing_harness_ends_the_turn_with_an_error_and_the_session_goes_on(lap: Lap) -> None:
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.id)
    failed = await _turn(lap, session.id, "fail")
    assert _kinds(failed)[-2:] == ["Error", "TurnEnd"]
    assert failed[-2].event == Error(code="internal_error", message="RuntimeError: the harness broke")
    assert failed[-1].event == TurnEnd(status="failed", reason="RuntimeError: the harness broke")
    assert (await lap.sessions.get(session.id)).status_detail == "RuntimeError: the harness broke"
    after = await _turn(lap, session.id, "again")
    assert after[-1].event == TurnEnd(status="completed")
    turns = await lap.store.list_turns(session.id)
    assert [t.status for t in turns] == ["failed", "completed"]


async def test_a_sandbox_that_fails_to_start_is_an_error_event(lap: Lap, plugin: FakesPlugin) -> None:
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.id)
    ProcessBackend.fail_start = True
    try:
        failed = await _turn(lap, session.id, "hello")
    finally:
        ProcessBackend.fail_start = False
    error = failed[-2].event
    assert isinstance(error, Error)
    assert error.code == "sandbox_error"
    assert "sandbox refused to start" in error.message or "exit code 1" in error.message
    assert failed[-1].event == TurnEnd(status="failed", reason=error.message)
    recovered = await _turn(lap, session.id, "hello")
    assert recovered[-1].event == TurnEnd(status="completed")


async def test_abort_stops_the_running_turn(lap: Lap) -> None:
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.id)
    turn = await lap.sessions.send(session.id, "hang")
    records = []
    with anyio.fail_after(30):
        async for record in lap.sessions.follow(session.id, until_turn=turn.id):
            records.append(record)
            if isinstance(record.event, HarnessSession):
                await anyio.sleep(0.3)  # the sleeper is running now
                assert await lap.sessions.abort(session.id)
    assert records[-1].event == TurnEnd(status="aborted", reason="aborted by the user")
    assert (await lap.store.get_turn(turn.id)).status == "aborted"
    assert (await _turn(lap, session.id, "still here"))[-1].event == TurnEnd(status="completed")


async def _until_running(lap: Lap, session_id: str, turn_id: str) -> None:
    """Wait until the turn's harness process runs (the `hang` script reports its session first)."""
    with anyio.fail_after(30):
        async for record in lap.sessions.follow(session_id):
            if record.turn_id == turn_id and isinstance(record.event, HarnessSession):
                await anyio.sleep(0.3)
                return


async def test_a_busy_session_rejects_a_message_on_reject(lap: Lap) -> None:
    agent = await lap.agents.create("a", harness="script", model="m", on_busy="reject")
    session = await lap.sessions.create(agent.id)
    running = await lap.sessions.send(session.id, "hang")
    await _until_running(lap, session.id, running.id)
    with pytest.raises(Conflict, match="busy") as refused:
        await lap.sessions.send(session.id, "too soon")
    assert refused.value.details == {"session_id": session.id, "on_busy": "reject"}
    assert [t.id for t in await lap.store.list_turns(session.id)] == [running.id]
    queued = await lap.sessions.send(session.id, "later", on_busy="enqueue")  # the request overrides the agent
    assert await lap.sessions.abort(session.id)
    with anyio.fail_after(30):
        records = [r async for r in lap.sessions.follow(session.id, until_turn=queued.id)]
    ends = [(r.turn_id, r.event.status) for r in records if isinstance(r.event, TurnEnd)]
    assert ends == [(running.id, "aborted"), (queued.id, "completed")]
    # Idle again: reject lets a message through.
    assert (await _turn(lap, session.id, "now"))[-1].event == TurnEnd(status="completed")


async def test_interrupt_aborts_the_pending_turns_then_runs(lap: Lap) -> None:
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.id)
    running = await lap.sessions.send(session.id, "hang")
    await _until_running(lap, session.id, running.id)
    waiting = await lap.sessions.send(session.id, "hang")
    new = await lap.sessions.send(session.id, "hello", on_busy="interrupt")
    with anyio.fail_after(30):
        records = [r async for r in lap.sessions.follow(session.id, until_turn=new.id)]
    ends = [(r.turn_id, r.event.status) for r in records if isinstance(r.event, TurnEnd)]
    assert ends == [(running.id, "aborted"), (waiting.id, "aborted"), (new.id, "completed")]
    # The queued turn never ran: no harness event of it between its message and its end.
    assert {type(r.event) for r in records if r.turn_id == waiting.id} == {UserMessage, TurnEnd}
    statuses = {t.id: t.status for t in await lap.store.list_turns(session.id)}
    assert statuses == {running.id: "aborted", waiting.id: "aborted", new.id: "completed"}


async def test_abort_of_an_idle_session_and_bad_policies(lap: Lap) -> None:
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.id)
    assert not await lap.sessions.abort(session.id)
    with pytest.raises(InvalidInput, match="on_busy"):
        await lap.sessions.send(session.id, "x", on_busy="later")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="on_busy"):
        await lap.agents.create("b", harness="script", model="m", on_busy="sometimes")  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        await lap.sessions.abort("ses_missing")


async def test_messages_sent_together_run_in_order(lap: Lap) -> None:
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.id)
    first = await lap.sessions.send(session.id, "first")
    second = await lap.sessions.send(session.id, "second")
    with anyio.fail_after(30):
        records = [r async for r in lap.sessions.follow(session.id, until_turn=second.id)]
    ends = [r for r in records if isinstance(r.event, TurnEnd)]
    assert [r.turn_id for r in ends] == [first.id, second.id]
    first_end = ends[0].seq
    assert all(r.seq <= first_end for r in records if r.turn_id == first.id)
    assert all(r.seq > first_end for r in records if r.turn_id == second.id and not isinstance(r.event, UserMessage))


async def test_bad_input_is_refused_clearly(lap: Lap) -> None:
    with pytest.raises(InvalidInput, match="unknown harness 'nope'") as caught:
        await lap.agents.create("a", harness="nope", model="m")
    assert "script" in caught.value.message  # it names the harnesses there are
    with pytest.raises(InvalidInput, match="unknown option"):
        await lap.agents.create("b", harness="script", model="m", options={"colour": "red"})
    with pytest.raises(InvalidInput, match="name"):
        await lap.agents.create("no spaces", harness="script", model="m")
    with pytest.raises(NotFound):
        await lap.sessions.create("missing-agent")
    with pytest.raises(NotFound):
        await lap.sessions.send("ses_missing", "hello")
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.id)
    with pytest.raises(InvalidInput, match="empty"):
        await lap.sessions.send(session.id, "   ")
    assert await lap.sessions.history(session.id) == []


async def test_deleting_a_session_removes_its_sandbox_and_log(lap: Lap, plugin: FakesPlugin) -> None:
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.id)
    await _turn(lap, session.id, "hello")
    assert [ref.state for ref in await lap.backend.list({"lap.session": session.id})] == ["ready"]
    with pytest.raises(Conflict):
        await lap.agents.delete(agent.id)  # it still has a session
    await lap.sessions.delete(session.id)
    assert await lap.backend.list({"lap.session": session.id}) == []
    with pytest.raises(NotFound):
        await lap.sessions.history(session.id)
    await lap.agents.delete(agent.id)
    assert await lap.agents.list() == []


async def _kill_the_sandbox_mid_turn(lap: Lap, session_id: str, text: str, *, before: str = "") -> list[EventRecord]:
    """Send `text` (a `stream:` turn), kill its sandbox at its third line, follow it to its end."""
    turn = await lap.sessions.send(session_id, text)
    records: list[EventRecord] = []
    with anyio.fail_after(30):
        async for record in lap.sessions.follow(session_id, after=turn.user_seq - 1, until_turn=turn.id):
            records.append(record)
            if record.event == TextDelta(text="line 3\n") and len(records) < 10:  # the first time only
                ref = (await lap.backend.list({"lap.session": session_id}))[0]
                async with await lap.backend.connect(ref.name) as sandbox:
                    if before:
                        assert (await sandbox.exec(["sh", "-c", before])).exit_code == 0
                    os.kill((await sandbox.health()).pid, signal.SIGKILL)  # the sandbox dies mid-turn
    return records


async def test_a_turn_whose_sandbox_dies_starts_over_in_a_new_one(lap: Lap) -> None:
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.id)
    records = await _kill_the_sandbox_mid_turn(lap, session.id, "stream: 20")
    phases = [r.event.phase for r in records if isinstance(r.event, Status)]
    assert phases[-1] == "turn_restarted"
    restart = next(
        i for i, r in enumerate(records) if isinstance(r.event, Status) and r.event.phase == "turn_restarted"
    )
    after = [r.event.text for r in records[restart:] if isinstance(r.event, TextDelta)]
    assert after == [f"line {n}\n" for n in range(1, 21)]  # the whole reply, once, after the restart
    # The new attempt continued the harness's session from before the turn, not the lost attempt's.
    natives = [r.event.native_session_id for r in records if isinstance(r.event, HarnessSession)]
    assert natives == ["native-1", "native-1"]
    assert records[-1].event == TurnEnd(status="completed")
    assert [r.seq for r in records] == list(range(1, len(records) + 1))


async def test_a_turn_started_over_goes_on_from_the_native_session_as_it_was_before_the_turn(
    lap: Lap, plugin: FakesPlugin
) -> None:
    # Issue 12: the start-over resumed the session in which the lost attempt had stored the message.
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.id)
    await _turn(lap, session.id, "stream: 2")
    records = await _kill_the_sandbox_mid_turn(lap, session.id, "stream: 20")
    restarted = [r.event for r in records if isinstance(r.event, Status) and r.event.phase == "turn_restarted"]
    assert restarted == [Status(phase="turn_restarted", detail="the sandbox was lost")]
    assert records[-1].event == TurnEnd(status="completed")
    assert plugin.harness.seen_native_ids == [None, "native-1", "native-1"]
    recalled = await _turn(lap, session.id, "recall")
    texts = [r.event.text for r in recalled if isinstance(r.event, TextDelta)]
    assert texts == ["stream: 2\n", "stream: 20\n", "recall\n"]  # each message once


async def test_a_turn_started_over_without_a_copy_of_the_native_session_replays_the_conversation(
    lap: Lap, plugin: FakesPlugin
) -> None:
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.id)
    await _turn(lap, session.id, "stream: 2")
    # The copy taken before the turn is gone (as when the sandbox died while it was taken).
    records = await _kill_the_sandbox_mid_turn(lap, session.id, "stream: 20", before="rm -r .lap-native-state")
    restarted = [r.event for r in records if isinstance(r.event, Status) and r.event.phase == "turn_restarted"]
    assert len(restarted) == 1
    assert restarted[0].detail.endswith("the conversation is replayed to a new harness session")
    assert plugin.harness.seen_native_ids == [None, "native-1", None]  # a new harness session ...
    assert records[-1].event == TurnEnd(status="completed")
    assert (await lap.sessions.get(session.id)).native_session_id == "native-1"
    recalled = await _turn(lap, session.id, "recall")
    conversation = "".join(r.event.text for r in recalled if isinstance(r.event, TextDelta))
    assert conversation.startswith("(Your earlier session was lost")  # ... told the story so far
    assert conversation.count("stream: 2\n") == 1
    assert "User: stream: 2\nAssistant: line 1\nline 2\n" in conversation
    assert conversation.endswith("---\n\nstream: 20\nrecall\n")  # each message once


async def test_a_lost_volume_replays_the_conversation_to_a_new_harness_session(lap: Lap, plugin: FakesPlugin) -> None:
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.id)
    await _turn(lap, session.id, "my name is Ada")
    await _turn(lap, session.id, "I like tea")
    name = (await lap.sessions.get(session.id)).sandbox_name
    assert name is not None
    await lap.backend.delete(name)
    await lap.backend.delete_volume(session.id)  # the workspace and harness home are gone too
    records = await _turn(lap, session.id, "who am I?")
    assert next(r.event.phase for r in records if isinstance(r.event, Status)) == "volume_lost"
    assert plugin.harness.seen_native_ids[-1] is None  # a new harness session ...
    reply = "".join(r.event.text for r in records if isinstance(r.event, TextDelta))
    assert "User: my name is Ada\nAssistant: you said: my name is Ada" in reply  # ... told the story so far
    assert "User: I like tea" in reply
    assert reply.endswith("who am I?")
    assert records[-1].event == TurnEnd(status="completed")
    # The next turn continues the new harness session, with no replay.
    again = await _turn(lap, session.id, "and now?")
    assert "".join(r.event.text for r in again if isinstance(r.event, TextDelta)) == "you said: and now?"
    assert plugin.harness.seen_native_ids[-1] == "native-1"


@pytest.mark.parametrize("images", [False, True], ids=["host-files", "images"])
async def test_a_harness_must_be_installed_here_unless_the_backend_runs_images(
    lap: Lap, plugin: FakesPlugin, monkeypatch: pytest.MonkeyPatch, images: bool
) -> None:
    monkeypatch.setattr(type(plugin.harness), "npm_packages", ("not-installed-cli@1.0.0",))
    if images:
        monkeypatch.setattr(ProcessBackend, "capabilities", frozenset({"images"}))
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.id)
    records = await _turn(lap, session.id, "hi")
    assert plugin.backend is not None
    if images:
        assert records[-1].event == TurnEnd(status="completed")
        # The image has the CLI: no host directory is handed to the backend.
        assert plugin.backend.specs[plugin.backend.created[0]].harness_root is None
    else:
        errors = [record.event for record in records if isinstance(record.event, Error)]
        assert "is not installed" in errors[0].message
        assert plugin.backend.created == []


def test_sandbox_names_are_dns_labels_and_distinct() -> None:
    # Kubernetes refuses a pod name ending in '-'; ids ending in '_' once made exactly that.
    from lap_core import new_id
    from lap_core._engine.sandboxes import sandbox_name

    label = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    ids = {new_id("ses") for _ in range(5000)} | {"ses_" + "a" * 19 + "_", "ses_" + "a" * 19 + "0", "ses__abc"}
    names = {sandbox_name(session_id) for session_id in ids}
    assert len(names) == len(ids)
    assert all(label.match(name) and len(name) <= 63 for name in names)
    assert sandbox_name("ses_" + "a" * 19 + "_") == "lap-ses-" + "a" * 19 + "-0"
