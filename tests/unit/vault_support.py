"""Support of the LLM proxy's tests: a recording gateway, sandboxd's real forwarder, a running proxy."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from lap_core import StoreError
from lap_core._vault import LLMProxy, LLMScope, StubKeys
from lap_sandboxd.egress import EgressServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

REAL = "sk-real-key-of-the-gateway"
MODEL = "fake-model"
Recorded = tuple[str, list[dict[str, Any]]]


class Answer:
    """A scripted answer of the recording gateway: a status, headers, and body chunks sent one by one.

    A `threading.Event` among the chunks holds the rest back until the test sets it; `cut` ends
    the answer by closing the connection before its last (terminating) chunk.
    """

    def __init__(
        self, chunks: list[bytes | threading.Event], *, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        self.chunks, self.status = chunks, status
        self.headers = headers or {"content-type": "text/event-stream"}
        self.cut = False


class Recorder(BaseHTTPRequestHandler):
    """An HTTP server that records every request; as the gateway it streams an answer back.

    The answer is the next of `server.answers` (`Answer`s), else three `data: N` events.
    """

    protocol_version = "HTTP/1.1"

    def _answer(self, answer: Answer) -> None:
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for chunk in answer.chunks:
            if isinstance(chunk, threading.Event):
                chunk.wait(10)
                continue
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        if answer.cut:
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")

    def _record(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
        )  # type: ignore[attr-defined]
        if self.server.answers:  # type: ignore[attr-defined]
            self._answer(self.server.answers.pop(0))  # type: ignore[attr-defined]
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for i in range(3):
            chunk = f"data: {i}\n\n".encode()
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
            time.sleep(0.02)
        self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_PUT = do_DELETE = _record

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def recorder(
    host: str = "127.0.0.1", answers: list[Answer] | None = None
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A recording gateway on a free port; it answers with `answers` (taken in order) while there are any."""
    server = ThreadingHTTPServer((host, 0), Recorder)
    server.seen = []  # type: ignore[attr-defined]
    server.answers = answers if answers is not None else []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{host}:{server.server_address[1]}", server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def gateway() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    with recorder() as (address, seen):
        yield f"http://{address}", seen


@pytest.fixture
def elsewhere() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A host a hostile sandbox would like the real key to reach."""
    with recorder("127.0.0.3") as recorded:
        yield recorded


@pytest.fixture
def keys() -> StubKeys:
    return StubKeys(b"k" * 32)


class Scopes:
    """The sessions the proxy knows: id -> scope (None: deleted)."""

    def __init__(self) -> None:
        self.scopes: dict[str, LLMScope | None] = {
            "ses_1": LLMScope(generation=1, models=(MODEL,)),
            "ses_2": LLMScope(generation=1, models=("other-model",)),
        }
        self.down = False

    async def __call__(self, session_id: str) -> LLMScope | None:
        if self.down:
            raise StoreError("the database is down")
        return self.scopes.get(session_id)


@contextmanager
def forwarder(target: str | tuple[str, int], identity: str) -> Iterator[str]:
    """sandboxd's egress forwarder on a free loopback port; yields its base URL."""
    server = EgressServer(("127.0.0.1", 0), target)
    server.set_route([], identity)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def quiet(proxy: LLMProxy) -> None:
    """Wait until no connection is open on the proxy.

    Cancelled while a connection is mid-read, anyio's unix sockets trip over a benign race (a
    reader callback firing on a cancelled future): cancel a proxy only once nothing talks to it.
    """
    with anyio.fail_after(5):
        while proxy._open or proxy._unidentified:
            await anyio.sleep(0.02)
    await wait_all_tasks_blocked()


class Running:
    def __init__(self, proxy: LLMProxy, socket_path: Path, keys: StubKeys) -> None:
        self.proxy, self.socket_path, self.keys = proxy, socket_path, keys

    @contextmanager
    def sandbox(self, session_id: str = "ses_1", generation: int = 1) -> Iterator[str]:
        """The base URL of a sandbox's forwarder (its identity: `session_id`, `generation`)."""
        with forwarder(str(self.socket_path), self.keys.identity(session_id, generation)) as url:
            yield url

    def stub(self, session_id: str = "ses_1", generation: int = 1) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys.issue(session_id, generation)}"}


@asynccontextmanager
async def running_proxy(
    tmp_path: Path, upstream: str, keys: StubKeys, scopes: Scopes, **kwargs: Any
) -> AsyncIterator[Running]:
    socket_path = tmp_path / "llm.sock"
    proxy = LLMProxy(socket_path=socket_path, upstream=upstream, api_key=REAL, keys=keys, scope_of=scopes, **kwargs)
    async with anyio.create_task_group() as tasks:
        await tasks.start(proxy.serve)
        with anyio.fail_after(5):
            while not socket_path.exists():
                await anyio.sleep(0.01)
        yield Running(proxy, socket_path, keys)
        await quiet(proxy)
        tasks.cancel_scope.cancel()


@pytest.fixture
def scopes() -> Scopes:
    return Scopes()


@pytest.fixture
async def proxy(
    tmp_path: Path, gateway: tuple[str, list[dict[str, Any]]], keys: StubKeys, scopes: Scopes
) -> AsyncIterator[Running]:
    async with running_proxy(tmp_path, gateway[0] + "/base", keys, scopes) as running:
        yield running


def raw(url: str, request: bytes) -> bytes:
    """Send raw bytes to a forwarder; return everything it answers until it closes or 2 s pass."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=2) as conn:
        conn.sendall(request)
        answer = b""
        try:
            while data := conn.recv(65536):
                answer += data
                if b"\r\n\r\n" in answer and b'"error"' in answer:
                    break
        except TimeoutError:
            pass
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])
