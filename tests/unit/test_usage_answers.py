"""Reading a model answer's usage as it streams (lap_core._vault.answer): each API's wire format, cut anywhere."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from lap_core._vault.answer import AnswerReader, Tokens, parse_cost
from tests.fakes import wire

if TYPE_CHECKING:
    from lap_core._vault.answer import Api

USAGE = {"input": 1234, "output": 56, "cached": 200}
APIS: list[Api] = ["chat", "responses", "messages"]


def _stream(api: Api, *, tool: bool = False, usage: dict[str, int] = USAGE) -> bytes:
    reply = wire.Reply(tool="bash", arguments={"command": "ls"}) if tool else wire.Reply(text=["Hel", "lo ", "there"])
    return b"".join(event for event in wire.stream(api, "m", reply, usage) if event is not None)


def _usage_event(api: Api, stream: bytes) -> bytes:
    """The event that completes the usage (the bytes that must not reach the harness before it is recorded)."""
    (event,) = [e + b"\n\n" for e in stream.split(b"\n\n") if wire.carries_usage(api, e)]
    return event


def _feed(reader: AnswerReader, pieces: list[bytes], usage_event: bytes) -> bytes:
    """Feed `pieces`; assert the usage is found by the feed that returns its event, never after it went on."""
    out = b""
    for piece in pieces:
        had_usage = reader.usage is not None
        returned = reader.feed(piece)
        if reader.usage is not None and not had_usage:
            assert usage_event not in out, "the usage went on before it was read"
            assert usage_event in out + returned or reader.hide_usage
        elif reader.usage is None:
            assert usage_event not in out + returned
        out += returned
    return out + reader.end()


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("tool", [False, True], ids=["text", "tool"])
def test_a_stream_cut_at_every_byte_passes_unchanged_and_yields_its_usage(api: Api, tool: bool) -> None:
    stream = _stream(api, tool=tool)
    event = _usage_event(api, stream)
    for cut in range(len(stream) + 1):
        reader = AnswerReader(api, streamed=True)
        assert _feed(reader, [stream[:cut], stream[cut:]], event) == stream, cut
        assert reader.usage == Tokens(input=1234, output=56, cached=200), cut
    reader = AnswerReader(api, streamed=True)
    assert _feed(reader, [bytes([byte]) for byte in stream], event) == stream
    assert reader.usage == Tokens(input=1234, output=56, cached=200)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("line_break", [b"\r\n", b"\r"], ids=["crlf", "cr"])
def test_every_sse_line_break_is_read(api: Api, line_break: bytes) -> None:
    plain = _stream(api)
    stream = plain.replace(b"\n", line_break)
    for cut in range(0, len(stream) + 1, 7):
        reader = AnswerReader(api, streamed=True)
        assert reader.feed(stream[:cut]) + reader.feed(stream[cut:]) + reader.end() == stream
        assert reader.usage == Tokens(input=1234, output=56, cached=200), cut
    if api == "chat":  # the hidden event goes whole, its empty line included
        event = _usage_event(api, plain).replace(b"\n", line_break)
        reader = AnswerReader(api, streamed=True, hide_usage=True)
        assert reader.feed(stream) + reader.end() == stream.replace(event, b"")


def test_a_stream_without_usage_passes_unchanged_and_says_so() -> None:
    stream = b"".join(e + b"\n\n" for e in _stream("chat").split(b"\n\n") if e and b'"usage"' not in e)
    reader = AnswerReader("chat", streamed=True)
    assert reader.feed(stream[:50]) + reader.feed(stream[50:]) + reader.end() == stream
    assert reader.usage is None
    cut_short = _stream("responses")[:-100]  # ended before `response.completed` was whole
    reader = AnswerReader("responses", streamed=True)
    assert reader.feed(cut_short) + reader.end() == cut_short
    assert reader.usage is None


def test_the_chat_usage_lap_asked_for_never_reaches_the_harness() -> None:
    stream = _stream("chat")
    event = _usage_event("chat", stream)
    for cut in range(len(stream) + 1):
        reader = AnswerReader("chat", streamed=True, hide_usage=True)
        assert _feed(reader, [stream[:cut], stream[cut:]], event) == stream.replace(event, b""), cut
        assert reader.usage == Tokens(input=1234, output=56, cached=200)
    # LiteLLM's usage chunk has a choice with an empty delta: nothing the harness would miss either.
    litellm = b'data: {"id":"x","choices":[{"index":0,"delta":{}}],'
    litellm += b'"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
    reader = AnswerReader("chat", streamed=True, hide_usage=True)
    assert reader.feed(litellm + b"data: [DONE]\n\n") == b"data: [DONE]\n\n"
    assert reader.usage == Tokens(input=3, output=2)
    # Content and usage in one chunk: the content goes on, the usage does not.
    both = {"id": "x", "choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": {"prompt_tokens": 3}}
    reader = AnswerReader("chat", streamed=True, hide_usage=True)
    passed = reader.feed(b"data: " + json.dumps(both).encode() + b"\n\n")
    assert json.loads(passed.removeprefix(b"data: ")) == {"id": "x", "choices": both["choices"]}
    assert reader.usage == Tokens(input=3)


def test_anthropic_usage_is_message_start_completed_by_message_delta() -> None:
    def event(name: str, data: dict[str, object]) -> bytes:
        return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()

    start = event("message_start", {"message": {"usage": {"input_tokens": 0, "cache_read_input_tokens": 0}}})
    # LiteLLM, answering /v1/messages from an OpenAI model, sends the input counts in message_delta.
    delta = event("message_delta", {"usage": {"input_tokens": 12, "output_tokens": 7, "cost": 0.5}})
    reader = AnswerReader("messages", streamed=True)
    reader.feed(start + delta)
    assert reader.usage == Tokens(input=12, output=7, cost=0.5)
    # LiteLLM's streamed cost of output tokens alone is not the call's cost: left unknown.
    start = event("message_start", {"message": {"usage": {"input_tokens": 10, "cache_creation_input_tokens": 4}}})
    delta = event("message_delta", {"usage": {"output_tokens": 7, "cost": 0.25}})
    reader = AnswerReader("messages", streamed=True)
    reader.feed(start + delta)
    assert reader.usage == Tokens(input=14, output=7)


@pytest.mark.parametrize("api", APIS)
def test_an_unstreamed_answer_is_held_whole_then_read(api: Api) -> None:
    body = json.dumps(wire.complete(api, "m", wire.Reply(text=["done"]), USAGE)).encode()
    reader = AnswerReader(api, streamed=False)
    assert reader.feed(body[:10]) == reader.feed(body[10:]) == b""  # no byte goes on before the usage is read
    assert reader.usage is None
    assert reader.end() == body
    assert reader.usage == Tokens(input=1234, output=56, cached=200)
    reader = AnswerReader(api, streamed=False)
    reader.feed(b'{"usage": {"input_tokens": ')
    assert reader.end() == b'{"usage": {"input_tokens": '
    assert reader.usage is None


def test_what_is_too_large_to_read_passes_unmetered() -> None:
    stream = _stream("chat")
    reader = AnswerReader("chat", streamed=True, max_held=20)
    big = b"data: " + b"x" * 30  # an event longer than the reader holds, its end not yet seen
    assert reader.feed(big) == big
    assert reader.feed(stream) + reader.end() == stream
    assert reader.usage is None
    reader = AnswerReader("chat", streamed=False, max_held=20)
    body = json.dumps(wire.complete("chat", "m", wire.Reply(text=["done"]))).encode()
    assert reader.feed(body) + reader.end() == body
    assert reader.usage is None


def test_counts_and_costs_that_are_no_counts_are_zero_or_unknown() -> None:
    odd = b'data: {"usage": {"prompt_tokens": -5, "completion_tokens": true, "prompt_tokens_details": '
    odd += b'{"cached_tokens": 1.5}, "cost": "0.1"}}\n\n'
    reader = AnswerReader("chat", streamed=True)
    reader.feed(odd)
    assert reader.usage == Tokens()
    reader = AnswerReader("chat", streamed=True)
    reader.feed(b'data: {"usage": {"prompt_tokens": 9007199254740993, "completion_tokens": 1}}\n\n')
    assert reader.usage == Tokens(output=1)
    assert parse_cost("8.2e-05") == 8.2e-05
    assert parse_cost("0") == 0.0
    for header in (None, "", "None", "nan", "inf", "-1", "abc"):
        assert parse_cost(header) is None, header
