"""The hostPath PV provisioner: a PV for each Pending lap-hostpath PVC, deleted once Released."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from tests.k8s.controller.objects import (
    PROVISIONED_BY,
    PROVISIONER,
    PV_ROOT,
    STORAGE_CLASS,
    body,
    created,
    deleting,
    log,
    or_none,
    uid_of,
)
from tests.k8s.controller.plumbing import Plumbing


class Provisioner(Plumbing):
    """A hostPath PV under PV_ROOT for each Pending lap-hostpath PVC; deleted, with it, once Released."""

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


def make_shared_dir(path: Path) -> None:
    """Create a PV's directory, writable for a pod that does not run as root."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)  # chmod, unlike mkdir's mode, ignores the umask
