"""The fakes for `lap` subprocesses: a process backend several LAP processes share, loaded from an entry point.

`ProcessBackend` keeps its sandboxes in memory, so it serves one LAP process only: a second worker
would not find a session's sandbox, start another sandboxd on the same socket, and lock the first
worker out (its token no longer matches). `SharedProcessBackend` keeps each sandbox's pid and token
in a file beside it, so every LAP process of one data directory finds the same sandboxd, as `lap
worker` processes find a real backend's sandboxes; and, like those, its sandboxes outlive the
process that made them (`stop_all` ends them). Never use it outside tests: no isolation but the
network.

Each sandboxd runs in a network namespace of its own, where `127.0.0.1:4000` (`LLM_BASE_URL`) is
its own forwarder to the LLM proxy, and in a mount namespace of its own whose `/run/lap-vault`
(`VAULT_DIR`) is the host's directory of the proxy's sockets, as a real local backend mounts it:
the forwarder falls back to the shared socket there and prefers the socket the platform names
(its path in the sandbox). The filesystem is the host's otherwise.

`entry_point_dir(path)` writes the metadata of a distribution whose `lap` entry point is this
module's `plugin` (backend `shared-process`, harness `script`); with `path` on PYTHONPATH, a `lap`
subprocess loads the fakes like any installed plugin.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, ClassVar

import anyio
import msgspec

from lap_core import (
    LLM_BASE_URL,
    VAULT_DIR,
    HarnessSpec,
    SandboxBackend,
    SandboxBackendSpec,
    SandboxClient,
    SandboxError,
    SandboxRef,
    SandboxSpec,
    hookimpl,
)
from tests.fakes.process_backend import wait_until_ready
from tests.fakes.script_harness import ScriptHarness

if TYPE_CHECKING:
    import builtins
    from collections.abc import Iterator
    from pathlib import Path

    from lap_core import SandboxContext

BACKEND = "shared-process"
ROOT = "shared-process-sandboxes"
NAMESPACES = (
    "ip link set lo up"
    " && mount -t tmpfs -o mode=0755 lap-run /run"
    f' && mkdir {VAULT_DIR} && mount --bind "$LAP_VAULT_HOST_DIR" {VAULT_DIR}'
    ' && exec "$@"'
)
"""Run in the new namespaces before sandboxd: loopback up, the proxy's sockets at `VAULT_DIR` (a /run of its own)."""


class _Record(msgspec.Struct, frozen=True):
    pid: int
    token: str
    labels: dict[str, str]


def _alive(pid: int) -> bool:
    """Whether `pid` is a running (not zombie) sandboxd."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read()
        # Empty while the process is between two execs (sh, unshare, sh, python): not gone.
        is_sandboxd = not command or b"lap_sandboxd" in command
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and is_sandboxd


def _read(directory: Path) -> _Record | None:
    try:
        return msgspec.json.decode((directory / "sandbox.json").read_bytes(), type=_Record)
    except (OSError, msgspec.DecodeError):
        return None


def _stop(*pids: int, timeout: float = 10.0) -> None:
    """Stop sandboxds (SIGTERM: each ends its processes first), SIGKILL those that linger."""
    running = [pid for pid in pids if _alive(pid)]
    for pid in running:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(map(_alive, running)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in filter(_alive, running):
        os.kill(pid, signal.SIGKILL)


def stop_all(data_dir: Path) -> None:
    """Stop every sandboxd the shared backend started for LAPs of `data_dir` (test clean-up)."""
    root = data_dir / ROOT
    records = [_read(directory) for directory in root.iterdir()] if root.is_dir() else []
    _stop(*(record.pid for record in records if record is not None))


class SharedProcessBackend(SandboxBackend):
    """Runs each sandbox's sandboxd as a process that any LAP process of the data directory finds."""

    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *, context: SandboxContext) -> None:
        self._root = context.data_dir / ROOT
        if context.vault_socket is None:
            raise SandboxError("the shared process backend needs the LLM proxy's unix socket")
        self._vault_socket = context.vault_socket

    def _dir(self, name: str) -> Path:
        return self._root / name

    async def create(self, spec: SandboxSpec) -> SandboxRef:
        # Two workers may bring up one session's sandbox at once (a turn taken over while its first
        # worker still runs, say): one launches it, the other finds it, as with lap-local's flock.
        self._root.mkdir(parents=True, exist_ok=True)
        lock = os.open(self._root / f".{spec.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            await anyio.to_thread.run_sync(fcntl.flock, lock, fcntl.LOCK_EX)
            return await self._create(spec)
        finally:
            os.close(lock)

    async def _create(self, spec: SandboxSpec) -> SandboxRef:
        existing = await self.status(spec.name)
        if existing is not None and existing.state != "stopped":
            return existing
        directory = self._dir(spec.name)
        (directory / "workspace").mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(16)
        egress = f"{LLM_BASE_URL.removeprefix('http://')}={VAULT_DIR}/{self._vault_socket.name}"
        sandboxd = [sys.executable, "-m", "lap_sandboxd", "--socket", str(directory / "sock"), "--egress", egress]
        # unshare execs (no fork), and so does the shell: the pid is sandboxd's from the start.
        user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
        argv = ["unshare", *user, "--net", "--mount", "--", "sh", "-c", NAMESPACES, "sh", *sandboxd]
        # Started in the background by a shell that exits at once: sandboxd is nobody's child, so it
        # outlives this process as a real sandbox does, and no Popen is left to warn about it.
        launcher = subprocess.run(  # noqa: ASYNC221 - returns at once; the test fake keeps it simple
            [
                "sh",
                "-c",
                '"$@" >"$SANDBOXD_LOG" 2>&1 </dev/null & echo $!',
                "sh",
                *argv,
                "--state",
                str(directory / "state"),
            ],
            env={
                "LAP_SANDBOXD_TOKEN": token,
                "SANDBOXD_LOG": str(directory / "sandboxd.log"),
                "LAP_VAULT_HOST_DIR": str(self._vault_socket.parent),
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            },
            cwd=directory / "workspace",
            capture_output=True,
            text=True,
            check=True,
            start_new_session=True,  # a worker killed by its process group must not take the sandbox along
        )
        record = msgspec.json.encode(_Record(pid=int(launcher.stdout), token=token, labels=dict(spec.labels)))
        tmp = directory / "sandbox.json.tmp"
        tmp.write_bytes(record)
        tmp.replace(directory / "sandbox.json")
        return SandboxRef(name=spec.name, state="starting", labels=dict(spec.labels))

    async def status(self, name: str) -> SandboxRef | None:
        record = _read(self._dir(name))
        if record is None:
            return None
        if not _alive(record.pid):
            log = self._dir(name) / "sandboxd.log"
            last = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            detail = f"pid {record.pid} is gone" + (f" ({' / '.join(last)})" if last else "")
            return SandboxRef(name=name, state="stopped", labels=record.labels, detail=detail)
        if not (self._dir(name) / "sock").exists():
            return SandboxRef(name=name, state="starting", labels=record.labels)
        try:
            async with SandboxClient(token=record.token, uds=str(self._dir(name) / "sock")) as client:
                await client.health()
        except Exception:
            return SandboxRef(name=name, state="starting", labels=record.labels)
        return SandboxRef(name=name, state="ready", labels=record.labels)

    async def wait_ready(self, name: str, *, timeout: float) -> SandboxRef:
        return await wait_until_ready(self, name, timeout=timeout, interval=0.05)

    async def connect(self, name: str) -> SandboxClient:
        record = _read(self._dir(name))
        if record is None:
            raise SandboxError(f"sandbox {name} does not exist")
        return SandboxClient(token=record.token, uds=str(self._dir(name) / "sock"))

    async def delete(self, name: str) -> None:
        """Stop the sandbox and forget its processes, as a real backend does; its workspace stays."""
        record = _read(self._dir(name))
        if record is not None:
            await anyio.to_thread.run_sync(_stop, record.pid)
            (self._dir(name) / "sandbox.json").unlink(missing_ok=True)
        # sandboxd's state (its processes' outputs) goes with the sandbox: a new one starts empty.
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(self._dir(name) / "state", ignore_errors=True))

    async def list(self, labels: dict[str, str] | None = None) -> builtins.list[SandboxRef]:
        names = sorted(path.name for path in self._root.iterdir() if path.is_dir()) if self._root.is_dir() else []
        refs = [await self.status(name) for name in names]
        return [ref for ref in refs if ref is not None and (labels or {}).items() <= ref.labels.items()]


class SharedFakesPlugin:
    """Registers backend `shared-process` and harness `script`."""

    @hookimpl
    def lap_sandbox_backends(self) -> Iterator[SandboxBackendSpec]:
        yield SandboxBackendSpec(name=BACKEND, factory=SharedProcessBackend)

    @hookimpl
    def lap_harnesses(self) -> Iterator[HarnessSpec]:
        yield HarnessSpec(name="script", factory=ScriptHarness)


plugin = SharedFakesPlugin()
"""The entry point `entry_point_dir` declares."""


def entry_point_dir(directory: Path) -> Path:
    """Write, in `directory`, a distribution declaring `plugin` as the `lap` entry point `fakes`; return it."""
    dist = directory / "lap_test_fakes-0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lap-test-fakes\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(f"[lap]\nfakes = {__name__}:plugin\n")
    return directory
