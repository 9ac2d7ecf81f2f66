"""Kubernetes sandbox backend for LAP, on the kubernetes-sigs/agent-sandbox CRDs (v1beta1).

Each sandbox is a `Sandbox` whose pod runs sandboxd from the harness's image; its workspace and
harness home live on a PVC that outlives it. Optionally, new sessions claim warm sandboxes from a
per-harness `SandboxWarmPool`. Select it with `LAP_SANDBOX_BACKEND=kubernetes`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lap_core import SandboxBackendSpec, hookimpl
from lap_kubernetes.backend import KubernetesBackend
from lap_kubernetes.settings import KubernetesSettings

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["KubernetesBackend", "KubernetesSettings", "lap_sandbox_backends"]


@hookimpl
def lap_sandbox_backends() -> Iterator[SandboxBackendSpec]:
    """Register the `kubernetes` backend."""
    yield SandboxBackendSpec(
        name="kubernetes",
        factory=KubernetesBackend,
        settings=KubernetesSettings,
        description="agent-sandbox Sandboxes on a Kubernetes cluster (pods from per-harness images)",
    )
