"""Codex's `exec --json` lines (as 0.169.0 prints them, recorded in `data/`) mapped to LAP events."""

from __future__ import annotations

import json
from pathlib import Path

from lap_codex.events import CodexEventMapper
from lap_core import Error, HarnessSession, ReasoningDelta, SessionEvent, Status, TextDelta, ToolCall, ToolResult, Usage

DATA = Path(__file__).parent / "data"
THREAD = "01a24566-0768-73c2-98cd-5f68274554f9"
WARNING = (
    "Model metadata for `fake-model` not found. Defaulting to fallback metadata; this can degrade performance and "
    "cause issues."
)


def mapped(name: str, mapper: CodexEventMapper | None = None) -> list[SessionEvent]:
    mapper = mapper or CodexEventMapper(call_prefix="turn_1.")
    return [event for line in (DATA / name).read_text().splitlines() for event in mapper.map_line(line)]


def test_a_turn_with_a_tool_call() -> None:
    command = "/bin/bash -lc 'echo fake-tool-ran > fake_tool_ran.txt'"
    assert mapped("tool_turn.jsonl") == [
        HarnessSession(native_session_id=THREAD),
        Status(phase="harness_warning", detail=WARNING),
        ToolCall(call_id="turn_1.item_1", name="shell", input={"command": command}),
        ToolResult(call_id="turn_1.item_1", output=""),
        TextDelta(text="FAKE-ANSWER"),
        Usage(input_tokens=24, output_tokens=14),
    ]


def test_a_resumed_thread_is_not_reported_again() -> None:
    events = mapped("tool_turn.jsonl", CodexEventMapper(THREAD))
    assert not [e for e in events if isinstance(e, HarnessSession)]


def test_a_gateway_error_fails_the_turn() -> None:
    events = mapped("gateway_error.jsonl")
    message = '{"error": {"type": "scripted_failure", "message": "scripted failure"}}'
    assert events[-2:] == [
        Status(phase="harness_warning", detail=message),
        Error(code="harness_error", message=message),
    ]


def item(kind: str, done: bool = True, **fields: object) -> str:
    return json.dumps(
        {"type": "item.completed" if done else "item.started", "item": {"id": "item_3", "type": kind, **fields}}
    )


def test_other_items() -> None:
    mapper = CodexEventMapper(THREAD)
    lines = [
        item("reasoning", text="thinking it over"),
        item("command_execution", command="false", aggregated_output="", exit_code=1, status="failed"),
        item("file_change", changes=[{"path": "a.py", "kind": "add"}], status="completed"),
        item("mcp_tool_call", False, server="gh", tool="search", arguments={"q": "x"}, status="in_progress"),
        item("mcp_tool_call", server="gh", tool="search", arguments={"q": "x"}, result={"n": 1}, status="completed"),
        item("todo_list", items=[]),
        json.dumps(
            {"type": "turn.completed", "usage": {"input_tokens": 5, "output_tokens": 2, "reasoning_output_tokens": 3}}
        ),
    ]
    events = [e for line in lines for e in mapper.map_line(line)]
    assert events[0] == ReasoningDelta(text="thinking it over")
    assert events[1:3] == [
        ToolCall(call_id="item_3", name="shell", input={"command": "false"}),
        ToolResult(call_id="item_3", output="", is_error=True),
    ]
    # item ids repeat across runs (each mapper call here reuses item_3): each call is reported once
    assert events[3:] == [
        ToolResult(call_id="item_3", output="add a.py"),
        ToolResult(call_id="item_3", output='{"n": 1}'),
        Usage(input_tokens=5, output_tokens=2),
    ]
