"""`KubernetesBackend`: sandboxes as agent-sandbox `Sandbox`es, volumes as PVCs LAP owns.

Per sandbox `<name>`: a `Sandbox` `<name>` (its pod and headless Service are the agent-sandbox
controller's work), a `Secret` `<name>` with sandboxd's token (owned by the Sandbox, so it goes
with it) and, per volume, a PVC labelled `lap.volume=<volume>` that outlives the sandbox. With
`LAP_K8S_WARM_POOL_SIZE` > 0, a new session's first sandbox is a `SandboxClaim` against its
harness's `SandboxWarmPool` instead (see `warm.py`). Everything LAP makes is labelled
`app.kubernetes.io/managed-by=lap`.
"""

from __future__ import annotations

import json
import secrets
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import anyio
import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from lap_core import Check, SandboxBackend, SandboxClient, SandboxContext, SandboxError, SandboxRef, SandboxSpec
from lap_kubernetes import manifests
from lap_kubernetes.cluster import MERGE_PATCH, Cluster, api_error, load_configuration, translated
from lap_kubernetes.manifests import (
    CLAIM_API,
    MANAGED_BY,
    SANDBOX_API,
    SANDBOX_LABEL,
    SANDBOXD_PORT,
    VOLUME_LABEL,
)
from lap_kubernetes.portforward import PortForwards
from lap_kubernetes.settings import KubernetesSettings
from lap_kubernetes.tokens import Tokens
from lap_kubernetes.warm import WarmPools
from lap_kubernetes.watching import states

if TYPE_CHECKING:
    import builtins
    from collections.abc import AsyncIterator

log = structlog.get_logger("lap.kubernetes")
# Ready=False reasons after which the sandbox will not come up by itself.
_DEAD_REASONS = {"PodFailed", "PodSucceeded", "SandboxExpired"}


def _state(obj: dict[str, Any]) -> tuple[str, str]:
    """Return (state, detail) of a Sandbox object."""
    if obj["metadata"].get("deletionTimestamp"):
        return "stopped", "being deleted"
    if (obj.get("spec") or {}).get("operatingMode") == "Suspended":
        return "suspended", ""
    ready = manifests.condition(obj, "Ready")
    if ready is None:
        return "starting", "the controller has not seen it yet"
    if ready.get("status") == "True":
        return "ready", ""
    reason, message = ready.get("reason", ""), ready.get("message", "")
    detail = f"{reason}: {message}" if message else reason
    return ("stopped" if reason in _DEAD_REASONS else "starting"), detail


class KubernetesBackend(Cluster, SandboxBackend):
    """Sandboxes as pods of the kubernetes-sigs/agent-sandbox controller (API v1beta1)."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"delete_volume", "suspend", "images"})

    def __init__(self, settings: KubernetesSettings, *, context: SandboxContext) -> None:
        if context.vault_url is None:
            raise SandboxError("the Kubernetes backend needs LAP_VAULT_URL: where sandboxes reach the LLM proxy")
        url = urlsplit(context.vault_url)
        self.vault = f"{url.hostname}:{url.port or (443 if url.scheme == 'https' else 80)}"
        super().__init__(settings)
        self._forwards: PortForwards | None = None
        self.tokens = Tokens(self)
        self._locks: dict[str, anyio.Lock] = {}
        self.warm = WarmPools(self, settings.lap_k8s_warm_pool_size)

    async def __aenter__(self) -> KubernetesBackend:
        configuration = await load_configuration(self.settings)
        self._api_client = client.ApiClient(configuration)
        self._forwards = PortForwards(configuration) if self.settings.lap_k8s_connect == "port-forward" else None
        return self

    async def aclose(self) -> None:
        """Close the API connections (sandboxes keep running)."""
        if self._forwards is not None:
            await self._forwards.aclose()
            self._forwards = None
        if self._api_client is not None:
            await self._api_client.close()
            self._api_client = None

    @asynccontextmanager
    async def _exclusive(self, name: str) -> AsyncIterator[None]:
        """Serialize this process's creates and deletes of one name: a create that runs while a delete
        is under way waits for it instead of returning the sandbox being deleted. (Across processes,
        the engine's job lease keeps one worker per session.)"""
        lock = self._locks.setdefault(name, anyio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._locks.pop(name, None)

    async def create(self, spec: SandboxSpec) -> SandboxRef:
        """Create the sandbox's Secret and Sandbox (or claim a warm one); return at once."""
        with translated(f"creating sandbox {spec.name}"):
            manifests.check_name(spec.name)
            namespace = self.team_namespace(spec.labels.get("lap.team"))
            await self._ensure_namespace(namespace)
            async with self._exclusive(spec.name):
                with self.in_namespace(namespace):
                    ref = await self._create(spec)
                if self.settings.lap_k8s_namespace_per_team:
                    self._where[spec.name] = namespace
                return ref

    async def _create(self, spec: SandboxSpec) -> SandboxRef:
        name = spec.name
        labels = {**spec.labels, manifests.HARNESS_LABEL: spec.harness}
        existing = await self._find(name)
        if existing is not None and existing["metadata"].get("deletionTimestamp"):
            await self._gone(name)  # a delete is under way: let it finish, then start anew
            existing = None
        if existing is not None:
            return self._ref(existing)
        if await self.warm.enabled_for(spec) and not await self._volume_exists(spec.volume):
            claimed = await self.warm.claim(spec, labels)
            if claimed is not None:
                return claimed
        claim_name = await self._ensure_volume(spec.volume)
        token = secrets.token_urlsafe(32)
        secret = await self.create_token_secret(name, token, labels)
        pod = manifests.pod_spec(
            image=self.image(spec),
            pull_policy=self.settings.lap_k8s_image_pull_policy,
            token_secret_name=name,
            vault=self.vault,
            volume_claim_name=claim_name,
            memory_mb=spec.memory_mb or self.settings.lap_k8s_memory_mb,
            cpu=self.settings.lap_k8s_cpu,
            runtime_class=self.settings.lap_k8s_runtime_class,
        )
        body = manifests.sandbox(name, labels, pod)
        try:
            created = await self.custom.create_namespaced_custom_object(
                *SANDBOX_API[:2], self.namespace, SANDBOX_API[2], body
            )
        except ApiException as error:
            if error.status == 409:  # another worker created it first: the same sandbox
                raced = await self.get_custom(SANDBOX_API, name)
                if raced is not None:
                    return self._ref(raced)
            raise api_error(error, f"creating sandbox {name}") from error
        await self._own(secret, created)
        log.info("sandbox.created", sandbox=name, namespace=self.namespace, volume=claim_name)
        return self._ref(created)

    def image(self, spec: SandboxSpec) -> str:
        """Return the sandbox image of a spec: its own, or the harness's (`KubernetesSettings.image_for`)."""
        return spec.image or self.settings.image_for(spec.harness)

    async def _find(self, name: str, *, adopt: bool = False) -> dict[str, Any] | None:
        """Return the Sandbox behind a LAP sandbox name (a claimed warm one has a name of its own).

        With `adopt`, a warm sandbox just claimed is made the session's first (`WarmPools.adopt`):
        only the calls that go on to use it do that; reading and deleting never talk to a pod.
        """
        if self.warm.size and (claimed := await self.warm.sandbox_of(name, adopt=adopt)) is not None:
            return claimed
        return await self.get_custom(SANDBOX_API, name)

    def _ref(self, obj: dict[str, Any], name: str | None = None) -> SandboxRef:
        state, detail = _state(obj)
        given = (obj["metadata"].get("annotations") or {}).get(manifests.ORIGINAL_LABELS)
        labels = {
            key: value
            for key, value in (json.loads(given) if given else obj["metadata"].get("labels") or {}).items()
            if key not in MANAGED_BY
            and key not in (SANDBOX_LABEL, VOLUME_LABEL, manifests.HARNESS_LABEL)
            and not key.startswith("agents.x-k8s.io/")
        }
        ref_name = name or (obj["metadata"].get("labels") or {}).get(SANDBOX_LABEL) or obj["metadata"]["name"]
        return SandboxRef(name=ref_name, state=state, labels=labels, detail=detail)  # type: ignore[arg-type]

    async def status(self, name: str) -> SandboxRef | None:
        """Return the sandbox as its Sandbox's status says (`Ready` is authoritative)."""
        with translated(f"reading sandbox {name}"):
            with self.in_namespace(await self._namespace_of(name)):
                found = await self._find(name)
            return None if found is None else self._ref(found, name)

    async def wait_ready(self, name: str, *, timeout: float) -> SandboxRef:
        """Watch the Sandbox until it is Ready; fail at once if it dies or vanishes, with the pod's reason."""
        with translated(f"waiting for sandbox {name}"):
            with self.in_namespace(await self._namespace_of(name)):
                return await self._wait_ready(name, timeout)

    async def _wait_ready(self, name: str, timeout: float) -> SandboxRef:
        actual, last = name, "it does not exist"
        with anyio.move_on_after(timeout):
            if self.warm.size:
                await self.warm.wait(name)
            found = await self._find(name, adopt=True)
            if found is not None:
                actual = found["metadata"]["name"]
            list_function, args = self.list_custom(SANDBOX_API)
            async for obj in states(lambda: self.get_custom(SANDBOX_API, actual), list_function, *args, name=actual):
                if obj is None:
                    raise SandboxError(f"sandbox {name} does not exist")
                ref = self._ref(obj, name)
                if ref.state == "ready":
                    return ref
                if ref.state in ("stopped", "failed"):
                    raise SandboxError(f"sandbox {name} stopped while starting: {ref.detail or 'no reason given'}")
                if ref.state == "suspended":
                    raise SandboxError(f"sandbox {name} is suspended")
                last = ref.detail
        raise SandboxError(f"sandbox {name} was not ready within {timeout:.0f} s: {await self._why(actual, last)}")

    async def connect(self, name: str) -> SandboxClient:
        """Return a client of the sandbox's sandboxd: its pod IP, or its Service's DNS name."""
        with translated(f"connecting to sandbox {name}"):
            with self.in_namespace(await self._namespace_of(name)):
                return await self._connect(name)

    async def _connect(self, name: str) -> SandboxClient:
        found = await self._find(name, adopt=True)
        if found is None:
            raise SandboxError(f"sandbox {name} does not exist")
        url = await self.sandboxd_url(found, name)
        ips = (found.get("status") or {}).get("podIPs") or [{}]
        pod = f"{found['metadata']['uid']}/{ips[0].get('ip', '') if isinstance(ips[0], dict) else ips[0]}"
        secret = self.warm.token_secret(found) or name
        return SandboxClient(token=await self.tokens.token(name, secret, pod, url), base_url=url)

    async def sandboxd_url(self, found: dict[str, Any], name: str) -> str:
        """Return sandboxd's URL in a Sandbox, as `LAP_K8S_CONNECT` says to reach it."""
        actual, status = found["metadata"]["name"], found.get("status") or {}
        if self._forwards is not None:
            host, port = await self._forwards.address(self.namespace, actual, SANDBOXD_PORT)
            return f"http://{host}:{port}"
        if self.settings.lap_k8s_connect == "service":
            host = status.get("serviceFQDN") or f"{actual}.{self.namespace}.svc"
        else:
            ips = status.get("podIPs") or []
            if not ips:
                raise SandboxError(f"sandbox {name} has no pod IP yet ({_state(found)[1] or 'starting'})")
            host = ips[0]["ip"] if isinstance(ips[0], dict) else str(ips[0])
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{SANDBOXD_PORT}"

    async def delete(self, name: str) -> None:
        """Delete the Sandbox (its pod, Service and token go with it) and wait until the pod is gone."""
        with translated(f"deleting sandbox {name}"):
            manifests.check_name(name)
            async with self._exclusive(name):
                with self.in_namespace(await self._namespace_of(name)):
                    await self._delete(name)
            self._where.pop(name, None)

    async def _delete(self, name: str) -> None:
        found = await self._find(name)
        if self.warm.size:
            await self.warm.release(name)
        if found is not None:
            actual = found["metadata"]["name"]
            try:
                await self.custom.delete_namespaced_custom_object(
                    *SANDBOX_API[:2], self.namespace, SANDBOX_API[2], actual, propagation_policy="Background"
                )
            except ApiException as error:
                if error.status != 404:
                    raise api_error(error, f"deleting sandbox {name}") from error
            # Deleting is killing (as on every backend): a second's grace for the pod, not its spec's.
            # Not 0: a forced delete removes the pod object while its processes still run, and the
            # pod being gone is the sign they are dead.
            try:
                await self.core.delete_namespaced_pod(actual, self.namespace, grace_period_seconds=1)
            except ApiException as error:
                if error.status != 404:
                    raise api_error(error, f"deleting the pod of sandbox {name}") from error
            await self._delete_secret(name)
            await self._gone(actual)
            if self._forwards is not None:
                await self._forwards.forget(self.namespace, actual)
        else:
            await self._delete_secret(name)
        self.tokens.forget(name)

    async def list(self, labels: dict[str, str] | None = None) -> builtins.list[SandboxRef]:
        """Return LAP's sandboxes whose labels include `labels` (selected by the API server)."""
        with translated("listing sandboxes"):
            wanted = {**MANAGED_BY, **manifests.label_values(labels or {})}
            selector = ",".join(f"{key}={value}" for key, value in wanted.items())
            refs = {ref.name: ref for ref in (self._ref(item) for item in await self._list_all(SANDBOX_API, selector))}
            if self.warm.size:
                for claim in await self._list_all(CLAIM_API, selector):
                    name = claim["metadata"]["name"]
                    with self.in_namespace(claim["metadata"]["namespace"]):
                        found = await self.warm.sandbox_of(name)
                    if found is not None:
                        refs.pop(found["metadata"]["name"], None)
                        refs[name] = self._ref(found, name)
            # Label values may have been made valid (hashed): the exact ones decide.
            exact = (labels or {}).items()
            return sorted((ref for ref in refs.values() if exact <= ref.labels.items()), key=lambda ref: ref.name)

    async def volume_exists(self, volume: str) -> bool:
        """Whether the volume's PVC is there (and not being deleted)."""
        with translated(f"reading volume {volume}"):
            with self.in_namespace(await self._namespace_of_volume(volume)):
                return await self._volume_exists(volume)

    async def delete_volume(self, volume: str) -> None:
        """Delete the volume's PVC and wait until it is gone."""
        with translated(f"deleting volume {volume}"):
            with self.in_namespace(await self._namespace_of_volume(volume)):
                await self._delete_volume(volume)

    async def _delete_volume(self, volume: str) -> None:
        for pvc in await self._volume_claims(volume):
            try:
                await self.core.delete_namespaced_persistent_volume_claim(pvc["metadata"]["name"], self.namespace)
            except ApiException as error:
                if error.status != 404:
                    raise api_error(error, f"deleting the volume of {volume}") from error
        await self._claims_gone(volume)

    async def suspend(self, name: str) -> None:
        """Set the Sandbox's operatingMode to Suspended: the pod goes, the Sandbox and volume stay."""
        with translated(f"suspending sandbox {name}"):
            await self._set_mode(name, "Suspended")

    async def resume(self, name: str) -> SandboxRef:
        """Set the operatingMode back to Running: the controller brings the pod back on the same volume."""
        with translated(f"resuming sandbox {name}"):
            await self._set_mode(name, "Running")
            return await self.wait_ready(name, timeout=120)

    async def _set_mode(self, name: str, mode: str) -> None:
        with self.in_namespace(await self._namespace_of(name)):
            await self._patch_mode(name, mode)

    async def _patch_mode(self, name: str, mode: str) -> None:
        found = await self._find(name)
        if found is None:
            raise SandboxError(f"sandbox {name} does not exist")
        try:
            await self.custom.patch_namespaced_custom_object(
                *SANDBOX_API[:2],
                self.namespace,
                SANDBOX_API[2],
                found["metadata"]["name"],
                {"spec": {"operatingMode": mode}},
                _content_type=MERGE_PATCH,
            )
        except ApiException as error:
            raise api_error(error, f"setting sandbox {name} {mode}") from error

    async def diagnose(self) -> builtins.list[Check]:
        """Check the API server, the agent-sandbox CRDs and the namespace."""
        checks = []
        try:
            await self.custom.list_namespaced_custom_object(*SANDBOX_API[:2], self.namespace, SANDBOX_API[2], limit=1)
            checks.append(Check(name="agent-sandbox", ok=True, detail=f"Sandboxes in namespace {self.namespace}"))
        except ApiException as error:
            fix = {
                404: "install the agent-sandbox CRDs and controller (bin/kind-up.sh shows how)",
                403: "grant LAP's service account the Role in deploy/helm/lap",
            }.get(error.status or 0, "check LAP_K8S_KUBECONFIG / LAP_K8S_CONTEXT")
            checks.append(Check(name="agent-sandbox", ok=False, detail=f"{error.status} {error.reason}", fix=fix))
        if self.warm.size:
            checks.append(Check(name="warm pools", ok=True, detail=f"{self.warm.size} per harness"))
        return checks


__all__ = ["KubernetesBackend", "KubernetesSettings"]
