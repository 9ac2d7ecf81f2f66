"""Mapping `opencode run --format json` output lines to LAP's session events.

Each stdout line is one JSON object `{"type", "timestamp", "sessionID", "part" | "error"}`:

| opencode line                         | LAP event(s)                                  |
|---------------------------------------|-----------------------------------------------|
| any line's `sessionID` (first seen)   | `harness_session` (resume id for next turn)   |
| `text`                                | `text_delta` (one per finished text part)     |
| `reasoning`                           | `reasoning_delta`                             |
| `tool_use` (state completed / error)  | `tool_call`, then `tool_result`               |
| `step_finish`                         | `usage` (tokens, cost)                        |
| `error`                               | `error` (code `harness_error`)                |
| `step_start`, others                  | nothing                                       |
"""

from __future__ import annotations

from typing import Any

from lap_core import (
    Error,
    HarnessSession,
    ReasoningDelta,
    SessionEvent,
    TextDelta,
    ToolCall,
    ToolResult,
    Usage,
    json_object,
)


class OpencodeEventMapper:
    """Turns opencode's JSON lines into events; keeps what it must across lines (the session id)."""

    def __init__(self, known_session_id: str | None = None) -> None:
        self.session_id = known_session_id

    def map_line(self, line: str) -> list[SessionEvent]:
        """Return the events of one stdout line (none for blank or non-JSON lines)."""
        data = json_object(line)
        if data is None:
            return []
        events: list[SessionEvent] = []
        session_id = data.get("sessionID")
        if isinstance(session_id, str) and session_id != self.session_id:
            self.session_id = session_id
            events.append(HarnessSession(native_session_id=session_id))
        part: dict[str, Any] = data.get("part") or {}
        kind = data.get("type")
        if kind == "text" and part.get("text"):
            events.append(TextDelta(text=part["text"]))
        elif kind == "reasoning" and part.get("text"):
            events.append(ReasoningDelta(text=part["text"]))
        elif kind == "tool_use":
            events += _tool_events(part)
        elif kind == "step_finish":
            tokens = part.get("tokens") or {}
            events.append(
                Usage(
                    input_tokens=int(tokens.get("input") or 0),
                    output_tokens=int(tokens.get("output") or 0) + int(tokens.get("reasoning") or 0),
                    cost=part.get("cost"),
                )
            )
        elif kind == "error":
            events.append(Error(code="harness_error", message=_error_message(data.get("error"))))
        return events


def _tool_events(part: dict[str, Any]) -> list[SessionEvent]:
    state = part.get("state") or {}
    call_id = str(part.get("callID") or part.get("id") or "")
    call = ToolCall(call_id=call_id, name=str(part.get("tool") or "?"), input=state.get("input"))
    if state.get("status") == "error":
        return [call, ToolResult(call_id=call_id, output=str(state.get("error") or ""), is_error=True)]
    return [call, ToolResult(call_id=call_id, output=str(state.get("output") or ""))]


def _error_message(error: Any) -> str:
    if isinstance(error, dict):
        data = error.get("data") or {}
        message = data.get("message") if isinstance(data, dict) else None
        return str(message or error.get("message") or error.get("name") or error)
    return str(error)
