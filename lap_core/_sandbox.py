"""The SandboxBackend contract and what a sandbox looks like from inside.

A backend creates, finds and deletes sandboxes; the platform talks to the `lap_sandboxd` daemon
running in each one through a `SandboxClient`. Conformance: `lap_core.testing.BackendConformance`.
"""

from __future__ import annotations

import base64
from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import msgspec
from anyio.abc import AsyncResource

from lap_core._errors import NotSupported
from lap_core._sandbox_client import SandboxClient, SandboxdError
from lap_sandboxd.protocol import ExecResult, FileSpec, HydrateRequest, OutputRecord, ProcessInfo, StartProcess

if TYPE_CHECKING:
    import builtins

__all__ = [
    "CA_BUNDLE",
    "EGRESS_PROXY_URL",
    "HARNESS_ROOT",
    "HOME_DIR",
    "LLM_BASE_URL",
    "VAULT_DIR",
    "WORKSPACE_DIR",
    "Check",
    "DiskUsage",
    "ExecResult",
    "FileSpec",
    "HydratePayload",
    "OutputRecord",
    "ProcessInfo",
    "SandboxBackend",
    "SandboxClient",
    "SandboxContext",
    "SandboxRef",
    "SandboxSpec",
    "SandboxdError",
    "StartProcess",
    "text_file",
]

# The layout every backend gives a sandbox, so harnesses work the same on all of them.
WORKSPACE_DIR = "/workspace"
"""The session's workspace (persistent: it survives the sandbox)."""
HOME_DIR = "/home/agent"
"""The harness's home, where it keeps its own sessions and config (persistent)."""
HARNESS_ROOT = "/opt/lap/harness"
"""Where the harness's installed files are (read-only); npm packages under `node_modules/`."""
LLM_BASE_URL = "http://127.0.0.1:4000"
"""The sandbox's only way out: the platform's LLM proxy, reached through sandboxd's forwarder."""
EGRESS_PROXY_URL = "http://127.0.0.1:3128"
"""The sandbox's way to the network: LAP's egress gateway as an HTTP proxy (sandboxd's forwarder)."""
CA_BUNDLE = f"{HOME_DIR}/.config/lap/ca-bundle.pem"
"""The CA certificates a sandbox trusts: the public ones and the egress gateway's (written at hydrate)."""
VAULT_DIR = "/run/lap-vault"
"""Where a backend on LAP's own host mounts the directory of the LLM proxy's unix sockets (the
parent of `SandboxContext.vault_socket`), read-only; sandboxd's forwarder connects to them."""

HydratePayload = HydrateRequest
"""What the platform pushes into a fresh sandbox: env (stub secrets only), files, workdir."""


def text_file(path: str, content: str, mode: int = 0o644) -> FileSpec:
    """Return a file for a `HydratePayload` from text."""
    return FileSpec(path=path, content_b64=base64.b64encode(content.encode()).decode(), mode=mode)


SandboxState = Literal["starting", "ready", "suspended", "stopped", "failed"]


class SandboxSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What to create. `name` is the identity: creating the same name twice yields one sandbox.

    `volume` names the persistent workspace + harness home: a new sandbox with the same volume
    sees the same files. `harness_root` is a host directory with the installed harness, for
    backends that mount it (image-based backends use `image` instead).
    """

    name: str
    harness: str
    volume: str
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    harness_root: str | None = None
    image: str | None = None
    memory_mb: int | None = None
    max_pids: int | None = None


class SandboxRef(msgspec.Struct, frozen=True, kw_only=True):
    """A sandbox as its backend sees it now."""

    name: str
    state: SandboxState
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    detail: str = ""


class SandboxContext(msgspec.Struct, frozen=True, kw_only=True):
    """What LAP gives a backend: its data directory and where the LLM proxy listens.

    `vault_socket` is a unix socket path (for backends on this host: mount its directory at
    `VAULT_DIR` and have sandboxd forward `LLM_BASE_URL` to the socket there), `vault_url` an HTTP
    URL (for backends elsewhere: forward to it). Either is the fallback: LAP tells sandboxd at
    hydrate time which socket or address of the proxy it prefers.
    """

    data_dir: Path
    vault_socket: Path | None = None
    vault_url: str | None = None


class DiskUsage(msgspec.Struct, frozen=True, kw_only=True):
    """How full a volume with a hard size limit is, in bytes."""

    used: int
    limit: int

    @property
    def full(self) -> bool:
        """Whether (almost) nothing is left: less than 8 MiB, or 2 % of the limit.

        Not "nothing": after a write fails with ENOSPC, a filesystem may give back what it had
        set aside for the file (ext4 frees its preallocation when the file is closed).
        """
        return self.limit - self.used < max(8 * 1024 * 1024, self.limit // 50)


class Check(msgspec.Struct, frozen=True, kw_only=True):
    """One result of `lap doctor`: what was checked, whether it passed, and how to fix it."""

    name: str
    ok: bool
    detail: str = ""
    fix: str = ""


class SandboxBackend(AsyncResource):
    """Creates and manages sandboxes. Subclass it to run sandboxes somewhere new.

    Optional capabilities are listed in `capabilities` (e.g. `"suspend"`); the default
    implementations of their methods raise `NotSupported`. `"images"` says the backend runs each
    harness from an image of its own: LAP then neither needs the harness installed on this host
    nor passes `SandboxSpec.harness_root`.
    """

    capabilities: ClassVar[frozenset[str]] = frozenset()

    async def aclose(self) -> None:
        """Release the backend's own resources; sandboxes keep running."""

    @abstractmethod
    async def create(self, spec: SandboxSpec) -> SandboxRef:
        """Create the sandbox, or return the existing one of that name (idempotent); do not wait."""

    @abstractmethod
    async def wait_ready(self, name: str, *, timeout: float) -> SandboxRef:
        """Wait until sandboxd answers; raise `SandboxError` with the reason on failure or timeout."""

    @abstractmethod
    async def status(self, name: str) -> SandboxRef | None:
        """Return the sandbox, or None if it does not exist."""

    @abstractmethod
    async def connect(self, name: str) -> SandboxClient:
        """Return a client of the sandbox's sandboxd (the caller closes it)."""

    @abstractmethod
    async def delete(self, name: str) -> None:
        """Delete the sandbox (not its volume); deleting a missing sandbox is not an error."""

    @abstractmethod
    async def list(self, labels: dict[str, str] | None = None) -> builtins.list[SandboxRef]:
        """Return the sandboxes whose labels include all of `labels`."""

    async def diagnose(self) -> builtins.list[Check]:
        """Check what the backend needs on this host (for `lap doctor`); the default checks nothing."""
        return []

    async def delete_volume(self, volume: str) -> None:
        """Delete a volume's workspace and harness home for good."""
        raise NotSupported(f"{type(self).__name__} cannot delete volumes")

    async def volume_exists(self, volume: str) -> bool:
        """Whether a volume (workspace and harness home) is still there.

        LAP asks before it recreates the sandbox of a session with history: a lost volume means
        the harness's own session is gone too, and the conversation is replayed from the log. The
        default answers True (a backend that cannot tell keeps its volumes).
        """
        return True

    async def disk_usage(self, volume: str) -> DiskUsage | None:
        """Return how full a volume is, if it has a hard size limit (None: no limit, or cannot tell).

        LAP asks at the end of every turn: a full volume gets the session an `error` event
        (`disk_full`) saying so. The default answers None.
        """
        return None

    async def suspend(self, name: str) -> None:
        """Stop the sandbox's processes, keeping its volume (capability `suspend`)."""
        raise NotSupported(f"{type(self).__name__} cannot suspend sandboxes")

    async def resume(self, name: str) -> SandboxRef:
        """Start a suspended sandbox again (capability `suspend`)."""
        raise NotSupported(f"{type(self).__name__} cannot resume sandboxes")
