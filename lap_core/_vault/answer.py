"""Reading a model answer's usage as its bytes pass through the LLM proxy.

`AnswerReader.feed` takes the answer's bytes as they arrive and returns those that may go on to
the harness now; `usage` is set by the call whose returned bytes carry the usage (the caller
records the call before sending them). Where the usage is, by API:

- chat completions, streamed: the chunk with a `usage` object (the last one; the gateway sends
  it only when the request set `stream_options.include_usage`); unstreamed: the body's `usage`;
- Responses, streamed: `response.completed` (or `.incomplete`, `.failed`) and its `response.usage`;
  unstreamed: the body's `usage`;
- Anthropic Messages, streamed: `message_start` (input and cache tokens) completed by
  `message_delta` (output tokens, and updated input counts: its values win); unstreamed: `usage`.

A streamed answer is passed on one whole server-sent event at a time (an event's bytes are held
until its blank line), unchanged, except the chat chunk carrying usage that LAP asked for on the
harness's behalf (`hide_usage`): the harness never sees it. An unstreamed answer is held whole.
What cannot be read (an event or body larger than `MAX_HELD`, invalid JSON) passes on unchanged
and unmetered. Token counts are normalised: `input` counts every input token (Anthropic's cache
reads and writes included), `cached` those read from the cache.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import msgspec

Api = Literal["chat", "responses", "messages"]
MAX_HELD = 32 * 1024 * 1024
"""Bytes of one event (or one unstreamed body) the reader holds to find usage; beyond, it gives up."""

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
# An event ends at an empty line: two line breaks in a row (CRLF is one break, never CR and LF).
_EVENT_END = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
_USAGE_ENDS = {b"response.completed", b"response.incomplete", b"response.failed"}
_MAX_COUNT = 2**53  # more is no token count (and would overflow the store's integers when summed)


class Tokens(msgspec.Struct, frozen=True):
    """One call's usage: input (all of it), output, cached input, and the cost if the gateway said it."""

    input: int = 0
    output: int = 0
    cached: int = 0
    cost: float | None = None


class _Details(msgspec.Struct):
    cached_tokens: Any = None


class _Counts(msgspec.Struct):
    """A `usage` object of any of the three APIs (each uses some of these fields)."""

    prompt_tokens: Any = None
    completion_tokens: Any = None
    prompt_tokens_details: _Details | None = None
    input_tokens: Any = None
    output_tokens: Any = None
    input_tokens_details: _Details | None = None
    cache_read_input_tokens: Any = None
    cache_creation_input_tokens: Any = None
    cost: Any = None  # LiteLLM adds it to streamed usage


class _Body(msgspec.Struct):
    usage: _Counts | None = None


class _ChatChunk(msgspec.Struct):
    usage: _Counts | None = None


class _ResponsesEvent(msgspec.Struct):
    type: str = ""
    response: _Body | None = None


class _MessagesEvent(msgspec.Struct):
    type: str = ""
    message: _Body | None = None
    usage: _Counts | None = None


def _count(value: Any) -> int:
    return value if type(value) is int and 0 <= value < _MAX_COUNT else 0


def _cost(value: Any) -> float | None:
    if type(value) in (int, float) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def parse_cost(header: str | None) -> float | None:
    """Return the cost in a gateway's `x-litellm-response-cost` header (None if absent or not a cost)."""
    try:
        return _cost(float(header)) if header else None
    except ValueError:
        return None


def tokens_of(api: Api, counts: _Counts) -> Tokens:
    """Return the normalised tokens of one API's `usage` object."""
    if api == "chat":
        cached = counts.prompt_tokens_details.cached_tokens if counts.prompt_tokens_details else None
        output = _count(counts.completion_tokens)
        return Tokens(_count(counts.prompt_tokens), output, _count(cached), _cost(counts.cost))
    if api == "responses":
        cached = counts.input_tokens_details.cached_tokens if counts.input_tokens_details else None
        return Tokens(_count(counts.input_tokens), _count(counts.output_tokens), _count(cached), _cost(counts.cost))
    read = _count(counts.cache_read_input_tokens)
    total_input = _count(counts.input_tokens) + read + _count(counts.cache_creation_input_tokens)
    return Tokens(total_input, _count(counts.output_tokens), read, _cost(counts.cost))


def _merge(start: _Counts | None, delta: _Counts) -> _Counts:
    """Anthropic's final counts: `message_delta`'s values (cumulative), else `message_start`'s."""
    if start is None:
        return delta
    fields = {name: getattr(delta, name) for name in _Counts.__struct_fields__ if getattr(delta, name) is not None}
    # LiteLLM's streamed `cost` covers only the counts of the event it is in: trust it only with the inputs.
    if delta.input_tokens is None:
        fields.pop("cost", None)
    return msgspec.structs.replace(start, **fields)


def _data(event: bytes) -> bytes:
    """Return the data of a server-sent event (its `data:` lines joined)."""
    lines = (line[5:] for line in _LINE_BREAK.split(event) if line.startswith(b"data:"))
    return b"\n".join(line[1:] if line.startswith(b" ") else line for line in lines)


def _is_empty_chunk(chunk: dict[str, Any]) -> bool:
    """Whether a chat chunk says nothing but its usage (no content, no finish reason)."""
    choices = chunk.get("choices") or []
    return all(
        isinstance(choice, dict) and not choice.get("finish_reason") and not any((choice.get("delta") or {}).values())
        for choice in choices
    )


class AnswerReader:
    """Passes one answer on and finds its usage; see the module docstring."""

    def __init__(self, api: Api, *, streamed: bool, hide_usage: bool = False, max_held: int = MAX_HELD) -> None:
        self.api = api
        self.streamed = streamed
        self.hide_usage = hide_usage
        self.usage: Tokens | None = None
        """The call's usage, once the bytes that carry it have been read."""
        self._max_held = max_held
        self._held = bytearray()
        self._searched = 0  # bytes of `_held` known to hold no event end
        self._unreadable = False
        self._start: _Counts | None = None  # Anthropic's `message_start` counts

    def feed(self, data: bytes) -> bytes:
        """Take the answer's next bytes; return those that may go on to the harness now."""
        if self._unreadable:
            return data
        self._held += data
        if not self.streamed:
            return self._give_up() if len(self._held) > self._max_held else b""
        out = bytearray()
        start = 0
        while match := _EVENT_END.search(self._held, max(start, self._searched)):
            event = bytes(self._held[start : match.end()])
            start = match.end()
            out += self._read_event(event)
        del self._held[:start]
        self._searched = max(0, len(self._held) - 3)  # an end may straddle what comes next
        if len(self._held) > self._max_held:
            return bytes(out) + self._give_up()
        return bytes(out)

    def end(self) -> bytes:
        """The answer is complete: return what is still held (an unstreamed body: all of it)."""
        rest, self._held = bytes(self._held), bytearray()
        if not self._unreadable and not self.streamed and self.usage is None:
            try:
                body = msgspec.json.decode(rest, type=_Body)
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                body = _Body()
            if body.usage is not None:
                self.usage = tokens_of(self.api, body.usage)
        return rest

    def _give_up(self) -> bytes:
        self._unreadable = True
        rest, self._held = bytes(self._held), bytearray()
        return rest

    def _read_event(self, event: bytes) -> bytes:
        """Read one whole event; return the bytes to pass on for it (itself, or nothing if hidden)."""
        if self.usage is not None or b'"usage"' not in event:
            return event
        data = _data(event)
        try:
            if self.api == "chat":
                return self._chat_event(event, data)
            if self.api == "responses":
                found = msgspec.json.decode(data, type=_ResponsesEvent)
                if found.type.encode() in _USAGE_ENDS and found.response and found.response.usage:
                    self.usage = tokens_of("responses", found.response.usage)
                return event
            message = msgspec.json.decode(data, type=_MessagesEvent)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            return event  # not an event with usage we can read
        if message.type == "message_start" and message.message is not None:
            self._start = message.message.usage
        elif message.type == "message_delta" and message.usage is not None:
            self.usage = tokens_of("messages", _merge(self._start, message.usage))
        return event

    def _chat_event(self, event: bytes, data: bytes) -> bytes:
        chunk = msgspec.json.decode(data, type=_ChatChunk)
        if chunk.usage is None:
            return event
        self.usage = tokens_of("chat", chunk.usage)
        if not self.hide_usage:
            return event
        whole = msgspec.json.decode(data)
        if not isinstance(whole, dict) or _is_empty_chunk(whole):
            return b""  # the chunk LAP asked for: the harness would not have had it
        whole.pop("usage", None)  # content and usage in one chunk: pass the content on
        return b"data: " + msgspec.json.encode(whole) + b"\n\n"
