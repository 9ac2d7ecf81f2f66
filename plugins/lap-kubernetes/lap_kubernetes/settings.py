"""The Kubernetes backend's settings (environment variables; docs/kubernetes.md)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import msgspec


class KubernetesSettings(msgspec.Struct, frozen=True, kw_only=True, rename="upper"):
    """Settings of the Kubernetes backend (environment variables; docs/kubernetes.md, docs/configuration.md)."""

    # The seeds' names of the same settings (either may be set; both, to different values, is an error).
    env_aliases: ClassVar[dict[str, str]] = {
        "lap_k8s_namespace": "K8S_NAMESPACE",
        "lap_k8s_image": "K8S_HARNESS_IMAGE",
        "lap_k8s_image_opencode": "K8S_HARNESS_IMAGE_OPENCODE",
        "lap_k8s_image_claude_code": "K8S_HARNESS_IMAGE_CLAUDE_CODE",
        "lap_k8s_image_codex": "K8S_HARNESS_IMAGE_CODEX",
        "lap_k8s_image_pull_policy": "K8S_IMAGE_PULL_POLICY",
        "lap_k8s_warm_pool_size": "WARM_POOL_SIZE",
    }

    lap_k8s_namespace: str = "lap-sandboxes"
    # A namespace per team, e.g. "lap-{team}" ({team}: the team's id); empty: all in LAP_K8S_NAMESPACE.
    lap_k8s_namespace_per_team: str = ""
    lap_k8s_kubeconfig: str | None = None
    lap_k8s_context: str | None = None
    # `{harness}` is replaced by the harness name; a harness's own image setting wins.
    lap_k8s_image: str = "ghcr.io/lap-dev/lap-sandbox-{harness}:0.1.0"
    lap_k8s_image_opencode: str | None = None
    lap_k8s_image_claude_code: str | None = None
    lap_k8s_image_codex: str | None = None
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

    def image_for(self, harness: str) -> str:
        """Return a harness's sandbox image: its own setting, else `LAP_K8S_IMAGE` with `{harness}` replaced."""
        own = {
            "opencode": self.lap_k8s_image_opencode,
            "claude-code": self.lap_k8s_image_claude_code,
            "codex": self.lap_k8s_image_codex,
        }.get(harness)
        return own or self.lap_k8s_image.replace("{harness}", harness)
