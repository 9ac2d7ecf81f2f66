"""A stand-in for the agent-sandbox controller (v1beta1) and a hostPath PV provisioner, for the k8s test tier.

The real controller (kubernetes-sigs/agent-sandbox) cannot be built here. This one follows its v1beta1
contract as /work/shared/agent-sandbox.md records it: Sandbox -> Pod (+ headless Service, + PVCs),
SandboxWarmPool -> unclaimed Sandboxes, SandboxClaim -> an adopted warm Sandbox or a cold one. It is
level-triggered: a watch event queues the key of the object it concerns, and one worker per kind
reconciles from the API server's current state (no cache: a reconcile never acts on a stale read).

    python -m tests.k8s.controller [--namespace NS ...] [--namespace-suffix=SUFFIX]

It serves all namespaces by default. Test sessions sharing the cluster each run their own, serving only
the namespaces that end with the session's suffix (tests/k8s/conftest.py).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import functools
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("lap.k8s.controller")

Json = dict[str, Any]
Key = tuple[str, str]  # (namespace, name); namespace "" for a cluster-scoped object
Handler = Callable[[str, Json], None]

VERSION = "v1beta1"  # always: other versions go through a conversion webhook, which does not exist here
GROUP, EXTENSIONS = "agents.x-k8s.io", "extensions.agents.x-k8s.io"
SANDBOXES, TEMPLATES, POOLS, CLAIMS = "sandboxes", "sandboxtemplates", "sandboxwarmpools", "sandboxclaims"
GROUPS = {SANDBOXES: GROUP, TEMPLATES: EXTENSIONS, POOLS: EXTENSIONS, CLAIMS: EXTENSIONS}
HASH_LABEL = "agents.x-k8s.io/sandbox-name-hash"
WARM_POOL_LABEL = "agents.x-k8s.io/warm-pool-sandbox"
TEMPLATE_REF_HASH_LABEL = "agents.x-k8s.io/sandbox-template-ref-hash"
LAUNCH_TYPE_LABEL = "agents.x-k8s.io/launch-type"
CLAIM_UID_LABEL = "agents.x-k8s.io/claim-uid"
SANDBOX_NAME_ANNOTATION = "agents.x-k8s.io/sandbox-name"
TEMPLATE_REF_ANNOTATION = "agents.x-k8s.io/sandbox-template-ref"
# The pod keys that came from the podTemplate, so that a key later dropped from it (the warm-pool label,
# when a claim adopts the Sandbox) is dropped from the pod too.
PROPAGATED = {"labels": "agents.x-k8s.io/propagated-labels", "annotations": "agents.x-k8s.io/propagated-annotations"}
STORAGE_CLASS, PROVISIONER = "lap-hostpath", "lap.test/hostpath"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
PV_ROOT = Path(os.environ.get("LAP_K8S_PV_ROOT", "/var/tmp/lap-k8s/pv"))
# The client picks JSON patch for custom objects unless told; its type stubs leave the option out.
MERGE_PATCH: dict[str, Any] = {"_content_type": "application/merge-patch+json"}


def name_hash(name: str) -> str:
    """Return agent-sandbox's NameHash of a name: FNV-1a, 32 bits, 8 hex digits."""
    value = 0x811C9DC5
    for byte in name.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return f"{value:08x}"


def body(obj: Json) -> Any:
    """Return a JSON body for a typed API call: the client sends a dict as it is (the stubs ask for models)."""
    return obj


def key_of(obj: Json) -> Key:
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def uid_of(obj: Json) -> str:
    return str(obj["metadata"]["uid"])


def deleting(obj: Json) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def namespace_of(obj: Json) -> str:
    """Return an object's namespace; a PersistentVolume's is its claim's."""
    return str(obj["metadata"].get("namespace") or (obj["spec"].get("claimRef") or {}).get("namespace", ""))


def controller_of(obj: Json) -> Json | None:
    return next((ref for ref in obj["metadata"].get("ownerReferences") or [] if ref.get("controller")), None)


def controlled_by(obj: Json, owner: Json) -> bool:
    ref = controller_of(obj)
    return ref is not None and ref["uid"] == uid_of(owner)


def owner_ref(owner: Json) -> Json:
    meta = owner["metadata"]
    ref = {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"], "uid": meta["uid"]}
    return ref | {"controller": True, "blockOwnerDeletion": True}


def find_condition(obj: Json, kind: str) -> Json | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


def is_ready(obj: Json) -> bool:
    ready = find_condition(obj, "Ready")
    return ready is not None and ready["status"] == "True"


def condition(obj: Json, kind: str, status: str, reason: str, message: str) -> Json:
    """Return an object's new condition; its lastTransitionTime moves only when its status does."""
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if (previous := find_condition(obj, kind)) is not None and previous["status"] == status:
        since = previous["lastTransitionTime"]
    generation = obj["metadata"].get("generation", 0)
    new = {"type": kind, "status": status, "reason": reason, "message": message}
    return new | {"lastTransitionTime": since, "observedGeneration": generation}


def changed(old: Json, new: Json) -> bool:
    """Tell whether a merge patch of `new` would change `old` (a None in `new` deletes a field)."""
    return any(old.get(field) != value for field, value in new.items())


def replace_map(current: dict[str, str], desired: dict[str, str]) -> dict[str, str | None]:
    """Return the merge patch that turns map `current` into `desired`."""
    return {key: None for key in current if key not in desired} | desired


def blueprint(template: Json, labels: dict[str, str], annotations: dict[str, str]) -> Json:
    """Return a Sandbox spec from a SandboxTemplate's podTemplate, volumeClaimTemplates and service."""
    spec = copy.deepcopy(
        {k: template["spec"][k] for k in ("podTemplate", "volumeClaimTemplates", "service") if k in template["spec"]}
    )
    meta = spec["podTemplate"].setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
    spec["podTemplate"]["spec"].setdefault("automountServiceAccountToken", False)  # the real one's default
    return spec


async def or_none(call: Awaitable[Any]) -> Any:
    """Await an API call; None when the object does not exist."""
    try:
        return await call
    except ApiException as error:
        if error.status == 404:
            return None
        raise


async def created(call: Awaitable[Any]) -> bool:
    """Await a create; False when the object exists already."""
    try:
        await call
    except ApiException as error:
        if error.status == 409:
            return False
        raise
    return True


def suspension(spec: Json, pod: Json | None) -> tuple[str, str, str]:
    """Return the status, reason and message of a Sandbox's Suspended condition."""
    if spec.get("operatingMode") != "Suspended":
        return "False", "NotSuspended", "Sandbox is not suspended"
    if pod is None:
        return "True", "PodTerminated", "Pod has been terminated. Sandbox is suspended"
    return "False", "PodTerminating", "Pod is terminating. Sandbox is suspending"


def readiness(spec: Json, pod: Json | None, service: Json | None) -> tuple[str, str, str]:
    """Return the status, reason and message of a Sandbox's Ready condition."""
    if spec.get("operatingMode") == "Suspended":
        return "False", "SandboxSuspended", "Sandbox is suspending" if pod else "Sandbox is suspended"
    if pod is None or deleting(pod):
        message = "Pod is being deleted" if pod else "Pod does not exist"
        pod_ready = False
    else:
        status = pod.get("status") or {}
        if (phase := status.get("phase")) in ("Succeeded", "Failed"):
            return "False", f"Pod{phase}", f"Pod {phase.lower()}"
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
        pod_ready = phase == "Running" and ready and bool(status.get("podIPs"))
        message = "Pod is Ready" if pod_ready else f"Pod is {phase}, not Ready"
    # An unset spec.service still requires a Service that exists (the real one's backward compatibility).
    needs_service = spec.get("service") or (spec.get("service") is None and service is not None)
    if needs_service:
        message += "; Service exists" if service else "; Service does not exist"
    if pod_ready and (service is not None or not needs_service):
        return "True", "DependenciesReady", message
    return "False", "DependenciesNotReady", message


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


class Controller:
    """The Sandbox, SandboxWarmPool and SandboxClaim controllers and the PV provisioner."""

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

    # --- Sandbox --------------------------------------------------------------------------------------

    async def reconcile_sandbox(self, namespace: str, name: str) -> None:
        sandbox = await self.get(SANDBOXES, namespace, name)
        if sandbox is None or deleting(sandbox):
            return  # the garbage collector deletes what it owned
        for template in sandbox["spec"].get("volumeClaimTemplates") or []:
            await self.ensure_pvc(sandbox, template)
        pod = self.plain(await or_none(self.core.read_namespaced_pod(name, namespace)))
        running = sandbox["spec"].get("operatingMode", "Running") == "Running"
        if pod is not None and not controlled_by(pod, sandbox):
            log.warning("Pod %s/%s is not Sandbox %s's: leaving it alone", namespace, name, name)
            pod = None
        elif pod is None and running:
            pod = await self.create_pod(sandbox)
        elif pod is not None and not deleting(pod) and not running:
            await self.core.delete_namespaced_pod(name, namespace)
            log.info("deleted Pod %s/%s (Sandbox suspended)", namespace, name)
            pod = self.plain(await or_none(self.core.read_namespaced_pod(name, namespace)))
        elif pod is not None and not deleting(pod):
            await self.sync_pod_metadata(sandbox, pod)
        service = await self.reconcile_service(sandbox)
        await self.update_sandbox_status(sandbox, pod, service)

    async def ensure_pvc(self, sandbox: Json, template: Json) -> None:
        namespace, sandbox_name = key_of(sandbox)
        meta = template["metadata"]
        name = f"{meta['name']}-{sandbox_name}"
        if await or_none(self.core.read_namespaced_persistent_volume_claim(name, namespace)) is not None:
            return
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        pvc_meta = {"name": name, "labels": labels, "annotations": annotations, "ownerReferences": [owner_ref(sandbox)]}
        pvc = {"metadata": pvc_meta, "spec": template["spec"]}
        if await created(self.core.create_namespaced_persistent_volume_claim(namespace, body(pvc))):
            log.info("created PVC %s/%s for Sandbox %s", namespace, name, sandbox_name)

    @staticmethod
    def pod_metadata(sandbox: Json) -> dict[str, dict[str, str]]:
        """Return the pod's labels and annotations: the podTemplate's, the hash label, what came from where."""
        meta = sandbox["spec"]["podTemplate"].get("metadata") or {}
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        keys = {
            PROPAGATED["labels"]: ",".join(sorted(labels)),
            PROPAGATED["annotations"]: ",".join(sorted(annotations)),
        }
        hash_label = {HASH_LABEL: name_hash(sandbox["metadata"]["name"])}
        return {"labels": labels | hash_label, "annotations": annotations | keys}

    async def create_pod(self, sandbox: Json) -> Json | None:
        namespace, name = key_of(sandbox)
        spec = copy.deepcopy(sandbox["spec"]["podTemplate"]["spec"])
        claims = {
            t["metadata"]["name"]: f"{t['metadata']['name']}-{name}"
            for t in sandbox["spec"].get("volumeClaimTemplates") or []
        }
        volumes = [{"name": volume, "persistentVolumeClaim": {"claimName": claim}} for volume, claim in claims.items()]
        spec["volumes"] = [v for v in spec.get("volumes") or [] if v["name"] not in claims] + volumes
        pod = {
            "metadata": {"name": name, "ownerReferences": [owner_ref(sandbox)], **self.pod_metadata(sandbox)},
            "spec": spec,
        }
        try:
            result: Json = self.plain(await self.core.create_namespaced_pod(namespace, body(pod)))
        except ApiException as error:
            if error.status == 409:  # the old pod is still there: its deletion brings us back
                return None
            raise
        log.info("created Pod %s/%s", namespace, name)
        return result

    async def sync_pod_metadata(self, sandbox: Json, pod: Json) -> None:
        """Carry podTemplate label and annotation changes (a claim adopting the Sandbox) over to the pod."""
        meta, patch = pod["metadata"], {}
        for field, desired in self.pod_metadata(sandbox).items():
            current = meta.get(field) or {}
            before = (meta.get("annotations") or {}).get(PROPAGATED[field], "").split(",")
            stale = {key: None for key in before if key in current and key not in desired}
            if changes := stale | {key: value for key, value in desired.items() if current.get(key) != value}:
                patch[field] = changes
        if patch:
            await self.core.patch_namespaced_pod(meta["name"], meta["namespace"], body({"metadata": patch}))
            log.info("patched Pod %s/%s: %s", meta["namespace"], meta["name"], json.dumps(patch))

    async def reconcile_service(self, sandbox: Json) -> Json | None:
        namespace, name = key_of(sandbox)
        wanted = sandbox["spec"].get("service")  # None: keep one that exists, make none
        service: Json | None = self.plain(await or_none(self.core.read_namespaced_service(name, namespace)))
        if service is not None and not controlled_by(service, sandbox):
            return None
        if wanted is True and service is None:
            selector = {HASH_LABEL: name_hash(name)}
            containers = sandbox["spec"]["podTemplate"]["spec"]["containers"]
            ports = sorted(
                {(p["containerPort"], p.get("protocol", "TCP")) for c in containers for p in c.get("ports") or []}
            )
            spec = {
                "clusterIP": "None",
                "selector": selector,
                "ports": [
                    {"name": f"{protocol.lower()}-{port}", "port": port, "targetPort": port, "protocol": protocol}
                    for port, protocol in ports
                ],
            }
            meta = {"name": name, "labels": selector, "ownerReferences": [owner_ref(sandbox)]}
            service = self.plain(
                await self.core.create_namespaced_service(namespace, body({"metadata": meta, "spec": spec}))
            )
            log.info("created headless Service %s/%s", namespace, name)
        elif wanted is False and service is not None:
            await self.core.delete_namespaced_service(name, namespace)
            log.info("deleted Service %s/%s (spec.service false)", namespace, name)
            service = None
        return service

    async def update_sandbox_status(self, sandbox: Json, pod: Json | None, service: Json | None) -> None:
        namespace, name = key_of(sandbox)
        live = pod if pod is not None and not deleting(pod) else {}  # a pod being deleted is not "there"
        ips = [ip["ip"] for ip in live.get("status", {}).get("podIPs") or []]
        ready = readiness(sandbox["spec"], pod, service)
        status = {
            "conditions": [
                condition(sandbox, "Suspended", *suspension(sandbox["spec"], pod)),
                condition(sandbox, "Ready", *ready),
            ],
            "podIPs": ips or None,
            "nodeName": live.get("spec", {}).get("nodeName"),
            "selector": f"{HASH_LABEL}={name_hash(name)}",
            "service": name if service else None,
            "serviceFQDN": f"{name}.{namespace}.svc.cluster.local" if service else None,
        }
        if changed(sandbox.get("status") or {}, status):
            await self.patch(SANDBOXES, sandbox, {"status": status}, status=True)
            log.info("Sandbox %s/%s: Ready=%s %s, podIPs %s", namespace, name, ready[0], ready[1], ips)

    # --- SandboxWarmPool ------------------------------------------------------------------------------

    async def reconcile_pool(self, namespace: str, name: str) -> None:
        pool = await self.get(POOLS, namespace, name)
        if pool is None or deleting(pool):
            return
        selector = f"{WARM_POOL_LABEL}={name_hash(name)}"
        members = [s for s in await self.sandboxes_labelled(namespace, selector) if controlled_by(s, pool)]
        wanted = pool["spec"].get("replicas", 1)
        template_name = pool["spec"]["sandboxTemplateRef"]["name"]
        template = await self.get(TEMPLATES, namespace, template_name) if len(members) < wanted else None
        if len(members) < wanted and template is None:
            log.warning("SandboxWarmPool %s/%s: SandboxTemplate %s not found", namespace, name, template_name)
        while template is not None and len(members) < wanted:
            members.append(await self.create_pool_sandbox(pool, template))
        # Scale down: the unready first, then the newest. The resourceVersion precondition spares a
        # sandbox that a claim adopted since we listed.
        members.sort(key=lambda s: (not is_ready(s), s["metadata"]["creationTimestamp"]))
        while len(members) > wanted:
            extra = members.pop()["metadata"]
            preconditions = {"uid": extra["uid"], "resourceVersion": extra["resourceVersion"]}
            delete = self.custom.delete_namespaced_custom_object
            try:
                await delete(
                    GROUP, VERSION, namespace, SANDBOXES, extra["name"], body=body({"preconditions": preconditions})
                )
                log.info("deleted Sandbox %s/%s (SandboxWarmPool %s above replicas)", namespace, extra["name"], name)
            except ApiException as error:
                if error.status not in (404, 409):
                    raise
        ready = sum(map(is_ready, members))
        generation = pool["metadata"].get("generation", 0)
        status = {
            "replicas": len(members),
            "readyReplicas": ready,
            "selector": selector,
            "observedGeneration": generation,
        }
        if changed(pool.get("status") or {}, status):
            await self.patch(POOLS, pool, {"status": status}, status=True)
            log.info("SandboxWarmPool %s/%s: %d replicas, %d ready", namespace, name, len(members), ready)

    async def create_pool_sandbox(self, pool: Json, template: Json) -> Json:
        namespace, name = key_of(pool)
        template_name = template["metadata"]["name"]
        labels = {WARM_POOL_LABEL: name_hash(name), TEMPLATE_REF_HASH_LABEL: name_hash(template_name)}
        meta = {
            "generateName": f"{name}-",
            "labels": labels | {LAUNCH_TYPE_LABEL: "warm"},
            "ownerReferences": [owner_ref(pool)],
        }
        meta["annotations"] = {TEMPLATE_REF_ANNOTATION: template_name}
        new = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Sandbox",
            "metadata": meta,
            "spec": blueprint(template, labels, {}),
        }
        sandbox: Json = await self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, SANDBOXES, new)
        log.info("created Sandbox %s/%s for SandboxWarmPool %s", namespace, sandbox["metadata"]["name"], name)
        return sandbox

    # --- SandboxClaim ---------------------------------------------------------------------------------

    async def reconcile_claim(self, namespace: str, name: str) -> None:
        claim = await self.get(CLAIMS, namespace, name)
        if claim is None or deleting(claim):
            return  # its Sandbox goes with it, through the garbage collector
        mine = await self.sandboxes_labelled(namespace, f"{CLAIM_UID_LABEL}={uid_of(claim)}")
        sandbox = next((s for s in mine if controlled_by(s, claim)), None)
        if sandbox is None and SANDBOX_NAME_ANNOTATION in (claim["metadata"].get("annotations") or {}):
            return await self.claim_status(claim, None, ("False", "SandboxMissing", "its Sandbox is gone"))
        if sandbox is None:
            pool_name = claim["spec"]["warmPoolRef"]["name"]
            pool = await self.get(POOLS, namespace, pool_name)
            if pool is None:
                return await self.claim_status(
                    claim, None, ("False", "WarmPoolNotFound", f"no SandboxWarmPool {pool_name}")
                )
            template_name = pool["spec"]["sandboxTemplateRef"]["name"]
            template = await self.get(TEMPLATES, namespace, template_name)
            if template is None:
                return await self.claim_status(
                    claim, None, ("False", "TemplateNotFound", f"no SandboxTemplate {template_name}")
                )
            sandbox = await self.adopt(claim, pool, template) or await self.cold_start(claim, template)
            self.pools.add((namespace, pool_name))  # it refills behind the claim
            if sandbox is None:
                return await self.claim_status(
                    claim, None, ("False", "AdoptionConflict", f"Sandbox {name} is another's")
                )
        sandbox_name = sandbox["metadata"]["name"]
        if (claim["metadata"].get("annotations") or {}).get(SANDBOX_NAME_ANNOTATION) != sandbox_name:
            claim = await self.patch(
                CLAIMS, claim, {"metadata": {"annotations": {SANDBOX_NAME_ANNOTATION: sandbox_name}}}
            )
        ready = find_condition(sandbox, "Ready") or {"status": "False", "message": "Sandbox has no status yet"}
        if ready["status"] == "True":
            await self.claim_status(claim, sandbox, ("True", ready["reason"], ready["message"]))
        else:
            await self.claim_status(claim, sandbox, ("False", "SandboxNotReady", ready["message"]))

    @staticmethod
    def claimed_pod_metadata(claim: Json, template: Json) -> tuple[dict[str, str], dict[str, str]]:
        """Return a claimed sandbox's pod labels and annotations: the template's, claim-uid, the claim's."""
        meta = template["spec"]["podTemplate"].get("metadata") or {}
        extra = claim["spec"].get("additionalPodMetadata") or {}
        system = {CLAIM_UID_LABEL: uid_of(claim), TEMPLATE_REF_HASH_LABEL: name_hash(template["metadata"]["name"])}
        labels = (meta.get("labels") or {}) | system | (extra.get("labels") or {})
        return labels, (meta.get("annotations") or {}) | (extra.get("annotations") or {})

    async def adopt(self, claim: Json, pool: Json, template: Json) -> Json | None:
        """Take the pool's oldest Ready sandbox for the claim; None if it has none."""
        namespace, name = key_of(claim)
        members = await self.sandboxes_labelled(namespace, f"{WARM_POOL_LABEL}={name_hash(pool['metadata']['name'])}")
        candidates = [s for s in members if controlled_by(s, pool) and is_ready(s)]
        candidates.sort(key=lambda s: (s["metadata"]["creationTimestamp"], s["metadata"]["name"]))
        labels, annotations = self.claimed_pod_metadata(claim, template)
        for candidate in candidates:
            meta, pod_meta = candidate["metadata"], candidate["spec"]["podTemplate"].get("metadata") or {}
            owners = [ref for ref in meta.get("ownerReferences") or [] if not ref.get("controller")] + [
                owner_ref(claim)
            ]
            new_labels = {WARM_POOL_LABEL: None, CLAIM_UID_LABEL: uid_of(claim), LAUNCH_TYPE_LABEL: "warm"}
            pod_patch = {
                "labels": replace_map(pod_meta.get("labels") or {}, labels),
                "annotations": replace_map(pod_meta.get("annotations") or {}, annotations),
            }
            patch = {
                # resourceVersion: an optimistic lock; the patch fails (409) if anyone changed the sandbox
                "metadata": {
                    "resourceVersion": meta["resourceVersion"],
                    "labels": new_labels,
                    "ownerReferences": owners,
                },
                "spec": {"podTemplate": {"metadata": pod_patch}},
            }
            try:
                adopted = await self.patch(SANDBOXES, candidate, patch)
            except ApiException as error:
                if error.status in (404, 409):
                    continue  # taken, changed or deleted since we listed: the next one
                raise
            log.info("SandboxClaim %s/%s adopted warm Sandbox %s", namespace, name, meta["name"])
            return adopted
        return None

    async def cold_start(self, claim: Json, template: Json) -> Json | None:
        """Create a Sandbox named after the claim, from the template; None if that name is another's."""
        namespace, name = key_of(claim)
        template_name = template["metadata"]["name"]
        labels = {
            CLAIM_UID_LABEL: uid_of(claim),
            LAUNCH_TYPE_LABEL: "cold",
            TEMPLATE_REF_HASH_LABEL: name_hash(template_name),
        }
        meta = {
            "name": name,
            "labels": labels,
            "annotations": {TEMPLATE_REF_ANNOTATION: template_name},
            "ownerReferences": [owner_ref(claim)],
        }
        new = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Sandbox", "metadata": meta}
        new["spec"] = blueprint(template, *self.claimed_pod_metadata(claim, template))
        try:
            sandbox: Json = await self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, SANDBOXES, new)
        except ApiException as error:
            if error.status != 409:
                raise
            existing = await self.get(SANDBOXES, namespace, name)
            return existing if existing is not None and controlled_by(existing, claim) else None
        log.info("SandboxClaim %s/%s: no Ready warm sandbox, created Sandbox %s", namespace, name, name)
        return sandbox

    async def claim_status(self, claim: Json, sandbox: Json | None, ready: tuple[str, str, str]) -> None:
        status: Json = {"conditions": [condition(claim, "Ready", *ready)]}
        if sandbox is not None:
            ips = (sandbox.get("status") or {}).get("podIPs")
            status["sandbox"] = {"name": sandbox["metadata"]["name"]} | ({"podIPs": ips} if ips else {})
        if changed(claim.get("status") or {}, status):
            await self.patch(CLAIMS, claim, {"status": status}, status=True)
            log.info("SandboxClaim %s/%s: Ready=%s %s, sandbox %s", *key_of(claim), *ready[:2], status.get("sandbox"))

    # --- PV provisioner -------------------------------------------------------------------------------

    async def provision(self, namespace: str, name: str) -> None:
        """Give a Pending lap-hostpath PVC a hostPath PV that names it in claimRef, so that they bind at once."""
        pvc = self.plain(await or_none(self.core.read_namespaced_persistent_volume_claim(name, namespace)))
        if (
            pvc is None
            or deleting(pvc)
            or pvc["spec"].get("volumeName")
            or pvc.get("status", {}).get("phase") != "Pending"
        ):
            return
        if pvc["spec"].get("storageClassName") != STORAGE_CLASS:
            return
        uid, spec = uid_of(pvc), pvc["spec"]
        path = PV_ROOT / uid
        await asyncio.to_thread(make_shared_dir, path)
        claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": namespace, "name": name, "uid": uid}
        pv_spec = {
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
            "accessModes": spec["accessModes"],
            "volumeMode": spec.get("volumeMode", "Filesystem"),
            "hostPath": {"path": str(path), "type": "Directory"},
            "claimRef": claim,
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": STORAGE_CLASS,
        }
        pv = {"metadata": {"name": f"pvc-{uid}", "annotations": {PROVISIONED_BY: PROVISIONER}}, "spec": pv_spec}
        if await created(self.core.create_persistent_volume(body(pv))):
            log.info("created PV pvc-%s (%s) for PVC %s/%s", uid, path, namespace, name)

    async def release(self, _: str, name: str) -> None:
        """Delete a Released PV of ours (its PVC is gone), and its directory."""
        pv = self.plain(await or_none(self.core.read_persistent_volume(name)))
        if pv is None or deleting(pv) or pv.get("status", {}).get("phase") != "Released":
            return
        path = Path(pv["spec"]["hostPath"]["path"])
        await or_none(self.core.delete_persistent_volume(name))
        if path.parent == PV_ROOT:
            await asyncio.to_thread(shutil.rmtree, path, True)
        log.info("deleted PV %s and %s (its PVC is gone)", name, path)

    async def run(self) -> None:
        storage_class = {
            "metadata": {"name": STORAGE_CLASS},
            "provisioner": PROVISIONER,
            "volumeBindingMode": "Immediate",
        }
        if await created(client.StorageV1Api(self.api).create_storage_class(body(storage_class))):
            log.info("created StorageClass %s", STORAGE_CLASS)
        watches = self.watches()
        self._unlisted = len(watches)
        async with asyncio.TaskGroup() as tasks:
            for list_call, handle in watches:
                tasks.create_task(self.watch(list_call, handle))
            for queue in (self.sandboxes, self.pools, self.claims, self.pvcs, self.pvs):
                tasks.create_task(queue.run())


def make_shared_dir(path: Path) -> None:
    """Create a PV's directory, writable for a pod that does not run as root."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)  # chmod, unlike mkdir's mode, ignores the umask


async def main(namespaces: list[str], suffix: str) -> None:
    configuration = client.Configuration()
    await config.load_kube_config(client_configuration=configuration)  # from $KUBECONFIG
    async with client.ApiClient(configuration) as api:
        task = asyncio.create_task(Controller(api, namespaces, suffix).run())
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, task.cancel)
        log.info("serving %s%s", ", ".join(namespaces) or "all namespaces", f" ending with {suffix}" if suffix else "")
        try:
            await task
        except asyncio.CancelledError:
            log.info("stopped")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", action="append", default=[], help="a namespace to serve (repeatable)")
    parser.add_argument("--namespace-suffix", default="", help="serve only namespaces whose name ends with this")
    args = parser.parse_args()
    log_format = "%(asctime)s.%(msecs)03d %(message)s"
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=log_format, datefmt="%H:%M:%S")
    asyncio.run(main(args.namespace, args.namespace_suffix))
