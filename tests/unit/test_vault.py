"""The LLM proxy: sandboxes in through sandboxd's forwarder, stub keys in, the real key out to the gateway only.

The requests come the way a sandbox's do: through sandboxd's real egress forwarder, which opens
each connection with the sandbox's identity.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest

from lap_core._vault import LLMScope, SandboxGrant, StubKeys
from tests.unit.vault_support import (
    MODEL,
    REAL,
    Running,
    Scopes,
    forwarder,
    raw,
    status_of,
)

if TYPE_CHECKING:
    from tests.unit.vault_support import Recorded

pytestmark = pytest.mark.anyio


def test_stub_keys_and_identities_name_a_session_and_generation_and_cannot_be_forged(keys: StubKeys) -> None:
    stub = keys.issue("ses_abc", 3)
    assert keys.verify(stub) == SandboxGrant("ses_abc", 3)
    assert keys.issue("ses_abc", 3) == stub != keys.issue("ses_abc", 4)
    assert keys.verify(stub.replace("ses_abc", "ses_other")) is None
    assert keys.verify(stub.replace(".3.", ".4.")) is None
    assert keys.verify(StubKeys(b"x" * 32).issue("ses_abc", 3)) is None
    assert keys.verify(REAL) is None
    assert keys.verify("") is None
    # A stub is not an identity, nor the other way round: the agent knows its stub.
    identity = keys.identity("ses_abc", 3)
    assert keys.verify_identity(identity) == SandboxGrant("ses_abc", 3)
    assert keys.verify_identity(stub) is None
    assert keys.verify(identity) is None
    assert keys.verify_identity(stub.replace("lapsk", "lapid")) is None


async def test_model_requests_go_to_the_gateway_with_the_real_key_and_stream_back(
    proxy: Running, gateway: Recorded
) -> None:
    with proxy.sandbox() as url:
        async with httpx.AsyncClient(base_url=url) as client:
            async with client.stream(
                "POST", "/v1/chat/completions", json={"model": MODEL}, headers={**proxy.stub(), "Cookie": "c=1"}
            ) as response:
                chunks = [chunk async for chunk in response.aiter_text()]
            assert response.status_code == 200
            assert "".join(chunks) == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
            anthropic = await client.post(
                "/v1/messages?beta=true", json={"model": MODEL}, headers={"x-api-key": proxy.keys.issue("ses_1", 1)}
            )
            assert anthropic.status_code == 200
    first, second = gateway[1]
    assert first["path"] == "/base/v1/chat/completions"
    assert first["headers"]["authorization"] == f"Bearer {REAL}"
    assert "cookie" not in first["headers"]
    assert json.loads(first["body"]) == {"model": MODEL}
    assert second["path"] == "/base/v1/messages?beta=true"
    assert second["headers"]["x-api-key"] == REAL
    assert proxy.keys.issue("ses_1", 1) not in json.dumps([first["headers"], second["headers"]])


@pytest.mark.parametrize(
    "target",
    [
        b"@127.0.0.3:{port}/echo",
        b"http://127.0.0.3:{port}/v1/chat/completions",
        b"127.0.0.3:{port}",
        b"//127.0.0.3:{port}/v1/chat/completions",
        b"/v1/../../echo",
        b"/v1/./chat/completions",
        b"/v1/%2e%2e/echo",
        b"/v1/chat/completions@127.0.0.3:{port}",
        b"/v1\\chat\\completions",
        b"/v1/chat//completions",
        b"*",
        b"/v1/chat/completions?x=@127.0.0.3:{port}",
    ],
)
async def test_a_target_that_is_not_a_plain_path_is_a_400_and_goes_nowhere(
    proxy: Running,
    gateway: Recorded,
    elsewhere: Recorded,
    target: bytes,
) -> None:
    port = elsewhere[0].split(":")[1].encode()
    stub = proxy.keys.issue("ses_1", 1).encode()
    request = b"POST " + target.replace(b"{port}", port) + b" HTTP/1.1\r\nHost: x\r\nx-api-key: " + stub
    request += b"\r\nContent-Length: 20\r\n\r\n" + b'{"model":"fake-mod"}'
    with proxy.sandbox() as url:
        answer = await anyio.to_thread.run_sync(raw, url, request)
    assert status_of(answer) == 400, answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "bad_request"
    assert gateway[1] == []
    assert elsewhere[1] == []


async def test_connect_and_control_bytes_are_refused(proxy: Running, gateway: Recorded) -> None:
    stub = proxy.keys.issue("ses_1", 1).encode()
    with proxy.sandbox() as url:
        connect = await anyio.to_thread.run_sync(
            raw, url, b"CONNECT 127.0.0.3:443 HTTP/1.1\r\nHost: 127.0.0.3:443\r\nx-api-key: " + stub + b"\r\n\r\n"
        )
        control = await anyio.to_thread.run_sync(
            raw, url, b"POST /v1/chat\x01/completions HTTP/1.1\r\nHost: x\r\nx-api-key: " + stub + b"\r\n\r\n"
        )
    assert status_of(connect) == 400
    assert status_of(control) == 400
    assert gateway[1] == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/key/generate"),
        ("POST", "/user/new"),
        ("GET", "/spend/logs"),
        ("GET", "/health"),
        ("POST", "/v1/embeddings"),
        ("GET", "/"),
        ("DELETE", "/v1/chat/completions"),
        ("POST", "/v1/chat/completions?api_key=x"),
    ],
)
async def test_a_stub_opens_only_the_model_routes(proxy: Running, gateway: Recorded, method: str, path: str) -> None:
    with proxy.sandbox() as url:
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.request(method, path, json={"model": MODEL}, headers=proxy.stub())
    assert response.status_code == 403
    assert set(response.json()["error"]) >= {"code", "message", "type", "details"}
    assert gateway[1] == []


async def test_a_stub_opens_only_its_agents_model(proxy: Running, gateway: Recorded) -> None:
    with proxy.sandbox() as url:
        async with httpx.AsyncClient(base_url=url) as client:
            other = await client.post("/v1/responses", json={"model": "gpt-5-expensive"}, headers=proxy.stub())
            # The gateway reads the last of repeated keys: so does the proxy.
            sneaky = await client.post(
                "/v1/responses",
                content=b'{"model": "fake-model", "model": "gpt-5-expensive"}',
                headers={**proxy.stub(), "content-type": "application/json"},
            )
            none = await client.post("/v1/responses", json={"input": "hi"}, headers=proxy.stub())
            garbage = await client.post("/v1/responses", content=b'{"model": "fake-model"', headers=proxy.stub())
            deep = await client.post("/v1/responses", content=b"[" * 100_000 + b"]" * 100_000, headers=proxy.stub())
            models = await client.get("/v1/models", headers=proxy.stub())
    assert (other.status_code, sneaky.status_code) == (403, 403)
    assert (none.status_code, garbage.status_code, deep.status_code) == (400, 400, 400)
    assert [model["id"] for model in models.json()["data"]] == [MODEL]
    assert gateway[1] == []


async def test_a_stub_works_only_from_its_own_live_sandbox(proxy: Running, gateway: Recorded, scopes: Scopes) -> None:
    body = {"model": MODEL}
    with proxy.sandbox() as url:
        async with httpx.AsyncClient(base_url=url) as client:
            # another live session's stub, from this sandbox
            foreign = await client.post("/v1/responses", json=body, headers=proxy.stub("ses_2"))
            no_key = await client.post("/v1/responses", json=body)
            bad_key = await client.post("/v1/responses", json=body, headers={"x-api-key": "lapsk.ses_1.1.forged"})
            scopes.scopes["ses_1"] = LLMScope(generation=2, models=(MODEL,))  # the sandbox was replaced
            replaced = await client.post("/v1/responses", json=body, headers=proxy.stub())
            scopes.scopes["ses_1"] = None  # the session was deleted
            deleted = await client.post("/v1/responses", json=body, headers=proxy.stub())
            scopes.down = True
            store_down = await client.post("/v1/responses", json=body, headers=proxy.stub())
    assert foreign.status_code == 403
    assert (no_key.status_code, bad_key.status_code) == (401, 401)
    assert (replaced.status_code, deleted.status_code) == (403, 403)
    assert replaced.json()["error"]["code"] == "revoked"
    assert store_down.status_code == 503
    assert gateway[1] == []


async def test_a_connection_that_bypasses_the_forwarder_is_refused(proxy: Running, gateway: Recorded) -> None:
    transport = httpx.AsyncHTTPTransport(uds=str(proxy.socket_path))
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
        direct = await client.post("/v1/chat/completions", json={"model": MODEL}, headers=proxy.stub())
    # The agent knows its stub; an identity made from it, or a forged one, is no identity.
    with forwarder(str(proxy.socket_path), proxy.keys.issue("ses_1", 1)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            forged = await client.post("/v1/chat/completions", json={"model": MODEL}, headers=proxy.stub())
    assert (direct.status_code, forged.status_code) == (403, 403)
    assert direct.json()["error"]["code"] == "not_a_sandbox"
    assert gateway[1] == []
