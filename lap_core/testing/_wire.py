"""What the fake LLM answers, in each provider's wire format (see `fake_llm`)."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

SHELL_TOOLS = ("bash", "shell", "exec_command", "local_shell", "run_shell_command")
USAGE = {"input": 12, "output": 7, "cached": 0}
"""What a reply uses unless told otherwise: `input` counts every input token, `cached` the part read from a cache."""
Counts = dict[str, int]


def varied_usage(n: int) -> Counts:
    """The usage of the n-th model request under the script's `usage="varied"`: different for every request."""
    return {"input": 100 + 7 * n, "output": 3 + n % 11, "cached": (n % 4) * 5}


def usage_block(kind: str, usage: Counts) -> dict[str, Any]:
    """The `usage` object of an unstreamed reply (of a `response.completed`), in the API's own fields."""
    if kind == "chat":
        block: dict[str, Any] = {
            "prompt_tokens": usage["input"],
            "completion_tokens": usage["output"],
            "total_tokens": usage["input"] + usage["output"],
        }
        if usage["cached"]:
            block["prompt_tokens_details"] = {"cached_tokens": usage["cached"]}
        return block
    if kind == "responses":
        block = {
            "input_tokens": usage["input"],
            "output_tokens": usage["output"],
            "total_tokens": usage["input"] + usage["output"],
        }
        if usage["cached"]:
            block["input_tokens_details"] = {"cached_tokens": usage["cached"]}
        return block
    # Anthropic counts cache reads apart from `input_tokens`.
    block = {"input_tokens": usage["input"] - usage["cached"], "output_tokens": usage["output"]}
    if usage["cached"]:
        block["cache_read_input_tokens"] = usage["cached"]
    return block


@dataclass
class Reply:
    """A text answer, or one tool call (`tool` = name, `arguments` = its JSON object).

    Every reply has ids of its own, as a real provider's do (Claude Code drops messages whose
    id it has seen when it reloads a session)."""

    text: list[str] = field(default_factory=list)
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: secrets.token_hex(6))


def _tools(kind: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for tool in body.get("tools") or []:
        if kind == "chat" and "function" in tool:
            found.append((tool["function"]["name"], tool["function"].get("parameters") or {}))
        elif kind == "responses" and tool.get("type") == "function":
            found.append((tool["name"], tool.get("parameters") or {}))
        elif kind == "messages" and "name" in tool:
            found.append((tool["name"], tool.get("input_schema") or {}))
    return found


def _after_last_user_message(items: list[Any], is_user: Any) -> list[Any]:
    last = max((i for i, item in enumerate(items) if is_user(item)), default=-1)
    return items[last + 1 :]


def _is_user_text(message: dict[str, Any]) -> bool:
    """A user message that asks something (not only tool results): its last block is text.

    Claude Code, resuming a session, sends a new prompt in the same message as the previous
    turn's tool results (`[tool_result, text]`)."""
    content = message.get("content")
    if message.get("role") != "user":
        return False
    if not isinstance(content, list) or not content:
        return True
    last = content[-1]
    return not (isinstance(last, dict) and last.get("type") == "tool_result")


def _has_tool_result(kind: str, body: dict[str, Any]) -> bool:
    """Whether the current turn (after the last user message) already holds a tool result."""
    if kind == "chat":
        messages = _after_last_user_message(body.get("messages") or [], lambda m: m.get("role") == "user")
        return any(m.get("role") == "tool" for m in messages)
    if kind == "responses":
        given = body.get("input")
        items = given if isinstance(given, list) else []
        items = _after_last_user_message(items, lambda i: isinstance(i, dict) and i.get("role") == "user")
        return any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in items)
    messages = _after_last_user_message(body.get("messages") or [], _is_user_text)
    return any(not _is_user_text(m) and m.get("role") == "user" for m in messages)


def _arguments(schema: dict[str, Any], command: str, extra: dict[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties") or {}
    # Scripted extras the tool takes (Codex's `yield_time_ms`: how long a command may run before it yields).
    arguments: dict[str, Any] = {name: value for name, value in extra.items() if name in properties}
    for name in ("command", "cmd"):
        if name in properties:
            wants_list = properties[name].get("type") == "array"
            arguments[name] = ["bash", "-lc", command] if wants_list else command
            break
    else:
        arguments["command"] = command
    for name in schema.get("required") or []:
        if name not in arguments and properties.get(name, {}).get("type") == "string":
            arguments[name] = "Runs the scripted command"
    return arguments


def _is_title_request(kind: str, body: dict[str, Any]) -> bool:
    system = json.dumps(body.get("system") or "") + json.dumps(
        [m.get("content") for m in body.get("messages") or [] if m.get("role") == "system"]
    )
    return not body.get("tools") and "title" in system.lower()


def decide(kind: str, body: dict[str, Any], script: dict[str, Any]) -> Reply:
    """Return the reply to a model request under the current script."""
    if _is_title_request(kind, body):
        return Reply(text=["Fake title"])
    tools = dict(_tools(kind, body))
    if not _has_tool_result(kind, body):
        named = script.get("tool")
        if named is not None:
            if named in tools:
                return Reply(tool=named, arguments=dict(script["tool_arguments"]))
        elif script["command"]:
            shell = next((name for name in tools if name.lower() in SHELL_TOOLS), None)
            if shell is not None:
                return Reply(
                    tool=shell, arguments=_arguments(tools[shell], script["command"], script["tool_arguments"])
                )
    text, chunks = script["text"], max(1, int(script["chunks"]))
    size = -(-len(text) // chunks)
    return Reply(text=[text[i : i + size] for i in range(0, len(text), size)] or [""])


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data) if not isinstance(data, str) else data}\n\n".encode()


def stream(kind: str, model: str, reply: Reply, usage: Counts = USAGE) -> Iterator[bytes | None]:
    """Yield the SSE events of a streamed reply; `None` marks a pause between text deltas."""
    streams = {"chat": _chat_stream, "responses": _responses_stream, "messages": _messages_stream}
    yield from streams[kind](model, reply, usage)


def carries_usage(kind: str, event: bytes) -> bool:
    """Whether a streamed event is the one that completes the reply's usage."""
    return b'"usage"' in event and (kind != "messages" or b"message_delta" in event)


def _chat_stream(model: str, reply: Reply, usage: Counts) -> Iterator[bytes | None]:
    base = {
        "id": f"chatcmpl-{reply.id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    yield chunk({"role": "assistant", "content": ""})
    if reply.tool:
        call = {
            "index": 0,
            "id": f"call_{reply.id}",
            "type": "function",
            "function": {"name": reply.tool, "arguments": ""},
        }
        yield chunk({"tool_calls": [call]})
        yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": json.dumps(reply.arguments)}}]})
        yield chunk({}, "tool_calls")
    else:
        for i, piece in enumerate(reply.text):
            if i:
                yield None
            yield chunk({"content": piece})
        yield chunk({}, "stop")
    yield _sse({**base, "choices": [], "usage": usage_block("chat", usage)})
    yield _sse("[DONE]")


def _responses_stream(model: str, reply: Reply, usage: Counts) -> Iterator[bytes | None]:
    response = {
        "id": f"resp_{reply.id}",
        "object": "response",
        "created_at": int(time.time()),
        "model": model,
        "status": "in_progress",
        "output": [],
    }
    yield _sse({"type": "response.created", "response": response}, "response.created")
    item: dict[str, Any]
    if reply.tool:
        item = {
            "type": "function_call",
            "id": f"fc_{reply.id}",
            "call_id": f"call_{reply.id}",
            "name": reply.tool,
            "arguments": "",
            "status": "in_progress",
        }
        yield _sse(
            {"type": "response.output_item.added", "output_index": 0, "item": item}, "response.output_item.added"
        )
        arguments = json.dumps(reply.arguments)
        yield _sse(
            {
                "type": "response.function_call_arguments.delta",
                "item_id": f"fc_{reply.id}",
                "output_index": 0,
                "delta": arguments,
            },
            "response.function_call_arguments.delta",
        )
        done = {**item, "arguments": arguments, "status": "completed"}
    else:
        item = {
            "type": "message",
            "id": f"msg_{reply.id}",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        yield _sse(
            {"type": "response.output_item.added", "output_index": 0, "item": item}, "response.output_item.added"
        )
        for i, piece in enumerate(reply.text):
            if i:
                yield None
            yield _sse(
                {
                    "type": "response.output_text.delta",
                    "item_id": f"msg_{reply.id}",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": piece,
                },
                "response.output_text.delta",
            )
        text = {"type": "output_text", "text": "".join(reply.text), "annotations": []}
        done = {**item, "status": "completed", "content": [text]}
    yield _sse({"type": "response.output_item.done", "output_index": 0, "item": done}, "response.output_item.done")
    completed = {**response, "status": "completed", "output": [done], "usage": usage_block("responses", usage)}
    yield _sse({"type": "response.completed", "response": completed}, "response.completed")


def _messages_stream(model: str, reply: Reply, usage: Counts) -> Iterator[bytes | None]:
    message: dict[str, Any] = {
        "id": f"msg_{reply.id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "usage": {**usage_block("messages", usage), "output_tokens": 0},
    }
    yield _sse({"type": "message_start", "message": message}, "message_start")
    if reply.tool:
        block = {"type": "tool_use", "id": f"toolu_{reply.id}", "name": reply.tool, "input": {}}
        yield _sse({"type": "content_block_start", "index": 0, "content_block": block}, "content_block_start")
        delta = {"type": "input_json_delta", "partial_json": json.dumps(reply.arguments)}
        yield _sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta")
        stop = "tool_use"
    else:
        block = {"type": "text", "text": ""}
        yield _sse({"type": "content_block_start", "index": 0, "content_block": block}, "content_block_start")
        for i, piece in enumerate(reply.text):
            if i:
                yield None
            delta = {"type": "text_delta", "text": piece}
            yield _sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta")
        stop = "end_turn"
    yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    yield _sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": usage["output"]},
        },
        "message_delta",
    )
    yield _sse({"type": "message_stop"}, "message_stop")


def complete(kind: str, model: str, reply: Reply, usage: Counts = USAGE) -> dict[str, Any]:
    """Return the non-streamed body of a reply."""
    text = "".join(reply.text)
    if kind == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": None if reply.tool else text}
        if reply.tool:
            message["tool_calls"] = [
                {
                    "id": f"call_{reply.id}",
                    "type": "function",
                    "function": {"name": reply.tool, "arguments": json.dumps(reply.arguments)},
                }
            ]
        return {
            "id": f"chatcmpl-{reply.id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if reply.tool else "stop"}],
            "usage": usage_block("chat", usage),
        }
    if kind == "responses":
        item = (
            {
                "type": "function_call",
                "id": f"fc_{reply.id}",
                "call_id": f"call_{reply.id}",
                "name": reply.tool,
                "arguments": json.dumps(reply.arguments),
                "status": "completed",
            }
            if reply.tool
            else {
                "type": "message",
                "id": f"msg_{reply.id}",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
        return {
            "id": f"resp_{reply.id}",
            "object": "response",
            "created_at": int(time.time()),
            "model": model,
            "status": "completed",
            "output": [item],
            "usage": usage_block("responses", usage),
        }
    content = (
        [{"type": "tool_use", "id": f"toolu_{reply.id}", "name": reply.tool, "input": reply.arguments}]
        if reply.tool
        else [{"type": "text", "text": text}]
    )
    return {
        "id": f"msg_{reply.id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if reply.tool else "end_turn",
        "stop_sequence": None,
        "usage": usage_block("messages", usage),
    }
