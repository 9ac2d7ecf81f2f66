"""The controller: every reconciler, with the watches and the queues that drive them."""

from __future__ import annotations

import asyncio

from kubernetes_asyncio import client

from tests.k8s.controller.objects import PROVISIONER, STORAGE_CLASS, body, created, log
from tests.k8s.controller.pools import PoolReconciler
from tests.k8s.controller.provisioner import Provisioner
from tests.k8s.controller.sandbox import SandboxReconciler


class Controller(SandboxReconciler, PoolReconciler, Provisioner):
    """The Sandbox, SandboxWarmPool and SandboxClaim controllers and the PV provisioner."""

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
