"""`HarnessConformance`: what every harness plugin must do, run with its real CLI in a real sandbox.

Subclass it in your plugin's tests and name the harness. It needs two fixtures: a running `Lap`
(`lap`) whose LLM gateway leads to a scripted LLM (`scripted_llm`). The kit's pytest plugin
(`lap_core.testing.pytest_plugin`) gives both: its `lap`, with the gateway at its `FakeLLM`
(`lap_llm`), which speaks chat completions, Responses and Anthropic Messages. Override either
to run the suite elsewhere (behind a real LiteLLM proxy, in a cluster):

```python
class TestMyHarness(HarnessConformance):
    harness = "my-harness"
    model = "fake-model"  # any name: the fake LLM serves every model

    @pytest.fixture
    async def lap(self, ...) -> AsyncIterator[Lap]: ...  # optional

    @pytest.fixture
    def scripted_llm(self, ...) -> ScriptedLLM: ...  # optional
```
"""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import anyio
import pytest

from lap_core._engine.resume import from_harness
from lap_core._errors import InvalidInput
from lap_core._events import (
    Error,
    HarnessSession,
    Status,
    TextDelta,
    ToolCall,
    ToolResult,
    TurnEnd,
    Usage,
    UserMessage,
)
from lap_core._models import Turn
from lap_core.testing._base import Suite

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lap_core._events import EventRecord, SessionEvent
    from lap_core._models import Agent, Session
    from lap_core._runtime import Lap

TURN_TIMEOUT = 180.0
"""Seconds one turn may take (a CLI may retry a failing gateway for a while)."""


class ScriptedLLM(Protocol):
    """A fake LLM the suite scripts; the gateway sends the harness's requests to it.

    `script(**changes)` sets how it answers from now on:

    - `command` (str or None): when a request offers a shell tool (`bash`, `Bash`, `shell`,
      `exec_command` ...) and the current turn (after the last user message) holds no tool
      result yet, answer with one call of that tool running this command; None: never.
    - `text` (str): otherwise answer this text, split into `chunks` deltas `delay` seconds apart.
    - `fail_status` (int or None): answer every request with this HTTP error status instead.

    `requests()` returns what it received, oldest first: dicts with the request `body`.
    """

    def script(self, **changes: Any) -> None:
        """Change the script (keys: command, text, chunks, delay, fail_status)."""
        ...

    def requests(self) -> list[dict[str, Any]]:
        """Return the requests received so far, each a dict with at least `body`."""
        ...


def _token() -> str:
    return secrets.token_hex(4)


def _of(records: Sequence[EventRecord], kind: type) -> list[Any]:
    return [record.event for record in records if isinstance(record.event, kind)]


def _text(records: Sequence[EventRecord]) -> str:
    return "".join(event.text for event in _of(records, TextDelta))


def _describe(event: SessionEvent) -> str:
    """Return an event's kind and its phase, status or message (for assertion messages)."""
    detail = getattr(event, "phase", None) or getattr(event, "status", None) or getattr(event, "message", "")
    return f"{type(event).__name__}:{detail}"


class HarnessConformance(Suite):
    """The harness conformance suite; a subclass names `harness` (the kit's pytest plugin gives `lap` and `lap_llm`)."""

    harness: ClassVar[str] = ""
    """The harness's registered name."""
    model: ClassVar[str] = "fake-model"
    """A model the gateway serves from the scripted LLM."""
    options: ClassVar[dict[str, Any]] = {}
    """Agent options the suite's agents get (valid ones)."""

    # `lap` comes from the kit's pytest plugin (`lap_core.testing.pytest_plugin`) unless overridden.

    @pytest.fixture
    def scripted_llm(self, lap_llm: ScriptedLLM) -> ScriptedLLM:
        """Return the scripted LLM behind the gateway: the kit's `lap_llm` unless overridden."""
        return lap_llm

    # -- helpers ---------------------------------------------------------------------------

    async def _session(self, lap: Lap) -> tuple[Agent, Session]:
        agent = await lap.agents.create(
            f"conf-{_token()}", harness=self.harness, model=self.model, options=self.options
        )
        return agent, await lap.sessions.create(agent.id)

    async def _turn(self, lap: Lap, session_id: str, text: str) -> list[EventRecord]:
        with anyio.fail_after(TURN_TIMEOUT):
            records = [record async for record in lap.sessions.stream(session_id, text)]
        assert records[0].event == UserMessage(text=text)
        assert [record.seq for record in records] == list(range(records[0].seq, records[0].seq + len(records)))
        assert len(_of(records, TurnEnd)) == 1, "a turn ends with exactly one turn_end"
        assert isinstance(records[-1].event, TurnEnd)
        return records

    async def _completed(self, lap: Lap, session_id: str, text: str) -> list[EventRecord]:
        records = await self._turn(lap, session_id, text)
        errors = [f"{error.code}: {error.message}" for error in _of(records, Error)]
        assert records[-1].event == TurnEnd(status="completed"), f"the turn failed: {errors}"
        return records

    async def _workspace_file(self, lap: Lap, session_id: str, name: str) -> str | None:
        session = await lap.sessions.get(session_id)
        assert session.sandbox_name is not None
        client = await lap.backend.connect(session.sandbox_name)
        try:
            result = await client.exec(["cat", name])
        finally:
            await client.aclose()
        return result.stdout if result.exit_code == 0 else None

    async def _until_model_called(self, llm: ScriptedLLM, before: int) -> None:
        """Wait until the model was asked with tools (the harness's main loop) after `before` requests."""
        with anyio.fail_after(TURN_TIMEOUT):
            while not any(request["body"].get("tools") for request in llm.requests()[before:]):  # noqa: ASYNC110 - the fake tells no event
                await anyio.sleep(0.1)

    # -- the suite -------------------------------------------------------------------------

    async def test_a_text_turn_streams_the_reply(self, lap: Lap, scripted_llm: ScriptedLLM) -> None:
        token = _token()
        scripted_llm.script(command=None, text=f"Hello from the model, {token}.", chunks=3, fail_status=None)
        _, session = await self._session(lap)
        records = await self._completed(lap, session.id, f"say hello {token}")
        assert _text(records) == f"Hello from the model, {token}."
        sessions = _of(records, HarnessSession)
        assert len(sessions) == 1, "the harness reports its own session id once, on the first turn"
        assert (await lap.sessions.get(session.id)).native_session_id == sessions[0].native_session_id
        assert _of(records, Usage), "the harness reports token usage"
        assert not _of(records, ToolCall)
        assert any(token in json.dumps(request["body"]) for request in scripted_llm.requests())

    async def test_a_tool_call_runs_in_the_workspace_and_its_result_follows(
        self, lap: Lap, scripted_llm: ScriptedLLM
    ) -> None:
        token = _token()
        command = f"echo tool-ran-{token} | tee proof-{token}.txt"
        scripted_llm.script(command=command, text=f"done {token}", fail_status=None)
        _, session = await self._session(lap)
        records = await self._completed(lap, session.id, "run the tool")
        calls, results = _of(records, ToolCall), _of(records, ToolResult)
        assert len(calls) == 1
        assert f"proof-{token}.txt" in json.dumps(calls[0].input), "the call's input holds the command"
        assert [result.call_id for result in results] == [calls[0].call_id]
        assert f"tool-ran-{token}" in results[0].output
        assert not results[0].is_error
        order = [type(record.event) for record in records if isinstance(record.event, ToolCall | ToolResult)]
        assert order == [ToolCall, ToolResult]
        assert _text(records).endswith(f"done {token}")
        assert await self._workspace_file(lap, session.id, f"proof-{token}.txt") == f"tool-ran-{token}\n"

    async def test_the_next_turn_has_the_conversation_so_far(self, lap: Lap, scripted_llm: ScriptedLLM) -> None:
        question, answer, follow_up = f"question-{_token()}", f"answer-{_token()}", f"follow-up-{_token()}"
        scripted_llm.script(command=None, text=answer, fail_status=None)
        _, session = await self._session(lap)
        await self._completed(lap, session.id, question)
        native = (await lap.sessions.get(session.id)).native_session_id
        scripted_llm.script(text="second answer")
        second = await self._completed(lap, session.id, follow_up)
        assert not _of(second, HarnessSession) or _of(second, HarnessSession)[0].native_session_id == native
        assert (await lap.sessions.get(session.id)).native_session_id == native
        last = [request for request in scripted_llm.requests() if request["body"].get("tools")][-1]
        history = json.dumps(last["body"])
        assert question in history, "the model saw the first message again"
        assert answer in history, "the model saw its first answer again"
        assert follow_up in history

    async def test_an_abort_mid_turn_stops_the_work(self, lap: Lap, scripted_llm: ScriptedLLM) -> None:
        token = _token()
        scripted_llm.script(command=f"sleep 4 && echo late > late-{token}.txt", text="too late", fail_status=None)
        _, session = await self._session(lap)
        before = len(scripted_llm.requests())
        turn = await lap.sessions.send(session.id, "start something long")
        await self._until_model_called(scripted_llm, before)
        await anyio.sleep(1.5)  # the command is running now
        assert await lap.sessions.abort(session.id)
        with anyio.fail_after(30):
            records = [r async for r in lap.sessions.follow(session.id, after=turn.user_seq - 1, until_turn=turn.id)]
        assert records[-1].event.status == "aborted"  # type: ignore[union-attr]
        await anyio.sleep(5)
        assert await self._workspace_file(lap, session.id, f"late-{token}.txt") is None, "the command was stopped"
        scripted_llm.script(command=None, text=f"after-abort-{token}")
        again = await self._completed(lap, session.id, "and now?")
        assert _text(again) == f"after-abort-{token}"

    async def test_a_gateway_error_fails_the_turn_and_the_session_goes_on(
        self, lap: Lap, scripted_llm: ScriptedLLM
    ) -> None:
        _, session = await self._session(lap)
        scripted_llm.script(command=None, fail_status=400)
        failed = await self._turn(lap, session.id, "hello")
        assert failed[-1].event.status == "failed"  # type: ignore[union-attr]
        errors = _of(failed, Error)
        assert errors, "the failure is reported as an error event"
        assert all(error.message for error in errors)
        token = _token()
        scripted_llm.script(fail_status=None, text=f"back-{token}")
        again = await self._completed(lap, session.id, "hello again")
        assert _text(again) == f"back-{token}"

    async def test_a_lost_sandbox_keeps_the_conversation(self, lap: Lap, scripted_llm: ScriptedLLM) -> None:
        question, answer = f"question-{_token()}", f"answer-{_token()}"
        scripted_llm.script(command=f"echo kept > kept-{answer}.txt", text=answer, fail_status=None)
        _, session = await self._session(lap)
        await self._completed(lap, session.id, question)
        lost = (await lap.sessions.get(session.id)).sandbox_name
        assert lost is not None
        await lap.backend.delete(lost)
        scripted_llm.script(command=None, text="still here")
        records = await self._completed(lap, session.id, "are you still there?")
        assert "sandbox_creating" in [status.phase for status in _of(records, Status)]
        assert await self._workspace_file(lap, session.id, f"kept-{answer}.txt") == "kept\n"
        history = json.dumps([r for r in scripted_llm.requests() if r["body"].get("tools")][-1]["body"])
        assert question in history, "the harness resumed its own session from the kept harness home"
        assert answer in history

    async def test_a_sandbox_lost_mid_turn_starts_the_turn_over(self, lap: Lap, scripted_llm: ScriptedLLM) -> None:
        token = _token()
        scripted_llm.script(command=f"sleep 2 && echo ran-{token}", text=f"finished-{token}", fail_status=None)
        _, session = await self._session(lap)
        await self._completed(lap, session.id, "warm up")
        before = len(scripted_llm.requests())
        turn = await lap.sessions.send(session.id, "do the long thing")
        await self._until_model_called(scripted_llm, before)
        sandbox = (await lap.sessions.get(session.id)).sandbox_name
        assert sandbox is not None
        await lap.backend.delete(sandbox)
        with anyio.fail_after(TURN_TIMEOUT):
            records = [r async for r in lap.sessions.follow(session.id, after=turn.user_seq - 1, until_turn=turn.id)]
        seen = [_describe(record.event) for record in records]
        assert "turn_restarted" in [status.phase for status in _of(records, Status)], seen
        assert records[-1].event == TurnEnd(status="completed"), seen
        assert len(_of(records, TurnEnd)) == 1
        assert _text(records).endswith(f"finished-{token}")

    async def test_a_turn_started_over_adds_its_message_to_the_conversation_once(
        self, lap: Lap, scripted_llm: ScriptedLLM
    ) -> None:
        """A start-over continues the harness's session as it was before the turn (issue 12)."""
        first, answer, second, third = (f"{word}-{_token()}" for word in ("first", "answer", "second", "third"))
        scripted_llm.script(command=None, text=answer, fail_status=None)
        _, session = await self._session(lap)
        await self._completed(lap, session.id, first)
        native = (await lap.sessions.get(session.id)).native_session_id
        # The model calls a tool, so the lost attempt has stored the message and a tool call.
        scripted_llm.script(command="sleep 3 && echo slept", text="second answer")
        before = len(scripted_llm.requests())
        turn = await lap.sessions.send(session.id, second)
        await self._until_model_called(scripted_llm, before)
        await anyio.sleep(1)  # the tool call is stored and running
        sandbox = (await lap.sessions.get(session.id)).sandbox_name
        assert sandbox is not None
        await lap.backend.delete(sandbox)
        with anyio.fail_after(TURN_TIMEOUT):
            records = [r async for r in lap.sessions.follow(session.id, after=turn.user_seq - 1, until_turn=turn.id)]
        seen = [_describe(record.event) for record in records]
        assert "turn_restarted" in [status.phase for status in _of(records, Status)], seen
        assert records[-1].event == TurnEnd(status="completed"), seen
        if lap.harnesses[self.harness].native_state is not None:
            # Its copy from before the turn was put back: the same session goes on (not a replay to a new one).
            assert (await lap.sessions.get(session.id)).native_session_id == native
        scripted_llm.script(command=None, text="third answer")
        before = len(scripted_llm.requests())
        await self._completed(lap, session.id, third)
        last = [request for request in scripted_llm.requests()[before:] if request["body"].get("tools")][-1]
        history = json.dumps(last["body"])
        counts = {message: history.count(message) for message in (first, second, third)}
        assert counts == {first: 1, second: 1, third: 1}, f"the model sees each user message once: {counts}"
        assert answer in history, "the model saw its first answer again"

    async def test_replaying_a_turn_maps_the_same_events(self, lap: Lap, scripted_llm: ScriptedLLM) -> None:
        """What a worker taking a turn over relies on: `run_turn` re-attaches and maps the same way."""
        token = _token()
        scripted_llm.script(command=f"echo replay-{token}", text=f"replayed-{token}", chunks=4, fail_status=None)
        agent, session = await self._session(lap)
        records = await self._completed(lap, session.id, f"go {token}")
        turn_id = next(record.turn_id for record in records if record.turn_id is not None)
        # The turn's own events: the platform's notes (egress_denied, say) belong to no turn.
        logged = [record.event for record in records if record.turn_id == turn_id and from_harness(record.event)]
        assert turn_id is not None
        sandbox_name = (await lap.sessions.get(session.id)).sandbox_name
        assert sandbox_name is not None
        turn = Turn(id=turn_id, session_id=session.id, text=f"go {token}", agent=agent)
        client = await lap.backend.connect(sandbox_name)
        try:
            with anyio.fail_after(60):
                replayed = [event async for event in lap.harnesses[self.harness].run_turn(client, turn)]
        finally:
            await client.aclose()
        assert replayed[-1] == TurnEnd(status="completed")
        assert [event for event in replayed if from_harness(event)] == logged

    async def test_options_are_validated_by_the_harness(self, lap: Lap) -> None:
        with pytest.raises(InvalidInput) as raised:
            await lap.agents.create(
                f"bad-{_token()}", harness=self.harness, model=self.model, options={"no_such_option_": 1}
            )
        assert "options.no_such_option_" in str(raised.value.details)
