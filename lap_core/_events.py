"""The session event log's contract: typed events, tagged on `type`.

A harness yields `SessionEvent`s; the engine appends each to the session's append-only log,
where it becomes an `EventRecord` with the next per-session `seq` (1, 2, 3, ... with no gaps).
Every turn's events end with exactly one `TurnEnd`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from lap_core._models import utcnow


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    pass


class UserMessage(_Event, frozen=True, tag="user_message"):
    """The user's message that starts a turn."""

    text: str


class TextDelta(_Event, frozen=True, tag="text_delta"):
    """A piece of the assistant's reply text; concatenate the deltas of a turn in order."""

    text: str


class ReasoningDelta(_Event, frozen=True, tag="reasoning_delta"):
    """A piece of the model's visible reasoning."""

    text: str


class ToolCall(_Event, frozen=True, tag="tool_call"):
    """The agent called a tool (`input` is the tool's own argument object)."""

    call_id: str
    name: str
    input: Any = None


class ToolResult(_Event, frozen=True, tag="tool_result"):
    """The result of the tool call with the same `call_id`."""

    call_id: str
    output: str = ""
    is_error: bool = False


class Usage(_Event, frozen=True, tag="usage"):
    """Tokens used by one model step of the turn."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None


class Status(_Event, frozen=True, tag="status"):
    """A progress note: sandbox bring-up phases, harness start, recovery."""

    phase: str
    detail: str = ""


class Error(_Event, frozen=True, tag="error"):
    """Something went wrong; `code` is stable (e.g. `gateway_error`, `sandbox_error`)."""

    code: str
    message: str


class HarnessSession(_Event, frozen=True, tag="harness_session"):
    """The harness's own id for this conversation, used to resume it on the next turn."""

    native_session_id: str


class EgressDenied(_Event, frozen=True, tag="egress_denied"):
    """The sandbox tried to reach a host its egress policy does not allow (logged by the gateway, outside any turn)."""

    host: str
    port: int
    reason: str


class TurnEnd(_Event, frozen=True, tag="turn_end"):
    """The last event of every turn."""

    status: Literal["completed", "failed", "aborted"] = "completed"
    reason: str = ""


SessionEvent = (
    UserMessage
    | TextDelta
    | ReasoningDelta
    | ToolCall
    | ToolResult
    | Usage
    | Status
    | Error
    | HarnessSession
    | EgressDenied
    | TurnEnd
)
"""Any event of a session's log (a tagged union on `type`)."""


class EventRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An event as stored: its place in the session's log and the turn it belongs to."""

    session_id: str
    seq: int
    event: SessionEvent
    turn_id: str | None = None
    at: datetime = msgspec.field(default_factory=utcnow)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SessionEvent)


def encode_event(event: SessionEvent) -> bytes:
    """Encode an event as JSON (with its `type` tag)."""
    return _encoder.encode(event)


def decode_event(data: bytes | str) -> SessionEvent:
    """Decode an event encoded by `encode_event`."""
    event: SessionEvent = _decoder.decode(data)
    return event
