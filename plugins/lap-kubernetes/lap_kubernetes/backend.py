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
import os
import secrets
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import anyio
import msgspec
import structlog
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from lap_core.errors import SandboxError
from lap_core.sandbox import Check, SandboxBackend, SandboxClient, SandboxContext, SandboxRef, SandboxSpec
from lap_kubernetes import manifests
from lap_kubernetes.manifests import (
    CLAIM_API,
    MANAGED_BY,
    SANDBOX_API,
    SANDBOX_LABEL,
    SANDBOXD_PORT,
    VOLUME_LABEL,
    token_in,
)
from lap_kubernetes.portforward import PortForwards
from lap_kubernetes.warm import WarmPools, claim_state
from lap_kubernetes.watching import states

if TYPE_CHECKING:
    import builtins
    from collections.abc import AsyncIterator, Iterator

log = structlog.get_logger("lap.kubernetes")
MERGE_PATCH = "application/merge-patch+json"
_NAMESPACE: ContextVar[str | None] = ContextVar("lap_k8s_namespace", default=None)
# Ready=False reasons after which the sandbox will not come up by itself.
_DEAD_REASONS = {"PodFailed", "PodSucceeded", "SandboxExpired"}


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


class KubernetesBackend(SandboxBackend):
    """Sandboxes as pods of the kubernetes-sigs/agent-sandbox controller (API v1beta1)."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"delete_volume", "suspend", "images"})

    def __init__(self, settings: KubernetesSettings, *, context: SandboxContext) -> None:
        if context.vault_url is None:
            raise SandboxError("the Kubernetes backend needs LAP_VAULT_URL: where sandboxes reach the LLM proxy")
        url = urlsplit(context.vault_url)
        self.vault = f"{url.hostname}:{url.port or (443 if url.scheme == 'https' else 80)}"
        self.settings = settings
        self._api_client: client.ApiClient | None = None
        self._forwards: PortForwards | None = None
        self._tokens: dict[str, tuple[str, str]] = {}  # sandbox -> (uid, token)
        self._locks: dict[str, anyio.Lock] = {}
        self._where: dict[str, str] = {}  # sandbox -> its namespace, when per-team
        self._namespaces: set[str] = set()  # team namespaces known to exist
        self.warm = WarmPools(self, settings.lap_k8s_warm_pool_size)

    async def __aenter__(self) -> KubernetesBackend:
        configuration = client.Configuration()
        try:
            if self.settings.lap_k8s_kubeconfig is None and config.incluster_config.SERVICE_HOST_ENV_NAME in os.environ:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                await config.load_kube_config(
                    config_file=self.settings.lap_k8s_kubeconfig,
                    context=self.settings.lap_k8s_context,
                    client_configuration=configuration,
                )
        except (config.ConfigException, OSError) as error:
            raise SandboxError(f"cannot load the Kubernetes configuration: {error}") from error
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

    # --- API access -----------------------------------------------------------------------------

    @property
    def api_client(self) -> client.ApiClient:
        """The open API client (for the warm-pool helper)."""
        if self._api_client is None:
            raise SandboxError("the Kubernetes backend is not open (use `async with`)")
        return self._api_client

    @property
    def custom(self) -> Any:
        """The custom-objects API (agent-sandbox's resources); untyped: its manifests are plain dicts."""
        return client.CustomObjectsApi(self.api_client)

    @property
    def core(self) -> Any:
        """The core API (pods, PVCs, Secrets); untyped: its manifests are plain dicts."""
        return client.CoreV1Api(self.api_client)

    @property
    def namespace(self) -> str:
        """The namespace the current operation works in (the one of its sandbox or volume)."""
        return _NAMESPACE.get() or self.settings.lap_k8s_namespace

    @contextmanager
    def _in(self, namespace: str) -> Iterator[None]:
        """Run the helpers below in `namespace` (per task: concurrent operations do not mix)."""
        token = _NAMESPACE.set(namespace)
        try:
            yield
        finally:
            _NAMESPACE.reset(token)

    def team_namespace(self, team: str | None) -> str:
        """Return the namespace of a team's sandboxes (the one namespace unless per-team is on)."""
        template = self.settings.lap_k8s_namespace_per_team
        if not template or not team:
            return self.settings.lap_k8s_namespace
        name = template.replace("{team}", team)
        # Team ids with `_` or capitals become a readable label made unique by a hash.
        return name if manifests.is_dns_label(name) else manifests.dns_label(name)

    async def _namespace_of(self, name: str) -> str:
        """Return the namespace of the sandbox `name` (looked up across namespaces when per-team)."""
        if not self.settings.lap_k8s_namespace_per_team:
            return self.settings.lap_k8s_namespace
        if name in self._where:
            return self._where[name]
        selector = f"{SANDBOX_LABEL}={name}"
        for api in (SANDBOX_API, CLAIM_API) if self.warm.size else (SANDBOX_API,):
            listed = await self.custom.list_cluster_custom_object(*api, label_selector=selector)
            for item in listed.get("items", []):
                self._where[name] = str(item["metadata"]["namespace"])
                return self._where[name]
        return self.settings.lap_k8s_namespace

    async def _namespace_of_volume(self, volume: str) -> str:
        if not self.settings.lap_k8s_namespace_per_team:
            return self.settings.lap_k8s_namespace
        listed = await self.core.list_persistent_volume_claim_for_all_namespaces(
            label_selector=f"{VOLUME_LABEL}={volume}"
        )
        for item in listed.items:
            return str(item.metadata.namespace)
        return self.settings.lap_k8s_namespace

    async def _ensure_namespace(self, namespace: str) -> None:
        if namespace == self.settings.lap_k8s_namespace or namespace in self._namespaces:
            return
        try:
            await self.core.create_namespace({"metadata": {"name": namespace, "labels": dict(MANAGED_BY)}})
        except ApiException as error:
            if error.status != 409:
                raise _api_error(error, f"creating namespace {namespace}") from error
        self._namespaces.add(namespace)

    async def get_custom(self, api: tuple[str, str, str], name: str) -> dict[str, Any] | None:
        """Return a custom object, or None if there is none."""
        try:
            found: dict[str, Any] = await self.custom.get_namespaced_custom_object(
                *api[:2], self.namespace, api[2], name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise _api_error(error, f"reading {api[2]} {name}") from error
        return found

    def list_custom(self, api: tuple[str, str, str]) -> tuple[Any, tuple[str, str, str, str]]:
        """Return the list function and its leading arguments for `watching.states`."""
        group, version, plural = api
        return self.custom.list_namespaced_custom_object, (group, version, self.namespace, plural)

    async def _read(self, read_function: Any, name: str) -> dict[str, Any] | None:
        """Return a core object (read with e.g. `read_namespaced_pod`) as a dict, or None if there is none."""
        try:
            obj = await read_function(name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise _api_error(error, f"reading {name}") from error
        found: dict[str, Any] = self.api_client.sanitize_for_serialization(obj)
        return found

    async def _get_pod(self, name: str) -> dict[str, Any] | None:
        return await self._read(self.core.read_namespaced_pod, name)

    # --- the contract ---------------------------------------------------------------------------

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
        manifests.check_name(spec.name)
        namespace = self.team_namespace(spec.labels.get("lap.team"))
        await self._ensure_namespace(namespace)
        async with self._exclusive(spec.name):
            with self._in(namespace):
                ref = await self._create(spec)
            if self.settings.lap_k8s_namespace_per_team:
                self._where[spec.name] = namespace
            return ref

    async def _create(self, spec: SandboxSpec) -> SandboxRef:
        name = spec.name
        labels = manifests.check_labels({**spec.labels, manifests.HARNESS_LABEL: spec.harness})
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
            raise _api_error(error, f"creating sandbox {name}") from error
        await self._own(secret, created)
        log.info("sandbox.created", sandbox=name, namespace=self.namespace, volume=claim_name)
        return self._ref(created)

    def image(self, spec: SandboxSpec) -> str:
        """Return the sandbox image of a spec: its own, or the harness's from `LAP_K8S_IMAGE`."""
        return spec.image or self.settings.lap_k8s_image.replace("{harness}", spec.harness)

    async def create_token_secret(self, name: str, token: str, labels: dict[str, str]) -> dict[str, Any]:
        body = manifests.token_secret(name, token, labels)
        try:
            secret = await self.core.create_namespaced_secret(self.namespace, body)
        except ApiException as error:
            if error.status != 409:
                raise _api_error(error, f"creating the token of sandbox {name}") from error
            # Left by a sandbox whose create was interrupted: take over its token.
            secret = await self.core.read_namespaced_secret(name, self.namespace)
        found: dict[str, Any] = self.api_client.sanitize_for_serialization(secret)
        return found

    async def _own(self, secret: dict[str, Any], sandbox: dict[str, Any]) -> None:
        """Make the Sandbox own its token Secret, so that the garbage collector deletes them together."""
        patch = {"metadata": {"ownerReferences": [manifests.owner_reference(sandbox)]}}
        try:
            await self.core.patch_namespaced_secret(
                secret["metadata"]["name"], self.namespace, patch, _content_type=MERGE_PATCH
            )
        except ApiException as error:
            # Not fatal: `delete` removes the Secret itself too.
            log.warning("sandbox.secret_not_owned", sandbox=sandbox["metadata"]["name"], error=str(error.reason))

    async def _ensure_volume(self, volume: str) -> str:
        """Return the name of the volume's PVC, creating it if there is none."""
        found = await self._volume_claims(volume)
        live = [pvc for pvc in found if not pvc["metadata"].get("deletionTimestamp")]
        if live:
            return str(live[0]["metadata"]["name"])
        if found:  # a delete_volume is under way: wait for it, then make a new, empty one
            await self._claims_gone(volume)
        body = manifests.volume_claim(
            volume, size=self.settings.lap_k8s_volume_size, storage_class=self.settings.lap_k8s_storage_class
        )
        try:
            await self.core.create_namespaced_persistent_volume_claim(self.namespace, body)
        except ApiException as error:
            if error.status != 409:
                raise _api_error(error, f"creating the volume of {volume}") from error
        return str(body["metadata"]["name"])

    async def _volume_claims(self, volume: str) -> list[dict[str, Any]]:
        selector = f"{VOLUME_LABEL}={volume}"
        try:
            listed = await self.core.list_namespaced_persistent_volume_claim(self.namespace, label_selector=selector)
        except ApiException as error:
            raise _api_error(error, f"listing the volume of {volume}") from error
        items: list[dict[str, Any]] = self.api_client.sanitize_for_serialization(listed).get("items", [])
        return items

    async def _claims_gone(self, volume: str) -> None:
        # A PVC's deletion waits until no pod uses it.
        with anyio.fail_after(120):
            for pvc in await self._volume_claims(volume):
                await self._until_gone(
                    pvc["metadata"]["name"], self._get_pvc, self.core.list_namespaced_persistent_volume_claim
                )

    async def _get_pvc(self, name: str) -> dict[str, Any] | None:
        return await self._read(self.core.read_namespaced_persistent_volume_claim, name)

    async def _until_gone(self, name: str, get: Any, list_function: Any) -> None:
        async for obj in states(lambda: get(name), list_function, self.namespace, name=name):
            if obj is None:
                return

    async def _find(self, name: str) -> dict[str, Any] | None:
        """Return the Sandbox behind a LAP sandbox name (a claimed warm one has a name of its own)."""
        if self.warm.size and (claimed := await self.warm.sandbox_of(name)) is not None:
            return claimed
        return await self.get_custom(SANDBOX_API, name)

    def _ref(self, obj: dict[str, Any], name: str | None = None) -> SandboxRef:
        state, detail = _state(obj)
        labels = {
            key: value
            for key, value in (obj["metadata"].get("labels") or {}).items()
            if key not in MANAGED_BY
            and key not in (SANDBOX_LABEL, VOLUME_LABEL, manifests.HARNESS_LABEL)
            and not key.startswith("agents.x-k8s.io/")
        }
        ref_name = name or (obj["metadata"].get("labels") or {}).get(SANDBOX_LABEL) or obj["metadata"]["name"]
        return SandboxRef(name=ref_name, state=state, labels=labels, detail=detail)  # type: ignore[arg-type]

    async def status(self, name: str) -> SandboxRef | None:
        """Return the sandbox as its Sandbox's status says (`Ready` is authoritative)."""
        with self._in(await self._namespace_of(name)):
            found = await self._find(name)
        return None if found is None else self._ref(found, name)

    async def wait_ready(self, name: str, *, timeout: float) -> SandboxRef:
        """Watch the Sandbox until it is Ready; fail at once if it dies or vanishes, with the pod's reason."""
        with self._in(await self._namespace_of(name)):
            return await self._wait_ready(name, timeout)

    async def _wait_ready(self, name: str, timeout: float) -> SandboxRef:
        actual, last = name, "it does not exist"
        with anyio.move_on_after(timeout):
            if self.warm.size:
                await self._wait_for_claim(name)
            found = await self._find(name)
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

    async def _wait_for_claim(self, name: str) -> None:
        """Wait until the claim `name`, if there is one, holds a sandbox; fail fast on a terminal reason."""
        list_function, args = self.list_custom(CLAIM_API)
        async for claim in states(lambda: self.get_custom(CLAIM_API, name), list_function, *args, name=name):
            if claim is None:
                return  # no claim: a plain Sandbox
            state, detail = claim_state(claim)
            if state == "ready":
                return
            if state == "failed":
                raise SandboxError(f"the claim of sandbox {name} failed: {detail}")

    async def _why(self, name: str, fallback: str) -> str:
        """Say why a pod is not ready: a waiting container's reason (ErrImageNeverPull, …) or its phase."""
        pod = await self._get_pod(name)
        if pod is None:
            return f"{fallback}; no pod {name}"
        status = pod.get("status") or {}
        for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            waiting = (container.get("state") or {}).get("waiting")
            if waiting and waiting.get("reason") not in (None, "PodInitializing"):
                return f"container {container['name']}: {waiting['reason']}: {waiting.get('message', '')}".strip()
        for item in status.get("conditions") or []:
            if item.get("status") != "True" and item.get("message"):
                return f"pod {item['type']}: {item['message']}"
        return f"{fallback}; pod {status.get('phase', 'unknown')}"

    async def connect(self, name: str) -> SandboxClient:
        """Return a client of the sandbox's sandboxd: its pod IP, or its Service's DNS name."""
        with self._in(await self._namespace_of(name)):
            return await self._connect(name)

    async def _connect(self, name: str) -> SandboxClient:
        found = await self._find(name)
        if found is None:
            raise SandboxError(f"sandbox {name} does not exist")
        actual, status = found["metadata"]["name"], found.get("status") or {}
        if self._forwards is not None:
            host, port = await self._forwards.address(self.namespace, actual, SANDBOXD_PORT)
            return SandboxClient(token=await self._token(found), base_url=f"http://{host}:{port}")
        if self.settings.lap_k8s_connect == "service":
            host = status.get("serviceFQDN") or f"{actual}.{self.namespace}.svc"
        else:
            ips = status.get("podIPs") or []
            if not ips:
                raise SandboxError(f"sandbox {name} has no pod IP yet ({_state(found)[1] or 'starting'})")
            host = ips[0]["ip"] if isinstance(ips[0], dict) else str(ips[0])
        host = f"[{host}]" if ":" in host else host
        return SandboxClient(token=await self._token(found), base_url=f"http://{host}:{SANDBOXD_PORT}")

    async def _token(self, sandbox: dict[str, Any]) -> str:
        """Return sandboxd's token (read once per Sandbox: a new Sandbox of a name has a new uid)."""
        name, uid = sandbox["metadata"]["name"], sandbox["metadata"]["uid"]
        cached = self._tokens.get(name)
        if cached is not None and cached[0] == uid:
            return cached[1]
        token = await self.token_of(self.warm.token_secret(sandbox) or name)
        self._tokens[name] = (uid, token)
        return token

    async def token_of(self, secret_name: str) -> str:
        """Return the sandboxd token kept in a Secret."""
        try:
            secret = await self.core.read_namespaced_secret(secret_name, self.namespace)
        except ApiException as error:
            raise _api_error(error, f"reading the sandboxd token {secret_name}") from error
        return token_in(self.api_client.sanitize_for_serialization(secret))

    async def delete(self, name: str) -> None:
        """Delete the Sandbox (its pod, Service and token go with it) and wait until the pod is gone."""
        manifests.check_name(name)
        async with self._exclusive(name):
            with self._in(await self._namespace_of(name)):
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
                    raise _api_error(error, f"deleting sandbox {name}") from error
            # Deleting is killing (as on every backend): a second's grace for the pod, not its spec's.
            # Not 0: a forced delete removes the pod object while its processes still run, and the
            # pod being gone is the sign they are dead.
            try:
                await self.core.delete_namespaced_pod(actual, self.namespace, grace_period_seconds=1)
            except ApiException as error:
                if error.status != 404:
                    raise _api_error(error, f"deleting the pod of sandbox {name}") from error
            await self._delete_secret(name)
            await self._gone(actual)
            if self._forwards is not None:
                await self._forwards.forget(self.namespace, actual)
        else:
            await self._delete_secret(name)
        self._tokens.pop(name, None)

    async def _delete_secret(self, name: str) -> None:
        try:
            await self.core.delete_namespaced_secret(name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise _api_error(error, f"deleting the token of sandbox {name}") from error

    async def _gone(self, name: str) -> None:
        """Wait until the Sandbox and its pod are gone (a new one of the name must not meet the old pod)."""
        with anyio.fail_after(120):
            list_function, args = self.list_custom(SANDBOX_API)
            async for obj in states(lambda: self.get_custom(SANDBOX_API, name), list_function, *args, name=name):
                if obj is None:
                    break
            await self._until_gone(name, self._get_pod, self.core.list_namespaced_pod)

    async def list(self, labels: dict[str, str] | None = None) -> builtins.list[SandboxRef]:
        """Return LAP's sandboxes whose labels include `labels` (selected by the API server)."""
        wanted = {**MANAGED_BY, **(labels or {})}
        selector = ",".join(f"{key}={value}" for key, value in wanted.items())
        refs = {ref.name: ref for ref in (self._ref(item) for item in await self._list_all(SANDBOX_API, selector))}
        if self.warm.size:
            for claim in await self._list_all(CLAIM_API, selector):
                name = claim["metadata"]["name"]
                with self._in(claim["metadata"]["namespace"]):
                    found = await self.warm.sandbox_of(name)
                if found is not None:
                    refs.pop(found["metadata"]["name"], None)
                    refs[name] = self._ref(found, name)
        return sorted(refs.values(), key=lambda ref: ref.name)

    async def _list_all(self, api: tuple[str, str, str], selector: str) -> builtins.list[dict[str, Any]]:
        """List LAP's objects of a kind: in the namespace, or in all of them when per-team."""
        try:
            if self.settings.lap_k8s_namespace_per_team:
                listed = await self.custom.list_cluster_custom_object(*api, label_selector=selector)
            else:
                listed = await self.custom.list_namespaced_custom_object(
                    *api[:2], self.namespace, api[2], label_selector=selector
                )
        except ApiException as error:
            raise _api_error(error, f"listing {api[2]}") from error
        items: builtins.list[dict[str, Any]] = listed.get("items", [])
        return items

    async def volume_exists(self, volume: str) -> bool:
        """Whether the volume's PVC is there (and not being deleted)."""
        with self._in(await self._namespace_of_volume(volume)):
            return await self._volume_exists(volume)

    async def _volume_exists(self, volume: str) -> bool:
        return any(not pvc["metadata"].get("deletionTimestamp") for pvc in await self._volume_claims(volume))

    async def delete_volume(self, volume: str) -> None:
        """Delete the volume's PVC and wait until it is gone."""
        with self._in(await self._namespace_of_volume(volume)):
            await self._delete_volume(volume)

    async def _delete_volume(self, volume: str) -> None:
        for pvc in await self._volume_claims(volume):
            try:
                await self.core.delete_namespaced_persistent_volume_claim(pvc["metadata"]["name"], self.namespace)
            except ApiException as error:
                if error.status != 404:
                    raise _api_error(error, f"deleting the volume of {volume}") from error
        await self._claims_gone(volume)

    async def suspend(self, name: str) -> None:
        """Set the Sandbox's operatingMode to Suspended: the pod goes, the Sandbox and volume stay."""
        await self._set_mode(name, "Suspended")

    async def resume(self, name: str) -> SandboxRef:
        """Set the operatingMode back to Running: the controller brings the pod back on the same volume."""
        await self._set_mode(name, "Running")
        return await self.wait_ready(name, timeout=120)

    async def _set_mode(self, name: str, mode: str) -> None:
        with self._in(await self._namespace_of(name)):
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
            raise _api_error(error, f"setting sandbox {name} {mode}") from error

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


def _api_error(error: ApiException, doing: str) -> SandboxError:
    """Turn an API error into a `SandboxError` that says what was being done and why it failed."""
    message = error.reason or ""
    try:
        message = json.loads(error.body or "{}").get("message") or message
    except (ValueError, AttributeError):
        pass
    return SandboxError(f"Kubernetes refused {doing}: {error.status} {message}".rstrip())


__all__ = ["CLAIM_API", "KubernetesBackend", "KubernetesSettings"]
