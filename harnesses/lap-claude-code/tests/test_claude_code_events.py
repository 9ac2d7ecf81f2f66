"""Claude Code's stream-json lines (as 2.1.197 prints them, recorded in `data/`) mapped to LAP events."""

from __future__ import annotations

import json
from pathlib import Path

from lap_claude_code.events import ClaudeEventMapper
from lap_core import Error, HarnessSession, ReasoningDelta, SessionEvent, TextDelta, ToolCall, ToolResult, Usage

DATA = Path(__file__).parent / "data"
SID = "c1cdaafe-3ba0-4d3a-ae0c-e7048e5cf786"


def mapped(name: str, mapper: ClaudeEventMapper | None = None) -> list[SessionEvent]:
    mapper = mapper or ClaudeEventMapper()
    return [event for line in (DATA / name).read_text().splitlines() for event in mapper.map_line(line)]


def test_a_turn_with_a_tool_call() -> None:
    assert mapped("tool_turn.jsonl") == [
        HarnessSession(native_session_id=SID),
        ToolCall(call_id="toolu_fake_1", name="Bash", input={"command": "echo fake-tool-ran > fake_tool_ran.txt"}),
        Usage(input_tokens=12, output_tokens=7),
        ToolResult(call_id="toolu_fake_1", output="(Bash completed with no output)"),
        TextDelta(text="FAKE"),
        TextDelta(text="-ANS"),
        TextDelta(text="WER"),
        Usage(input_tokens=12, output_tokens=7),
    ]


def test_a_resumed_session_is_not_reported_again() -> None:
    assert not [e for e in mapped("tool_turn.jsonl", ClaudeEventMapper(SID)) if isinstance(e, HarnessSession)]


def test_a_gateway_error_is_an_error_and_its_synthetic_message_is_not_text() -> None:
    events = mapped("gateway_error.jsonl")
    assert [type(e) for e in events] == [HarnessSession, Error]
    assert events[1] == Error(code="harness_error", message="API Error: 400 scripted failure")


def stream_event(event: dict[str, object], parent: str | None = None) -> str:
    return json.dumps({"type": "stream_event", "event": event, "session_id": SID, "parent_tool_use_id": parent})


def test_thinking_cache_tokens_and_subagents() -> None:
    mapper = ClaudeEventMapper(SID)
    start = {
        "message": {"usage": {"input_tokens": 3, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}}
    }
    lines = [
        stream_event({"type": "message_start", **start}),
        stream_event({"type": "content_block_delta", "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
        # a subagent's own stream (Task tool) is not the session's reply
        stream_event({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "inner"}}, "toolu_9"),
        stream_event({"type": "message_delta", "usage": {"output_tokens": 9}}),
        json.dumps(
            {
                "type": "user",
                "message": {
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                            "is_error": True,
                        }
                    ]
                },
            }
        ),
        json.dumps({"type": "result", "subtype": "error_max_turns", "is_error": True}),
        "not json",
        "[]",
    ]
    assert [e for line in lines for e in mapper.map_line(line)] == [
        ReasoningDelta(text="hmm"),
        Usage(input_tokens=108, output_tokens=9),
        ToolResult(call_id="t1", output="a\nb", is_error=True),
        Error(code="harness_error", message="error_max_turns"),
    ]
