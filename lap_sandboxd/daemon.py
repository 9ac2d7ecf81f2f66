"""sandboxd's start-up: its sockets, its token, its forwarders, and the process's protection.

Agent processes run as the same user as sandboxd, so neither its token nor its API may be within
their reach:
- the token comes on a file descriptor (`--token-fd`; a local backend's pipe) or, where that
  cannot be (a pod), in `LAP_SANDBOXD_TOKEN`, removed from the environment at start so no process
  started here inherits it (a pod's backend then replaces it over the API: `PUT /token`);
- the socket can be one the platform made outside the sandbox and passed in (`--socket-fd`), so
  no path inside leads to it;
- sandboxd makes itself non-dumpable at start (`protect_process`): processes of the same user
  can then neither read its memory, environment and descriptors through /proc nor ptrace it.

Every sandbox waits for its sandboxd to start, and a warm pool's wait idle: sandboxd listens with
little imported, and imports its API (the HTTP server, msgspec, the process table: ~30 ms of CPU and
~6 MiB) when the first connection comes. It says it is ready on `--ready-fd` once it listens.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import socket
import socketserver
import stat
import sys
import threading
import time

from lap_sandboxd.egress import EgressServer, Target, parse_egress
from lap_sandboxd.log import log

TYPE_CHECKING = False  # typing itself (with re) is an import every sandbox's start would pay
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from lap_sandboxd.server import Handler
    from lap_sandboxd.state import Sandboxd

__all__ = ["USAGE", "Options", "main", "parse_args", "protect_process"]

TOKEN_ENV = "LAP_SANDBOXD_TOKEN"
SHUTDOWN_GRACE = 5.0
_PR_SET_DUMPABLE = 4


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    @classmethod
    def from_fd(cls, fd: int, handler: Callable[..., Handler]) -> _UnixServer:
        """Serve on a listening socket the platform made and passed in."""
        server = cls("", handler, bind_and_activate=False)
        server.socket.close()
        server.socket = socket.socket(fileno=fd)
        server.socket.set_inheritable(False)
        server.server_address = server.socket.getsockname()
        return server

    def server_bind(self) -> None:
        path = str(self.server_address)
        if os.path.exists(path) and stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)  # left over by a sandboxd that died
        old = os.umask(0o177)  # no moment in which others may connect
        try:
            super().server_bind()
        finally:
            os.umask(old)
        os.chmod(path, 0o600)


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: Callable[..., Handler]) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)


class _API:
    """sandboxd's API, made when the first connection comes (see the module's docstring)."""

    def __init__(self, token: str, state: str, egress: dict[str, EgressServer]) -> None:
        self._token, self._state, self._egress = token, state, egress
        self._started_at = time.time()
        self._lock = threading.Lock()
        self._handler: Callable[..., Handler] | None = None
        self.sandboxd: Sandboxd | None = None

    def handle(self, request: Any, client_address: Any, server: socketserver.BaseServer) -> Handler:
        """Serve one connection (socketserver's request handler)."""
        return (self._handler or self._make())(request, client_address, server)

    def _make(self) -> Callable[..., Handler]:
        with self._lock:
            if self._handler is None:
                from pathlib import Path

                from lap_sandboxd.server import Handler
                from lap_sandboxd.state import Sandboxd

                sandboxd = Sandboxd(self._token, Path(self._state), self._egress)
                sandboxd.started_at = self._started_at
                self.sandboxd = sandboxd
                self._handler = functools.partial(Handler, sandboxd)
            return self._handler


def _say_ready(fd: int | None) -> None:
    """Tell whoever started sandboxd that it listens (and close the descriptor: no child inherits it)."""
    if fd is None:
        return
    try:
        os.write(fd, b"ready\n")
    except OSError:
        pass  # nobody waits any more
    finally:
        os.close(fd)


USAGE = (
    "usage: lap_sandboxd (--socket PATH | --socket-fd N) [--token-fd N] --state DIR [--listen HOST:PORT]\n"
    "                    [--egress HOST:PORT=TARGET ...] [--ready-fd N]\n"
    "  --socket PATH        unix socket to serve the API on (made here)\n"
    "  --socket-fd N        an inherited listening unix socket to serve the API on\n"
    f"  --token-fd N         read the token from this descriptor (else ${TOKEN_ENV})\n"
    "  --state DIR          directory for process output and info\n"
    "  --listen HOST:PORT   also serve the API on HOST:PORT (TCP)\n"
    "  --egress HOST:PORT=TARGET  forward TCP HOST:PORT to TARGET, a unix socket path or a TCP HOST:PORT\n"
    "  --ready-fd N         write a line to this descriptor, then close it, once listening"
)


class Options:
    """sandboxd's command line, parsed (see `USAGE`)."""

    socket: str | None = None
    socket_fd: int | None = None
    token_fd: int | None = None
    state: str = ""
    listen: tuple[str, int] | None = None
    ready_fd: int | None = None

    def __init__(self) -> None:
        self.egress: list[tuple[tuple[str, int], Target]] = []


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


_PARSERS: dict[str, Callable[[str], object]] = {
    "--socket": str,
    "--socket-fd": int,
    "--token-fd": int,
    "--state": str,
    "--listen": _host_port,
    "--egress": parse_egress,
    "--ready-fd": int,
}


def parse_args(argv: list[str] | None = None) -> Options:
    """Parse sandboxd's command line (`sys.argv` by default); on a mistake print `USAGE` and exit with 2.

    By hand rather than with argparse, whose import (with re and gettext) every sandbox's start would pay.
    """
    options, args = Options(), list(sys.argv[1:] if argv is None else argv)
    try:
        while args:
            name, inline, value = args.pop(0).partition("=")
            if name in ("-h", "--help"):
                print(USAGE)
                raise SystemExit(0)
            parse = _PARSERS.get(name)
            if parse is None:
                raise ValueError(f"unknown argument {name!r}")
            if not inline:
                if not args:
                    raise ValueError(f"{name} needs a value")
                value = args.pop(0)
            parsed = parse(value)
            if name == "--egress":
                options.egress.append(parsed)  # type: ignore[arg-type]
            else:
                setattr(options, name[2:].replace("-", "_"), parsed)
        if (options.socket is None) == (options.socket_fd is None):
            raise ValueError("give one of --socket and --socket-fd")
        if not options.state:
            raise ValueError("--state is required")
    except ValueError as error:
        print(f"{USAGE}\nlap_sandboxd: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    return options


def protect_process() -> bool:
    """Make this process non-dumpable; return whether that worked (Linux only).

    Its /proc files then belong to root and need CAP_SYS_PTRACE to open, and it cannot be traced:
    the agent's processes, though they run as the same user, read neither its token nor its memory.
    Children get the flag reset when they exec.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)


def _read_token(args: Options) -> str:
    token = os.environ.pop(TOKEN_ENV, "")
    if args.token_fd is not None:
        with os.fdopen(args.token_fd, "rb") as source:
            token = source.read(4096).decode(errors="replace").strip()
    return token


def main(argv: list[str] | None = None) -> int:
    """Run sandboxd until SIGTERM or SIGINT; return the exit status."""
    if not protect_process():
        log("could not make the process non-dumpable: agent processes may read its memory")
    args = parse_args(argv)
    token = _read_token(args)
    if not token:
        log(f"no token: pass --token-fd or set {TOKEN_ENV}")
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    servers: list[socketserver.BaseServer] = []
    egress: dict[str, EgressServer] = {}
    try:
        # Egress and TCP first: once the socket answers, everything is listening.
        for address, target in args.egress:
            egress[f"{address[0]}:{address[1]}"] = EgressServer(address, target)
        servers += egress.values()
        os.makedirs(os.path.join(args.state, "processes"), exist_ok=True)  # its failure said now, not later
        api = _API(token, args.state, egress)
        handler = api.handle
        if args.listen:
            servers.append(_TCPServer(args.listen, handler))
        if args.socket_fd is not None:
            servers.append(_UnixServer.from_fd(args.socket_fd, handler))
        elif args.socket is not None:  # one of them: parse_args sees to it
            os.makedirs(os.path.dirname(args.socket) or ".", exist_ok=True)
            servers.append(_UnixServer(args.socket, handler))
    except OSError as error:
        log(f"cannot listen: {error}")
        for server in servers:
            server.server_close()
        return 1
    for server in servers:
        threading.Thread(target=server.serve_forever, name=type(server).__name__, daemon=True).start()
    _say_ready(args.ready_fd)
    log(f"ready on {args.socket or f'descriptor {args.socket_fd}'} (pid {os.getpid()})")
    while not stop.wait(1.0):
        pass
    log("stopping")
    for server in servers:
        server.shutdown()
        server.server_close()
    if api.sandboxd is not None:
        api.sandboxd.processes.terminate_all(SHUTDOWN_GRACE)
    if args.socket:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.socket)
    return 0
