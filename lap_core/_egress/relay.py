"""HTTP/1.1 relayed request by request, where the gateway sees inside: stubs swapped for secrets.

Used for the HTTPS the gateway terminates (a session with secrets) and for plain-HTTP proxy
requests. A secret's stub in a header value, in HTTP Basic credentials or in the request target is
replaced by the secret's value only toward the secret's bound hosts, and only over TLS; a stub going
anywhere else goes out unchanged, and is reported (`Swapped.elsewhere`) for the gateway to log. An
answer to a request that carried a secret goes back with the secret scrubbed (`scrub`): a host that
echoes its request hands the sandbox the stub, never the value.
"""

from __future__ import annotations

import base64
import binascii
import ssl
from typing import TYPE_CHECKING, Any

import anyio
import h11
import msgspec
import structlog

from lap_core._egress.scrub import Scrubber
from lap_core._egress_policy import host_matches

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from anyio.abc import ByteStream

__all__ = ["BoundSecret", "Swapped", "relay"]

log = structlog.get_logger("lap.egress")

IDLE_TIMEOUT = 300.0
_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}


class BoundSecret(msgspec.Struct, frozen=True):
    """A secret as the gateway sees it: its variable's name, the stub the sandbox holds, its value, its hosts."""

    name: str
    stub: str
    value: str
    hosts: tuple[str, ...]

    def bound_to(self, host: str) -> bool:
        """Whether the secret may be sent to `host`."""
        return any(host_matches(pattern, host) for pattern in self.hosts)


class Swapped(msgspec.Struct):
    """What swapping did to one request: the secrets put in, and those whose stub went elsewhere."""

    swapped: list[str] = msgspec.field(default_factory=list)
    elsewhere: list[str] = msgspec.field(default_factory=list)


def _swap_text(text: str, secrets: Sequence[BoundSecret], host: str, tls: bool, report: Swapped) -> str:
    for secret in secrets:
        if secret.stub in text:
            if tls and secret.bound_to(host):
                text = text.replace(secret.stub, secret.value)
                report.swapped.append(secret.name)
            else:
                report.elsewhere.append(secret.name)
    return text


def swap_headers(
    headers: Sequence[tuple[bytes, bytes]], secrets: Sequence[BoundSecret], host: str, tls: bool, report: Swapped
) -> list[tuple[bytes, bytes]]:
    """Return the headers with stubs swapped (also inside `Basic` credentials)."""
    out = []
    for name, value in headers:
        text = value.decode("latin-1")
        if name == b"authorization" and text[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(text[6:].strip(), validate=True).decode("latin-1")
            except (binascii.Error, ValueError):
                decoded = ""
            if decoded and any(s.stub in decoded for s in secrets):
                swapped = _swap_text(decoded, secrets, host, tls, report)
                text = "Basic " + base64.b64encode(swapped.encode("latin-1")).decode()
        text = _swap_text(text, secrets, host, tls, report)
        out.append((name, text.encode("latin-1")))
    return out


async def _next(conn: h11.Connection, stream: ByteStream, timeout: float) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        with anyio.fail_after(timeout):
            try:
                data = await stream.receive(65536)
            except anyio.EndOfStream:
                data = b""
        conn.receive_data(data)


async def _send(conn: h11.Connection, stream: ByteStream, event: Any) -> None:
    data = conn.send(event)
    if data:
        await stream.send(data)


def _authorities(host: str, port: int) -> set[str]:
    name = f"[{host}]" if ":" in host else host
    return {name, f"{name}:{port}"} | ({name} if port == 80 else set())


def _origin_form(request: h11.Request, host: str, port: int) -> bytes | None:
    """Return the request's target in origin form, or None if it or its Host names another place."""
    wanted = _authorities(host, port)
    if any(n == b"host" and v.decode("latin-1").lower() not in wanted for n, v in request.headers):
        return None
    target = request.target
    if target.lower().startswith(b"http://"):  # a plain-HTTP proxy request: absolute form
        authority, slash, path = target[7:].partition(b"/")
        if authority.decode("latin-1").lower() not in wanted:
            return None
        return slash + path or b"/"
    return target if target.startswith(b"/") else None


async def relay(
    client: ByteStream,
    connect: Callable[[], Awaitable[ByteStream]],
    *,
    host: str,
    port: int,
    tls: bool,
    secrets: Sequence[BoundSecret],
    on_request: Callable[[str, str, Swapped], None],
    first: tuple[h11.Connection, h11.Request] | None = None,
) -> None:
    """Relay the client's requests to the host one by one (keep-alive on both sides) until either ends.

    `first`: the client's connection and the request already read from it (a plain-HTTP proxy request).
    """
    inbound = first[0] if first else h11.Connection(h11.SERVER)
    outbound: h11.Connection | None = None
    upstream: ByteStream | None = None
    try:
        while True:
            if first is not None:
                request, first = first[1], None
            else:
                try:
                    request = await _next(inbound, client, IDLE_TIMEOUT)
                except (TimeoutError, h11.RemoteProtocolError):
                    return
            if not isinstance(request, h11.Request):
                return
            origin = _origin_form(request, host, port)
            if origin is None:
                await _refuse(inbound, client, 421, f"this connection leads to {host}:{port} only")
                return
            report = Swapped()
            target = _swap_text(origin.decode("latin-1"), secrets, host, tls, report).encode("latin-1")
            headers = swap_headers(
                [(n, v) for n, v in request.headers if n not in _HOP and n != b"expect"], secrets, host, tls, report
            )
            if any(n == b"expect" and v.lower() == b"100-continue" for n, v in request.headers):
                await _send(inbound, client, h11.InformationalResponse(status_code=100, headers=[]))
            on_request(request.method.decode("latin-1"), target.decode("latin-1")[:200], report)
            sent = [secret for secret in secrets if secret.name in report.swapped]
            scrubber = Scrubber([(s.value.encode(), s.stub.encode()) for s in sent]) if sent else None
            if scrubber is not None:  # the answer must be readable to be scrubbed
                headers = [(n, v) for n, v in headers if n != b"accept-encoding"] + [(b"accept-encoding", b"identity")]
            if upstream is None or outbound is None or outbound.our_state is not h11.IDLE:
                if upstream is not None:
                    await upstream.aclose()
                    upstream = None
                try:
                    upstream = await connect()
                except (OSError, ssl.SSLError) as error:
                    log.warning("egress.upstream_failed", host=host, port=port, error=str(error))
                    await _refuse(inbound, client, 502, f"cannot reach {host}:{port}: {error}")
                    return
                outbound = h11.Connection(h11.CLIENT)
            await _send(outbound, upstream, h11.Request(method=request.method, target=target, headers=headers))
            while True:  # the request's body, as it comes
                event = await _next(inbound, client, IDLE_TIMEOUT)
                if isinstance(event, h11.Data):
                    await _send(outbound, upstream, h11.Data(data=event.data))
                elif isinstance(event, h11.EndOfMessage):
                    await _send(outbound, upstream, h11.EndOfMessage())
                    break
                else:
                    return
            while True:  # the answer, as it comes
                event = await _next(outbound, upstream, IDLE_TIMEOUT)
                if isinstance(event, h11.InformationalResponse):
                    continue
                if isinstance(event, h11.Response):
                    headers = [(n, v) for n, v in event.headers if n not in _HOP]
                    if scrubber is not None:
                        encoding = b"".join(v for n, v in headers if n == b"content-encoding").lower()
                        if encoding not in (b"", b"identity"):
                            await _refuse(
                                inbound, client, 502, f"{host} answered {encoding.decode()} where a secret went"
                            )
                            return
                        # Scrubbed, the body's length changes: h11 frames it anew.
                        headers = [(n, scrubber.scrub(v)) for n, v in headers if n != b"content-length"]
                    await _send(inbound, client, h11.Response(status_code=event.status_code, headers=headers))
                elif isinstance(event, h11.Data):
                    data = scrubber.feed(event.data) if scrubber is not None else event.data
                    if data:
                        await _send(inbound, client, h11.Data(data=data))
                elif isinstance(event, h11.EndOfMessage):
                    rest = scrubber.end() if scrubber is not None else b""
                    if rest:
                        await _send(inbound, client, h11.Data(data=rest))
                    await _send(inbound, client, h11.EndOfMessage())
                    break
                else:
                    return
            if inbound.our_state is not h11.DONE or inbound.their_state is not h11.DONE:
                return
            inbound.start_next_cycle()
            if outbound.our_state is h11.DONE and outbound.their_state is h11.DONE:
                outbound.start_next_cycle()
    finally:
        if upstream is not None:
            with anyio.CancelScope(shield=True):
                await upstream.aclose()


async def _refuse(conn: h11.Connection, stream: ByteStream, status: int, message: str) -> None:
    body = f"LAP egress: {message}\n".encode()
    headers = [
        (b"content-type", b"text/plain"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    try:
        await _send(conn, stream, h11.Response(status_code=status, headers=headers))
        await _send(conn, stream, h11.Data(data=body))
        await _send(conn, stream, h11.EndOfMessage())
    except h11.LocalProtocolError:
        pass
