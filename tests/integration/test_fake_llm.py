"""The fake LLM speaks each wire protocol well enough for a real LiteLLM proxy (and the CLIs)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.fakes.litellm import LiteLLMProxy
    from tests.fakes.llm_server import FakeLLM

pytestmark = pytest.mark.e2e
BASH = {
    "type": "function",
    "function": {
        "name": "bash",
        "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
    },
}


@pytest.fixture
def client(litellm_proxy: LiteLLMProxy, llm: FakeLLM) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {litellm_proxy.master_key}"}
    with httpx.Client(base_url=litellm_proxy.url, headers=headers, timeout=60) as http:
        yield http


def _sse(client: httpx.Client, path: str, body: dict[str, Any]) -> list[Any]:
    events = []
    with client.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line.removeprefix("data: ")))
    return events


def test_chat_completions_call_the_tool_then_answer_in_deltas(client: httpx.Client, llm: FakeLLM) -> None:
    llm.script(command="ls -la", text="The command ran fine.", chunks=4)
    user = {"role": "user", "content": "list files"}
    plain = client.post("/v1/chat/completions", json={"model": "fake-model", "messages": [user], "tools": [BASH]})
    call = plain.json()["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "bash"
    assert json.loads(call["function"]["arguments"]) == {"command": "ls -la"}

    streamed = _sse(client, "/v1/chat/completions", {"model": "fake-model", "messages": [user], "tools": [BASH]})
    arguments = "".join(
        tc["function"].get("arguments") or ""
        for e in streamed
        if e["choices"]
        for tc in e["choices"][0]["delta"].get("tool_calls") or []
    )
    assert json.loads(arguments) == {"command": "ls -la"}

    history = [
        user,
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "a.txt"},
    ]
    answer = _sse(client, "/v1/chat/completions", {"model": "fake-model", "messages": history, "tools": [BASH]})
    deltas = [
        e["choices"][0]["delta"]["content"] for e in answer if e["choices"] and e["choices"][0]["delta"].get("content")
    ]
    assert deltas == ["The co", "mmand ", "ran fi", "ne."]


def test_responses_stream_through_litellm(client: httpx.Client, llm: FakeLLM) -> None:
    llm.script(command=None, text="from responses")
    events = _sse(client, "/v1/responses", {"model": "fake-model", "input": "hi"})
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "from responses"


def test_messages_stream_to_the_anthropic_model(client: httpx.Client, llm: FakeLLM) -> None:
    llm.script(command=None, text="from messages")
    body = {"model": "claude-fake", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    events = _sse(client, "/v1/messages", body)
    assert events[0]["type"] == "message_start"
    assert events[-1]["type"] == "message_stop"
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == "from messages"
    assert {r["key"] for r in llm.requests()} == {"sk-upstream-ant"}


def test_a_scripted_failure_is_an_error_from_litellm(client: httpx.Client, llm: FakeLLM) -> None:
    llm.script(fail_status=400)
    response = client.post(
        "/v1/chat/completions", json={"model": "fake-model", "messages": [{"role": "user", "content": "x"}]}
    )
    assert response.status_code == 400
    assert "scripted failure" in response.text


def test_upstream_sees_litellms_upstream_key_never_the_callers(
    client: httpx.Client, llm: FakeLLM, litellm_proxy: LiteLLMProxy
) -> None:
    client.post("/v1/chat/completions", json={"model": "fake-model", "messages": [{"role": "user", "content": "x"}]})
    seen = llm.requests()
    assert [r["key"] for r in seen] == ["sk-upstream-fake"]
    assert litellm_proxy.master_key not in json.dumps(seen)
