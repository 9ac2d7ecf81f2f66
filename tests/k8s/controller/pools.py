"""The SandboxWarmPool and SandboxClaim reconcilers: unclaimed Sandboxes, adopted or cold-started ones."""

from __future__ import annotations

from kubernetes_asyncio.client.exceptions import ApiException

from tests.k8s.controller.objects import (
    CLAIM_UID_LABEL,
    CLAIMS,
    GROUP,
    LAUNCH_TYPE_LABEL,
    POOLS,
    SANDBOX_NAME_ANNOTATION,
    SANDBOXES,
    TEMPLATE_REF_ANNOTATION,
    TEMPLATE_REF_HASH_LABEL,
    TEMPLATES,
    VERSION,
    WARM_POOL_LABEL,
    Json,
    blueprint,
    body,
    changed,
    condition,
    controlled_by,
    deleting,
    find_condition,
    is_ready,
    key_of,
    log,
    name_hash,
    owner_ref,
    replace_map,
    uid_of,
)
from tests.k8s.controller.plumbing import Plumbing


class PoolReconciler(Plumbing):
    """SandboxWarmPool -> unclaimed Sandboxes; SandboxClaim -> an adopted warm Sandbox or a cold one."""

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
