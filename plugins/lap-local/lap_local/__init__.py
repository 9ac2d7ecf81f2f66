"""Local sandbox backend for LAP: each sandbox is a bubblewrap namespace set on this host.

The embedded default. Sandboxes see only what is mounted for them (their session's workspace
and harness home, the harness files read-only, /usr read-only, a minimal /etc) and have no
network but a forwarded port to the platform's LLM proxy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lap_core import SandboxBackendSpec, hookimpl
from lap_local.backend import LocalBackend, LocalSettings

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["LocalBackend", "LocalSettings", "lap_sandbox_backends"]


@hookimpl
def lap_sandbox_backends() -> Iterator[SandboxBackendSpec]:
    """Register the `local` backend."""
    yield SandboxBackendSpec(
        name="local",
        factory=LocalBackend,
        settings=LocalSettings,
        description="bubblewrap sandboxes on this host (no network but the LLM proxy)",
    )
