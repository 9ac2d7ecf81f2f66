"""sandboxd's HTTP API: the routes the platform drives a sandbox through (see `protocol`).

Threaded HTTP/1.1 (served on the sockets `lap_sandboxd.daemon` sets up). Every route but
`GET /healthz` needs the bearer token. Stdlib + msgspec only: this runs on the sandbox's own Python.
"""

from __future__ import annotations

import functools
import os
import re
import select
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import msgspec

from lap_sandboxd.log import log
from lap_sandboxd.processes import SandboxStopping, count_descendants, run_exec
from lap_sandboxd.protocol import (
    VERSION,
    ErrorBody,
    ExecRequest,
    Health,
    HydrateRequest,
    NewToken,
    Signal,
    StartProcess,
)
from lap_sandboxd.state import HTTPError, Sandboxd

if TYPE_CHECKING:
    import socketserver
    from collections.abc import Callable

__all__ = ["MAX_BODY", "Handler", "log"]

MAX_BODY = 256 * 1024 * 1024
# An idle keep-alive connection holds a thread; drop it after this long.
IDLE_SECONDS = 300

_T = TypeVar("_T")
_PROCESS_PATH = re.compile(r"/processes/([^/]+)(/output|/signal)?")
_encode = msgspec.json.Encoder().encode


def _traceback() -> str:
    import traceback  # only on errors: sandboxd's start imports as little as it can

    return traceback.format_exc()


class Handler(BaseHTTPRequestHandler):
    """One connection; routes each request of it (HTTP/1.1 keep-alive)."""

    protocol_version = "HTTP/1.1"
    server_version = "lap_sandboxd"
    timeout = IDLE_SECONDS

    def __init__(self, sandboxd: Sandboxd, request: Any, client_address: Any, server: socketserver.BaseServer) -> None:
        self.sandboxd = sandboxd
        self._body_read = False
        super().__init__(request, client_address, server)

    def do_GET(self) -> None:
        """Route a GET request."""
        self._dispatch()

    def do_POST(self) -> None:
        """Route a POST request."""
        self._dispatch()

    do_PUT = do_DELETE = do_PATCH = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        """Log to stderr (the base class's version fails on unix sockets, which have no address)."""
        log(format % args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log a request, except health checks (backends poll them)."""
        # A request line too broken to parse leaves no path.
        if not getattr(self, "path", "").startswith("/healthz"):
            super().log_request(code, size)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Answer errors of the HTTP layer itself (bad request line, ...) as JSON too."""
        self._send_json(code, ErrorBody(error=message or HTTPStatus(code).phrase), close=True)

    def _send_json(self, status: int, body: object, *, close: bool = False) -> None:
        data = _encode(body)
        # A request whose body was not read would poison the next one on this connection.
        close = close or not self._body_read
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _body(self, kind: type[_T]) -> _T:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise HTTPError(400, "invalid Content-Length") from None
        if length < 0 or length > MAX_BODY:
            raise HTTPError(413, f"body larger than {MAX_BODY} bytes")
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            raise HTTPError(411, "send a Content-Length")
        data = self.rfile.read(length)
        self._body_read = True
        try:
            return msgspec.json.decode(data, type=kind)
        except msgspec.DecodeError as error:
            raise HTTPError(400, f"invalid {kind.__name__}: {error}") from error

    def _dispatch(self) -> None:
        self._body_read = "Content-Length" not in self.headers and "Transfer-Encoding" not in self.headers
        url = urlsplit(self.path)
        try:
            routes = self._routes(url.path)
            action = routes.get(self.command)
            if action is None:
                raise HTTPError(405 if routes else 404, f"no route {self.command} {url.path}")
            if url.path != "/healthz" and not self._authorized():
                raise HTTPError(401, "missing or wrong bearer token")
            action(parse_qs(url.query))
        except HTTPError as error:
            self._send_json(error.status, ErrorBody(error=error.message))
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client left; nobody to answer
        except Exception as error:
            log(f"{self.command} {url.path} failed:\n{_traceback()}")
            self._send_json(500, ErrorBody(error=f"internal error: {type(error).__name__}: {error}"), close=True)

    def _authorized(self) -> bool:
        import hmac  # not at start: it loads OpenSSL's libcrypto, and /healthz needs no token

        given = self.headers.get("Authorization", "").encode()
        return hmac.compare_digest(given, self.sandboxd.expected_auth)

    def _routes(self, path: str) -> dict[str, Callable[[dict[str, list[str]]], None]]:
        if path == "/healthz":
            return {"GET": self._health}
        if path == "/hydrate":
            return {"POST": self._hydrate}
        if path == "/token":
            return {"PUT": self._replace_token}
        if path == "/exec":
            return {"POST": self._exec}
        if path == "/processes":
            return {"POST": self._start}
        match = _PROCESS_PATH.fullmatch(path)
        if match is None:
            return {}
        process_id, tail = match.groups()
        if tail == "/output":
            return {"GET": functools.partial(self._output, process_id)}
        if tail == "/signal":
            return {"POST": functools.partial(self._signal, process_id)}
        return {"GET": functools.partial(self._info, process_id)}

    def _health(self, _query: dict[str, list[str]]) -> None:
        health = Health(
            version=VERSION,
            pid=os.getpid(),
            started_at=self.sandboxd.started_at,
            processes=count_descendants(os.getpid()),
        )
        self._send_json(200, health)

    def _replace_token(self, _query: dict[str, list[str]]) -> None:
        # From now on only the new token works: whoever knew the old one (a warm pool's) is out.
        self.sandboxd.expected_auth = f"Bearer {self._body(NewToken).token}".encode()
        self._send_json(200, {"ok": True})

    def _hydrate(self, _query: dict[str, list[str]]) -> None:
        self.sandboxd.hydrate(self._body(HydrateRequest))
        self._send_json(200, {"ok": True})

    def _exec(self, _query: dict[str, list[str]]) -> None:
        req = self._body(ExecRequest)
        if not req.argv or req.timeout <= 0:
            raise HTTPError(400, "argv must not be empty and timeout must be positive")
        sandboxd = self.sandboxd
        try:
            result = run_exec(req, sandboxd.child_env(req.env), sandboxd.child_cwd(req.cwd))
        except OSError as error:
            raise HTTPError(400, f"cannot run {req.argv[0]!r}: {error}") from error
        self._send_json(200, result)

    def _start(self, _query: dict[str, list[str]]) -> None:
        req = self._body(StartProcess)
        if not req.argv:
            raise HTTPError(400, "argv must not be empty")
        sandboxd = self.sandboxd
        try:
            info = sandboxd.processes.start(req, sandboxd.child_env(req.env), sandboxd.child_cwd(req.cwd))
        except ValueError as error:
            raise HTTPError(400, str(error)) from error
        except OSError as error:
            raise HTTPError(400, f"cannot start {req.argv[0]!r}: {error}") from error
        self._send_json(200, info)

    def _info(self, process_id: str, _query: dict[str, list[str]]) -> None:
        proc = self.sandboxd.processes.get(process_id)
        if proc is None:
            raise HTTPError(404, f"no process {process_id!r}")
        self._send_json(200, proc.info())

    def _signal(self, process_id: str, _query: dict[str, list[str]]) -> None:
        req = self._body(Signal)
        info = self.sandboxd.processes.signal(process_id, req.signal)
        if info is None:
            raise HTTPError(404, f"no process {process_id!r}")
        self._send_json(200, info)

    def _output(self, process_id: str, query: dict[str, list[str]]) -> None:
        proc = self.sandboxd.processes.get(process_id)
        if proc is None:
            raise HTTPError(404, f"no process {process_id!r}")
        try:
            after = int(query.get("after", ["0"])[-1])
        except ValueError:
            raise HTTPError(400, "after must be an integer") from None
        follow = query.get("follow", ["1"])[-1].lower() in ("1", "true", "yes")
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        chunks = proc.read_output(after, follow=follow, gone=self._client_gone)
        try:
            for chunk in chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True  # the client left
        except SandboxStopping:
            self.close_connection = True  # cut, without the last chunk: the client sees the sandbox go
        except Exception:
            # Too late for an error response: cut the stream so the client sees it incomplete.
            log(f"output of {process_id} failed:\n{_traceback()}")
            self.close_connection = True
        finally:
            chunks.close()

    def _client_gone(self) -> bool:
        # Readable with nothing to read means the client closed its end.
        poller = select.poll()
        poller.register(self.connection, select.POLLIN)
        try:
            return bool(poller.poll(0)) and not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True
