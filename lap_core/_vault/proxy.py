"""The LLM proxy: the one way from a sandbox to the model gateway.

Sandboxes reach it through sandboxd's forwarder (`http://127.0.0.1:4000` inside), which opens
every connection with the sandbox's identity (`lap_core._vault.keys`). A request is forwarded
with the real `LITELLM_API_KEY` only when all of this holds, else it is refused with a JSON error
(`{"error": {"code", "type", "message", "details"}}`):

1. the connection came from a sandbox's forwarder (a valid identity), and the sandbox has fewer
   than `MAX_CONNECTIONS_PER_SANDBOX` open (429);
2. the target is origin-form and one of the model routes (`surface`: else 400 or 403);
3. the stub key (`Authorization: Bearer` or `x-api-key`) is valid (401) and names the same session
   and sandbox generation as the identity, and that is still the session's sandbox (403: another
   sandbox's key, a deleted session, a replaced sandbox);
4. the body (at most `MAX_BODY`, spooled to disk past 1 MiB) names one of the agent's models (403).

The upstream URL is the gateway's origin and base path plus the validated target, so the real key
goes nowhere else. Answers stream back unchanged. With a store (`usage`), each model call is
metered and the team's budget checked first (402 when it is used up): `lap_core._vault.metering`.
Where it listens: `lap_core._vault.sockets`. A connection that asks for the `egress` service goes to
the egress gateway (`lap_core._egress`).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import h11
import httpx
import msgspec
import structlog

from lap_core import _tracing
from lap_core._errors import StoreError
from lap_core._vault.body import BodyError, SpooledBody
from lap_core._vault.metering import INCLUDE_USAGE, Meter, UsageCounters, pass_on
from lap_core._vault.replies import Refusal, model_list, refuse_connection, send_json
from lap_core._vault.sockets import serve_sockets
from lap_core._vault.surface import RouteError, parse_target, route_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from anyio.abc import SocketStream, TaskStatus

    from lap_core._egress.gateway import EgressGateway
    from lap_core._store import SessionStore
    from lap_core._vault.keys import SandboxGrant, StubKeys
    from lap_core._vault.metering import MeteredCall, Note
    from lap_core._vault.surface import Route

log = structlog.get_logger("lap.vault")

MAX_BODY = 32 * 1024 * 1024
MAX_CONNECTIONS_PER_SANDBOX = 16
MAX_EGRESS_CONNECTIONS_PER_SANDBOX = 64  # package managers open many connections at once
MAX_UNIDENTIFIED = 256
"""Connections at once that have not introduced themselves yet; more are closed at once."""
INTRODUCTION_TIMEOUT = 5.0
HEADERS_TIMEOUT = 30.0
BODY_IDLE_TIMEOUT = 60.0
KEEPALIVE_TIMEOUT = 120.0
PREAMBLE = b"LAP-SANDBOX "  # what sandboxd's forwarder sends first (lap_sandboxd.egress)
_GONE = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)

# Headers that describe one hop, carry credentials or steer the gateway: never forwarded.
_DROP_REQUEST = {
    b"host",
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"keep-alive",
    b"te",
    b"trailer",
    b"upgrade",
    b"authorization",
    b"proxy-authorization",
    b"proxy-connection",
    b"x-api-key",
    b"api-key",
    b"cookie",
    b"forwarded",
    b"x-real-ip",
    b"accept-encoding",
}
_DROP_REQUEST_PREFIXES = (b"x-forwarded-", b"x-litellm-", b"litellm-", b"proxy-")
_DROP_RESPONSE = {"content-length", "transfer-encoding", "connection", "keep-alive", "set-cookie"}


class LLMScope(msgspec.Struct, frozen=True, kw_only=True):
    """What a session's stub key may use now: its sandbox's generation and its agent's models."""

    generation: int
    models: tuple[str, ...]
    team_id: str = ""
    agent_id: str = ""


def _forwardable(name: bytes) -> bool:
    return name not in _DROP_REQUEST and not name.startswith(_DROP_REQUEST_PREFIXES)


class LLMProxy:
    """Forwards sandbox model traffic to the LiteLLM gateway with the real key swapped in."""

    def __init__(
        self,
        *,
        socket_path: Path,
        upstream: str,
        api_key: str,
        keys: StubKeys,
        scope_of: Callable[[str], Awaitable[LLMScope | None]],
        own_socket: Path | None = None,
        listen: tuple[str, int] | None = None,
        egress: EgressGateway | None = None,
        usage: SessionStore | None = None,
        note: Note | None = None,
        counters: UsageCounters | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.own_socket = own_socket
        self.listen = listen
        parts = urlsplit(upstream)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._base_path = parts.path.rstrip("/")
        self._gateway = httpx.URL(self._origin)
        self._api_key = api_key
        self._keys = keys
        self._scope_of = scope_of
        # The operator's environment may route the gateway through a proxy; sandboxes never set it.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=10, read=900, write=60, pool=10), follow_redirects=False
        )
        self._open: Counter[tuple[str, str]] = Counter()  # connections per (session, service)
        self._egress = egress
        self._unidentified = 0
        self._large_reads = anyio.Semaphore(1)
        # `note(session_id, event)` appends a host event (turn None) to a session's log.
        self._meter = Meter(usage, note, counters or UsageCounters()) if usage is not None else None

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled (start it in a task group with `tg.start`; see `sockets`)."""
        log.info("vault.upstream", upstream=self._origin)
        try:
            await serve_sockets(
                self._handle_connection,
                shared=self.socket_path,
                own=self.own_socket,
                listen=self.listen,
                task_status=task_status,
            )
        finally:
            with anyio.CancelScope(shield=True):
                await self._client.aclose()

    async def _handle_connection(self, stream: SocketStream) -> None:
        async with stream:
            if self._unidentified >= MAX_UNIDENTIFIED:
                return  # closed at once: nobody holds the host's descriptors by connecting
            self._unidentified += 1
            try:
                grant, service, rest = await self._introduction(stream)
            except Refusal as refusal:
                await refuse_connection(stream, refusal)
                return
            except _GONE:
                return
            finally:
                self._unidentified -= 1
            limit = MAX_CONNECTIONS_PER_SANDBOX if service == "llm" else MAX_EGRESS_CONNECTIONS_PER_SANDBOX
            key = (grant.session_id, service)
            if self._open[key] >= limit:
                log.warning("vault.too_many_connections", session_id=grant.session_id, service=service)
                message = f"a sandbox may hold {limit} connections to LAP's {service} service at once"
                await refuse_connection(stream, Refusal(429, "too_many_connections", message))
                return
            self._open[key] += 1
            try:
                with structlog.contextvars.bound_contextvars(session_id=grant.session_id):
                    if service == "egress" and self._egress is not None:
                        await self._egress.handle(stream, grant, rest)
                    else:
                        await self._serve_requests(stream, grant, rest)
            except _GONE:
                pass
            except Exception:
                # One connection's failure must never take the proxy (and the runtime) down.
                log.exception("vault.connection_failed", service=service)
            finally:
                self._open[key] -= 1
                if not self._open[key]:
                    del self._open[key]

    async def _introduction(self, stream: SocketStream) -> tuple[SandboxGrant, str, bytes]:
        """Read the forwarder's first line; return whom it names, the service it wants, the bytes after it."""
        data = b""
        with anyio.move_on_after(INTRODUCTION_TIMEOUT):
            while b"\r\n" not in data and len(data) <= 600:
                data += await stream.receive(4096)
        line, sep, rest = data.partition(b"\r\n")
        grant, service = None, "llm"
        if sep and line.startswith(PREAMBLE):
            identity, _, wanted = line[len(PREAMBLE) :].decode("ascii", "replace").partition(" ")
            grant = self._keys.verify_identity(identity)
            service = wanted or "llm"
        if grant is None or service not in ("llm", "egress"):
            log.warning("vault.unidentified_connection")
            raise Refusal(403, "not_a_sandbox", "connect through the sandbox's proxy at http://127.0.0.1:4000")
        if service == "egress" and self._egress is None:
            raise Refusal(503, "no_egress", "this LAP process serves no egress gateway")
        return grant, service, rest

    async def _next_event(self, conn: h11.Connection, stream: SocketStream, timeout: float) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                with anyio.fail_after(timeout):
                    data = await stream.receive(65536)
            except anyio.EndOfStream:
                data = b""
            conn.receive_data(data)

    async def _serve_requests(self, stream: SocketStream, grant: SandboxGrant, rest: bytes) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        if rest:  # (h11 takes b"" for the end of the stream)
            conn.receive_data(rest)
        timeout = HEADERS_TIMEOUT
        while True:
            try:
                request = await self._next_event(conn, stream, timeout)
            except TimeoutError:
                return
            except h11.RemoteProtocolError as error:
                await refuse_connection(stream, Refusal(400, "bad_request", f"malformed request: {error}"))
                return
            if not isinstance(request, h11.Request):
                return
            body = SpooledBody()
            try:
                await self._handle_request(conn, stream, grant, request, body)
            except Refusal as reject:
                await self._send_error(conn, stream, request, reject)
            finally:
                body.close()
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
            timeout = KEEPALIVE_TIMEOUT

    async def _handle_request(
        self, conn: h11.Connection, stream: SocketStream, grant: SandboxGrant, request: h11.Request, body: SpooledBody
    ) -> None:
        started = time.perf_counter()
        try:
            parse_target(request.target)
        except RouteError as error:
            log.warning("vault.bad_target", target=request.target[:200].decode("ascii", "replace"))
            raise Refusal(error.status, "bad_request", error.message) from None
        self._authenticate(request, grant)
        try:
            route = route_of(request.method, request.target)
        except RouteError as error:
            log.warning("vault.forbidden_route", method=request.method.decode("ascii", "replace"), error=error.message)
            raise Refusal(error.status, "forbidden", error.message) from None
        scope = await self._scope(grant)
        if not route.needs_model:
            await self._drain(conn, stream, body)
            await send_json(conn, stream, 200, model_list(scope.models), head_only=False, close=False)
            return
        if any(name == b"content-encoding" and value.lower() != b"identity" for name, value in request.headers):
            raise Refusal(415, "unsupported_encoding", "compressed request bodies are not accepted")
        await self._drain(conn, stream, body)
        try:
            fields = await body.fields(self._large_reads)
        except BodyError as error:
            raise Refusal(400, "invalid_body", str(error)) from None
        model = fields.model
        if model is None:
            raise Refusal(400, "invalid_body", "the request names no model")
        if model not in scope.models:
            log.warning("vault.forbidden_model", model=model[:200])
            raise Refusal(403, "forbidden_model", f"model {model[:200]!r} is not this agent's model")
        with _tracing.model_call(grant.session_id, scope.team_id, scope.agent_id, model, route.path) as span:
            call = None if self._meter is None else await self._meter.admit(grant.session_id, scope, route.path, fields)
            if call is not None and call.hide_usage and not body.extend_object(INCLUDE_USAGE):
                raise Refusal(400, "invalid_body", "the body is not a JSON object")
            status = await self._forward(conn, stream, request, route, body, call)
            _tracing.model_call_ended(span, status, None if call is None else call.tokens)
        log.debug(
            "vault.forwarded",
            path=route.path,
            model=model,
            status=status,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )

    def _authenticate(self, request: h11.Request, grant: SandboxGrant) -> None:
        keys = []
        for name, value in request.headers:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                keys.append(value[7:].strip())
            elif name == b"x-api-key":
                keys.append(value.strip())
        if not keys:
            raise Refusal(401, "unauthorized", "missing LAP sandbox key")
        for key in keys:
            stub = self._keys.verify(key.decode("ascii", "replace"))
            if stub is None:
                log.warning("vault.rejected", reason="invalid key")
                raise Refusal(401, "unauthorized", "invalid LAP sandbox key")
            if stub != grant:
                log.warning("vault.rejected", reason="another sandbox's key", key_session_id=stub.session_id)
                raise Refusal(403, "forbidden", "this key belongs to another sandbox")

    async def _scope(self, grant: SandboxGrant) -> LLMScope:
        try:
            scope = await self._scope_of(grant.session_id)
        except StoreError as error:
            log.warning("vault.store_unavailable", error=str(error))
            raise Refusal(503, "unavailable", "LAP cannot check this key right now; retry") from None
        if scope is None:
            raise Refusal(403, "revoked", "this key's session was deleted")
        if scope.generation != grant.generation:
            raise Refusal(403, "revoked", "this key was revoked: the session has a new sandbox")
        return scope

    async def _drain(self, conn: h11.Connection, stream: SocketStream, body: SpooledBody) -> None:
        """Read the request body into `body` (bounded in size and in idle time)."""
        while True:
            try:
                event = await self._next_event(conn, stream, BODY_IDLE_TIMEOUT)
            except TimeoutError:
                raise Refusal(408, "request_timeout", "the request body stopped arriving") from None
            except h11.RemoteProtocolError as error:
                raise Refusal(400, "bad_request", f"malformed request body: {error}") from None
            if isinstance(event, h11.Data):
                body.write(event.data)
                if body.size > MAX_BODY:
                    raise Refusal(413, "request_too_large", f"request body larger than {MAX_BODY} bytes")
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                raise Refusal(400, "bad_request", "the request ended early")

    async def _forward(
        self,
        conn: h11.Connection,
        stream: SocketStream,
        request: h11.Request,
        route: Route,
        body: SpooledBody,
        call: MeteredCall | None,
    ) -> int:
        headers = [(name, value) for name, value in request.headers if _forwardable(name)]
        headers = _tracing.with_traceparent(headers)  # the gateway's spans join the turn's trace
        headers.append((b"authorization", b"Bearer " + self._api_key.encode()))
        if any(name == b"x-api-key" for name, _ in request.headers):
            headers.append((b"x-api-key", self._api_key.encode()))
        headers.append((b"content-length", str(body.size).encode()))
        headers.append((b"accept-encoding", b"identity"))  # an answer the metering can read
        url = httpx.URL(f"{self._origin}{self._base_path}{route.path}" + (f"?{route.query}" if route.query else ""))
        # The validated target cannot change the origin; check anyway: the real key goes nowhere else.
        if (url.scheme, url.host, url.port) != (self._gateway.scheme, self._gateway.host, self._gateway.port):
            raise Refusal(400, "bad_request", "the request target does not lead to the gateway")
        upstream = self._client.build_request(request.method.decode(), url, headers=headers, content=body.chunks())
        try:
            response = await self._client.send(upstream, stream=True)
        except httpx.HTTPError as error:
            log.warning("vault.gateway_unreachable", url=self._origin, error=type(error).__name__)
            raise Refusal(502, "gateway_error", f"LLM gateway unreachable: {type(error).__name__}") from None
        try:
            out_headers = [(k, v) for k, v in response.headers.raw if k.decode().lower() not in _DROP_RESPONSE]
            await stream.send(conn.send(h11.Response(status_code=response.status_code, headers=out_headers)) or b"")
            await pass_on(response, call, lambda chunk: stream.send(conn.send(h11.Data(data=chunk)) or b""))
            await stream.send(conn.send(h11.EndOfMessage()) or b"")
        except httpx.HTTPError as error:
            # Mid-stream: the status is sent already; cut the connection so the client sees the failure.
            log.warning("vault.gateway_stream_failed", error=type(error).__name__)
            conn.send_failed()
        finally:
            await response.aclose()
        return response.status_code

    async def _send_error(
        self, conn: h11.Connection, stream: SocketStream, request: h11.Request, refusal: Refusal
    ) -> None:
        if conn.our_state is not h11.SEND_RESPONSE:
            return
        # A refused request's body may be unread: the connection ends with this answer.
        head_only = request.method == b"HEAD"
        await send_json(conn, stream, refusal.status, refusal.body(), head_only=head_only, close=True)
