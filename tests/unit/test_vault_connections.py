"""The LLM proxy's connections: per-sandbox limits, spooled bodies, its own socket, takeover, TCP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest
from anyio import wait_all_tasks_blocked

from lap_core._vault import LLMProxy, StubKeys
from lap_core._vault.proxy import MAX_BODY, MAX_CONNECTIONS_PER_SANDBOX
from lap_sandboxd.egress import EgressServer
from tests.unit.vault_support import (
    MODEL,
    REAL,
    Running,
    Scopes,
    forwarder,
    quiet,
    raw,
    running_proxy,
    status_of,
)

if TYPE_CHECKING:
    from pathlib import Path

    from tests.unit.vault_support import Recorded

pytestmark = pytest.mark.anyio


async def test_a_sandbox_holds_a_bounded_number_of_connections(proxy: Running) -> None:
    held = []
    with proxy.sandbox() as url:
        host, port = url.removeprefix("http://").split(":")
        try:
            for _ in range(MAX_CONNECTIONS_PER_SANDBOX):
                held.append(socket.create_connection((host, int(port)), timeout=5))
            await anyio.sleep(0.3)
            answer = await anyio.to_thread.run_sync(raw, url, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status_of(answer) == 429
            # another sandbox is not affected
            with proxy.sandbox("ses_2") as other:
                async with httpx.AsyncClient(base_url=other) as client:
                    response = await client.get("/v1/models", headers=proxy.stub("ses_2"))
            assert response.status_code == 200
        finally:
            for conn in held:
                conn.close()


async def test_large_bodies_are_spooled_and_forwarded_whole_and_too_large_ones_refused(
    proxy: Running, gateway: Recorded
) -> None:
    big = {"model": MODEL, "input": "x" * (5 * 1024 * 1024)}
    with proxy.sandbox() as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            ok = await client.post("/v1/responses", json=big, headers=proxy.stub())
            too_big = await client.post(
                "/v1/responses", content=b'{"input": "' + b"x" * MAX_BODY + b'"}', headers=proxy.stub()
            )
            broken = await client.post(
                "/v1/responses", content=b'{"model": "fake-model", "input": "' + b"x" * 2_000_000, headers=proxy.stub()
            )
    assert ok.status_code == 200
    assert json.loads(gateway[1][0]["body"]) == big
    assert (broken.status_code, broken.json()["error"]["code"]) == (400, "invalid_body")
    assert too_big.status_code == 413
    assert len(gateway[1]) == 1


async def test_a_gateway_that_is_down_is_a_clear_502(tmp_path: Path, keys: StubKeys, scopes: Scopes) -> None:
    async with running_proxy(tmp_path, "http://127.0.0.1:9", keys, scopes) as running:
        with running.sandbox() as url:
            async with httpx.AsyncClient(base_url=url) as client:
                response = await client.post("/v1/responses", json={"model": MODEL}, headers=running.stub())
    assert response.status_code == 502
    assert "unreachable" in response.json()["error"]["message"]


def _pid_of_a_finished_process() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


async def test_each_process_serves_its_own_socket_and_clears_dead_ones(
    tmp_path: Path, gateway: Recorded, keys: StubKeys, scopes: Scopes
) -> None:
    stale = tmp_path / f"{_pid_of_a_finished_process()}-dead.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(stale))  # bound, never listening: what a killed process leaves
    starting = tmp_path / f"{os.getpid()}-starting.sock"
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(str(starting))  # a live process's, bound a moment ago and not listening yet
    own = tmp_path / "456-own.sock"
    async with running_proxy(tmp_path, gateway[0], keys, scopes, own_socket=own) as running:
        assert not stale.exists()
        assert starting.exists()  # never taken for a dead one's (CI saw a worker lose it and die)
        with forwarder(str(own), keys.identity("ses_1", 1)) as url:
            async with httpx.AsyncClient(base_url=url) as client:
                response = await client.post("/v1/responses", json={"model": MODEL}, headers=running.stub())
        assert response.status_code == 200
    assert not own.exists()


async def test_the_forwarder_prefers_the_turns_process_and_falls_back_to_the_shared_socket(
    tmp_path: Path, gateway: Recorded, keys: StubKeys, scopes: Scopes
) -> None:
    async with running_proxy(tmp_path, gateway[0], keys, scopes) as running:
        server = EgressServer(("127.0.0.1", 0), str(running.socket_path))
        server.set_route([str(tmp_path / "gone.sock")], keys.identity("ses_1", 1))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.server_address[1]}") as client:
                response = await client.post("/v1/responses", json={"model": MODEL}, headers=running.stub())
        finally:
            server.shutdown()
            server.server_close()
    assert response.status_code == 200


async def test_a_second_proxy_takes_the_shared_socket_over_when_the_first_one_stops(
    tmp_path: Path, gateway: Recorded, keys: StubKeys, scopes: Scopes
) -> None:
    path = tmp_path / "llm.sock"
    first = LLMProxy(socket_path=path, upstream=gateway[0], api_key="first-key", keys=keys, scope_of=scopes)
    second = LLMProxy(socket_path=path, upstream=gateway[0], api_key="second-key", keys=keys, scope_of=scopes)
    headers = {"Authorization": f"Bearer {keys.issue('ses_1', 1)}"}

    async def ask(url: str) -> str:
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.post("/v1/chat/completions", json={"model": MODEL}, headers=headers)
            assert response.status_code == 200
        await wait_all_tasks_blocked()
        return str(gateway[1][-1]["headers"]["authorization"])

    with forwarder(str(path), keys.identity("ses_1", 1)) as url:
        async with anyio.create_task_group() as outer:
            first_scope, first_done = anyio.CancelScope(), anyio.Event()

            async def run_first() -> None:
                with first_scope:
                    await first.serve()
                first_done.set()

            outer.start_soon(run_first)
            with anyio.fail_after(5):
                while not path.exists():
                    await anyio.sleep(0.01)
            await outer.start(second.serve)  # it waits: the first one holds the socket
            assert await ask(url) == "Bearer first-key"
            await quiet(first)
            first_scope.cancel()
            await first_done.wait()
            with anyio.fail_after(5):
                while True:
                    try:
                        if await ask(url) == "Bearer second-key":
                            break
                    except (httpx.HTTPError, AssertionError):  # not taken over yet
                        await anyio.sleep(0.1)
            await quiet(second)
            outer.cancel_scope.cancel()


async def test_the_proxy_also_serves_tcp_for_sandboxes_elsewhere(
    tmp_path: Path, gateway: Recorded, keys: StubKeys, scopes: Scopes
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with running_proxy(tmp_path, gateway[0], keys, scopes, listen=("127.0.0.1", port)) as running:
        with forwarder(("127.0.0.1", port), keys.identity("ses_1", 1)) as url:
            async with httpx.AsyncClient(base_url=url) as client:
                allowed = await client.post("/v1/chat/completions", json={"model": MODEL}, headers=running.stub())
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            direct = await client.post("/v1/chat/completions", json={"model": MODEL}, headers=running.stub())
    assert allowed.status_code == 200
    assert direct.status_code == 403
    assert gateway[1][0]["headers"]["authorization"] == f"Bearer {REAL}"
