"""opencode's JSON lines (as 1.18.33 prints them) mapped to LAP events."""

from __future__ import annotations

import json

from lap_core import Error, HarnessSession, ReasoningDelta, TextDelta, ToolCall, ToolResult, Usage
from lap_opencode.events import OpencodeEventMapper

SID = "ses_df9e25729ffe6E9gGV25NP423j"


def line(kind: str, part: dict[str, object] | None = None, **extra: object) -> str:
    return json.dumps({"type": kind, "timestamp": 1, "sessionID": SID, "part": part or {}, **extra})


def test_a_turn_with_a_tool_call() -> None:
    mapper = OpencodeEventMapper()
    tool = {
        "type": "tool",
        "tool": "bash",
        "callID": "call_1",
        "state": {"status": "completed", "input": {"command": "ls"}, "output": "a.txt\n"},
    }
    finish = {
        "type": "step-finish",
        "reason": "stop",
        "cost": 0.01,
        "tokens": {"input": 12, "output": 7, "reasoning": 3, "cache": {"read": 0, "write": 0}},
    }
    events = [
        e
        for text in (
            line("step_start"),
            line("tool_use", tool),
            line("text", {"text": "done"}),
            line("reasoning", {"text": "hmm"}),
            line("step_finish", finish),
        )
        for e in mapper.map_line(text)
    ]
    assert events == [
        HarnessSession(native_session_id=SID),
        ToolCall(call_id="call_1", name="bash", input={"command": "ls"}),
        ToolResult(call_id="call_1", output="a.txt\n"),
        TextDelta(text="done"),
        ReasoningDelta(text="hmm"),
        Usage(input_tokens=12, output_tokens=10, cost=0.01),
    ]


def test_a_resumed_session_is_not_reported_again() -> None:
    assert OpencodeEventMapper(SID).map_line(line("text", {"text": "hi"})) == [TextDelta(text="hi")]


def test_failed_tools_and_errors() -> None:
    mapper = OpencodeEventMapper(SID)
    tool = {"tool": "bash", "callID": "c", "state": {"status": "error", "input": {}, "error": "exit 1"}}
    assert mapper.map_line(line("tool_use", tool))[1] == ToolResult(call_id="c", output="exit 1", is_error=True)
    error = {"name": "APIError", "data": {"message": "LLM gateway unreachable"}}
    assert mapper.map_line(json.dumps({"type": "error", "sessionID": SID, "error": error})) == [
        Error(code="harness_error", message="LLM gateway unreachable")
    ]


def test_noise_is_ignored() -> None:
    mapper = OpencodeEventMapper(SID)
    assert mapper.map_line("") == []
    assert mapper.map_line("not json") == []
    assert mapper.map_line("[1, 2]") == []
    assert mapper.map_line(line("text", {"text": ""})) == []
