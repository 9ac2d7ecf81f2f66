"""The egress forwarder: TCP ports on the sandbox's loopback piped to the platform's LLM proxy.

Tools inside reach the proxy as `http://127.0.0.1:4000` wherever the sandbox runs. A local
sandbox's network namespace has only loopback and the platform bind-mounts the proxy's unix
socket in; a pod's target is the proxy's TCP address (`HOST:PORT`).
"""

from __future__ import annotations

import socket
import socketserver
import sys
import threading

__all__ = ["EgressServer", "parse_egress"]

_BUFFER = 64 * 1024


Target = str | tuple[str, int]
"""A unix socket path, or a TCP (host, port)."""


def _address(value: str) -> tuple[str, int] | None:
    host, colon, port = value.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def parse_egress(spec: str) -> tuple[tuple[str, int], Target]:
    """Parse `HOST:PORT=/UNIX/PATH` or `HOST:PORT=TARGETHOST:TARGETPORT` into (address, target).

    Raises:
        ValueError: the spec is malformed.
    """
    listen, sep, target = spec.partition("=")
    address = _address(listen)
    if not sep or address is None:
        raise ValueError(f"expected HOST:PORT=/UNIX/PATH or HOST:PORT=HOST:PORT, got {spec!r}")
    if target.startswith("/"):
        return address, target
    tcp = _address(target)
    if tcp is None:
        raise ValueError(f"expected a unix socket path or HOST:PORT after '=', got {spec!r}")
    return address, tcp


def _copy(source: socket.socket, target: socket.socket) -> None:
    """Copy until EOF, then pass the EOF on (half-close), so request/response protocols work."""
    try:
        while data := source.recv(_BUFFER):
            target.sendall(data)
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
        target = self.server.target
        try:
            if isinstance(target, str):
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    upstream.connect(target)
                except OSError:
                    upstream.close()
                    raise
            else:
                upstream = socket.create_connection(target, timeout=10)
                upstream.settimeout(None)
        except OSError as error:
            print(f"lap_sandboxd: egress to {target} failed: {error}", file=sys.stderr, flush=True)
            return
        with upstream:
            back = threading.Thread(target=_copy, args=(upstream, client), daemon=True)
            back.start()
            _copy(client, upstream)
            back.join()


class EgressServer(socketserver.ThreadingTCPServer):
    """Listens on a TCP address and pipes each connection to a new connection to `target`."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], target: Target) -> None:
        self.target = target
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Pipe)
