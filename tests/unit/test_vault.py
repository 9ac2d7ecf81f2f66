"""The LLM proxy: stub keys in, the real key out, answers streamed back unchanged."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from anyio import wait_all_tasks_blocked

from lap_core._vault import LLMProxy, StubKeys

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

pytestmark = pytest.mark.anyio
REAL = "sk-real-key"


class Upstream(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []  # noqa: RUF012 - shared by the test on purpose
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        Upstream.seen.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for i in range(3):
            chunk = f"data: {i}\n\n".encode()
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
            time.sleep(0.05)
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    Upstream.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def keys() -> StubKeys:
    return StubKeys(b"k" * 32)


@asynccontextmanager
async def _proxy(tmp_path: Path, upstream: str, keys: StubKeys) -> AsyncIterator[httpx.AsyncClient]:
    proxy = LLMProxy(socket_path=tmp_path / "llm.sock", upstream=upstream, api_key=REAL, keys=keys)
    async with anyio.create_task_group() as tasks:
        await tasks.start(proxy.serve)
        transport = httpx.AsyncHTTPTransport(uds=str(tmp_path / "llm.sock"))
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
            yield client
        # Let the proxy see the client's close first: cancelling a socket read at the very moment
        # it becomes readable trips a benign race inside anyio's unix sockets.
        await wait_all_tasks_blocked()
        tasks.cancel_scope.cancel()


@pytest.fixture
async def client(tmp_path: Path, upstream: str, keys: StubKeys) -> AsyncIterator[httpx.AsyncClient]:
    async with _proxy(tmp_path, upstream, keys) as client:
        yield client


def test_stub_keys_name_their_session_and_cannot_be_forged(keys: StubKeys) -> None:
    stub = keys.issue("ses_abc")
    assert keys.verify(stub) == "ses_abc"
    assert keys.issue("ses_abc") == stub
    assert keys.verify(stub.replace("ses_abc", "ses_other")) is None
    assert keys.verify(StubKeys(b"x" * 32).issue("ses_abc")) is None
    assert keys.verify(REAL) is None
    assert keys.verify("") is None


async def test_the_real_key_replaces_the_stub_and_the_stream_passes_through(
    client: httpx.AsyncClient, keys: StubKeys
) -> None:
    chunks = []
    headers = {"Authorization": f"Bearer {keys.issue('ses_1')}"}
    async with client.stream("POST", "/v1/chat/completions", json={"model": "m"}, headers=headers) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_text():
            chunks.append(chunk)
    assert "".join(chunks) == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert len(chunks) >= 2  # streamed, not buffered into one piece
    seen = Upstream.seen[0]
    assert seen["path"] == "/v1/chat/completions"
    assert seen["headers"]["authorization"] == f"Bearer {REAL}"
    assert seen["body"] == {"model": "m"}


async def test_anthropic_style_keys_are_swapped_too(client: httpx.AsyncClient, keys: StubKeys) -> None:
    response = await client.post("/v1/messages", json={}, headers={"x-api-key": keys.issue("ses_1")})
    assert response.status_code == 200
    assert Upstream.seen[0]["headers"]["x-api-key"] == REAL
    assert keys.issue("ses_1") not in json.dumps(Upstream.seen[0]["headers"])


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-guess"}, {"x-api-key": REAL}])
async def test_requests_without_a_valid_stub_never_reach_the_gateway(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post("/v1/chat/completions", json={}, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert Upstream.seen == []


async def test_an_unauthenticated_head_request_gets_headers_only_and_the_proxy_serves_on(
    client: httpx.AsyncClient, keys: StubKeys
) -> None:
    # Claude Code probes its base URL with `HEAD /` and no key; a body here once crashed the proxy.
    head = await client.head("/")
    assert head.status_code == 401
    assert head.content == b""
    response = await client.post("/v1/messages", json={}, headers={"x-api-key": keys.issue("ses_1")})
    assert response.status_code == 200


async def test_a_gateway_that_is_down_is_a_clear_502(tmp_path: Path, keys: StubKeys) -> None:
    async with _proxy(tmp_path, "http://127.0.0.1:9", keys) as client:
        response = await client.post("/v1/responses", json={}, headers={"Authorization": f"Bearer {keys.issue('s')}"})
        assert response.status_code == 502
        assert "unreachable" in response.json()["error"]["message"]
        # the connection stays usable for the next request
        again = await client.post("/v1/responses", json={}, headers={"Authorization": "Bearer nope"})
        assert again.status_code == 401


async def test_a_second_proxy_takes_over_when_the_first_one_stops(
    tmp_path: Path, upstream: str, keys: StubKeys
) -> None:
    socket = tmp_path / "llm.sock"
    first = LLMProxy(socket_path=socket, upstream=upstream, api_key="first-key", keys=keys)
    second = LLMProxy(socket_path=socket, upstream=upstream, api_key="second-key", keys=keys)
    headers = {"Authorization": f"Bearer {keys.issue('s')}"}

    async def ask() -> str:
        transport = httpx.AsyncHTTPTransport(uds=str(socket))
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
            response = await client.post("/v1/chat/completions", json={}, headers=headers)
            assert response.status_code == 200
        await wait_all_tasks_blocked()
        return str(Upstream.seen[-1]["headers"]["authorization"])

    async with anyio.create_task_group() as outer:
        first_scope = anyio.CancelScope()

        async def run_first() -> None:
            with first_scope:
                await first.serve()

        outer.start_soon(run_first)
        await anyio.sleep(0.2)
        await outer.start(second.serve)  # it waits: the first one holds the socket
        assert await ask() == "Bearer first-key"
        first_scope.cancel()
        with anyio.fail_after(5):
            while True:
                try:
                    if await ask() == "Bearer second-key":
                        break
                except (httpx.ConnectError, httpx.ReadError, AssertionError):  # reset by the closing listener
                    await anyio.sleep(0.1)
        outer.cancel_scope.cancel()


async def test_the_proxy_also_serves_tcp_for_sandboxes_elsewhere(tmp_path: Path, upstream: str, keys: StubKeys) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proxy = LLMProxy(
        socket_path=tmp_path / "llm.sock", upstream=upstream, api_key=REAL, keys=keys, listen=("127.0.0.1", port)
    )
    async with anyio.create_task_group() as tasks:
        await tasks.start(proxy.serve)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            denied = await client.post("/v1/chat/completions", json={})
            allowed = await client.post(
                "/v1/chat/completions", json={}, headers={"Authorization": f"Bearer {keys.issue('ses_1')}"}
            )
        await wait_all_tasks_blocked()
        tasks.cancel_scope.cancel()
    assert denied.status_code == 401
    assert allowed.status_code == 200
    assert Upstream.seen[0]["headers"]["authorization"] == f"Bearer {REAL}"
