"""The egress forwarder: TCP ports on the sandbox's loopback piped to the platform.

Tools inside reach the LLM proxy as `http://127.0.0.1:4000` wherever the sandbox runs. A local
sandbox's network namespace has only loopback and the platform bind-mounts a directory of the
proxy's unix sockets in; a pod's target is the proxy's TCP address (`HOST:PORT`).

Each forwarded connection starts with one line, `LAP-SANDBOX <identity>[ <service>]\\r\\n`, that
tells the platform which sandbox it talks to (and, on a port other than the LLM proxy's, which of
the platform's services it wants: `egress`, the HTTP proxy to the network). The identity comes
with the hydrate request and lives only in sandboxd's memory (which agent processes cannot read:
see `daemon.protect_process`), so an agent that connects to the platform's socket directly, around
this forwarder, cannot pass as a sandbox.
The targets are tried in order: the platform puts the socket of the process that runs the
session's turn first (its model streams then never pass through another process that may die),
then the one named on the command line.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import socketserver
import sys
import threading

__all__ = ["PREAMBLE", "EgressServer", "parse_egress", "parse_target"]

_BUFFER = 1024 * 1024  # large reads: a download passes with few system calls
_F_SETPIPE_SZ = 1031
PREAMBLE = b"LAP-SANDBOX "
"""How every forwarded connection starts: this, the sandbox's identity, CRLF."""

Target = str | tuple[str, int]
"""A unix socket path, or a TCP (host, port)."""


def _address(value: str) -> tuple[str, int] | None:
    host, colon, port = value.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def parse_target(value: str) -> Target:
    """Parse a forwarding target: an absolute unix socket path, or `HOST:PORT`.

    Raises:
        ValueError: it is neither.
    """
    if value.startswith("/"):
        return value
    tcp = _address(value)
    if tcp is None:
        raise ValueError(f"expected a unix socket path or HOST:PORT, got {value!r}")
    return tcp


def parse_egress(spec: str) -> tuple[tuple[str, int], Target]:
    """Parse `HOST:PORT=/UNIX/PATH` or `HOST:PORT=TARGETHOST:TARGETPORT` into (address, target).

    Raises:
        ValueError: the spec is malformed.
    """
    listen, sep, target = spec.partition("=")
    address = _address(listen)
    if not sep or address is None:
        raise ValueError(f"expected HOST:PORT=/UNIX/PATH or HOST:PORT=HOST:PORT, got {spec!r}")
    return address, parse_target(target)


def _connect(target: Target) -> socket.socket:
    if isinstance(target, str):
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(target)
        except OSError:
            upstream.close()
            raise
        return upstream
    upstream = socket.create_connection(target, timeout=10)
    upstream.settimeout(None)
    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return upstream


def _splice(source: socket.socket, target: socket.socket) -> None:
    """Copy in the kernel (splice through a pipe: the bytes never enter Python) until EOF."""
    read_end, write_end = os.pipe()
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_end, _F_SETPIPE_SZ, _BUFFER)
        while moved := os.splice(source.fileno(), write_end, _BUFFER):
            while moved:
                moved -= os.splice(read_end, target.fileno(), moved)
    finally:
        os.close(read_end)
        os.close(write_end)


def _copy(source: socket.socket, target: socket.socket) -> None:
    """Copy until EOF, then pass the EOF on (half-close), so request/response protocols work."""
    try:
        if hasattr(os, "splice"):
            _splice(source, target)
        else:
            buffer = bytearray(_BUFFER)
            view = memoryview(buffer)
            while size := source.recv_into(buffer):
                target.sendall(view[:size])
    except OSError:
        pass
    try:
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass


class _Pipe(socketserver.BaseRequestHandler):
    server: EgressServer

    def handle(self) -> None:
        client: socket.socket = self.request
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small writes go at once
        targets, identity, service = self.server.route()
        upstream = None
        errors = []
        for target in targets:
            try:
                upstream = _connect(target)
                break
            except OSError as error:
                errors.append(f"{target}: {error}")
        if upstream is None:
            print(f"lap_sandboxd: egress failed: {'; '.join(errors)}", file=sys.stderr, flush=True)
            return
        with upstream:
            try:
                if identity:
                    wanted = f" {service}" if service else ""
                    upstream.sendall(PREAMBLE + identity.encode() + wanted.encode() + b"\r\n")
            except OSError:
                return
            back = threading.Thread(target=_copy, args=(upstream, client), daemon=True)
            back.start()
            _copy(client, upstream)
            back.join()


class EgressServer(socketserver.ThreadingTCPServer):
    """Listens on a TCP address and pipes each connection to the first target that answers."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], target: Target) -> None:
        self._fallback = target
        self._preferred: list[Target] = []
        self._identity = ""
        self._service = ""
        self._lock = threading.Lock()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Pipe)

    def set_route(self, targets: list[Target], identity: str, service: str = "") -> None:
        """Prefer `targets` (before the command line's); introduce the sandbox as `identity`, asking for `service`."""
        with self._lock:
            self._preferred = [t for t in targets if t != self._fallback]
            self._identity = identity
            self._service = service

    def route(self) -> tuple[list[Target], str, str]:
        """Return the targets to try, in order, the identity and the service to send."""
        with self._lock:
            return [*self._preferred, self._fallback], self._identity, self._service
