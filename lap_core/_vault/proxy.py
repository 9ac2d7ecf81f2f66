"""The LLM proxy: the one way out of a sandbox.

It listens on a unix socket that local backends bind into sandboxes (and, for sandboxes elsewhere,
on a TCP address: `LAP_VAULT_LISTEN`), accepts a request only with a
valid per-session stub key (`Authorization: Bearer` or `x-api-key`), replaces it with the real
`LITELLM_API_KEY` and streams the gateway's answer back unchanged. The real key never enters a
sandbox. Requests are parsed with h11; the gateway is reached with httpx.
"""

from __future__ import annotations

import fcntl
import json
import os
from typing import TYPE_CHECKING, Any

import anyio
import h11
import httpx
import structlog
from anyio.streams.stapled import MultiListener

if TYPE_CHECKING:
    from pathlib import Path

    from anyio.abc import Listener, SocketStream, TaskStatus

    from lap_core._vault.keys import StubKeys

log = structlog.get_logger("lap.vault")

MAX_BODY = 32 * 1024 * 1024
TAKEOVER_POLL = 0.5  # seconds between attempts to take over from another process's proxy
# Headers that describe one hop, or carry the sandbox's credentials: never forwarded.
_DROP_REQUEST = {
    b"host",
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"authorization",
    b"x-api-key",
    b"keep-alive",
    b"proxy-authorization",
    b"te",
    b"upgrade",
}
_DROP_RESPONSE = {"content-length", "transfer-encoding", "connection", "keep-alive"}


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class _Reject(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


class LLMProxy:
    """Forwards sandbox model traffic to the LiteLLM gateway with the real key swapped in."""

    def __init__(
        self,
        *,
        socket_path: Path,
        upstream: str,
        api_key: str,
        keys: StubKeys,
        listen: tuple[str, int] | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.listen = listen
        self._upstream = upstream.rstrip("/")
        self._api_key = api_key
        self._keys = keys
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(connect=10, read=900, write=60, pool=10))

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled (start it in a task group with `tg.start`).

        One LAP process at a time serves a data directory's socket (an flock decides); the others
        wait and take over the moment the serving process ends, so sandboxes, which outlive the
        process that made them, never lose their way out for long.
        """
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(self.socket_path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            waiting = not _try_lock(lock)
            if waiting:
                log.info("vault.waiting", socket=str(self.socket_path), reason="another LAP process serves it")
                task_status.started()
                while not _try_lock(lock):  # noqa: ASYNC110 - flock has no async wake-up
                    await anyio.sleep(TAKEOVER_POLL)
            self.socket_path.unlink(missing_ok=True)
            # 0666: sandboxes run as another user; the stub key, not the file mode, is the gate.
            listeners: list[Listener[Any]] = [await anyio.create_unix_listener(self.socket_path, mode=0o666)]
            if self.listen is not None:
                # Anyone who can reach the port may try; a request without a valid stub key gets a 401.
                host, port = self.listen
                listeners.append(await anyio.create_tcp_listener(local_host=host, local_port=port))
            listener = MultiListener(listeners)
            log.info("vault.listening", socket=str(self.socket_path), tcp=self.listen, upstream=self._upstream)
            try:
                if not waiting:
                    task_status.started()
                await listener.serve(self._handle_connection)
            finally:
                with anyio.CancelScope(shield=True):
                    await listener.aclose()
        finally:
            os.close(lock)  # releases the flock: a waiting process takes over
            with anyio.CancelScope(shield=True):
                await self._client.aclose()

    async def _handle_connection(self, stream: SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            try:
                while await self._handle_request(conn, stream):
                    conn.start_next_cycle()
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
            except h11.RemoteProtocolError as error:
                log.warning("vault.bad_request", error=str(error))
            except Exception:
                # One connection's failure must never take the proxy (and the runtime) down.
                log.exception("vault.connection_failed")

    async def _next_event(self, conn: h11.Connection, stream: SocketStream) -> object:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                conn.receive_data(await stream.receive(65536))
            except anyio.EndOfStream:
                conn.receive_data(b"")

    async def _handle_request(self, conn: h11.Connection, stream: SocketStream) -> bool:
        """Serve one request; return whether the connection can take another."""
        request = await self._next_event(conn, stream)
        if isinstance(request, h11.ConnectionClosed) or not isinstance(request, h11.Request):
            return False
        body = bytearray()
        while True:
            event = await self._next_event(conn, stream)
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    too_large = _Reject(413, "request_too_large", "request body too large")
                    await self._send_error(conn, stream, request, too_large)
                    return False
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                return False
        try:
            session_id = self._authenticate(request)
            with structlog.contextvars.bound_contextvars(session_id=session_id):
                await self._forward(conn, stream, request, bytes(body))
        except _Reject as reject:
            await self._send_error(conn, stream, request, reject)
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    def _authenticate(self, request: h11.Request) -> str:
        for name, value in request.headers:
            if name == b"authorization" and value.lower().startswith(b"bearer "):
                key = value[7:].decode("latin-1").strip()
            elif name == b"x-api-key":
                key = value.decode("latin-1").strip()
            else:
                continue
            session_id = self._keys.verify(key)
            if session_id is not None:
                return session_id
        log.warning("vault.rejected", target=request.target.decode("latin-1", "replace"))
        raise _Reject(401, "authentication_error", "invalid or missing LAP sandbox key")

    async def _forward(self, conn: h11.Connection, stream: SocketStream, request: h11.Request, body: bytes) -> None:
        headers = [(n, v) for n, v in request.headers if n not in _DROP_REQUEST]
        headers.append((b"authorization", b"Bearer " + self._api_key.encode()))
        if any(n == b"x-api-key" for n, _ in request.headers):
            headers.append((b"x-api-key", self._api_key.encode()))
        url = self._upstream + request.target.decode("latin-1")
        upstream = self._client.build_request(request.method.decode(), url, headers=headers, content=body)
        try:
            response = await self._client.send(upstream, stream=True)
        except httpx.HTTPError as error:
            log.warning("vault.gateway_unreachable", url=self._upstream, error=repr(error))
            raise _Reject(502, "gateway_error", f"LLM gateway unreachable: {type(error).__name__}") from error
        try:
            out_headers = [(k, v) for k, v in response.headers.raw if k.decode().lower() not in _DROP_RESPONSE]
            await stream.send(conn.send(h11.Response(status_code=response.status_code, headers=out_headers)) or b"")
            async for chunk in response.aiter_raw():
                await stream.send(conn.send(h11.Data(data=chunk)) or b"")
            await stream.send(conn.send(h11.EndOfMessage()) or b"")
        except httpx.HTTPError as error:
            # Mid-stream: the status is sent already; cut the connection so the client sees the failure.
            log.warning("vault.gateway_stream_failed", error=repr(error))
            conn.send_failed()
        finally:
            await response.aclose()
        log.debug("vault.forwarded", target=request.target.decode("latin-1"), status=response.status_code)

    async def _send_error(
        self, conn: h11.Connection, stream: SocketStream, request: h11.Request, reject: _Reject
    ) -> None:
        payload = json.dumps({"error": {"type": reject.kind, "message": reject.message}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        if conn.our_state is not h11.SEND_RESPONSE:
            return
        await stream.send(conn.send(h11.Response(status_code=reject.status, headers=headers)) or b"")
        if request.method != b"HEAD":  # a HEAD response has headers only
            await stream.send(conn.send(h11.Data(data=payload)) or b"")
        await stream.send(conn.send(h11.EndOfMessage()) or b"")
