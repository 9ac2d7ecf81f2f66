"""`LocalBackend`: sandboxes as bubblewrap namespaces, detached from the process that made them.

Layout under the data directory:
  volumes/<volume>/{workspace,home}   what survives a sandbox (bind-mounted read-write)
  volumes/<volume>/run/               sandboxd's process output (/run/lap inside), emptied with the sandbox
  volumes/<volume>.img                the volume's disk, where it has a hard limit (see `disk`)
  sandboxes/<name>/meta.json          labels, token, pids (0600)
  sandboxes/<name>/api/sandboxd.sock  sandboxd's API: made here (0700) and passed in, reachable from the host only
The sandbox writes everything under its volume; the host never opens anything there (it mounts
it, measures it and deletes it).
  sandboxes/.locks/<name>             flock held while the sandbox is created or deleted
  runtime/<hash>/                     lap_sandboxd + msgspec for the sandbox's Python (see `runtime`)
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar

import anyio
import msgspec
import structlog

from lap_core import (
    Check,
    DiskUsage,
    SandboxBackend,
    SandboxClient,
    SandboxContext,
    SandboxError,
    SandboxRef,
    SandboxSpec,
)
from lap_local import cgroups
from lap_local.bwrap import alive, bwrap_argv, listening_socket, sandbox_env, write_etc
from lap_local.disk import Volumes
from lap_local.doctor import diagnose, unreachable
from lap_local.runtime import Runtime

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

log = structlog.get_logger("lap.local")
DEFAULT_SANDBOX_UID = 64000
SOCKET_NAME = "api/sandboxd.sock"


class LocalSettings(msgspec.Struct, frozen=True, kw_only=True, rename="upper"):
    """Settings of the local backend (environment variables)."""

    lap_bwrap: str = "bwrap"
    lap_sandbox_uid: Annotated[int, msgspec.Meta(ge=1)] | None = None
    lap_sandbox_python: str | None = None
    lap_sandbox_memory_mb: Annotated[int, msgspec.Meta(ge=64)] | None = 4096
    lap_sandbox_pids: Annotated[int, msgspec.Meta(ge=16)] | None = 1024
    # A hard limit of everything a sandbox writes (workspace, harness home, process output), in MB;
    # 0: none. Needs root (a loop-mounted ext4 image per volume).
    lap_sandbox_disk_mb: Annotated[int, msgspec.Meta(ge=0)] = 10240


class _Meta(msgspec.Struct, kw_only=True):
    name: str
    labels: dict[str, str]
    volume: str
    token: str
    pid: int = 0
    child_pid: int = 0


class LocalBackend(SandboxBackend):
    """Sandboxes on this host with bubblewrap (`--unshare-all`), run as an unprivileged user."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"delete_volume"})

    def __init__(self, settings: LocalSettings, *, context: SandboxContext) -> None:
        if context.vault_socket is None:
            raise SandboxError("the local backend needs the LLM proxy's unix socket")
        self._settings = settings
        self._root = context.data_dir
        self._vault_socket = context.vault_socket
        # Root never runs sandboxes as itself: an escape would be an escape to root.
        self._uid = settings.lap_sandbox_uid or (DEFAULT_SANDBOX_UID if os.geteuid() == 0 else os.geteuid())
        self._python = settings.lap_sandbox_python or (
            "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        )
        # As root the launcher drops to the sandbox's user through setpriv (util-linux), so that this
        # (large) process is not forked: subprocess's user=/group= rule out vfork (~8 ms per sandbox).
        self._setpriv = shutil.which("setpriv") if os.geteuid() == 0 else None
        # The read ends of the pipes on which sandboxes this process started say they are ready, by name.
        self._ready: dict[str, int] = {}
        self._runtime = Runtime(self._root / "runtime", self._python)
        self.volumes = Volumes(self._root / "volumes", uid=self._uid, limit_mb=settings.lap_sandbox_disk_mb)
        if problem := unreachable(self._root, self._uid):
            log.warning("sandbox.data_dir_unreachable", problem=problem)  # every sandbox will fail: say so now

    def _dir(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise SandboxError(f"invalid sandbox name {name!r}")
        return self._root / "sandboxes" / name

    def _read_meta(self, name: str) -> _Meta | None:
        try:
            return msgspec.json.decode((self._dir(name) / "meta.json").read_bytes(), type=_Meta)
        except FileNotFoundError:
            return None

    def _write_meta(self, meta: _Meta) -> None:
        path = self._dir(meta.name) / "meta.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(msgspec.json.encode(meta))
        tmp.replace(path)

    def _chown(self, *paths: Path) -> None:
        if os.geteuid() == 0:
            for path in paths:
                os.chown(path, self._uid, self._uid)

    def _launch(self, spec: SandboxSpec, meta: _Meta) -> None:
        directory = self._dir(spec.name)
        for path in (self._root, Path(spec.harness_root) if spec.harness_root else None, Path(self._python)):
            if path is not None and (problem := unreachable(path, self._uid)):
                raise SandboxError(problem)
        volume = self.volumes.prepare(spec.volume)
        workspace, home, run = volume / "workspace", volume / "home", volume / "run"
        # What sandboxd kept of the processes of the sandbox before goes with it.
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir()
        self._chown(run)
        # The sandbox user must reach the mounts' sources (bwrap opens them as that user).
        for path in (self._root, self._root / "volumes", self._root / "sandboxes", directory, volume):
            path.chmod(0o711)
        write_etc(directory / "etc")
        harness_root = Path(spec.harness_root) if spec.harness_root else None
        info = directory / "info.json"
        info.unlink(missing_ok=True)
        token_read, token_write = os.pipe()
        os.write(token_write, meta.token.encode())
        os.close(token_write)
        ready, ready_write = os.pipe()
        with (
            open(info, "wb") as info_file,
            open(directory / "sandbox.log", "ab") as log_file,
            listening_socket(directory / SOCKET_NAME) as listener,
            os.fdopen(token_read, "rb") as token_file,
            os.fdopen(ready_write, "wb") as ready_file,
        ):
            argv = bwrap_argv(
                bwrap=self._settings.lap_bwrap,
                python=self._python,
                workspace=workspace,
                home=home,
                run=run,
                etc=directory / "etc",
                vault_socket=self._vault_socket,
                python_lib=self._runtime.path(),
                harness_root=harness_root,
                info_fd=info_file.fileno(),
                socket_fd=listener.fileno(),
                token_fd=token_file.fileno(),
                ready_fd=ready_file.fileno(),
            )
            procs: list[Path] = []
            if cgroups.available():
                procs = cgroups.create(
                    spec.name,
                    memory_mb=spec.memory_mb or self._settings.lap_sandbox_memory_mb,
                    max_pids=spec.max_pids or self._settings.lap_sandbox_pids,
                    owner=self._uid,
                )
            # Join the cgroups first, so every process of the sandbox is counted from its start; then
            # start bwrap in the background and exit, so the sandbox is not our child: it outlives us.
            script = (
                'for f in $LAP_CGROUPS; do echo $$ > "$f" || exit 97; done; unset LAP_CGROUPS; '
                '"$@" </dev/null >&2 & echo $!'
            )
            drop: list[str] = []
            if self._setpriv:
                drop = [self._setpriv, f"--reuid={self._uid}", f"--regid={self._uid}", "--clear-groups", "--"]
            fork_as_user = os.geteuid() == 0 and not drop  # no setpriv here: subprocess drops, forking
            launcher = subprocess.run(
                [*drop, "/bin/sh", "-c", script, "sh", *argv],
                env=sandbox_env() | {"LAP_CGROUPS": " ".join(map(str, procs))},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log_file,
                pass_fds=(info_file.fileno(), listener.fileno(), token_file.fileno(), ready_file.fileno()),
                start_new_session=True,
                user=self._uid if fork_as_user else None,
                group=self._uid if fork_as_user else None,
                extra_groups=[] if fork_as_user else None,
                check=False,
            )
        if launcher.returncode != 0 or not launcher.stdout.strip().isdigit():
            os.close(ready)
            raise SandboxError(
                f"could not launch sandbox {spec.name}: {self._log_tail(spec.name) or launcher.returncode}"
            )
        meta.pid = int(launcher.stdout)
        self._write_meta(meta)
        self._forget_ready(spec.name)
        self._ready[spec.name] = ready
        log.info("sandbox.launched", sandbox=spec.name, pid=meta.pid, uid=self._uid)

    @asynccontextmanager
    async def _exclusive(self, name: str) -> AsyncIterator[None]:
        """Hold the sandbox's lock: a create and a delete of one name (from any process) never interleave."""
        path = self._root / "sandboxes" / ".locks" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await anyio.sleep(0.02)
            yield
        finally:
            os.close(lock)  # releases the lock

    async def create(self, spec: SandboxSpec) -> SandboxRef:
        """Start the sandbox unless one of that name is running (idempotent)."""
        self._dir(spec.name)  # validates the name before it names a lock file
        async with self._exclusive(spec.name):
            existing = await self.status(spec.name)
            if existing is not None and existing.state in ("starting", "ready"):
                return existing
            self._dir(spec.name).mkdir(parents=True, exist_ok=True)
            meta = _Meta(name=spec.name, labels=dict(spec.labels), volume=spec.volume, token=secrets.token_urlsafe(32))
            try:
                await anyio.to_thread.run_sync(self._launch, spec, meta)
            except OSError as error:
                raise SandboxError(f"could not start sandbox {spec.name}: {error}") from error
            return SandboxRef(name=spec.name, state="starting", labels=meta.labels)

    def _pids(self, meta: _Meta) -> tuple[int, int]:
        child_pid = meta.child_pid
        if not child_pid:
            try:
                child_pid = int(msgspec.json.decode((self._dir(meta.name) / "info.json").read_bytes())["child-pid"])
            except (FileNotFoundError, ValueError, KeyError, msgspec.DecodeError):
                child_pid = 0
        return meta.pid, child_pid

    def _running(self, meta: _Meta) -> bool:
        return alive(meta.pid)

    def _log_tail(self, name: str) -> str:
        try:
            lines = (self._dir(name) / "sandbox.log").read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return ""
        return " | ".join(lines[-5:])

    async def status(self, name: str) -> SandboxRef | None:
        """Return the sandbox's state: `ready` when sandboxd answers, `stopped` when its processes are gone."""
        meta = self._read_meta(name)
        if meta is None:
            return None
        if not self._running(meta):
            return SandboxRef(name=name, state="stopped", labels=meta.labels, detail=self._log_tail(name))
        async with await self.connect(name) as client:
            try:
                with anyio.fail_after(2):
                    await client.health()
            except Exception:
                return SandboxRef(name=name, state="starting", labels=meta.labels)
        return SandboxRef(name=name, state="ready", labels=meta.labels)

    def _forget_ready(self, name: str) -> None:
        ready = self._ready.pop(name, None)
        if ready is not None:
            os.close(ready)

    async def wait_ready(self, name: str, *, timeout: float) -> SandboxRef:
        """Wait until sandboxd is ready; fail at once, with its log, if the sandbox dies.

        A sandbox this process started says so on a pipe (its end closes if sandboxd dies first);
        another's is polled (sandboxd's health).
        """
        with anyio.move_on_after(timeout):
            if (ready := self._ready.pop(name, None)) is not None:
                try:
                    await anyio.wait_readable(ready)
                    said = os.read(ready, 64)
                finally:
                    os.close(ready)
                if said and (meta := self._read_meta(name)) is not None:
                    return SandboxRef(name=name, state="ready", labels=meta.labels)
            while True:
                ref = await self.status(name)
                if ref is None:
                    raise SandboxError(f"sandbox {name} does not exist")
                if ref.state == "ready":
                    return ref
                if ref.state == "stopped":
                    raise SandboxError(f"sandbox {name} exited while starting: {ref.detail or 'no output'}")
                await anyio.sleep(0.02)
        raise SandboxError(f"sandbox {name} was not ready within {timeout:.0f} s: {self._log_tail(name)}")

    async def connect(self, name: str) -> SandboxClient:
        """Return a client of the sandbox's sandboxd, over its unix socket."""
        meta = self._read_meta(name)
        if meta is None:
            raise SandboxError(f"sandbox {name} does not exist")
        return SandboxClient(token=meta.token, uds=str(self._dir(name) / SOCKET_NAME))

    async def delete(self, name: str) -> None:
        """Kill every process of the sandbox and remove its run directory (volumes stay)."""
        self._dir(name)
        async with self._exclusive(name):
            await self._delete(name)

    async def _delete(self, name: str) -> None:
        self._forget_ready(name)
        meta = self._read_meta(name)
        if meta is not None:
            pid, child_pid = self._pids(meta)
            # Killing the namespace's first process kills all others in it; then bwrap itself.
            for target in (child_pid, pid):
                if target and (self._running(meta) or alive(target)):
                    try:
                        os.kill(target, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            with anyio.move_on_after(5):
                while self._running(meta):  # noqa: ASYNC110 - no event tells us a foreign process exited
                    await anyio.sleep(0.01)
        if cgroups.available():
            with anyio.move_on_after(5):
                while cgroups.busy(name):  # noqa: ASYNC110 - the kernel signals no event for this
                    await anyio.sleep(0.01)
            cgroups.remove(name)
        if meta is not None:
            await anyio.to_thread.run_sync(self.volumes.release, meta.volume)
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(self._dir(name), ignore_errors=True))

    async def diagnose(self) -> list[Check]:
        """Check bwrap (with user namespaces, as the sandbox user), the sandbox's Python, cgroups, disk limits."""
        settings = self._settings
        return await diagnose(settings.lap_bwrap, self._uid, self._python, settings.lap_sandbox_disk_mb, self._root)

    async def volume_exists(self, volume: str) -> bool:
        """Whether the volume is there."""
        return self.volumes.exists(volume)

    async def delete_volume(self, volume: str) -> None:
        """Delete a volume's workspace and harness home (and its disk image)."""
        await anyio.to_thread.run_sync(self.volumes.delete, volume)

    async def disk_usage(self, volume: str) -> DiskUsage | None:
        """Return how full a volume with a hard limit is (while its sandbox runs)."""
        return self.volumes.usage(volume)

    async def list(self, labels: dict[str, str] | None = None) -> list[SandboxRef]:
        """Return this host's sandboxes whose labels include `labels`."""
        wanted = (labels or {}).items()
        refs = []
        root = self._root / "sandboxes"
        for directory in sorted(root.iterdir()) if root.exists() else []:
            if directory.name.startswith("."):
                continue  # .locks
            meta = self._read_meta(directory.name)
            if meta is not None and wanted <= meta.labels.items():
                ref = await self.status(directory.name)
                if ref is not None:
                    refs.append(ref)
        return refs
