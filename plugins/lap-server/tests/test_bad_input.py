"""Bad input is a 4xx with the error shape, never a 500 (issue 12, finding 8), on SQLite and on PostgreSQL.

Each case here was a 500 (or a stream that died after its 200, or a 503 on PostgreSQL only)
before its fix: resume ids and query values that are not ASCII decimals or out of range, JSON
nested deeper than the stack, bodies that are not UTF-8, and NUL characters, which PostgreSQL's
text cannot hold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import httpx

pytestmark = pytest.mark.anyio

JSON = {"Content-Type": "application/json"}
AGENT = b'{"name": "a", "harness": "script", "model": "m"'


async def _session(api: httpx.AsyncClient) -> str:
    agent = await api.post("/api/agents", json={"name": "a", "harness": "script", "model": "m"})
    session = await api.post("/api/sessions", json={"agent_id": agent.json()["id"]})
    return str(session.json()["id"])


async def _get_head(api: httpx.AsyncClient, path: str, **headers: Any) -> httpx.Response:
    """GET `path`, reading the body only if it is not an event stream (which would never end)."""
    async with api.stream("GET", path, headers=headers) as response:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            await response.aread()
        return response


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert (error["code"], sorted(error)) == (code, ["code", "details", "message"])
    assert "Traceback" not in response.text
    return error


@pytest.mark.parametrize(
    "value",
    [
        "²".encode("latin-1"),  # str.isdigit() says yes, int() says no
        "²".encode(),
        "٣".encode(),  # an Arabic-Indic digit
        b"9" * 5000,  # past int()'s 4,300 digits
        str(2**63).encode(),  # past a database integer
        str(2**62 + 1).encode(),  # past the largest seq `after` takes
        b"-1",
        b"1e3",
        b"0x10",
        b"3 4",
        b"",
    ],
)
async def test_a_bad_last_event_id_is_refused_before_the_stream(api: httpx.AsyncClient, value: bytes) -> None:
    session_id = await _session(api)
    response = await _get_head(api, f"/api/sessions/{session_id}/events", **{"Last-Event-ID": value})
    error = _error(response, 422, "validation_error")
    assert "Last-Event-ID" in error["message"]


@pytest.mark.parametrize(
    "query",
    [
        "after=1e3",
        "after=1.0",
        "after=%C2%B2",
        "after=-0",
        "after=" + "9" * 5000,
        f"after={2**62 + 1}",
        "after=%00",
        "after=+3",
    ],
)
async def test_query_integers_are_ascii_decimals_in_range(api: httpx.AsyncClient, query: str) -> None:
    session_id = await _session(api)
    for path in (f"/api/sessions/{session_id}/messages", f"/api/sessions/{session_id}/events"):
        _error(await _get_head(api, f"{path}?{query}"), 422, "validation_error")
    limit = query.replace("after=", "limit=")
    _error(await api.get(f"/api/agents?{limit}"), 422, "validation_error")
    assert (await api.get(f"/api/sessions/{session_id}/messages?after={2**62}")).json() == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested"),
        (AGENT + b', "options": {"a": ' + b"[" * 63 + b"]" * 63 + b"}}", "nested"),  # 65 levels
        (b'{"name": "a", "harness": "script", "model": "m\xff"}', "UTF-8"),
        (b'{"name": "a", "harness": "script", "model": "m"}\xc3', "UTF-8"),
        (b'{"name": "a", "harness": "script", "model": "\xed\xa0\x80"}', "UTF-8"),  # an encoded surrogate
        (AGENT + b', "prompt": "\\ud800"}', "JSON"),  # an escaped lone surrogate
        (AGENT + b', "options": {"n": ' + b"9" * 5000 + b"}}", "JSON"),
        (AGENT, "JSON"),
    ],
)
async def test_bodies_that_are_not_json_are_refused(api: httpx.AsyncClient, body: bytes, message: str) -> None:
    error = _error(await api.post("/api/agents", content=body, headers=JSON), 400, "invalid_json")
    assert message in error["message"]


async def test_json_nested_to_the_limit_is_read(api: httpx.AsyncClient) -> None:
    deep = AGENT + b', "options": {"a": ' + b"[" * 62 + b'"[{"' + b"]" * 62 + b"}}"  # 64 levels, the body's own too
    error = _error(await api.post("/api/agents", content=deep, headers=JSON), 422, "invalid_input")
    assert "unknown option" in error["message"]  # read, then refused by the harness


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/agents", b'{"name": "a", "harness": "script", "model": "m\\u0000"}'),
        ("POST", "/api/agents", AGENT + b', "prompt": "x\\u0000y"}'),
        ("POST", "/api/agents", AGENT + b', "options": {"k\\u0000": 1}}'),
        ("POST", "/api/sessions", b'{"agent_id": "a", "title": "\\u0000"}'),
        ("POST", "/api/keys", b'{"name": "\\\\\\u0000"}'),
        ("POST", "/api/sessions/{session}/messages", b'{"text": "hi\\u0000"}'),
        ("GET", "/api/agents/a%00b", None),
        ("GET", "/api/sessions/{session}%00", None),
        ("GET", "/api/agents?search=a%00b", None),
        ("GET", "/api/sessions?agent_id=%00", None),
        ("DELETE", "/api/keys/key_%00", None),
    ],
)
async def test_nul_characters_are_refused_in_text(
    api: httpx.AsyncClient, method: str, path: str, body: bytes | None
) -> None:
    path = path.replace("{session}", await _session(api))
    response = await api.request(method, path, content=body, headers=JSON if body else {})
    error = _error(response, 422, "invalid_input")
    assert "NUL" in error["message"]


async def test_text_that_only_looks_like_nul_is_kept(api: httpx.AsyncClient) -> None:
    body = AGENT.replace(b'"a"', b'"b"') + b', "prompt": "a\\\\u0000 \\\\\\\\u0000"}'  # escaped backslashes
    created = await api.post("/api/agents", content=body, headers=JSON)
    assert created.status_code == 201, created.text
    assert created.json()["prompt"] == "a\\u0000 \\\\u0000"
