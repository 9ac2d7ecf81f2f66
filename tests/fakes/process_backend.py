"""A sandbox backend for engine tests: sandboxd as a plain child process, with no isolation at all.

It speaks the real sandboxd protocol (it *is* sandboxd), so the engine and harnesses are
exercised end to end, minus bubblewrap. Never use it outside tests.
"""

from __future__ import annotations

import builtins
import secrets
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, ClassVar

import anyio

from lap_core import SandboxBackend, SandboxClient, SandboxError, SandboxRef, SandboxSpec

if TYPE_CHECKING:
    from pathlib import Path

    from lap_core import SandboxContext


async def wait_until_ready(backend: SandboxBackend, name: str, *, timeout: float, interval: float) -> SandboxRef:
    """Poll `backend.status` until the sandbox is ready; raise `SandboxError` if it stops or times out."""
    with anyio.move_on_after(timeout):
        while True:
            ref = await backend.status(name)
            if ref is None or ref.state == "stopped":
                raise SandboxError(f"sandbox {name} failed to start: {ref.detail if ref else 'missing'}")
            if ref.state == "ready":
                return ref
            await anyio.sleep(interval)
    raise SandboxError(f"sandbox {name} not ready within {timeout} s")


class ProcessBackend(SandboxBackend):
    """Runs each sandbox's sandboxd as a subprocess; `fail_start` makes the next creations crash."""

    capabilities: ClassVar[frozenset[str]] = frozenset()
    fail_start = False

    def __init__(self, *, context: SandboxContext) -> None:
        self._root = context.data_dir / "process-sandboxes"
        self._sandboxes: dict[str, tuple[subprocess.Popen[bytes], str, dict[str, str]]] = {}
        self.created: builtins.list[str] = []
        self.specs: dict[str, SandboxSpec] = {}

    def _dir(self, name: str) -> Path:
        return self._root / name

    def _volume(self, volume: str) -> Path:
        return self._root / "volumes" / volume

    async def volume_exists(self, volume: str) -> bool:
        return self._volume(volume).is_dir()

    async def delete_volume(self, volume: str) -> None:
        shutil.rmtree(self._volume(volume), ignore_errors=True)

    async def create(self, spec: SandboxSpec) -> SandboxRef:
        existing = await self.status(spec.name)
        if existing is not None and existing.state != "stopped":
            return existing
        directory = self._dir(spec.name)
        workspace = self._volume(spec.volume or spec.name)
        workspace.mkdir(parents=True, exist_ok=True)
        directory.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(16)
        argv = [
            sys.executable,
            "-m",
            "lap_sandboxd",
            "--socket",
            str(directory / "sock"),
            "--state",
            str(directory / "state"),
        ]
        if self.fail_start:
            argv = [sys.executable, "-c", "import sys; sys.exit('sandbox refused to start')"]
        process = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the test fake keeps it simple
            argv,
            env={"LAP_SANDBOXD_TOKEN": token, "PATH": "/usr/bin:/bin"},
            cwd=workspace,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._sandboxes[spec.name] = (process, token, dict(spec.labels))
        self.created.append(spec.name)
        self.specs[spec.name] = spec
        return SandboxRef(name=spec.name, state="starting", labels=dict(spec.labels))

    async def status(self, name: str) -> SandboxRef | None:
        if name not in self._sandboxes:
            return None
        process, token, labels = self._sandboxes[name]
        if process.poll() is not None:
            return SandboxRef(name=name, state="stopped", labels=labels, detail=f"exit code {process.returncode}")
        try:
            async with SandboxClient(token=token, uds=str(self._dir(name) / "sock")) as client:
                await client.health()
        except Exception:
            return SandboxRef(name=name, state="starting", labels=labels)
        return SandboxRef(name=name, state="ready", labels=labels)

    async def wait_ready(self, name: str, *, timeout: float) -> SandboxRef:
        return await wait_until_ready(self, name, timeout=timeout, interval=0.02)

    async def connect(self, name: str) -> SandboxClient:
        _, token, _ = self._sandboxes[name]
        return SandboxClient(token=token, uds=str(self._dir(name) / "sock"))

    async def delete(self, name: str) -> None:
        entry = self._sandboxes.pop(name, None)
        if entry is not None:
            entry[0].kill()
            entry[0].wait()

    async def list(self, labels: dict[str, str] | None = None) -> builtins.list[SandboxRef]:
        refs = [await self.status(name) for name in builtins.list(self._sandboxes)]
        return [ref for ref in refs if ref is not None and (labels or {}).items() <= ref.labels.items()]

    async def aclose(self) -> None:
        for name in builtins.list(self._sandboxes):
            await self.delete(name)


class SuspendingProcessBackend(ProcessBackend):
    """`ProcessBackend` with the `suspend` capability: a suspended sandbox keeps its name and volume
    (status `suspended`), its sandboxd stopped; `resume` starts a new one in its place."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"suspend"})

    def __init__(self, *, context: SandboxContext) -> None:
        super().__init__(context=context)
        self.suspended: dict[str, SandboxSpec] = {}
        self.resumed: builtins.list[str] = []

    async def suspend(self, name: str) -> None:
        spec = self.specs[name]
        await super().delete(name)
        self.suspended[name] = spec

    async def resume(self, name: str) -> SandboxRef:
        spec = self.suspended.pop(name)
        self.resumed.append(name)
        await self.create(spec)
        return await self.wait_ready(name, timeout=10)

    async def status(self, name: str) -> SandboxRef | None:
        if name in self.suspended:
            return SandboxRef(name=name, state="suspended", labels=dict(self.suspended[name].labels))
        return await super().status(name)

    async def delete(self, name: str) -> None:
        self.suspended.pop(name, None)
        await super().delete(name)

    async def list(self, labels: dict[str, str] | None = None) -> builtins.list[SandboxRef]:
        refs = [*await super().list(labels), *[r for n in self.suspended if (r := await self.status(n))]]
        return [ref for ref in refs if (labels or {}).items() <= ref.labels.items()]
