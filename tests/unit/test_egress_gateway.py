"""The egress gateway, as a sandbox reaches it: sandboxd's forwarder (identity, service `egress`), real
HTTP clients, real HTTPS servers on loopback under names the gateway's resolver pins."""

from __future__ import annotations

import base64
import socket
import ssl
import threading
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest

from lap_core import EgressDenied, EgressPolicy
from lap_core._egress.certificates import Authority
from lap_core._egress.gateway import EgressGateway, EgressScope
from lap_core._egress.relay import BoundSecret
from lap_core._egress.resolver import Resolver
from lap_core._vault import LLMProxy, LLMScope, StubKeys
from lap_sandboxd.egress import EgressServer
from tests.unit.vault_support import quiet

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from lap_core import SessionEvent

pytestmark = pytest.mark.anyio
STUB, TOKEN = "lapsec_stubstubstubstubstubstubstubstu", "ghp_the-real-token-value"


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.seen.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})  # type: ignore[attr-defined]
        body = f"hello from {self.headers['host']}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Echo(_Recorder):
    """Answers with what it got: its credentials and target in a header and in the body."""

    def do_GET(self) -> None:
        self.server.seen.append({"path": self.path, "headers": dict(self.headers)})  # type: ignore[attr-defined]
        echoed = f"{self.headers.get('authorization')} {self.path}"
        body = f"you sent: {echoed}".encode() * 3
        self.send_response(200)
        self.send_header("x-echo", echoed)
        self.send_header("content-length", str(len(body)))
        if "gzip" in self.path:
            self.send_header("content-encoding", "gzip")
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def _server(
    context: ssl.SSLContext | None, handler: type[BaseHTTPRequestHandler] = _Recorder
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.seen = []  # type: ignore[attr-defined]
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


class World:
    """The internet as the tests see it: HTTPS at git.test and other.test, plain HTTP at plain.test."""

    def __init__(self, tmp: Path) -> None:
        self.ca = Authority.load(tmp / "internet")  # the CA the real hosts' certificates come from
        self.ca_file = tmp / "internet-ca.pem"
        self.ca_file.write_bytes(self.ca.cert_pem)

    def context(self, host: str) -> ssl.SSLContext:
        context = self.ca.context_for(host)
        context.set_alpn_protocols(["http/1.1"])
        return context


class Setup:
    def __init__(self, proxy: LLMProxy, gateway: EgressGateway, keys: StubKeys, lap_ca: Path) -> None:
        self.proxy, self.gateway, self.keys, self.lap_ca = proxy, gateway, keys, lap_ca
        self.scope = EgressScope(generation=1, policy=EgressPolicy(), team_id="team_a")
        self.notes: list[tuple[str, SessionEvent]] = []

    @contextmanager
    def sandbox(self) -> Iterator[str]:
        """The URL of a sandbox's egress forwarder (what HTTP(S)_PROXY says inside)."""
        server = EgressServer(("127.0.0.1", 0), str(self.proxy.socket_path))
        server.set_route([], self.keys.identity("ses_1", 1), "egress")
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()

    def client(self, proxy_url: str) -> httpx.AsyncClient:
        verify = ssl.create_default_context(cafile=str(self.lap_ca))
        verify.load_verify_locations(cafile=str(self.lap_ca.parent / "internet-ca.pem"))
        return httpx.AsyncClient(proxy=proxy_url, verify=verify, timeout=10)


@asynccontextmanager
async def _setup(tmp_path: Path) -> AsyncIterator[tuple[Setup, World]]:
    world = World(tmp_path)
    keys = StubKeys(b"k" * 32)
    authority = Authority.load(tmp_path / "lap")
    lap_ca = tmp_path / "lap-ca.pem"
    lap_ca.write_bytes(authority.cert_pem)
    resolver = Resolver({"git.test": ("127.0.0.1",), "other.test": ("127.0.0.1",), "plain.test": ("127.0.0.1",)})
    holder: list[Setup] = []

    async def scope_of(session_id: str) -> EgressScope | None:
        return holder[0].scope if session_id == "ses_1" else None

    async def note(session_id: str, event: SessionEvent) -> None:
        holder[0].notes.append((session_id, event))

    async def llm_scope(session_id: str) -> LLMScope | None:
        return None

    gateway = EgressGateway(
        authority=authority,
        resolver=resolver,
        scope_of=scope_of,
        note=note,
        upstream_tls=ssl.create_default_context(cafile=str(world.ca_file)),
        scope_ttl=0,  # the tests change scopes between requests
    )
    proxy = LLMProxy(
        socket_path=tmp_path / "llm.sock",
        upstream="http://127.0.0.1:9",
        api_key="k",
        keys=keys,
        scope_of=llm_scope,
        egress=gateway,
    )
    holder.append(Setup(proxy, gateway, keys, lap_ca))
    async with anyio.create_task_group() as tasks:
        await tasks.start(proxy.serve)
        with anyio.fail_after(5):
            while not proxy.socket_path.exists():
                await anyio.sleep(0.01)
        yield holder[0], world
        await quiet(proxy)
        tasks.cancel_scope.cancel()


def _policy(*allow: str, deny: tuple[str, ...] = ()) -> EgressPolicy:
    return EgressPolicy(allow=list(allow), deny=list(deny))


async def test_an_allowed_host_is_a_plain_tunnel_to_the_real_server(tmp_path: Path) -> None:
    async with _setup(tmp_path) as (setup, world):
        setup.scope = EgressScope(generation=1, policy=_policy("git.test"), team_id="team_a")
        with _server(world.context("git.test")) as (port, seen), setup.sandbox() as proxy_url:
            async with setup.client(proxy_url) as client:
                response = await client.get(f"https://git.test:{port}/repo.git/info/refs")
    assert response.status_code == 200
    assert response.text == f"hello from git.test:{port}"
    assert seen[0]["path"] == "/repo.git/info/refs"
    assert setup.gateway.decisions == {("allowed", "team_a"): 1}
    assert setup.notes == []


async def test_a_host_the_policy_does_not_allow_is_a_403_and_an_event(tmp_path: Path) -> None:
    async with _setup(tmp_path) as (setup, world):
        setup.scope = EgressScope(generation=1, policy=_policy("git.test"), team_id="team_a")
        with _server(world.context("other.test")) as (port, seen), setup.sandbox() as proxy_url:
            async with setup.client(proxy_url) as client:
                with pytest.raises(httpx.ProxyError, match="403"):
                    await client.get(f"https://other.test:{port}/")
                with pytest.raises(httpx.ProxyError, match="403"):
                    await client.get(f"https://other.test:{port}/again")  # noted once a minute
                # An IP literal is no way around a name rule.
                with pytest.raises(httpx.ProxyError, match="403"):
                    await client.get(f"https://127.0.0.1:{port}/")
    assert seen == []
    assert [event for _, event in setup.notes] == [
        EgressDenied(host="other.test", port=port, reason=f"other.test:{port} is not in the agent's egress allow list"),
        EgressDenied(host="127.0.0.1", port=port, reason=f"127.0.0.1:{port} is not in the agent's egress allow list"),
    ]
    assert setup.gateway.decisions == {("denied", "team_a"): 3}


async def test_a_wildcard_opens_no_private_address_and_a_deny_rule_wins(tmp_path: Path) -> None:
    async with _setup(tmp_path) as (setup, world):
        with _server(world.context("git.test")) as (port, seen), setup.sandbox() as proxy_url:
            async with setup.client(proxy_url) as client:
                setup.scope = EgressScope(generation=1, policy=_policy("*.test"))
                with pytest.raises(httpx.ProxyError, match="403"):
                    await client.get(f"https://git.test:{port}/")  # git.test is 127.0.0.1: not public
                setup.scope = EgressScope(generation=1, policy=_policy("git.test", deny=("git.test",)))
                with pytest.raises(httpx.ProxyError, match="403"):
                    await client.get(f"https://git.test:{port}/")
                setup.scope = EgressScope(generation=2, policy=_policy("git.test"))  # the sandbox was replaced
                with pytest.raises(httpx.ProxyError, match="403"):
                    await client.get(f"https://git.test:{port}/")
    assert seen == []
    assert "non-public address" in setup.notes[0][1].reason  # type: ignore[union-attr]


async def test_a_tunnel_that_asks_for_another_host_inside_is_closed(tmp_path: Path) -> None:
    async with _setup(tmp_path) as (setup, world):
        setup.scope = EgressScope(generation=1, policy=_policy("git.test"))
        with _server(world.context("other.test")) as (port, seen), setup.sandbox() as proxy_url:
            host, proxy_port = proxy_url.removeprefix("http://").split(":")

            def fronted() -> str:
                with socket.create_connection((host, int(proxy_port)), timeout=5) as raw:
                    raw.sendall(f"CONNECT git.test:{port} HTTP/1.1\r\nHost: git.test:{port}\r\n\r\n".encode())
                    assert raw.recv(4096).startswith(b"HTTP/1.1 200")
                    context = ssl.create_default_context(cafile=str(world.ca_file))
                    try:
                        with context.wrap_socket(raw, server_hostname="other.test") as tls:
                            tls.sendall(b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n")
                            return tls.recv(4096).decode()
                    except (ssl.SSLError, OSError) as error:
                        return f"closed: {error}"

            answer = await anyio.to_thread.run_sync(fronted)
    assert answer.startswith("closed")
    assert seen == []


async def test_stubs_become_secrets_toward_their_hosts_only(tmp_path: Path) -> None:
    async with _setup(tmp_path) as (setup, world):
        secret = BoundSecret(name="GITHUB_TOKEN", stub=STUB, value=TOKEN, hosts=("git.test",))
        setup.scope = EgressScope(generation=1, policy=_policy("git.test", "other.test"), secrets=(secret,))
        basic = base64.b64encode(f"x-access-token:{STUB}".encode()).decode()
        with (
            _server(world.context("git.test")) as (git_port, git_seen),
            _server(world.context("other.test")) as (other_port, other_seen),
            setup.sandbox() as proxy_url,
        ):
            async with setup.client(proxy_url) as client:
                bearer = await client.get(f"https://git.test:{git_port}/a", headers={"Authorization": f"Bearer {STUB}"})
                basic_auth = await client.get(
                    f"https://git.test:{git_port}/b", headers={"Authorization": f"Basic {basic}"}
                )
                in_query = await client.get(f"https://git.test:{git_port}/c?access_token={STUB}")
                elsewhere = await client.get(
                    f"https://other.test:{other_port}/d", headers={"Authorization": f"Bearer {STUB}"}
                )
                wrong_host = await client.get(f"https://git.test:{git_port}/e", headers={"Host": "other.test"})
    assert [r.status_code for r in (bearer, basic_auth, in_query, elsewhere)] == [200, 200, 200, 200]
    assert git_seen[0]["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert base64.b64decode(git_seen[1]["headers"]["authorization"][6:]).decode() == f"x-access-token:{TOKEN}"
    assert git_seen[2]["path"] == f"/c?access_token={TOKEN}"
    # Toward a host the secret is not bound to, the stub goes out as it is.
    assert other_seen[0]["headers"]["authorization"] == f"Bearer {STUB}"
    assert wrong_host.status_code == 421
    assert len(git_seen) == 3


async def test_a_scope_is_asked_for_at_most_every_few_seconds(tmp_path: Path) -> None:
    async with _setup(tmp_path) as (setup, world):
        asked: list[str] = []
        gateway = setup.gateway
        original = gateway._scope_of

        async def counting(session_id: str) -> EgressScope | None:
            asked.append(session_id)
            return await original(session_id)

        gateway._scope_of, gateway._scope_ttl = counting, 60
        setup.scope = EgressScope(generation=1, policy=_policy("git.test"))
        with _server(world.context("git.test")) as (port, _), setup.sandbox() as proxy_url:
            async with setup.client(proxy_url) as client:
                for _ in range(3):
                    response = await client.get(f"https://git.test:{port}/", headers={"Connection": "close"})
                    assert response.status_code == 200
    assert asked == ["ses_1"]


async def test_plain_http_is_checked_and_never_carries_a_secret(tmp_path: Path) -> None:
    async with _setup(tmp_path) as (setup, _):
        secret = BoundSecret(name="TOKEN", stub=STUB, value=TOKEN, hosts=("plain.test",))
        setup.scope = EgressScope(generation=1, policy=_policy("plain.test"), secrets=(secret,))
        with _server(None) as (port, seen), setup.sandbox() as proxy_url:
            async with httpx.AsyncClient(proxy=proxy_url, timeout=10) as client:
                ok = await client.get(f"http://plain.test:{port}/x", headers={"Authorization": f"Bearer {STUB}"})
                denied = await client.get(f"http://other.test:{port}/y")
    assert ok.status_code == 200
    assert seen[0]["path"] == "/x"
    assert seen[0]["headers"]["authorization"] == f"Bearer {STUB}"  # no secret in clear text
    assert denied.status_code == 403
    assert "not in the agent's egress allow list" in denied.text


async def test_a_host_that_echoes_its_request_hands_back_the_stub_never_the_value(tmp_path: Path) -> None:
    async with _setup(tmp_path) as (setup, world):
        secret = BoundSecret(name="GITHUB_TOKEN", stub=STUB, value=TOKEN, hosts=("git.test",))
        setup.scope = EgressScope(generation=1, policy=_policy("git.test"), secrets=(secret,))
        with _server(world.context("git.test"), _Echo) as (port, seen), setup.sandbox() as proxy_url:
            async with setup.client(proxy_url) as client:
                echoed = await client.get(f"https://git.test:{port}/anything?q={STUB}", headers={"Authorization": STUB})
                compressed = await client.get(f"https://git.test:{port}/gzip", headers={"Authorization": STUB})
    assert seen[0]["headers"]["authorization"] == TOKEN  # the host got the value
    assert seen[0]["headers"]["accept-encoding"] == "identity"  # asked for an answer it can read
    assert TOKEN not in echoed.text
    assert TOKEN not in echoed.headers["x-echo"]
    assert echoed.text == f"you sent: {STUB} /anything?q={STUB}" * 3
    assert compressed.status_code == 502  # an answer it cannot read goes nowhere


async def test_a_host_whose_certificate_does_not_prove_it_gets_no_request(tmp_path: Path) -> None:
    async with _setup(tmp_path) as (setup, world):
        secret = BoundSecret(name="GITHUB_TOKEN", stub=STUB, value=TOKEN, hosts=("git.test",))
        setup.scope = EgressScope(generation=1, policy=_policy("git.test"), secrets=(secret,))
        with _server(world.context("other.test")) as (port, seen), setup.sandbox() as proxy_url:
            async with setup.client(proxy_url) as client:
                response = await client.get(f"https://git.test:{port}/", headers={"Authorization": STUB})
    assert response.status_code == 502
    assert "certificate" in response.text.lower()
    assert seen == []
