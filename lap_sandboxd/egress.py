"""The egress forwarder: TCP ports on the sandbox's loopback piped to unix sockets outside.

The sandbox's network namespace has only loopback; the platform bind-mounts a unix socket (its
LLM proxy) in, and tools inside reach it as `http://127.0.0.1:4000`.
"""

from __future__ import annotations

import socket
import socketserver
import sys
import threading

__all__ = ["EgressServer", "parse_egress"]

_BUFFER = 64 * 1024


def parse_egress(spec: str) -> tuple[tuple[str, int], str]:
    """Parse `HOST:PORT=UNIXPATH` into ((host, port), path).

    Raises:
        ValueError: the spec is malformed.
    """
    address, sep, path = spec.partition("=")
    host, colon, port = address.rpartition(":")
    if not sep or not colon or not host or not path or not port.isdigit():
        raise ValueError(f"expected HOST:PORT=UNIXPATH, got {spec!r}")
    return (host.strip("[]"), int(port)), path


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
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.server.target)
        except OSError as error:
            print(f"lap_sandboxd: egress to {self.server.target} failed: {error}", file=sys.stderr, flush=True)
            upstream.close()
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

    def __init__(self, address: tuple[str, int], target: str) -> None:
        self.target = target
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Pipe)
