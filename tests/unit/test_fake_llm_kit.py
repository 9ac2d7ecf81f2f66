"""The kit's fake LLM in process: scripted calls of any tool, and routes with or without `/v1`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from lap_core.testing import FakeLLM

if TYPE_CHECKING:
    from collections.abc import Iterator


def _tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}


TOOLS = [_tool("read_file"), _tool("bash")]
USER = {"role": "user", "content": "go"}


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    server = FakeLLM().start()
    yield server
    server.stop()


def _chat(fake: FakeLLM, messages: list[dict[str, Any]], path: str = "/v1/chat/completions") -> dict[str, Any]:
    body = {"model": "any", "messages": messages, "tools": TOOLS}
    message: dict[str, Any] = httpx.post(f"{fake.url}{path}", json=body).json()["choices"][0]["message"]
    return message


def test_a_scripted_tool_is_called_with_its_arguments_once_per_turn(fake: FakeLLM) -> None:
    fake.script(tool="read_file", tool_arguments={"path": "notes.txt"}, text="read it")
    [call] = _chat(fake, [USER])["tool_calls"]
    assert (call["function"]["name"], json.loads(call["function"]["arguments"])) == ("read_file", {"path": "notes.txt"})
    result = {"role": "tool", "tool_call_id": call["id"], "content": "hello"}
    assert _chat(fake, [USER, {"role": "assistant", "tool_calls": [call]}, result])["content"] == "read it"


def test_a_scripted_tool_that_is_not_offered_gets_the_text(fake: FakeLLM) -> None:
    fake.script(tool="write_file", text="no such tool")
    assert _chat(fake, [USER])["content"] == "no such tool"


def test_without_a_scripted_tool_a_shell_tool_runs_the_command(fake: FakeLLM) -> None:
    fake.script(command="ls")
    [call] = _chat(fake, [USER], path="/chat/completions")["tool_calls"]  # a gateway URL without /v1
    assert (call["function"]["name"], json.loads(call["function"]["arguments"])) == ("bash", {"command": "ls"})
    assert [request["path"] for request in fake.requests()] == ["/chat/completions"]


def test_unknown_script_keys_are_refused(fake: FakeLLM) -> None:
    with pytest.raises(ValueError, match="tools"):
        fake.script(tools=["bash"])
