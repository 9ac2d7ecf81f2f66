"""The egress gateway: the one way from a sandbox to the network, where policy and secrets apply.

Sandboxes reach it as an HTTP proxy at `http://127.0.0.1:3128` (sandboxd's forwarder, which opens
each connection with the sandbox's identity; the LLM proxy's sockets carry both, see
`lap_core._vault.proxy`). For each request:

1. `CONNECT host:port` (HTTPS, and anything over TLS) or a plain-HTTP request in absolute form;
   anything else is a 400.
2. The gateway resolves the host itself and asks the session's policy (`lap_core._egress_policy`): denied,
   the answer is a 403 saying why, the session gets an `egress_denied` event, and the decision is
   logged and counted. The connection goes to the very address that was checked.
3. Inside a tunnel, the TLS ClientHello must ask for the CONNECT host (SNI), else it is closed.
4. A session without secrets gets a plain tunnel. A session with secrets gets its HTTPS terminated
   with a certificate of the deployment's CA (`certificates`), so that their stubs can be swapped
   for their values toward their bound hosts (`relay`); the upstream's certificate is verified.
"""

from __future__ import annotations

import ssl
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio
import h11
import msgspec
import structlog
from anyio.streams.tls import TLSStream

from lap_core._egress.relay import BoundSecret, Swapped, relay
from lap_core._egress.sni import MAX_HELLO, ClientHelloError, client_hello_length, server_name
from lap_core._egress.streams import GONE, Prefixed, splice
from lap_core._egress_policy import EgressPolicy, check_rule
from lap_core._errors import StoreError
from lap_core._events import EgressDenied

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.abc import ByteStream, SocketStream

    from lap_core._egress.certificates import Authority
    from lap_core._egress.resolver import Resolver
    from lap_core._events import SessionEvent
    from lap_core._vault.keys import SandboxGrant

log = structlog.get_logger("lap.egress")

HELLO_TIMEOUT = 10.0
SCOPE_TTL = 2.0
"""Seconds a sandbox's scope (policy, secrets) is kept: a package manager opens many connections at
once, each would ask the store; a changed policy applies within this long (a new sandbox at once)."""
CONNECT_TIMEOUT = 10.0
NOTE_EVERY = 60.0
"""Seconds between two `egress_denied` events of a session for the same destination."""


class EgressScope(msgspec.Struct, frozen=True, kw_only=True):
    """What a session's sandbox may reach now: its generation, its policy, its secrets."""

    generation: int
    policy: EgressPolicy
    secrets: tuple[BoundSecret, ...] = ()
    team_id: str = ""
    agent_id: str = ""


class _Denied(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def _target(value: bytes) -> tuple[str, int] | None:
    """Parse `host:port` (IPv6 in brackets) of a CONNECT or an absolute-form URL's authority."""
    text = value.decode("ascii", "replace").lower()
    host, _, port = text.rpartition(":") if not text.endswith("]") else (text, "", "")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or check_rule(host) is not None:
        return None
    return host, int(port)


class EgressGateway:
    """Serves sandboxes' outbound connections (see the module docs)."""

    def __init__(
        self,
        *,
        authority: Authority,
        resolver: Resolver,
        scope_of: Callable[[str], Awaitable[EgressScope | None]],
        note: Callable[[str, SessionEvent], Awaitable[None]],
        upstream_tls: ssl.SSLContext | None = None,
        scope_ttl: float = SCOPE_TTL,
    ) -> None:
        self._authority = authority
        self._scope_ttl = scope_ttl
        self._resolver = resolver
        self._scope_of = scope_of
        self._note = note
        self._upstream_tls = upstream_tls or ssl.create_default_context()
        self.decisions: Counter[tuple[str, str]] = Counter()  # (allowed|denied, team) -> count
        self._noted: dict[tuple[str, str, int], float] = {}
        self._scopes: dict[tuple[str, int], tuple[float, EgressScope | None]] = {}

    async def handle(self, stream: SocketStream, grant: SandboxGrant, rest: bytes) -> None:
        """Serve one connection of a sandbox (its identity checked, `rest`: bytes already read)."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        if rest:
            conn.receive_data(rest)
        try:
            request = await self._request(conn, stream)
        except (TimeoutError, h11.RemoteProtocolError):
            return
        if request is None:
            return
        try:
            scope = await self._scope(grant)
            if request.method == b"CONNECT":
                destination = _target(request.target)
                if destination is None:
                    raise _Denied(400, "CONNECT needs host:port")
                await self._connect(conn, stream, grant, scope, *destination)
            elif request.target.lower().startswith(b"http://"):
                authority = request.target[7:].split(b"/", 1)[0]
                destination = _target(authority if b":" in authority.strip(b"[]") else authority + b":80")
                if destination is None:
                    raise _Denied(400, "not a URL this proxy can follow")
                await self._plain(conn, stream, grant, scope, request, *destination)
            else:
                raise _Denied(400, "this is an HTTP proxy: send CONNECT host:port, or an absolute http:// URL")
        except _Denied as denied:
            await self._answer(conn, stream, denied.status, denied.reason)
        except GONE:
            pass

    async def _request(self, conn: h11.Connection, stream: SocketStream) -> h11.Request | None:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                return event
            if event is not h11.NEED_DATA:
                return None
            with anyio.fail_after(HELLO_TIMEOUT):
                try:
                    conn.receive_data(await stream.receive(65536))
                except anyio.EndOfStream:
                    conn.receive_data(b"")

    async def _scope(self, grant: SandboxGrant) -> EgressScope:
        now = time.monotonic()
        key = (grant.session_id, grant.generation)  # a new sandbox asks afresh
        cached = self._scopes.get(key)
        if cached is not None and now - cached[0] < self._scope_ttl:
            scope = cached[1]
        else:
            try:
                scope = await self._scope_of(grant.session_id)
            except StoreError:
                raise _Denied(503, "LAP cannot check the egress policy right now; retry") from None
            if len(self._scopes) > 10_000:
                self._scopes = {k: v for k, v in self._scopes.items() if now - v[0] < self._scope_ttl}
            self._scopes[key] = (now, scope)
        if scope is None or scope.generation != grant.generation:
            raise _Denied(403, "this sandbox is no longer its session's")
        return scope

    async def _decide(
        self, grant: SandboxGrant, scope: EgressScope, host: str, port: int, mode: str
    ) -> tuple[str, ...]:
        """Resolve and check a destination; return its addresses, or raise `_Denied` (noted, logged, counted).

        A name the policy cannot open whatever it resolves to is refused without being looked up.
        """
        verdict = scope.policy.before_resolving(host, port)
        addresses: tuple[str, ...] = ()
        if verdict is None:
            addresses = await self._resolver.resolve(host, port)
            verdict = scope.policy.verdict(host, port, addresses)
        decision = "allowed" if verdict.allowed and addresses else "denied"
        unresolved = verdict.allowed and not addresses
        self.decisions[(decision, scope.team_id)] += 1
        log.info(
            "egress.decision",
            session_id=grant.session_id,
            team_id=scope.team_id,
            host=host,
            port=port,
            mode=mode,
            allowed=decision == "allowed",
            reason="the name does not resolve" if unresolved else verdict.reason,
        )
        if not verdict.allowed:
            await self._denied_note(grant.session_id, host, port, verdict.reason)
            raise _Denied(403, f"{host}:{port} is not allowed: {verdict.reason}")
        if not addresses:
            raise _Denied(502, f"{host} does not resolve")
        return addresses

    async def _denied_note(self, session_id: str, host: str, port: int, reason: str) -> None:
        key, now = (session_id, host, port), time.monotonic()
        if now - self._noted.get(key, -NOTE_EVERY) < NOTE_EVERY:
            return
        self._noted[key] = now
        if len(self._noted) > 10_000:
            self._noted = {k: at for k, at in self._noted.items() if now - at < NOTE_EVERY}
        try:
            await self._note(session_id, EgressDenied(host=host, port=port, reason=reason))
        except Exception as error:  # the answer to the sandbox matters more than the note
            log.warning("egress.note_failed", session_id=session_id, error=repr(error))

    async def _open(self, addresses: tuple[str, ...], port: int) -> SocketStream:
        errors = []
        for address in addresses:
            try:
                with anyio.fail_after(CONNECT_TIMEOUT):
                    return await anyio.connect_tcp(address, port)
            except (OSError, TimeoutError) as error:
                errors.append(f"{address}: {error or type(error).__name__}")
        log.warning("egress.connect_failed", port=port, errors=errors)
        raise ConnectionError(f"cannot connect: {'; '.join(errors)}")

    async def _connect(
        self, conn: h11.Connection, stream: SocketStream, grant: SandboxGrant, scope: EgressScope, host: str, port: int
    ) -> None:
        mode = "intercept" if scope.secrets else "tunnel"
        addresses = await self._decide(grant, scope, host, port, mode)
        await self._send(conn, stream, h11.Response(status_code=200, reason=b"Connection established", headers=[]))
        data, _ = conn.trailing_data
        hello = await self._client_hello(stream, data)
        asked = server_name(hello)
        if asked is not None and asked != host:
            log.warning("egress.sni_mismatch", session_id=grant.session_id, host=host, sni=asked)
            await self._denied_note(grant.session_id, asked, port, f"asked for {asked} inside a tunnel to {host}")
            return
        if mode == "tunnel":
            upstream = await self._open(addresses, port)
            async with upstream:
                await upstream.send(hello)
                await splice(stream, upstream)
            return
        tls = await TLSStream.wrap(
            Prefixed(stream, hello), server_side=True, ssl_context=self._authority.context_for(host)
        )

        async def connect() -> ByteStream:
            tcp = await self._open(addresses, port)
            try:
                return await TLSStream.wrap(
                    tcp, hostname=host, ssl_context=self._upstream_tls, standard_compatible=False
                )
            except BaseException:
                await tcp.aclose()  # a host that does not prove who it is gets nothing, not even a hanging handshake
                raise

        await relay(
            tls,
            connect,
            host=host,
            port=port,
            tls=True,
            secrets=scope.secrets,
            on_request=lambda method, target, swapped: self._seen(grant, host, method, target, swapped),
        )

    async def _plain(
        self,
        conn: h11.Connection,
        stream: SocketStream,
        grant: SandboxGrant,
        scope: EgressScope,
        request: h11.Request,
        host: str,
        port: int,
    ) -> None:
        addresses = await self._decide(grant, scope, host, port, "http")

        async def connect() -> ByteStream:
            return await self._open(addresses, port)

        await relay(
            stream,
            connect,
            host=host,
            port=port,
            tls=False,
            secrets=scope.secrets,
            on_request=lambda method, target, swapped: self._seen(grant, host, method, target, swapped),
            first=(conn, request),
        )

    async def _client_hello(self, stream: SocketStream, data: bytes) -> bytes:
        with anyio.fail_after(HELLO_TIMEOUT):
            while True:
                try:
                    length = client_hello_length(data)
                except ClientHelloError as error:
                    raise _Denied(400, f"not TLS inside the tunnel: {error}") from None
                if length is not None:
                    return data
                if len(data) > MAX_HELLO:
                    raise _Denied(400, "the TLS ClientHello is too large")
                data += await stream.receive(65536)

    def _seen(self, grant: SandboxGrant, host: str, method: str, target: str, swapped: Swapped) -> None:
        if swapped.elsewhere:
            # The agent sent a secret's stub where the secret does not go: it goes out as the stub.
            log.warning(
                "egress.stub_elsewhere", session_id=grant.session_id, host=host, secrets=sorted(set(swapped.elsewhere))
            )
        log.debug("egress.request", session_id=grant.session_id, host=host, method=method, swapped=swapped.swapped)

    async def _send(self, conn: h11.Connection, stream: SocketStream, event: Any) -> None:
        data = conn.send(event)
        if data:
            await stream.send(data)

    async def _answer(self, conn: h11.Connection, stream: SocketStream, status: int, reason: str) -> None:
        if conn.our_state is not h11.SEND_RESPONSE:
            return
        body = f"LAP egress: {reason}\n".encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (b"x-lap-egress", b"denied" if status == 403 else b"error"),
        ]
        try:
            await self._send(conn, stream, h11.Response(status_code=status, headers=headers))
            await self._send(conn, stream, h11.Data(data=body))
            await self._send(conn, stream, h11.EndOfMessage())
        except (h11.LocalProtocolError, *GONE):
            pass
