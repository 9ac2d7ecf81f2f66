"""Kubernetes sandbox backend for LAP, on the kubernetes-sigs/agent-sandbox CRDs (v1beta1).

Each sandbox is a `Sandbox` whose pod runs sandboxd from the harness's image; its workspace and
harness home live on a PVC that outlives it. Optionally, new sessions claim warm sandboxes from a
per-harness `SandboxWarmPool`. Select it with `LAP_SANDBOX_BACKEND=kubernetes`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lap_core import SandboxBackendSpec, hookimpl

if TYPE_CHECKING:
    from collections.abc import Iterator

    from lap_kubernetes.backend import KubernetesBackend
    from lap_kubernetes.settings import KubernetesSettings

__all__ = ["KubernetesBackend", "KubernetesSettings", "lap_sandbox_backends"]

# Imported on first use: every `lap` command loads this plugin, and kubernetes_asyncio alone is
# about 900 modules (`lap --help` must not pay for a backend it does not use).
_SOURCES = {"KubernetesBackend": "lap_kubernetes.backend", "KubernetesSettings": "lap_kubernetes.settings"}


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module 'lap_kubernetes' has no attribute {name!r}")
    return getattr(importlib.import_module(_SOURCES[name]), name)


@hookimpl
def lap_sandbox_backends() -> Iterator[SandboxBackendSpec]:
    """Register the `kubernetes` backend."""
    from lap_kubernetes.backend import KubernetesBackend
    from lap_kubernetes.settings import KubernetesSettings

    yield SandboxBackendSpec(
        name="kubernetes",
        factory=KubernetesBackend,
        settings=KubernetesSettings,
        description="agent-sandbox Sandboxes on a Kubernetes cluster (pods from per-harness images)",
    )
