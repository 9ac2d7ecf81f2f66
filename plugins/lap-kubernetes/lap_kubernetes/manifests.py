"""The Kubernetes objects of a LAP sandbox, as plain dicts (no API calls here).

A session's sandbox is an agent-sandbox `Sandbox` (v1beta1) whose pod runs sandboxd from the
harness's image, plus a `Secret` with sandboxd's token. Its volume (workspace and harness home) is
a PVC that LAP owns and finds by the label `lap.volume`: unlike a `volumeClaimTemplates` PVC, which
the garbage collector deletes with its Sandbox, it outlives the sandbox as LAP's contract asks
(an idle session's Sandbox is deleted; its next message brings a new one up on the same volume).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any
from urllib.parse import urlsplit

from lap_core import EGRESS_PROXY_URL, HARNESS_ROOT, HOME_DIR, LLM_BASE_URL, WORKSPACE_DIR, SandboxError

SANDBOX_API = ("agents.x-k8s.io", "v1beta1", "sandboxes")
TEMPLATE_API = ("extensions.agents.x-k8s.io", "v1beta1", "sandboxtemplates")
POOL_API = ("extensions.agents.x-k8s.io", "v1beta1", "sandboxwarmpools")
CLAIM_API = ("extensions.agents.x-k8s.io", "v1beta1", "sandboxclaims")

MANAGED_BY = {"app.kubernetes.io/managed-by": "lap"}
SANDBOX_LABEL = "lap.sandbox"
VOLUME_LABEL = "lap.volume"
HARNESS_LABEL = "lap.harness"
TOKEN_KEY = "token"
SANDBOXD_PORT = 7000
LLM_PORT = urlsplit(LLM_BASE_URL).port
EGRESS_PORT = urlsplit(EGRESS_PROXY_URL).port
RUN_DIR = "/run/lap"
UID = 1000
# The sandbox image keeps sandboxd and msgspec here (see tests/k8s/cluster/build-sandbox-image.sh).
PYTHON_DIR = "/opt/lap/python"

_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def is_dns_label(name: str) -> bool:
    """Whether `name` is a DNS label (what namespaces, pods and Services are named with)."""
    return len(name) <= 63 and bool(_DNS_LABEL.match(name))


def check_name(name: str) -> str:
    """Return `name` if it is a DNS label (what pods, Services and Sandboxes need); else raise."""
    if not is_dns_label(name):
        raise SandboxError(f"invalid sandbox name {name!r}: Kubernetes needs a DNS label (a-z, 0-9, '-', ≤ 63)")
    return name


ORIGINAL_LABELS = "lap.dev/labels"
"""Annotation with a sandbox's labels as LAP gave them (label values may have had to change)."""


def label_value(value: str) -> str:
    """Return `value` as a Kubernetes label value: itself if valid, else readable + a hash of it.

    Label values must start and end with a letter or digit (`ses_…_`, an id ending in `_`, does
    not); the exact values are kept in the `ORIGINAL_LABELS` annotation.
    """
    if len(value) <= 63 and _LABEL_VALUE.match(value):
        return value
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:40].strip("-_.")
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{readable}-{digest}" if readable else digest


def label_values(labels: dict[str, str]) -> dict[str, str]:
    """Return `labels` with every value a valid Kubernetes label value (see `label_value`)."""
    return {key: label_value(value) for key, value in labels.items()}


def dns_label(text: str, *, prefix: str = "") -> str:
    """Return `prefix + text` as a DNS label: readable, and unique by a hash of the exact text."""
    readable = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[: 54 - len(prefix)].strip("-")
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{prefix}{readable}-{digest}" if readable else f"{prefix}{digest}"


def volume_claim_name(volume: str) -> str:
    """Return the PVC name of a new volume."""
    return dns_label(volume, prefix="lap-vol-")


def token_secret(name: str, token: str, labels: dict[str, str]) -> dict[str, Any]:
    """Return the Secret that holds a sandbox's sandboxd token (mounted as its environment)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {**MANAGED_BY, **label_values(labels), SANDBOX_LABEL: name}},
        "type": "Opaque",
        "stringData": {TOKEN_KEY: token},
    }


def token_in(secret: dict[str, Any]) -> str:
    """Return the token of a token Secret (as read: base64 `data`; as just made: `stringData`)."""
    if TOKEN_KEY in (secret.get("stringData") or {}):
        return str(secret["stringData"][TOKEN_KEY])
    return base64.b64decode(secret["data"][TOKEN_KEY]).decode()


def volume_claim(volume: str, *, size: str, storage_class: str | None) -> dict[str, Any]:
    """Return the PVC of a volume (the workspace and the harness home, as two directories)."""
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": volume_claim_name(volume), "labels": {**MANAGED_BY, VOLUME_LABEL: label_value(volume)}},
        "spec": spec,
    }


def pod_spec(
    *,
    image: str,
    pull_policy: str,
    token_secret_name: str,
    vault: str,
    volume_claim_name: str,
    memory_mb: int | None,
    cpu: str | None,
    runtime_class: str | None,
) -> dict[str, Any]:
    """Return the PodSpec that runs sandboxd as an unprivileged user, the volume at its two paths.

    `vault` is the LLM proxy's `HOST:PORT`: sandboxd forwards the sandbox's 127.0.0.1:4000 there.
    """
    unprivileged = {
        "runAsUser": UID,
        "runAsGroup": UID,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    limits: dict[str, str] = {}
    if memory_mb:
        limits["memory"] = f"{memory_mb}Mi"
    if cpu:
        limits["cpu"] = cpu
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 5,
        "securityContext": {"fsGroup": UID, "seccompProfile": {"type": "RuntimeDefault"}},
        # The volume's two directories must exist, owned by the agent, before they are mounted by
        # subPath (the kubelet would create them as root).
        "initContainers": [
            {
                "name": "volume",
                "image": image,
                "imagePullPolicy": pull_policy,
                "command": ["sh", "-c", "mkdir -p /volume/workspace /volume/home"],
                "securityContext": unprivileged,
                "volumeMounts": [{"name": "volume", "mountPath": "/volume"}],
            }
        ],
        "containers": [
            {
                "name": "sandboxd",
                "image": image,
                "imagePullPolicy": pull_policy,
                # args, not command: an image's ENTRYPOINT (an init such as tini, to reap orphans) stays.
                "args": [
                    "python3",
                    "-B",
                    "-m",
                    "lap_sandboxd",
                    "--socket",
                    f"{RUN_DIR}/sandboxd.sock",
                    "--state",
                    f"{RUN_DIR}/state",
                    "--listen",
                    f"0.0.0.0:{SANDBOXD_PORT}",
                    "--egress",
                    f"127.0.0.1:{LLM_PORT}={vault}",
                    "--egress",
                    f"127.0.0.1:{EGRESS_PORT}={vault}",
                ],
                "workingDir": WORKSPACE_DIR,
                "env": [
                    {"name": "HOME", "value": HOME_DIR},
                    {"name": "USER", "value": "agent"},
                    {"name": "LANG", "value": "C.UTF-8"},
                    {"name": "TMPDIR", "value": "/tmp"},
                    {"name": "PATH", "value": f"{HARNESS_ROOT}/node_modules/.bin:/usr/local/bin:/usr/bin:/bin"},
                    {"name": "PYTHONPATH", "value": PYTHON_DIR},
                    {
                        "name": "LAP_SANDBOXD_TOKEN",
                        "valueFrom": {"secretKeyRef": {"name": token_secret_name, "key": TOKEN_KEY}},
                    },
                ],
                "ports": [{"name": "sandboxd", "containerPort": SANDBOXD_PORT, "protocol": "TCP"}],
                "readinessProbe": {"tcpSocket": {"port": SANDBOXD_PORT}, "periodSeconds": 1, "failureThreshold": 3},
                "resources": {"limits": limits} if limits else {},
                "securityContext": unprivileged,
                "volumeMounts": [
                    {"name": "volume", "mountPath": WORKSPACE_DIR, "subPath": "workspace"},
                    {"name": "volume", "mountPath": HOME_DIR, "subPath": "home"},
                    {"name": "run", "mountPath": RUN_DIR},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }
        ],
        "volumes": [
            {"name": "volume", "persistentVolumeClaim": {"claimName": volume_claim_name}},
            {"name": "run", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    return spec


def sandbox(name: str, labels: dict[str, str], pod: dict[str, Any]) -> dict[str, Any]:
    """Return the `Sandbox`: one pod, a headless Service (reach sandboxd by DNS in the cluster)."""
    group, version, _ = SANDBOX_API
    all_labels = {**MANAGED_BY, **label_values(labels), SANDBOX_LABEL: name}
    return {
        "apiVersion": f"{group}/{version}",
        "kind": "Sandbox",
        "metadata": {"name": name, "labels": all_labels, "annotations": {ORIGINAL_LABELS: json.dumps(labels)}},
        "spec": {
            "podTemplate": {"metadata": {"labels": all_labels}, "spec": pod},
            "service": True,
            "operatingMode": "Running",
        },
    }


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """Return an ownerReference to `owner` (so the garbage collector deletes the dependent with it)."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
    }


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """Return the status condition of type `kind`, or None."""
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return None
