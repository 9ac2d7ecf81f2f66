"""What the reconcilers share: the API calls, the watches, and the work queues the watch events fill."""

from __future__ import annotations

import abc
import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.k8s.controller.objects import (
    CLAIMS,
    GROUP,
    GROUPS,
    HASH_LABEL,
    MERGE_PATCH,
    POOLS,
    PROVISIONED_BY,
    PROVISIONER,
    SANDBOXES,
    STORAGE_CLASS,
    TEMPLATES,
    VERSION,
    Json,
    Key,
    controller_of,
    deleting,
    key_of,
    log,
    namespace_of,
    or_none,
)

if TYPE_CHECKING:
    import aiohttp

Handler = Callable[[str, Json], None]


class WorkQueue:
    """Keys to reconcile, each queued at most once, for one worker; a failed key is retried with backoff."""

    def __init__(self, kind: str, reconcile: Callable[[str, str], Awaitable[None]]) -> None:
        self.kind = kind
        self._reconcile = reconcile
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._failures: dict[Key, int] = {}

    def add(self, key: Key) -> None:
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    async def run(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)  # so that an event during the reconcile queues it again
            try:
                await self._reconcile(*key)
                self._failures.pop(key, None)
            except ApiException as error:
                if error.status == 404 or (error.status == 403 and "being terminated" in str(error.body)):
                    continue  # the object, or its namespace, went meanwhile
                self.retry(key, f"{error.status} {error.reason}")
            except Exception as error:  # a stand-in keeps going; the log shows what broke
                log.exception("%s %s/%s failed", self.kind, *key)
                self.retry(key, repr(error))

    def retry(self, key: Key, why: str) -> None:
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        delay = min(0.05 * 2**failures, 5.0)
        log.warning("retry %s %s/%s in %.2fs: %s", self.kind, *key, delay, why)
        asyncio.get_running_loop().call_later(delay, self.add, key)


class Plumbing(abc.ABC):
    """The API calls, the watches and the queues; a subclass brings each queue's reconcile."""

    def __init__(self, api: client.ApiClient, namespaces: list[str], suffix: str = "") -> None:
        self.api, self.namespaces, self.suffix = api, namespaces, suffix
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.sandboxes = WorkQueue("Sandbox", self.reconcile_sandbox)
        self.pools = WorkQueue("SandboxWarmPool", self.reconcile_pool)
        self.claims = WorkQueue("SandboxClaim", self.reconcile_claim)
        self.pvcs = WorkQueue("PersistentVolumeClaim", self.provision)
        self.pvs = WorkQueue("PersistentVolume", self.release)
        # For fan-out only, never for a decision: each pool's template, and the claims not bound yet, so
        # that a template or pool created late wakes what waits for it.
        self.pool_templates: dict[Key, str] = {}
        self.waiting_claims: set[Key] = set()
        self._unlisted = 0

    # --- the reconcilers, one per queue (sandbox.py, pools.py, provisioner.py) ---------------------------

    @abc.abstractmethod
    async def reconcile_sandbox(self, namespace: str, name: str) -> None: ...

    @abc.abstractmethod
    async def reconcile_pool(self, namespace: str, name: str) -> None: ...

    @abc.abstractmethod
    async def reconcile_claim(self, namespace: str, name: str) -> None: ...

    @abc.abstractmethod
    async def provision(self, namespace: str, name: str) -> None: ...

    @abc.abstractmethod
    async def release(self, _: str, name: str) -> None: ...

    # --- API calls and watches ------------------------------------------------------------------------

    def plain(self, model: Any) -> Any:
        """Return a client model as the API's JSON (None stays None)."""
        return None if model is None else self.api.sanitize_for_serialization(model)

    async def get(self, plural: str, namespace: str, name: str) -> Json | None:
        found: Json | None = await or_none(
            self.custom.get_namespaced_custom_object(GROUPS[plural], VERSION, namespace, plural, name)
        )
        return found

    async def sandboxes_labelled(self, namespace: str, selector: str) -> list[Json]:
        found = await self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, SANDBOXES, label_selector=selector
        )
        return [item for item in found["items"] if not deleting(item)]

    async def patch(self, plural: str, obj: Json, patch: Json, *, status: bool = False) -> Json:
        """Merge-patch a custom object, or its status subresource."""
        call = (
            self.custom.patch_namespaced_custom_object_status if status else self.custom.patch_namespaced_custom_object
        )
        namespace, name = key_of(obj)
        result: Json = await call(GROUPS[plural], VERSION, namespace, plural, name, patch, **MERGE_PATCH)
        return result

    def watches(self) -> list[tuple[Callable[..., Awaitable[Any]], Handler]]:
        """Return the list call and the event handler of every watch (per namespace when some were given)."""
        custom: list[tuple[str, Handler]] = [
            (SANDBOXES, self.on_sandbox),
            (TEMPLATES, self.on_template),
            (POOLS, self.on_pool),
            (CLAIMS, self.on_claim),
        ]
        made_by_us: dict[str, Any] = {"label_selector": HASH_LABEL}  # pods and services of Sandboxes only
        core, partial = self.core, functools.partial
        result: list[tuple[Callable[..., Awaitable[Any]], Handler]] = [(core.list_persistent_volume, self.on_pv)]
        if not self.namespaces:
            result += [(partial(self.custom.list_cluster_custom_object, GROUPS[p], VERSION, p), h) for p, h in custom]
            result += [
                (partial(core.list_pod_for_all_namespaces, **made_by_us), self.on_child),
                (partial(core.list_service_for_all_namespaces, **made_by_us), self.on_child),
                (core.list_persistent_volume_claim_for_all_namespaces, self.on_pvc),
            ]
        for ns in self.namespaces:
            result += [
                (partial(self.custom.list_namespaced_custom_object, GROUPS[p], VERSION, ns, p), h) for p, h in custom
            ]
            result += [
                (partial(core.list_namespaced_pod, ns, **made_by_us), self.on_child),
                (partial(core.list_namespaced_service, ns, **made_by_us), self.on_child),
                (partial(core.list_namespaced_persistent_volume_claim, ns), self.on_pvc),
            ]
        return result

    async def watch(self, list_call: Callable[..., Awaitable[Any]], handle: Handler) -> None:
        """List, then watch from the list's resourceVersion; list again after 410 Gone or a failure."""
        first = True
        while True:
            try:
                listing = await self.json(list_call(_preload_content=False))
                for item in listing["items"]:
                    self.dispatch(handle, "ADDED", item)
                if first:
                    first, self._unlisted = False, self._unlisted - 1
                    if self._unlisted == 0:
                        log.info("ready: listed and watching")
                version = listing["metadata"]["resourceVersion"]
                while True:  # a server-side timeout ends each stream; the next one goes on from `version`
                    options = {"resource_version": version, "allow_watch_bookmarks": True, "timeout_seconds": 300}
                    async with await list_call(watch=True, _preload_content=False, **options) as response:
                        await self.check(response)
                        async for line in response.content:
                            event = json.loads(line)
                            if event["type"] == "ERROR":  # 410 Gone: the version is too old to go on from
                                raise ApiException(
                                    status=event["object"].get("code"), reason=event["object"].get("message")
                                )
                            version = event["object"]["metadata"]["resourceVersion"]
                            if event["type"] != "BOOKMARK":
                                self.dispatch(handle, event["type"], event["object"])
            except ApiException as error:
                if error.status != 410:
                    log.warning("watch %s: %s %s", getattr(list_call, "func", list_call), error.status, error.reason)
                    await asyncio.sleep(1)
            except Exception:
                log.exception("watch %s failed", getattr(list_call, "func", list_call))
                await asyncio.sleep(1)

    def dispatch(self, handle: Handler, event: str, obj: Json) -> None:
        """Hand an event to its handler if the object is in a namespace we serve (a PV: if its claim is)."""
        namespace = namespace_of(obj)
        if (self.namespaces and namespace not in self.namespaces) or not namespace.endswith(self.suffix):
            return
        try:
            handle(event, obj)
        except Exception:  # one odd object must not stop the watch
            log.exception("%s event for %s/%s", event, *key_of(obj))

    @staticmethod
    async def check(response: aiohttp.ClientResponse) -> None:
        if response.status >= 400:
            raise ApiException(status=response.status, reason=await response.text())

    async def json(self, call: Awaitable[aiohttp.ClientResponse]) -> Json:
        async with await call as response:
            await self.check(response)
            result: Json = await response.json()
            return result

    # --- watch events -> keys to reconcile ------------------------------------------------------------

    def on_sandbox(self, event: str, sandbox: Json) -> None:
        self.sandboxes.add(key_of(sandbox))
        owner = controller_of(sandbox) or {}
        queue = {"SandboxWarmPool": self.pools, "SandboxClaim": self.claims}.get(owner.get("kind", ""))
        if queue is not None:
            queue.add((namespace_of(sandbox), owner["name"]))

    def on_child(self, event: str, obj: Json) -> None:
        owner = controller_of(obj)
        if owner is not None and owner["kind"] == "Sandbox":
            self.sandboxes.add((namespace_of(obj), owner["name"]))

    def on_pvc(self, event: str, pvc: Json) -> None:
        self.on_child(event, pvc)
        if (
            event != "DELETED"
            and pvc["spec"].get("storageClassName") == STORAGE_CLASS
            and not pvc["spec"].get("volumeName")
        ):
            self.pvcs.add(key_of(pvc))

    def on_pv(self, event: str, pv: Json) -> None:
        ours = (pv["metadata"].get("annotations") or {}).get(PROVISIONED_BY) == PROVISIONER
        if ours and event != "DELETED" and pv.get("status", {}).get("phase") == "Released":
            self.pvs.add(key_of(pv))

    def on_template(self, event: str, template: Json) -> None:
        namespace, name = key_of(template)
        for pool, template_name in self.pool_templates.items():
            if pool[0] == namespace and template_name == name:
                self.pools.add(pool)
        self.wake_claims(namespace)

    def on_pool(self, event: str, pool: Json) -> None:
        if event == "DELETED":
            self.pool_templates.pop(key_of(pool), None)
        else:
            self.pool_templates[key_of(pool)] = pool["spec"]["sandboxTemplateRef"]["name"]
        self.pools.add(key_of(pool))
        self.wake_claims(namespace_of(pool))

    def on_claim(self, event: str, claim: Json) -> None:
        if event == "DELETED" or claim.get("status", {}).get("sandbox", {}).get("name"):
            self.waiting_claims.discard(key_of(claim))
        else:
            self.waiting_claims.add(key_of(claim))
        self.claims.add(key_of(claim))

    def wake_claims(self, namespace: str) -> None:
        for claim in self.waiting_claims:
            if claim[0] == namespace:
                self.claims.add(claim)
