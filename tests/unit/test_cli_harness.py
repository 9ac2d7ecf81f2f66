"""CliHarness: one process per turn, its lines mapped; odd lines skipped, a cut stream re-attached."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from lap_core import Agent, CliHarness, Error, OutputRecord, SandboxdError, TextDelta, Turn, TurnEnd

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from lap_core import SessionEvent

pytestmark = pytest.mark.anyio


class _Mapper:
    def map_line(self, line: str) -> list[SessionEvent]:
        return [TextDelta(text=json.loads(line)["text"])]  # a line without "text" raises


class _Harness(CliHarness):
    cli_name = "toy"

    def argv(self, turn: Turn) -> list[str]:
        return ["toy"]

    def mapper(self, turn: Turn) -> _Mapper:
        return _Mapper()


class _Sandbox:
    def __init__(self, records: list[tuple[str, str]]) -> None:
        self.records = [OutputRecord(seq=i + 1, stream=s, data=d, ts=0.0) for i, (s, d) in enumerate(records)]  # type: ignore[arg-type]
        self.started: list[Any] = []

    async def start_process(self, process: Any) -> None:
        self.started.append(process)

    async def output(self, process_id: str) -> AsyncIterator[OutputRecord]:
        for record in self.records:
            yield record


TURN = Turn(
    id="turn_1", session_id="s", text="hi", agent=Agent(id="a", team_id="t", name="n", harness="toy", model="m")
)


async def _run(sandbox: _Sandbox) -> list[SessionEvent]:
    return [event async for event in _Harness().run_turn(sandbox, TURN)]  # type: ignore[arg-type]


async def test_lines_the_mapper_cannot_read_are_skipped() -> None:
    sandbox = _Sandbox(
        [("stdout", '{"text": "a"}'), ("stdout", '{"other": 1}'), ("stdout", '{"text": "b"}'), ("exit", "0")]
    )
    assert await _run(sandbox) == [TextDelta(text="a"), TextDelta(text="b"), TurnEnd()]
    assert (sandbox.started[0].id, sandbox.started[0].stdin) == ("turn_1", "hi")


async def test_a_failed_exit_quotes_stderr() -> None:
    events = await _run(_Sandbox([("stderr", "boom"), ("exit", "3")]))
    assert events == [
        Error(code="harness_error", message="toy exited with code 3: boom"),
        TurnEnd(status="failed", reason="toy reported an error"),
    ]


async def test_output_that_ends_before_the_exit_is_a_sandbox_error() -> None:
    with pytest.raises(SandboxdError):
        await _run(_Sandbox([("stdout", '{"text": "a"}')]))
