"""The warm path: a new session claims an already running sandbox from its harness's warm pool.

Per harness LAP keeps a `SandboxTemplate` and a `SandboxWarmPool` named `lap-<harness>`; the
pool's sandboxes run sandboxd with the pool's token (a Secret `lap-pool-<harness>`) on a PVC of
their own (`volumeClaimTemplates`). A new session creates a `SandboxClaim` named like its LAP
sandbox; the controller hands it a warm Sandbox, whose name differs (`status.sandbox.name`). When
the claim is Ready, LAP makes the sandbox the session's:

* its PVC gets the session's `lap.volume` label and loses its owner, so it outlives the claim and
  later (cold) sandboxes of the session mount it like any other volume;
* sandboxd gets a token of its own (`PUT /token` with the pool's token), stored in a Secret named
  like the LAP sandbox: nobody who knows the pool token can talk to it any more.

A session with a volume (history) never takes the warm path: its files are on its own PVC.
"""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING, Any

from kubernetes_asyncio.client.exceptions import ApiException

from lap_core import SandboxClient, SandboxError, SandboxRef, SandboxSpec
from lap_kubernetes import manifests
from lap_kubernetes.manifests import (
    CLAIM_API,
    MANAGED_BY,
    POOL_API,
    SANDBOX_API,
    SANDBOX_LABEL,
    TEMPLATE_API,
    token_in,
)
from lap_kubernetes.watching import states

if TYPE_CHECKING:
    from lap_kubernetes.backend import KubernetesBackend


# Claim Ready=False reasons that will not resolve by waiting (agent-sandbox's SDK fails fast on them).
TERMINAL_REASONS = frozenset(
    {
        "TemplateNotFound",
        "WarmPoolNotFound",
        "InvalidMetadata",
        "EnvVarsInjectionRejected",
        "VolumeClaimTemplatesError",
        "ClaimExpired",
        "SandboxExpired",
    }
)
CLAIMED_ANNOTATION = "lap.dev/claimed-by"


def pool_name(harness: str) -> str:
    """Return the name of a harness's template and warm pool."""
    return manifests.check_name(f"lap-{harness}")


def claim_state(claim: dict[str, Any]) -> tuple[str, str]:
    """Return (state, detail) of a claim: ready, starting, or failed with a terminal reason."""
    ready = manifests.condition(claim, "Ready")
    if ready is None:
        return "starting", "the controller has not seen the claim yet"
    reason = ready.get("reason", "")
    detail = f"{reason}: {ready.get('message', '')}".rstrip(": ")
    if ready.get("status") == "True" and (claim.get("status") or {}).get("sandbox", {}).get("name"):
        return "ready", ""
    return ("failed" if reason in TERMINAL_REASONS else "starting"), detail


def claim_manifest(name: str, pool: str, labels: dict[str, str]) -> dict[str, Any]:
    """Return the `SandboxClaim` of a LAP sandbox."""
    group, version, _ = CLAIM_API
    valid = manifests.label_values(labels)
    all_labels = {**MANAGED_BY, **valid, SANDBOX_LABEL: name}
    return {
        "apiVersion": f"{group}/{version}",
        "kind": "SandboxClaim",
        "metadata": {
            "name": name,
            "labels": all_labels,
            "annotations": {manifests.ORIGINAL_LABELS: json.dumps(labels)},
        },
        "spec": {"warmPoolRef": {"name": pool}, "additionalPodMetadata": {"labels": valid}},
    }


class WarmPools:
    """Keeps one warm pool per harness and turns claimed sandboxes into sessions' sandboxes."""

    def __init__(self, backend: KubernetesBackend, size: int) -> None:
        self._backend = backend
        self.size = size
        self._pools: set[str] = set()

    async def enabled_for(self, spec: SandboxSpec) -> bool:
        """Whether `spec` may take a warm sandbox (pools are on, and it wants the harness's own image)."""
        return self.size > 0 and spec.image is None

    async def ensure_pool(self, spec: SandboxSpec) -> str:
        """Create the harness's token, template and pool if they are missing; return the pool's name."""
        name = pool_name(spec.harness)
        if f"{self._backend.namespace}/{name}" in self._pools:
            return name
        backend = self._backend
        settings = backend.settings
        token_name = f"lap-pool-{spec.harness}"
        await backend.create_token_secret(
            token_name, secrets.token_urlsafe(32), {manifests.HARNESS_LABEL: spec.harness}
        )
        pod = manifests.pod_spec(
            image=backend.image(spec),
            pull_policy=settings.lap_k8s_image_pull_policy,
            token_secret_name=token_name,
            vault=backend.vault,
            volume_claim_name="",
            memory_mb=settings.lap_k8s_memory_mb,
            cpu=settings.lap_k8s_cpu,
            runtime_class=settings.lap_k8s_runtime_class,
        )
        # The controller adds the volume of the `volume` claim template itself.
        pod["volumes"] = [volume for volume in pod["volumes"] if volume["name"] != "volume"]
        claim_template = manifests.volume_claim(
            "pool", size=settings.lap_k8s_volume_size, storage_class=settings.lap_k8s_storage_class
        )
        labels = {**MANAGED_BY, manifests.HARNESS_LABEL: spec.harness}
        group, version, _ = TEMPLATE_API
        template = {
            "apiVersion": f"{group}/{version}",
            "kind": "SandboxTemplate",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "podTemplate": {"metadata": {"labels": labels}, "spec": pod},
                "volumeClaimTemplates": [{"metadata": {"name": "volume"}, "spec": claim_template["spec"]}],
                "service": True,
            },
        }
        pool = {
            "apiVersion": f"{group}/{version}",
            "kind": "SandboxWarmPool",
            "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": self.size, "sandboxTemplateRef": {"name": name}},
        }
        for api, body in ((TEMPLATE_API, template), (POOL_API, pool)):
            try:
                await backend.custom.create_namespaced_custom_object(*api[:2], backend.namespace, api[2], body)
            except ApiException as error:
                if error.status != 409:  # exists: made by another worker, or by an earlier run
                    raise SandboxError(f"cannot create the warm pool {name}: {error.status} {error.reason}") from error
        self._pools.add(f"{backend.namespace}/{name}")
        return name

    async def claim(self, spec: SandboxSpec, labels: dict[str, str]) -> SandboxRef | None:
        """Create the sandbox's claim against its harness's pool; return None to take the cold path."""
        backend = self._backend
        pool = await self.ensure_pool(spec)
        body = claim_manifest(spec.name, pool, labels)
        body["metadata"]["labels"][manifests.VOLUME_LABEL] = manifests.label_value(spec.volume)
        try:
            await backend.custom.create_namespaced_custom_object(*CLAIM_API[:2], backend.namespace, CLAIM_API[2], body)
        except ApiException as error:
            if error.status != 409:  # an existing claim of this name is this sandbox's
                raise SandboxError(
                    f"cannot claim a warm sandbox for {spec.name}: {error.status} {error.reason}"
                ) from error
        return SandboxRef(name=spec.name, state="starting", labels=spec.labels)

    async def sandbox_of(self, name: str, *, adopt: bool = False) -> dict[str, Any] | None:
        """Return the Sandbox the claim `name` holds; with `adopt`, made the session's (volume, token).

        While the claim waits for a sandbox, a stand-in object in state `starting` is returned, so
        that `status` and `wait_ready` see the sandbox being made. A failed claim reads as stopped.
        """
        backend = self._backend
        claim = await backend.get_custom(CLAIM_API, name)
        if claim is None:
            return None
        state, detail = claim_state(claim)
        if state != "ready":
            reason = "PodFailed" if state == "failed" else "ClaimPending"
            return {
                "metadata": {**claim["metadata"], "name": name, "resourceVersion": None},
                "spec": {},
                "status": {"conditions": [{"type": "Ready", "status": "False", "reason": reason, "message": detail}]},
            }
        sandbox_name = claim["status"]["sandbox"]["name"]
        found = await backend.get_custom(SANDBOX_API, sandbox_name)
        if found is None:
            return None
        if adopt and (found["metadata"].get("annotations") or {}).get(CLAIMED_ANNOTATION) != name:
            await self._make_ours(name, claim, found)
            found = await backend.get_custom(SANDBOX_API, sandbox_name) or found
        # Report it under the LAP name, with the claim's labels.
        found["metadata"].setdefault("labels", {}).update(claim["metadata"].get("labels") or {})
        given = (claim["metadata"].get("annotations") or {}).get(manifests.ORIGINAL_LABELS)
        if given:
            found["metadata"].setdefault("annotations", {})[manifests.ORIGINAL_LABELS] = given
        return found

    async def _make_ours(self, name: str, claim: dict[str, Any], found: dict[str, Any]) -> None:
        """Give a claimed sandbox the session's volume label and a token of its own, then mark it done."""
        backend = self._backend
        labels = claim["metadata"].get("labels") or {}
        volume = labels.get(manifests.VOLUME_LABEL) or name
        pvc_name = f"volume-{found['metadata']['name']}"
        patch = {"metadata": {"labels": {manifests.VOLUME_LABEL: volume}, "ownerReferences": None}}
        try:
            await backend.core.patch_namespaced_persistent_volume_claim(
                pvc_name, backend.namespace, patch, _content_type="application/merge-patch+json"
            )
        except ApiException as error:
            raise SandboxError(f"cannot keep the volume of {name}: {error.status} {error.reason}") from error
        token = secrets.token_urlsafe(32)
        mine = {k: v for k, v in labels.items() if k not in (SANDBOX_LABEL, manifests.VOLUME_LABEL)}
        # If another worker got here first, its Secret wins and we use its token.
        token = token_in(await backend.create_token_secret(name, token, mine))
        pool_token = await backend.token_of(f"lap-pool-{labels.get(manifests.HARNESS_LABEL, '')}")
        url = await backend.sandboxd_url(found, name)
        async with SandboxClient(token=pool_token, base_url=url) as client:
            try:
                await client.replace_token(token)
            except Exception as error:
                # Already replaced (by another worker)? Then the new token works.
                async with SandboxClient(token=token, base_url=url) as ours:
                    try:
                        await ours.exec(["true"], timeout=10)
                    except Exception:
                        raise SandboxError(f"cannot give the warm sandbox of {name} its own token: {error}") from error
        # A pod the controller makes anew for this Sandbox (eviction, drain) starts with this token too.
        containers = found["spec"]["podTemplate"]["spec"]["containers"]
        for container in containers:
            for variable in container.get("env") or []:
                if variable["name"] == "LAP_SANDBOXD_TOKEN":
                    variable["valueFrom"]["secretKeyRef"]["name"] = name
        annotate = {
            "metadata": {"annotations": {CLAIMED_ANNOTATION: name}},
            "spec": {"podTemplate": {"spec": {"containers": containers}}},
        }
        await backend.custom.patch_namespaced_custom_object(
            *SANDBOX_API[:2],
            backend.namespace,
            SANDBOX_API[2],
            found["metadata"]["name"],
            annotate,
            _content_type="application/merge-patch+json",
        )

    async def wait(self, name: str) -> None:
        """Wait until the claim `name`, if there is one, holds a sandbox; fail fast on a terminal reason."""
        list_function, args = self._backend.list_custom(CLAIM_API)
        async for claim in states(lambda: self._backend.get_custom(CLAIM_API, name), list_function, *args, name=name):
            if claim is None:
                return  # no claim: a plain Sandbox
            state, detail = claim_state(claim)
            if state == "ready":
                return
            if state == "failed":
                raise SandboxError(f"the claim of sandbox {name} failed: {detail}")

    def token_secret(self, sandbox: dict[str, Any]) -> str | None:
        """Return the name of the token Secret of a claimed sandbox (named like its LAP sandbox)."""
        annotations = sandbox["metadata"].get("annotations") or {}
        return annotations.get(CLAIMED_ANNOTATION)

    async def release(self, name: str) -> None:
        """Delete the claim `name` if there is one (its Sandbox goes with it; the volume stays)."""
        backend = self._backend
        try:
            await backend.custom.delete_namespaced_custom_object(
                *CLAIM_API[:2], backend.namespace, CLAIM_API[2], name, propagation_policy="Background"
            )
        except ApiException as error:
            if error.status != 404:
                raise SandboxError(f"cannot delete the claim {name}: {error.status} {error.reason}") from error
