"""The Sandbox reconciler: a Sandbox -> its Pod, headless Service and PVCs, and its status."""

from __future__ import annotations

import copy
import json

from kubernetes_asyncio.client.exceptions import ApiException

from tests.k8s.controller.objects import (
    HASH_LABEL,
    PROPAGATED,
    SANDBOXES,
    Json,
    body,
    changed,
    condition,
    controlled_by,
    created,
    deleting,
    key_of,
    log,
    name_hash,
    or_none,
    owner_ref,
)
from tests.k8s.controller.plumbing import Plumbing


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


class SandboxReconciler(Plumbing):
    """Sandbox -> Pod (+ headless Service, + PVCs)."""

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
