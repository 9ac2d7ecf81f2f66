"""The client's shared core, without a server: error answers of every kind, the SSE format, settings."""

from __future__ import annotations

import inspect

import httpx
import pytest

import lap_client
from lap_client import (
    ApiError,
    AsyncClient,
    Client,
    ClientError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
)
from lap_client._core import Call, Follower, SseDecoder, decoder, path
from lap_client._errors import error_of
from lap_core import Agent


def _answer(status: int, body: object = None, content: bytes = b"", **headers: str) -> httpx.Response:
    request = httpx.Request("GET", "http://lap.test/api/x")
    if body is not None:
        return httpx.Response(status, json=body, headers=headers, request=request)
    return httpx.Response(status, content=content, headers=headers, request=request)


@pytest.mark.parametrize(
    ("status", "family"),
    [
        (400, InvalidInput),
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (405, ApiError),
        (409, Conflict),
        (413, InvalidInput),
        (422, InvalidInput),
        (500, ServerError),
        (503, ServerError),
    ],
)
def test_each_status_has_its_family(status: int, family: type[ApiError]) -> None:
    error = error_of(_answer(status, {"error": {"code": "c", "message": "m", "details": {"k": 1}}}))
    assert type(error) is family
    assert (error.status, error.code, error.message, error.details) == (status, "c", "m", {"k": 1})


def test_an_answer_not_in_lap_shape_is_still_typed() -> None:
    error = error_of(_answer(502, content=b"<html>Bad Gateway</html>"))
    assert isinstance(error, ServerError)
    assert (error.code, error.message) == ("http_502", "<html>Bad Gateway</html>")


def test_rate_limited_reads_retry_after() -> None:
    body = {"error": {"code": "rate_limited", "message": "slow down", "details": {"retry_after": 7}}}
    from_header = error_of(_answer(429, body, **{"Retry-After": "3"}))
    assert isinstance(from_header, RateLimited)
    assert from_header.retry_after == 3
    from_body = error_of(_answer(429, body))
    assert isinstance(from_body, RateLimited)
    assert from_body.retry_after == 7


def test_sse_lines_make_events() -> None:
    sse = SseDecoder()
    lines = [": keep-alive", "", "event: text_delta", "id: 4", "data: {", "data: }", "retry: 2500", "", ""]
    assert [out for line in lines if (out := sse.feed(line))] == [("4", "{\n}")]
    assert sse.retry == 2.5


def test_a_follower_resumes_with_last_event_id_and_skips_what_it_yielded() -> None:
    follower = Follower("ses/1", after=2)
    http = httpx.Client(base_url="http://lap.test")
    first = follower.request(http)
    assert str(first.url) == "http://lap.test/api/sessions/ses%2F1/events?after=2"
    assert "last-event-id" not in first.headers
    data = '{"session_id": "ses/1", "seq": 3, "event": {"type": "text_delta", "text": "a"}}'
    assert follower.feed(f"data: {data}") is None
    assert follower.feed("").seq == 3  # type: ignore[union-attr]
    follower.feed("data: {partial")  # the connection drops mid-event
    assert follower.request(http).headers["last-event-id"] == "3"
    assert follower.feed(f"data: {data}") is None
    assert follower.feed("") is None  # seq 3 again: not yielded twice
    http.close()


def test_url_and_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAP_SERVER_URL", "http://lap.example:8080/lap")
    monkeypatch.setenv("LAP_API_KEY", "lapk_abc_def")
    with Client() as client:
        assert client.base_url == "http://lap.example:8080/lap/"
        assert client._http.headers["authorization"] == "Bearer lapk_abc_def"
    with Client("http://other:1", api_key="") as client:
        assert "authorization" not in client._http.headers


def test_methods_have_their_own_names_and_signatures() -> None:
    with Client("http://lap.test") as client:
        update = client.agents.update
        assert update.__qualname__ == "Agents.update"
        signature = inspect.signature(update)
        assert next(iter(signature.parameters)) == "agent_id"
        assert signature.return_annotation == "Agent"
        assert update.__doc__ is not None
        assert update.__doc__.startswith("Change the fields given of an agent")
    assert AsyncClient.usage.__qualname__ == "AsyncClient.usage"
    assert inspect.iscoroutinefunction(AsyncClient.usage)


def test_ids_are_one_path_segment_each() -> None:
    assert path("/api/agents/{}", "a/b?c") == "/api/agents/a%2Fb%3Fc"
    assert path("/api/agents/{}", "..") == "/api/agents/%2E%2E"
    assert path("/api/agents/{}", "a.b") == "/api/agents/a.b"
    with pytest.raises(ValueError, match="empty"):
        path("/api/agents/{}", "")


def test_an_answer_that_is_not_laps_is_a_client_error() -> None:
    call = Call("GET", "/api/agents/x", decoder(Agent))
    with pytest.raises(ClientError, match="not LAP's"):
        call.result(_answer(200, {"hello": "world"}))


def test_every_public_name_and_method_has_a_docstring() -> None:
    assert lap_client.__all__ == sorted(lap_client.__all__)
    undocumented = []
    for name in lap_client.__all__:
        value = getattr(lap_client, name)
        members = [(f"{name}.{m}", v) for m, v in vars(value).items() if not m.startswith("_") and callable(v)]
        for label, thing in [(name, value), *members]:
            if not (getattr(thing, "__doc__", None) or "").strip():
                undocumented.append(label)
    assert undocumented == []
