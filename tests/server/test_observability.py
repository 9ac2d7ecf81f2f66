"""Request ids, request logs (never the key) and /metrics, over real HTTP."""

from __future__ import annotations

import io
import json
import logging
import re
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
import structlog
from litestar import get
from prometheus_client.parser import text_string_to_metric_families

from lap_core import configure_logging as configure
from lap_core import hookimpl

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from contextlib import AbstractAsyncContextManager

    from litestar.handlers import HTTPRouteHandler

    Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
    Logs = Callable[[], tuple[str, list[dict[str, Any]]]]

pytestmark = pytest.mark.anyio
KEY = "test-master-key"


@pytest.fixture
def json_logs(caplog: pytest.LogCaptureFixture) -> Iterator[Logs]:
    """LAP's production logging (`lap -v --log-json`), into a buffer: read back all of it, and its lines."""
    httpx_level = logging.getLogger("httpx").level
    root, root_handlers, root_level = logging.getLogger(), logging.getLogger().handlers[:], logging.getLogger().level
    configure(level=logging.INFO, json=True)
    buffer = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buffer))  # the rest as configured

    def read() -> tuple[str, list[dict[str, Any]]]:
        text = buffer.getvalue()
        return text + caplog.text, [json.loads(line) for line in text.splitlines()]

    yield read
    structlog.reset_defaults()
    root.handlers[:], root.level = root_handlers, root_level
    logging.getLogger("httpx").setLevel(httpx_level)


def _as(api: httpx.AsyncClient, key: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=str(api.base_url), headers=headers, timeout=30)


def _requests(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["request_id"]: line for line in lines if line["event"] == "http.request"}


def _sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def test_requests_are_logged_with_their_id_and_never_the_key(api: httpx.AsyncClient, json_logs: Logs) -> None:
    created = (await api.post("/api/keys", json={"name": "ci"})).json()
    team_key: str = created["key"]
    async with _as(api, team_key) as team, _as(api, None) as anonymous:
        mine = await team.get("/api/agents", headers={"X-Request-ID": "req-1.A_b"})
        assert mine.status_code == 200
        assert mine.headers["x-request-id"] == "req-1.A_b"
        refused = await anonymous.get("/api/agents", headers={"X-Request-ID": "anon-1"})
        assert refused.status_code == 401
    longest = "r" * 128
    assert (await api.get("/api/agents/nope", headers={"X-Request-ID": longest})).headers["x-request-id"] == longest
    generated = []
    for insane in (b"r" * 129, b"bad id", b"a/b", "x\u00e9".encode()):
        response = await api.get("/api/agents", headers={b"X-Request-ID": insane})
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"]), insane
        generated.append(response.headers["x-request-id"])
    assert len(set(generated)) == len(generated)
    unknown = await api.get("/nowhere", headers={"X-Request-ID": "lost-1"})
    assert unknown.status_code == 404
    assert unknown.headers["x-request-id"] == "lost-1"

    text, lines = json_logs()
    requests = _requests(lines)
    assert {
        k: requests["req-1.A_b"][k] for k in ("level", "method", "path", "route", "status", "team_id", "key_prefix")
    } == {
        "level": "info",
        "method": "GET",
        "path": "/api/agents",
        "route": "/api/agents",
        "status": 200,
        "team_id": created["team_id"],
        "key_prefix": created["prefix"],
    }
    assert isinstance(requests["req-1.A_b"]["duration_ms"], float)
    assert requests[longest]["route"] == "/api/agents/{agent_id}"  # the template, not the path
    assert requests[longest]["admin"] is True
    assert "team_id" not in requests[longest]
    assert requests["anon-1"]["status"] == 401
    assert "key_prefix" not in requests["anon-1"]
    assert requests["lost-1"]["route"] == "/nowhere"
    assert all(rid in requests for rid in generated)
    # The keys never reach the log, whole or in part.
    secret = team_key.split("_", 2)[2]  # lapk_<prefix>_<secret>: the secret may hold "_" itself
    for leaked in (KEY, team_key, secret, "Bearer"):
        assert leaked not in text


class BoomPlugin:
    """A plugin whose route fails with an unexpected error."""

    @hookimpl
    def lap_server_routes(self) -> Iterator[HTTPRouteHandler]:
        @get("/boom")
        async def boom() -> dict[str, str]:
            raise RuntimeError("kaboom: internal detail")

        yield boom


async def test_a_500_is_logged_with_its_request_id_and_the_client_sees_no_traceback(
    serve: Serve, json_logs: Logs
) -> None:
    async with serve(BoomPlugin()) as api:
        response = await api.get("/boom", headers={"X-Request-ID": "boom-1"})
        assert response.status_code == 500
        assert response.headers["x-request-id"] == "boom-1"
        assert response.json()["error"]["code"] == "internal_error"
        assert "kaboom" not in response.text
        assert "Traceback" not in response.text

        text, lines = json_logs()
        failure = next(line for line in lines if line["event"] == "request.failed")
        assert failure["request_id"] == "boom-1"  # from the request's contextvars
        assert "RuntimeError: kaboom: internal detail" in failure["exception"]
        assert "Traceback" in failure["exception"]
        request = _requests(lines)["boom-1"]
        assert (request["level"], request["status"], request["route"]) == ("error", 500, "/boom")
        assert KEY not in text

        metrics = (await api.get("/metrics")).text
        assert _sample(metrics, "lap_http_requests_total", method="GET", route="/boom", status="500") == 1


async def test_metrics_need_the_master_key_and_count_requests_by_route(api: httpx.AsyncClient) -> None:
    key = (await api.post("/api/keys", json={"name": "ci"})).json()["key"]
    async with _as(api, key) as team, _as(api, None) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 401
        forbidden = await team.get("/metrics")
        assert forbidden.status_code == 403
        assert forbidden.json()["error"]["code"] == "forbidden"
        assert (await anonymous.get("/healthz")).status_code == 200
        assert (await anonymous.get("/readyz")).status_code == 200
    for _ in range(3):
        assert (await api.get("/api/agents")).status_code == 200
    for path in ("/api/agents/a1", "/api/agents/a2", "/nowhere/1", "/nowhere/2"):
        assert (await api.get(path)).status_code == 404

    response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    agents = {"method": "GET", "route": "/api/agents"}
    assert _sample(text, "lap_http_requests_total", status="200", **agents) == 3
    assert _sample(text, "lap_http_request_duration_seconds_count", **agents) == 3
    assert _sample(text, "lap_http_requests_total", method="GET", route="/api/agents/{agent_id}", status="404") == 2
    assert _sample(text, "lap_http_requests_total", method="GET", route="unmatched", status="404") == 2
    assert _sample(text, "lap_http_requests_total", method="GET", route="/metrics", status="403") == 1
    assert "/nowhere" not in text  # unknown paths do not become labels
    assert _sample(text, "lap_sse_streams_open") == 0
    assert _sample(text, "process_resident_memory_bytes") is not None
    assert "/metrics" not in (await api.get("/schema/openapi.json")).json()["paths"]


async def test_metrics_count_queued_jobs(serve: Serve) -> None:
    async with serve(run_turns=False) as api:  # no worker: the turn stays queued
        agent = (await api.post("/api/agents", json={"name": "a", "harness": "script", "model": "m"})).json()
        session = (await api.post("/api/sessions", json={"agent_id": agent["id"]})).json()
        text = (await api.get("/metrics")).text
        assert _sample(text, "lap_jobs", status="queued") == 0
        for message in ("one", "two"):
            sent = await api.post(f"/api/sessions/{session['id']}/messages", json={"text": message})
            assert sent.status_code == 202
        text = (await api.get("/metrics")).text
        assert _sample(text, "lap_jobs", status="queued") == 2
        assert _sample(text, "lap_jobs", status="leased") == 0


async def _sse_streams_open(api: httpx.AsyncClient) -> float | None:
    return _sample((await api.get("/metrics")).text, "lap_sse_streams_open")


async def test_open_sse_streams_are_counted_until_they_close(api: httpx.AsyncClient) -> None:
    agent = (await api.post("/api/agents", json={"name": "a", "harness": "script", "model": "m"})).json()
    session = (await api.post("/api/sessions", json={"agent_id": agent["id"]})).json()
    path = f"/api/sessions/{session['id']}/events"
    with anyio.fail_after(10):
        async with api.stream("GET", path, headers={"X-Request-ID": "sse-1"}) as stream:
            assert stream.status_code == 200
            assert stream.headers["x-request-id"] == "sse-1"
            assert await _sse_streams_open(api) == 1
        while await _sse_streams_open(api) != 0:  # the server sees the client go
            await anyio.sleep(0.05)
    text = (await api.get("/metrics")).text
    route = "/api/sessions/{session_id}/events"
    assert _sample(text, "lap_http_requests_total", method="GET", route=route, status="200") == 1
