"""Mapping `codex exec --json` lines to LAP events.

Each stdout line is one JSON object with a `type`; items carry their own `type`:

| Codex line                                         | LAP event(s)                                     |
|----------------------------------------------------|--------------------------------------------------|
| `thread.started` with a new `thread_id`            | `harness_session` (resume id for next turn)      |
| `item.completed` `agent_message`                   | `text_delta` (the whole message)                 |
| `item.completed` `reasoning`                       | `reasoning_delta`                                |
| `item.started` `command_execution`                 | `tool_call` `shell` (`{"command"}`)              |
| `item.completed` `command_execution`               | `tool_result` (output; `is_error` if exit ≠ 0)   |
| `item.completed` `file_change`                     | `tool_call` `apply_patch` then `tool_result`     |
| `item.started` / `completed` `mcp_tool_call`       | `tool_call` `<server>.<tool>`, `tool_result`     |
| `item.completed` `web_search`                      | `tool_call` `web_search` then `tool_result`      |
| `turn.completed`                                   | `usage` (input, output tokens incl. reasoning)   |
| `turn.failed`                                      | `error` (code `harness_error`)                   |
| `error`, `item.completed` `error` (not fatal)      | `status` `harness_warning`                       |
| `turn.started`, `item.updated`, `todo_list`        | nothing                                          |

A tool call whose `item.started` was not seen is reported when it completes. Codex numbers its
items per run (`item_1` ...), so a call's id is the item id prefixed with the turn's process id.
"""

from __future__ import annotations

import json
from typing import Any

from lap_core import (
    Error,
    HarnessSession,
    ReasoningDelta,
    SessionEvent,
    Status,
    TextDelta,
    ToolCall,
    ToolResult,
    Usage,
    json_object,
)

TOOL_ITEMS = ("command_execution", "file_change", "mcp_tool_call", "web_search")


class CodexEventMapper:
    """Turns Codex's JSON lines into events; keeps the thread id and which tool calls were reported."""

    def __init__(self, known_thread_id: str | None = None, call_prefix: str = "") -> None:
        self.thread_id = known_thread_id
        self._call_prefix = call_prefix
        self._called: set[str] = set()

    def map_line(self, line: str) -> list[SessionEvent]:
        """Return the events of one stdout line (none for blank or non-JSON lines)."""
        data = json_object(line)
        if data is None:
            return []
        kind = data.get("type")
        if kind == "thread.started":
            thread_id = data.get("thread_id")
            if isinstance(thread_id, str) and thread_id != self.thread_id:
                self.thread_id = thread_id
                return [HarnessSession(native_session_id=thread_id)]
        elif kind in ("item.started", "item.completed"):
            item = data.get("item")
            if isinstance(item, dict):
                return self._item(item, done=kind == "item.completed")
        elif kind == "turn.completed":
            usage = data.get("usage") or {}
            # output_tokens includes the reasoning tokens (reasoning_output_tokens is a part of it)
            return [
                Usage(
                    input_tokens=int(usage.get("input_tokens") or 0), output_tokens=int(usage.get("output_tokens") or 0)
                )
            ]
        elif kind == "turn.failed":
            return [Error(code="harness_error", message=_message(data.get("error")))]
        elif kind == "error":
            return [Status(phase="harness_warning", detail=_message(data))]
        return []

    def _item(self, item: dict[str, Any], *, done: bool) -> list[SessionEvent]:
        kind = item.get("type")
        if kind in TOOL_ITEMS:
            call_id = f"{self._call_prefix}{item.get('id')}"
            events: list[SessionEvent] = []
            if call_id not in self._called:
                self._called.add(call_id)
                events.append(_tool_call(call_id, item))
            if done:
                events.append(_tool_result(call_id, item))
            return events
        if not done:
            return []
        if kind == "agent_message" and item.get("text"):
            return [TextDelta(text=str(item["text"]))]
        if kind == "reasoning" and item.get("text"):
            return [ReasoningDelta(text=str(item["text"]))]
        if kind == "error":
            return [Status(phase="harness_warning", detail=_message(item))]
        return []


def _tool_call(call_id: str, item: dict[str, Any]) -> ToolCall:
    kind = item.get("type")
    if kind == "command_execution":
        return ToolCall(call_id=call_id, name="shell", input={"command": item.get("command")})
    if kind == "file_change":
        return ToolCall(call_id=call_id, name="apply_patch", input={"changes": item.get("changes") or []})
    if kind == "mcp_tool_call":
        name = f"{item.get('server')}.{item.get('tool')}"
        return ToolCall(call_id=call_id, name=name, input=item.get("arguments"))
    return ToolCall(call_id=call_id, name="web_search", input={"query": item.get("query")})


def _tool_result(call_id: str, item: dict[str, Any]) -> ToolResult:
    kind = item.get("type")
    failed = item.get("status") in ("failed", "declined")
    if kind == "command_execution":
        code = item.get("exit_code")
        return ToolResult(
            call_id=call_id, output=str(item.get("aggregated_output") or ""), is_error=failed or code not in (0, None)
        )
    if kind == "file_change":
        changes = item.get("changes") or []
        summary = "\n".join(
            f"{change.get('kind')} {change.get('path')}" for change in changes if isinstance(change, dict)
        )
        return ToolResult(call_id=call_id, output=summary, is_error=failed)
    if kind == "mcp_tool_call":
        error = item.get("error")
        output = _message(error) if error else json.dumps(item.get("result"))
        return ToolResult(call_id=call_id, output=output, is_error=failed or bool(error))
    return ToolResult(call_id=call_id, output="", is_error=failed)


def _message(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("message") or value)
    return str(value)
