"""The REST API and SSE stream, over real HTTP (uvicorn), on the process backend and scripted harness."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest

from lap_server import routes

pytestmark = pytest.mark.anyio
KEY = "test-master-key"


async def _session(api: httpx.AsyncClient) -> str:
    agent = await api.post("/api/agents", json={"name": "a", "harness": "script", "model": "m"})
    assert agent.status_code == 201, agent.text
    session = await api.post("/api/sessions", json={"agent_id": agent.json()["id"]})
    assert session.status_code == 201, session.text
    return str(session.json()["id"])


async def _sse(api: httpx.AsyncClient, path: str, count: int, **headers: str) -> list[dict[str, Any]]:
    """Read SSE events until `count` of them or a `turn_end`."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with anyio.fail_after(20):
        async with api.stream("GET", path, headers=headers) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if not line:
                    if current:
                        events.append(current)
                        current = {}
                    if len(events) == count or (events and events[-1].get("event") == "turn_end"):
                        break
                    continue
                field, _, value = line.partition(":")
                current[field] = value.strip()
    return events


async def test_a_message_with_wait_returns_the_reply(api: httpx.AsyncClient) -> None:
    session_id = await _session(api)
    reply = await api.post(f"/api/sessions/{session_id}/messages?wait=true", json={"text": "hello"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "completed"
    assert body["text"] == "you said: hello"
    assert [e["event"]["type"] for e in body["events"]][-1] == "turn_end"
    history = (await api.get(f"/api/sessions/{session_id}/messages")).json()
    assert [e["seq"] for e in history] == list(range(1, len(history) + 1))
    assert (await api.get(f"/api/sessions/{session_id}")).json()["status"] == "ready"


async def test_sse_resumes_exactly_after_last_event_id(api: httpx.AsyncClient) -> None:
    session_id = await _session(api)
    accepted = await api.post(f"/api/sessions/{session_id}/messages", json={"text": "stream me"})
    assert accepted.status_code == 202
    url = accepted.json()["events_url"]
    first = await _sse(api, url, 3)
    assert [e["id"] for e in first] == ["1", "2", "3"]
    assert first[0]["event"] == "user_message"
    rest = await _sse(api, f"/api/sessions/{session_id}/events", 20, **{"Last-Event-ID": "3"})
    ids = [int(e["id"]) for e in rest]
    assert ids[0] == 4
    assert ids == list(range(4, 4 + len(ids)))
    assert rest[-1]["event"] == "turn_end"
    assert json.loads(rest[0]["data"])["seq"] == 4


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/api/agents", b"{not json", 400, "invalid_json"),
        ("POST", "/api/agents", {"name": "x", "harness": "script"}, 422, "validation_error"),
        ("POST", "/api/agents", {"name": "x", "harness": "script", "model": 3}, 422, "validation_error"),
        ("POST", "/api/agents", {"name": "x", "harness": "script", "model": "m", "colour": 1}, 422, "validation_error"),
        ("POST", "/api/agents", {"name": "x", "harness": "nope", "model": "m"}, 422, "invalid_input"),
        ("GET", "/api/agents/agt_missing", None, 404, "not_found"),
        ("GET", "/api/sessions/ses_missing", None, 404, "not_found"),
        ("POST", "/api/sessions", {"agent_id": "agt_missing"}, 404, "not_found"),
        ("POST", "/api/sessions/ses_missing/messages", {"text": "hi"}, 404, "not_found"),
        ("GET", "/api/sessions/ses_missing/events", None, 404, "not_found"),
        ("POST", "/api/agents", b"x" * (2 * 1024 * 1024), 413, "request_too_large"),
        ("GET", "/api/nowhere", None, 404, "not_found"),
        (
            "POST",
            "/api/agents",
            {"name": "x", "harness": "script", "model": "m", "on_busy": "later"},
            422,
            "validation_error",
        ),
        ("PATCH", "/api/agents/agt_missing", {"model": "m2"}, 404, "not_found"),
        ("POST", "/api/sessions/ses_missing/abort", None, 404, "not_found"),
        ("POST", "/api/sessions/ses_missing/restart", None, 404, "not_found"),
    ],
)
async def test_bad_input_gets_the_error_shape(
    api: httpx.AsyncClient, method: str, path: str, body: Any, status: int, code: str
) -> None:
    kwargs: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = await api.request(method, path, **({} if body is None else kwargs))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert "Traceback" not in response.text


async def test_a_message_to_a_deleted_session_is_404(api: httpx.AsyncClient) -> None:
    session_id = await _session(api)
    assert (await api.delete(f"/api/sessions/{session_id}")).status_code == 204
    response = await api.post(f"/api/sessions/{session_id}/messages", json={"text": "hi"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("header", [None, "Bearer wrong-key-123", "Basic dGVzdA==", "Bearer"])
async def test_auth_is_required_except_for_health(api: httpx.AsyncClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    async with httpx.AsyncClient(base_url=str(api.base_url), headers=headers) as anonymous:
        response = await anonymous.get("/api/agents")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert (await anonymous.get("/healthz")).status_code == 200
        assert (await anonymous.get("/readyz")).json() == {"ok": True}
        assert "/api/sessions/{session_id}/events" in (await anonymous.get("/schema/openapi.json")).json()["paths"]


async def test_agents_list_paginates_and_searches(api: httpx.AsyncClient) -> None:
    for name in ("alpha", "beta", "gamma"):
        assert (
            await api.post("/api/agents", json={"name": name, "harness": "script", "model": "m"})
        ).status_code == 201
    page = (await api.get("/api/agents?limit=2")).json()
    assert [a["name"] for a in page["items"]] == ["alpha", "beta"]
    assert page["next_offset"] == 2
    last = (await api.get("/api/agents?limit=2&offset=2")).json()
    assert ([a["name"] for a in last["items"]], last["next_offset"]) == (["gamma"], None)
    assert [a["name"] for a in (await api.get("/api/agents?search=mm")).json()["items"]] == ["gamma"]
    assert (await api.get("/api/agents?limit=0")).status_code in (400, 422)


async def _wait_running(api: httpx.AsyncClient, session_id: str, turn_id: str) -> None:
    """Wait until the turn's harness runs (the `hang` script reports its native session first)."""
    with anyio.fail_after(20):
        while True:
            history = (await api.get(f"/api/sessions/{session_id}/messages")).json()
            if any(e["turn_id"] == turn_id and e["event"]["type"] == "harness_session" for e in history):
                return
            await anyio.sleep(0.05)


async def _ends(api: httpx.AsyncClient, session_id: str, count: int) -> list[tuple[str, str]]:
    with anyio.fail_after(20):
        while True:
            history = (await api.get(f"/api/sessions/{session_id}/messages")).json()
            ends = [(e["turn_id"], e["event"]["status"]) for e in history if e["event"]["type"] == "turn_end"]
            if len(ends) >= count:
                return ends
            await anyio.sleep(0.05)


async def test_busy_policies_per_agent_and_per_request(api: httpx.AsyncClient) -> None:
    agent = (await api.post("/api/agents", json={"name": "strict", "harness": "script", "model": "m"})).json()
    assert agent["on_busy"] == "enqueue"
    patched = await api.patch(f"/api/agents/{agent['id']}", json={"on_busy": "reject"})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["on_busy"], patched.json()["model"]) == ("reject", "m")
    session_id = (await api.post("/api/sessions", json={"agent_id": agent["id"]})).json()["id"]
    messages = f"/api/sessions/{session_id}/messages"
    running = (await api.post(messages, json={"text": "hang"})).json()["turn_id"]
    await _wait_running(api, session_id, running)
    refused = await api.post(messages, json={"text": "not now"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "conflict"
    assert refused.json()["error"]["details"]["on_busy"] == "reject"
    queued = await api.post(messages, json={"text": "hang", "on_busy": "enqueue"})
    assert queued.status_code == 202
    last = await api.post(messages, json={"text": "finally", "on_busy": "interrupt"})
    assert last.status_code == 202
    ends = await _ends(api, session_id, 3)
    assert ends == [(running, "aborted"), (queued.json()["turn_id"], "aborted"), (last.json()["turn_id"], "completed")]


async def test_abort_over_http(api: httpx.AsyncClient) -> None:
    session_id = await _session(api)
    assert (await api.post(f"/api/sessions/{session_id}/abort")).json() == {"aborted": False}
    turn = (await api.post(f"/api/sessions/{session_id}/messages", json={"text": "hang"})).json()["turn_id"]
    await _wait_running(api, session_id, turn)
    aborted = await api.post(f"/api/sessions/{session_id}/abort")
    assert (aborted.status_code, aborted.json()) == (202, {"aborted": True})
    assert await _ends(api, session_id, 1) == [(turn, "aborted")]


async def test_an_idle_event_stream_sends_keep_alive_comments(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "SSE_KEEPALIVE", 0.2)
    session_id = await _session(api)
    lines: list[str] = []
    with anyio.fail_after(10):
        async with api.stream("GET", f"/api/sessions/{session_id}/events") as response:
            async for line in response.aiter_lines():
                lines.append(line)
                if line.startswith(": keep-alive") and len([x for x in lines if x.startswith(":")]) == 2:
                    break
    assert [x for x in lines if x.startswith(":")] == [": keep-alive", ": keep-alive"]
    assert not [x for x in lines if x.startswith("data")]  # no empty event for EventSource to fire


async def test_restart_gives_a_fresh_sandbox_with_the_same_workspace(api: httpx.AsyncClient) -> None:
    session_id = await _session(api)
    messages = f"/api/sessions/{session_id}/messages?wait=true"
    wrote = await api.post(messages, json={"text": "run: echo kept > notes.txt; echo $PPID"})
    assert wrote.json()["status"] == "completed", wrote.text
    running = (await api.post(f"/api/sessions/{session_id}/messages", json={"text": "hang"})).json()["turn_id"]
    await _wait_running(api, session_id, running)
    accepted = await api.post(f"/api/sessions/{session_id}/restart")
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["session_url"] == f"/api/sessions/{session_id}"
    assert (await _ends(api, session_id, 2))[-1] == (running, "aborted")
    with anyio.fail_after(20):
        while (session := (await api.get(f"/api/sessions/{session_id}")).json())["status"] != "ready":
            assert session["status"] in ("running", "starting", "ready"), session
            await anyio.sleep(0.05)
    after = (await api.post(messages, json={"text": "run: cat notes.txt; echo $PPID"})).json()
    assert after["status"] == "completed"
    kept, sandboxd = after["events"][-3]["event"]["output"].split("\n")
    assert kept == "kept"  # the workspace survived the restart
    assert sandboxd != wrote.json()["events"][-3]["event"]["output"]  # in a new sandbox (a new sandboxd)
    created = [e for e in after["events"] if e["event"]["type"] == "status"]
    assert created == []  # the fresh sandbox was already up: this turn did not create one


async def test_a_message_sent_again_with_its_idempotency_key_is_one_turn(api: httpx.AsyncClient) -> None:
    session_id = await _session(api)
    url = f"/api/sessions/{session_id}/messages"
    headers = {"Idempotency-Key": "msg-1"}
    first = await api.post(url, json={"text": "once"}, headers=headers)
    again = await api.post(url, json={"text": "once"}, headers=headers)
    assert first.status_code == again.status_code == 202, again.text
    assert again.json()["turn_id"] == first.json()["turn_id"]
    await _ends(api, session_id, 1)
    later = await api.post(url + "?wait=true", json={"text": "once"}, headers=headers)  # after it finished
    assert later.json()["turn_id"] == first.json()["turn_id"]
    assert later.json()["status"] == "completed"
    other = await api.post(url, json={"text": "twice"}, headers={"Idempotency-Key": "msg-2"})
    assert other.json()["turn_id"] != first.json()["turn_id"]
    await _ends(api, session_id, 2)
    history = (await api.get(url)).json()
    assert [e["event"]["text"] for e in history if e["event"]["type"] == "user_message"] == ["once", "twice"]
    bad = await api.post(url, json={"text": "x"}, headers={"Idempotency-Key": "x" * 129})
    assert bad.status_code == 422, bad.text
