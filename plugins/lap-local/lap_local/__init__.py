"""Local sandbox backend for LAP: each sandbox is a bubblewrap namespace set on this host.

The embedded default. Sandboxes see only what is mounted for them (their session's workspace
and harness home, the harness files read-only, /usr read-only, a minimal /etc) and have no
network but a forwarded port to the platform's LLM proxy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lap_core import SandboxBackendSpec, hookimpl

if TYPE_CHECKING:
    from collections.abc import Iterator

    from lap_local.backend import LocalBackend, LocalSettings

__all__ = ["LocalBackend", "LocalSettings", "lap_sandbox_backends"]


def __getattr__(name: str) -> Any:
    # Imported on first use: every `lap` command loads this plugin, most never need a sandbox.
    if name not in ("LocalBackend", "LocalSettings"):
        raise AttributeError(f"module 'lap_local' has no attribute {name!r}")
    return getattr(importlib.import_module("lap_local.backend"), name)


@hookimpl
def lap_sandbox_backends() -> Iterator[SandboxBackendSpec]:
    """Register the `local` backend."""
    from lap_local.backend import LocalBackend, LocalSettings

    yield SandboxBackendSpec(
        name="local",
        factory=LocalBackend,
        settings=LocalSettings,
        description="bubblewrap sandboxes on this host (no network but the LLM proxy)",
    )
