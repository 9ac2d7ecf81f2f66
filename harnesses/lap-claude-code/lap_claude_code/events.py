"""Mapping `claude -p --output-format stream-json --include-partial-messages` lines to LAP events.

Each stdout line is one JSON object with a `type`:

| Claude Code line                                        | LAP event(s)                                |
|---------------------------------------------------------|---------------------------------------------|
| `system` (`init`) with a new `session_id`               | `harness_session` (resume id for next turn) |
| `stream_event` `content_block_delta` / `text_delta`     | `text_delta` (token by token)               |
| `stream_event` `content_block_delta` / `thinking_delta` | `reasoning_delta`                           |
| `stream_event` `message_delta` (end of a model step)    | `usage` (input incl. cache, output tokens)  |
| `assistant` message, each `tool_use` block              | `tool_call`                                 |
| `user` message, each `tool_result` block                | `tool_result`                               |
| `result` with `is_error`                                | `error` (code `harness_error`)              |
| lines of subagents (`parent_tool_use_id` set), others   | nothing                                     |

Text arrives only as deltas: the `assistant` message repeats it whole, so its text is not mapped
again (an API error's synthetic message is reported by the `result` line instead).
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


class ClaudeEventMapper:
    """Turns Claude Code's stream-json lines into events; keeps the session id and a step's input tokens."""

    def __init__(self, known_session_id: str | None = None) -> None:
        self.session_id = known_session_id
        self._input_tokens = 0

    def map_line(self, line: str) -> list[SessionEvent]:
        """Return the events of one stdout line (none for blank or non-JSON lines)."""
        data = json_object(line)
        if data is None or data.get("parent_tool_use_id"):
            return []
        events: list[SessionEvent] = []
        session_id = data.get("session_id")
        if data.get("type") == "system" and isinstance(session_id, str) and session_id != self.session_id:
            self.session_id = session_id
            events.append(HarnessSession(native_session_id=session_id))
        kind = data.get("type")
        if kind == "stream_event":
            events += self._stream_event(data.get("event") or {})
        elif kind == "assistant":
            for block in _content(data):
                if block.get("type") == "tool_use":
                    events.append(
                        ToolCall(call_id=str(block.get("id")), name=str(block.get("name")), input=block.get("input"))
                    )
        elif kind == "user":
            for block in _content(data):
                if block.get("type") == "tool_result":
                    events.append(
                        ToolResult(
                            call_id=str(block.get("tool_use_id")),
                            output=_text_of(block.get("content")),
                            is_error=bool(block.get("is_error")),
                        )
                    )
        elif kind == "result" and data.get("is_error"):
            message = data.get("result") or ", ".join(data.get("errors") or []) or str(data.get("subtype"))
            events.append(Error(code="harness_error", message=str(message)))
        return events

    def _stream_event(self, event: dict[str, Any]) -> list[SessionEvent]:
        kind = event.get("type")
        if kind == "message_start":
            usage = (event.get("message") or {}).get("usage") or {}
            self._input_tokens = sum(
                int(usage.get(key) or 0)
                for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
            )
        elif kind == "message_delta":
            output = int((event.get("usage") or {}).get("output_tokens") or 0)
            return [Usage(input_tokens=self._input_tokens, output_tokens=output)]
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                return [TextDelta(text=delta["text"])]
            if delta.get("type") == "thinking_delta" and delta.get("thinking"):
                return [ReasoningDelta(text=delta["thinking"])]
        return []


def _content(data: dict[str, Any]) -> list[dict[str, Any]]:
    content = (data.get("message") or {}).get("content")
    return [block for block in content if isinstance(block, dict)] if isinstance(content, list) else []


def _text_of(content: Any) -> str:
    """A tool result's content: a string, or blocks of which the text ones count."""
    if isinstance(content, list):
        return "\n".join(str(block.get("text", "")) for block in content if isinstance(block, dict))
    return "" if content is None else str(content)
