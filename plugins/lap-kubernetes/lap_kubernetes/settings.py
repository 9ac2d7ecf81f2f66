"""The Kubernetes backend's settings (environment variables; docs/kubernetes.md)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec


class KubernetesSettings(msgspec.Struct, frozen=True, kw_only=True, rename="upper"):
    """Settings of the Kubernetes backend (environment variables; docs/backends/kubernetes.md)."""

    lap_k8s_namespace: str = "lap-sandboxes"
    # A namespace per team, e.g. "lap-{team}" ({team}: the team's id); empty: all in LAP_K8S_NAMESPACE.
    lap_k8s_namespace_per_team: str = ""
    lap_k8s_kubeconfig: str | None = None
    lap_k8s_context: str | None = None
    # `{harness}` is replaced by the harness name.
    lap_k8s_image: str = "ghcr.io/lap-dev/lap-sandbox-{harness}:0.1.0"
    lap_k8s_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    lap_k8s_storage_class: str | None = None
    lap_k8s_volume_size: str = "10Gi"
    lap_k8s_memory_mb: Annotated[int, msgspec.Meta(ge=64)] | None = 4096
    lap_k8s_cpu: str | None = None
    lap_k8s_runtime_class: str | None = None
    # How LAP reaches sandboxd: the pod's IP (LAP runs in the cluster, or routes to pod IPs), the
    # headless Service's DNS name (needs cluster DNS), or a port-forward through the API server
    # (LAP outside the cluster).
    lap_k8s_connect: Literal["pod-ip", "service", "port-forward"] = "pod-ip"
    # > 0: keep this many warm sandboxes per harness and claim one for each new session.
    lap_k8s_warm_pool_size: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0
