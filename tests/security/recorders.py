"""What the leak suite listens with on the host: a recording echo server, a recording unix socket and loopback port,
a DNS sniffer, a memory sampler."""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

ECHO_HOST = "127.0.0.3"
"""A host loopback address no LAP service uses: whatever arrives there was sent somewhere it should not go."""


class EchoServer:
    """An HTTP server on host loopback that records every request and echoes it back (headers included), as an
    attacker's server would: a request that reaches it with the real key hands the key to the attacker."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _echo(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                entry = {
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers.items()),
                    "body": self.rfile.read(min(length, 1 << 20)).decode(errors="replace"),
                }
                recorder.received.append(entry)
                data = json.dumps(entry).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_CONNECT = _echo

        self._server = ThreadingHTTPServer((ECHO_HOST, 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class ConnectionRecorder:
    """Listening sockets on the host that record each connection and the bytes it receives, then hang up."""

    def __init__(self, listeners: list[socket.socket]) -> None:
        self.connections: list[bytes] = []
        self._sockets = listeners
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve, args=(s,), daemon=True) for s in listeners]
        for listener, thread in zip(listeners, self._threads, strict=True):
            listener.listen(16)
            listener.settimeout(0.2)
            thread.start()

    def _serve(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection:
                connection.settimeout(1.0)
                received = b""
                try:
                    while len(received) < 1 << 16 and (data := connection.recv(4096)):
                        received += data
                except OSError:
                    pass
                self.connections.append(received)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        for listener in self._sockets:
            listener.close()


class SocketRecorder(ConnectionRecorder):
    """A recording unix socket on the host."""

    def __init__(self, path: Path) -> None:
        self.path = path
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        super().__init__([listener])


class PortRecorder(ConnectionRecorder):
    """A recording TCP port on the host's loopback, the same port on 127.0.0.1 and on ::1: whatever arrives there
    was sent to the host's own services."""

    def __init__(self) -> None:
        for _ in range(20):  # a port free on 127.0.0.1 may be taken on ::1
            v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            v4.bind(("127.0.0.1", 0))
            self.port = int(v4.getsockname()[1])
            v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            try:
                v6.bind(("::1", self.port))
            except OSError:
                v4.close()
                v6.close()
                continue
            super().__init__([v4, v6])
            return
        raise OSError("no port free on both 127.0.0.1 and ::1")


def _dns_payload(packet: bytes, ethertype: int) -> bytes | None:
    """The UDP or TCP payload of an IP packet to or from port 53 (None for any other packet)."""
    if ethertype == 0x0800 and len(packet) >= 20:
        protocol, header = packet[9], (packet[0] & 0x0F) * 4
    elif ethertype == 0x86DD and len(packet) >= 40:
        protocol, header = packet[6], 40  # (a DNS query carries no extension headers)
    else:
        return None
    if protocol not in (6, 17) or len(packet) < header + 8:
        return None
    source, destination = struct.unpack_from("!HH", packet, header)
    if 53 not in (source, destination):
        return None
    return packet[header + (8 if protocol == 17 else (packet[header + 12] >> 4) * 4) :]


class DnsSniffer:
    """Watches the DNS traffic of every interface of the host (a packet socket: root only) while it is open, keeping
    the messages that hold a marker: the host asked a name server about a name the marker is part of."""

    ETH_P_ALL = 0x0003

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.seen: list[bytes] = []
        self._socket = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(self.ETH_P_ALL))
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self._socket.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _keep(self) -> None:
        packet, address = self._socket.recvfrom(1 << 16)
        payload = _dns_payload(packet, address[1])
        if payload is not None and self.marker in payload:
            self.seen.append(payload)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._keep()
            except TimeoutError:
                continue
            except OSError:
                return

    def __enter__(self) -> DnsSniffer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.setblocking(False)
        try:  # what arrived before the stop and is still queued
            while True:
                self._keep()
        except OSError:
            pass
        self._socket.close()


def rss_mib(pid: int) -> float:
    """The resident memory of a process, in MiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for {pid}")


class RssSampler:
    """Samples the resident memory of some processes every 20 ms, in a thread, until stopped: their peaks."""

    def __init__(self, pids: list[int]) -> None:
        self.before = {pid: rss_mib(pid) for pid in pids}
        self.peak = dict(self.before)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for pid in self.peak:
                try:
                    self.peak[pid] = max(self.peak[pid], rss_mib(pid))
                except (OSError, ValueError):
                    continue

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def growth(self) -> dict[int, float]:
        """MiB each process grew by at its peak."""
        return {pid: self.peak[pid] - self.before[pid] for pid in self.peak}


def free_mib(path: Path) -> float:
    """Free space of the file system holding `path`, in MiB."""
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize / (1 << 20)


def allocated_mib(path: Path) -> float:
    """Space the files under `path` take on its file system (allocated blocks, not apparent sizes), in MiB.

    File systems mounted below it are not counted: a disk limit may be a file system of its own, whose image file
    is counted instead."""
    total = 0
    device = os.lstat(path).st_dev
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if os.lstat(os.path.join(root, d)).st_dev == device]
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total / (1 << 20)


def wait_until(condition: Any, timeout: float, interval: float = 0.1) -> bool:
    """Poll `condition()` until it holds or `timeout` seconds pass; return whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())
