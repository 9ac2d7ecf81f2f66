"""The agent-sandbox API's names, and the helpers on its JSON objects that every reconciler shares."""

from __future__ import annotations

import copy
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes_asyncio.client.exceptions import ApiException

if TYPE_CHECKING:
    from collections.abc import Awaitable

log = logging.getLogger("lap.k8s.controller")

Json = dict[str, Any]
Key = tuple[str, str]  # (namespace, name); namespace "" for a cluster-scoped object

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
