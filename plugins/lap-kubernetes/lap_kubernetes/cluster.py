"""`Cluster`: the Kubernetes API as the backend uses it, in the namespace of the current operation.

Reading objects as dicts (None when absent), waiting for them to go (watches, not polling),
sandboxd token Secrets, volume PVCs found by label, and the namespace of a sandbox or volume
(one namespace, or one per team). An operation sets its namespace with `in_namespace`, per task,
so the helpers below take no namespace argument and concurrent operations do not mix.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import structlog
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from lap_core import SandboxError
from lap_kubernetes import manifests
from lap_kubernetes.manifests import CLAIM_API, MANAGED_BY, SANDBOX_API, SANDBOX_LABEL, VOLUME_LABEL, token_in
from lap_kubernetes.watching import states

if TYPE_CHECKING:
    import builtins
    from collections.abc import Iterator

    from lap_kubernetes.settings import KubernetesSettings

log = structlog.get_logger("lap.kubernetes")
MERGE_PATCH = "application/merge-patch+json"
_NAMESPACE: ContextVar[str | None] = ContextVar("lap_k8s_namespace", default=None)


async def load_configuration(settings: KubernetesSettings) -> client.Configuration:
    """Return the API configuration: in-cluster in a pod (unless a kubeconfig is named), else a kubeconfig."""
    configuration = client.Configuration()
    try:
        if settings.lap_k8s_kubeconfig is None and config.incluster_config.SERVICE_HOST_ENV_NAME in os.environ:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            await config.load_kube_config(
                config_file=settings.lap_k8s_kubeconfig,
                context=settings.lap_k8s_context,
                client_configuration=configuration,
            )
    except (config.ConfigException, OSError) as error:
        raise SandboxError(f"cannot load the Kubernetes configuration: {error}") from error
    return configuration


class Cluster:
    """API access for the backend (which subclasses it)."""

    def __init__(self, settings: KubernetesSettings) -> None:
        self.settings = settings
        self._api_client: client.ApiClient | None = None
        self._where: dict[str, str] = {}  # sandbox -> its namespace, when per-team
        self._namespaces: set[str] = set()  # team namespaces known to exist

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
    def in_namespace(self, namespace: str) -> Iterator[None]:
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
        for api in (SANDBOX_API, CLAIM_API) if self.settings.lap_k8s_warm_pool_size else (SANDBOX_API,):
            listed = await self.custom.list_cluster_custom_object(*api, label_selector=selector)
            for item in listed.get("items", []):
                self._where[name] = str(item["metadata"]["namespace"])
                return self._where[name]
        return self.settings.lap_k8s_namespace

    async def _namespace_of_volume(self, volume: str) -> str:
        if not self.settings.lap_k8s_namespace_per_team:
            return self.settings.lap_k8s_namespace
        listed = await self.core.list_persistent_volume_claim_for_all_namespaces(
            label_selector=f"{VOLUME_LABEL}={manifests.label_value(volume)}"
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
                raise api_error(error, f"creating namespace {namespace}") from error
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
            raise api_error(error, f"reading {api[2]} {name}") from error
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
            raise api_error(error, f"reading {name}") from error
        found: dict[str, Any] = self.api_client.sanitize_for_serialization(obj)
        return found

    async def _get_pod(self, name: str) -> dict[str, Any] | None:
        return await self._read(self.core.read_namespaced_pod, name)

    async def _get_pvc(self, name: str) -> dict[str, Any] | None:
        return await self._read(self.core.read_namespaced_persistent_volume_claim, name)

    async def _until_gone(self, name: str, get: Any, list_function: Any) -> None:
        async for obj in states(lambda: get(name), list_function, self.namespace, name=name):
            if obj is None:
                return

    async def _gone(self, name: str) -> None:
        """Wait until the Sandbox and its pod are gone (a new one of the name must not meet the old pod)."""
        with anyio.fail_after(120):
            list_function, args = self.list_custom(SANDBOX_API)
            async for obj in states(lambda: self.get_custom(SANDBOX_API, name), list_function, *args, name=name):
                if obj is None:
                    break
            await self._until_gone(name, self._get_pod, self.core.list_namespaced_pod)

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

    async def create_token_secret(self, name: str, token: str, labels: dict[str, str]) -> dict[str, Any]:
        body = manifests.token_secret(name, token, labels)
        try:
            secret = await self.core.create_namespaced_secret(self.namespace, body)
        except ApiException as error:
            if error.status != 409:
                raise api_error(error, f"creating the token of sandbox {name}") from error
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

    async def token_of(self, secret_name: str) -> str:
        """Return the sandboxd token kept in a Secret."""
        try:
            secret = await self.core.read_namespaced_secret(secret_name, self.namespace)
        except ApiException as error:
            raise api_error(error, f"reading the sandboxd token {secret_name}") from error
        return token_in(self.api_client.sanitize_for_serialization(secret))

    async def _delete_secret(self, name: str) -> None:
        try:
            await self.core.delete_namespaced_secret(name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise api_error(error, f"deleting the token of sandbox {name}") from error

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
                raise api_error(error, f"creating the volume of {volume}") from error
        return str(body["metadata"]["name"])

    async def _volume_claims(self, volume: str) -> list[dict[str, Any]]:
        selector = f"{VOLUME_LABEL}={manifests.label_value(volume)}"
        try:
            listed = await self.core.list_namespaced_persistent_volume_claim(self.namespace, label_selector=selector)
        except ApiException as error:
            raise api_error(error, f"listing the volume of {volume}") from error
        items: list[dict[str, Any]] = self.api_client.sanitize_for_serialization(listed).get("items", [])
        return items

    async def _claims_gone(self, volume: str) -> None:
        # A PVC's deletion waits until no pod uses it.
        with anyio.fail_after(120):
            for pvc in await self._volume_claims(volume):
                await self._until_gone(
                    pvc["metadata"]["name"], self._get_pvc, self.core.list_namespaced_persistent_volume_claim
                )

    async def _volume_exists(self, volume: str) -> bool:
        return any(not pvc["metadata"].get("deletionTimestamp") for pvc in await self._volume_claims(volume))

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
            raise api_error(error, f"listing {api[2]}") from error
        items: builtins.list[dict[str, Any]] = listed.get("items", [])
        return items


@contextmanager
def translated(doing: str) -> Iterator[None]:
    """Turn whatever the API client raises into a `SandboxError` that says what LAP was doing."""
    try:
        yield
    except SandboxError:
        raise
    except ApiException as error:
        raise api_error(error, doing) from error
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        reason = str(error) or type(error).__name__
        raise SandboxError(f"Kubernetes did not answer while {doing}: {reason}") from error


def api_error(error: ApiException, doing: str) -> SandboxError:
    """Turn an API error into a `SandboxError` that says what was being done and why it failed."""
    message = error.reason or ""
    try:
        message = json.loads(error.body or "{}").get("message") or message
    except (ValueError, AttributeError):
        pass
    return SandboxError(f"Kubernetes refused {doing}: {error.status} {message}".rstrip())
