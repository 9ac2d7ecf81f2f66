"""The stand-in agent-sandbox controller (tests/k8s/controller/) against the real test cluster.

Each test gets a fresh `ctl-*` namespace; the pods are busybox, uid 1000, Ready through an exec probe.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import pytest
from kubernetes_asyncio import client

from tests.k8s.controller import (
    CLAIM_UID_LABEL,
    CLAIMS,
    GROUP,
    GROUPS,
    HASH_LABEL,
    LAUNCH_TYPE_LABEL,
    MERGE_PATCH,
    POOLS,
    PV_ROOT,
    SANDBOX_NAME_ANNOTATION,
    SANDBOXES,
    TEMPLATES,
    VERSION,
    WARM_POOL_LABEL,
    controller_of,
    find_condition,
    is_ready,
    name_hash,
    or_none,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

pytestmark = [pytest.mark.anyio, pytest.mark.k8s]

Json = dict[str, Any]
T = TypeVar("T")
KINDS = {SANDBOXES: "Sandbox", TEMPLATES: "SandboxTemplate", POOLS: "SandboxWarmPool", CLAIMS: "SandboxClaim"}
SLEEP = ["sleep", "3600"]
# Prints the boots before this one (from the volume), then records this one.
BOOTS = ["sh", "-c", "cat /data/boots 2>/dev/null; echo boot >> /data/boots; exec sleep 3600"]
DATA = {
    "metadata": {"name": "data"},
    "spec": {
        "storageClassName": "lap-hostpath",
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}},
    },
}


def pod_template(command: list[str] = SLEEP, *, volume: bool = False, ports: list[Json] | None = None) -> Json:
    container: Json = {
        "name": "main",
        "image": "localhost/busybox:1",
        "imagePullPolicy": "Never",
        "command": command,
        "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
    }
    if volume:
        container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    if ports:
        container["ports"] = ports
    spec = {
        "terminationGracePeriodSeconds": 0,  # sleep as pid 1 ignores SIGTERM
        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000},
        "containers": [container],
    }
    return {"metadata": {"labels": {"app": "ctl-test"}}, "spec": spec}


def reason(obj: Json, kind: str = "Ready") -> str | None:
    found = find_condition(obj, kind)
    return None if found is None else f"{found['status']}/{found['reason']}"


def owner(obj: Json) -> tuple[str, str, str]:
    """Return the kind, name and uid of an object's controller."""
    ref = controller_of(obj) or {}
    return ref.get("kind", ""), ref.get("name", ""), ref.get("uid", "")


def ips(obj: Json) -> list[str]:
    """Return a pod's IPs."""
    return [ip["ip"] for ip in obj["status"].get("podIPs") or []]


async def until(read: Callable[[], Awaitable[T]], check: Callable[[T], bool], what: str, timeout: float = 60) -> T:
    """Read every 20 ms until `check` holds; return what was read then."""
    deadline = time.monotonic() + timeout
    while not check(value := await read()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last read: {value}")
        await anyio.sleep(0.02)
    return value


class Namespace:
    """The test's namespace on the cluster; objects as JSON dicts, {} for one that does not exist."""

    def __init__(self, api: client.ApiClient, name: str) -> None:
        self.api, self.name = api, name
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    async def create(self, plural: str, name: str, spec: Json) -> Json:
        kind = {"apiVersion": f"{GROUPS[plural]}/{VERSION}", "kind": KINDS[plural]}
        body = kind | {"metadata": {"name": name}, "spec": spec}
        created: Json = await self.custom.create_namespaced_custom_object(
            GROUPS[plural], VERSION, self.name, plural, body
        )
        return created

    async def get(self, plural: str, name: str) -> Json:
        call = self.custom.get_namespaced_custom_object(GROUPS[plural], VERSION, self.name, plural, name)
        return await or_none(call) or {}

    async def patch(self, plural: str, name: str, body: Json) -> None:
        call = self.custom.patch_namespaced_custom_object
        await call(GROUPS[plural], VERSION, self.name, plural, name, body, **MERGE_PATCH)

    async def delete(self, plural: str, name: str) -> None:
        await self.custom.delete_namespaced_custom_object(GROUPS[plural], VERSION, self.name, plural, name)

    async def sandboxes(self, selector: str) -> list[Json]:
        found = await self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.name, SANDBOXES, label_selector=selector
        )
        return list(found["items"])

    async def plain(self, call: Awaitable[Any]) -> Json:
        found = await or_none(call)
        return {} if found is None else dict(self.api.sanitize_for_serialization(found))

    async def pod(self, name: str) -> Json:
        return await self.plain(self.core.read_namespaced_pod(name, self.name))

    async def pvc(self, name: str) -> Json:
        return await self.plain(self.core.read_namespaced_persistent_volume_claim(name, self.name))

    async def service(self, name: str) -> Json:
        return await self.plain(self.core.read_namespaced_service(name, self.name))

    async def log(self, pod: str) -> str:
        return str(await self.core.read_namespaced_pod_log(pod, self.name))

    async def ready(self, plural: str, name: str) -> Json:
        return await until(lambda: self.get(plural, name), is_ready, f"{KINDS[plural]} {name} Ready")

    async def pool(self, name: str, replicas: int, *, volume: bool = False) -> list[Json]:
        """Create a SandboxTemplate and a SandboxWarmPool of `replicas` named `name`; return its Ready sandboxes."""
        template = {"podTemplate": pod_template(BOOTS if volume else SLEEP, volume=volume)}
        await self.create(TEMPLATES, name, template | ({"volumeClaimTemplates": [DATA]} if volume else {}))
        await self.create(POOLS, name, {"replicas": replicas, "sandboxTemplateRef": {"name": name}})
        await until(
            lambda: self.get(POOLS, name),
            lambda pool: pool.get("status", {}).get("readyReplicas", 0) == replicas,
            f"SandboxWarmPool {name} with {replicas} Ready",
        )
        return await self.sandboxes(f"{WARM_POOL_LABEL}={name_hash(name)}")


@pytest.fixture
def namespace_prefix() -> str:
    return "ctl"


@pytest.fixture
def ns(kube: client.ApiClient, namespace: str) -> Namespace:
    return Namespace(kube, namespace)


def test_name_hash_is_fnv1a() -> None:
    assert [name_hash(""), name_hash("a"), name_hash("foobar")] == ["811c9dc5", "e40c292c", "bf9cf968"]


async def test_sandbox_gets_a_ready_pod(ns: Namespace, timings: dict[str, list[float]]) -> None:
    started = time.monotonic()
    await ns.create(SANDBOXES, "sb", {"podTemplate": pod_template()})
    sandbox = await ns.ready(SANDBOXES, "sb")
    timings.setdefault("Sandbox create -> Ready", []).append(time.monotonic() - started)

    pod = await ns.pod("sb")
    assert owner(pod) == ("Sandbox", "sb", sandbox["metadata"]["uid"])
    assert pod["metadata"]["labels"] == {HASH_LABEL: name_hash("sb"), "app": "ctl-test"}
    status = sandbox["status"]
    assert status["podIPs"] == ips(pod) != []
    assert status["nodeName"] == pod["spec"]["nodeName"]
    assert status["selector"] == f"{HASH_LABEL}={name_hash('sb')}"
    assert "service" not in status
    assert reason(sandbox, "Suspended") == "False/NotSuspended"


async def test_deleted_pod_comes_back_with_its_volume(ns: Namespace) -> None:
    await ns.create(SANDBOXES, "sb", {"podTemplate": pod_template(BOOTS, volume=True), "volumeClaimTemplates": [DATA]})
    await ns.ready(SANDBOXES, "sb")
    first, pvc = await ns.pod("sb"), await ns.pvc("data-sb")
    assert pvc["status"]["phase"] == "Bound"
    assert owner(pvc)[:2] == ("Sandbox", "sb")
    assert await ns.log("sb") == ""  # the first boot found no file

    # While the pod takes its grace period to go, it is not "there": not Ready, and not replaced yet.
    await ns.core.delete_namespaced_pod("sb", ns.name, grace_period_seconds=2)
    sandbox = await until(lambda: ns.get(SANDBOXES, "sb"), lambda sb: not is_ready(sb), "the Sandbox not Ready")
    assert (find_condition(sandbox, "Ready") or {}).get("message") == "Pod is being deleted"
    assert (await ns.pod("sb"))["metadata"]["uid"] == first["metadata"]["uid"]
    second = await until(
        lambda: ns.pod("sb"),
        lambda pod: pod != {} and pod["metadata"]["uid"] != first["metadata"]["uid"] and ips(pod) != [],
        "a new pod with an IP",
    )
    await until(
        lambda: ns.get(SANDBOXES, "sb"), lambda sb: is_ready(sb) and sb["status"]["podIPs"] == ips(second), "Ready"
    )
    assert await ns.log("sb") == "boot\n"  # written by the first pod, as uid 1000
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "data-sb"}} in second["spec"]["volumes"]
    assert (await ns.pvc("data-sb"))["metadata"]["uid"] == pvc["metadata"]["uid"]


async def test_suspend_deletes_the_pod_and_resume_brings_it_back(ns: Namespace) -> None:
    await ns.create(SANDBOXES, "sb", {"podTemplate": pod_template(BOOTS, volume=True), "volumeClaimTemplates": [DATA]})
    await ns.ready(SANDBOXES, "sb")
    pvc = await ns.pvc("data-sb")

    await ns.patch(SANDBOXES, "sb", {"spec": {"operatingMode": "Suspended"}})
    sandbox = await until(
        lambda: ns.get(SANDBOXES, "sb"),
        lambda sb: reason(sb) == "False/SandboxSuspended" and reason(sb, "Suspended") == "True/PodTerminated",
        "the Sandbox suspended",
    )
    assert await ns.pod("sb") == {}
    assert "podIPs" not in sandbox["status"]
    assert (await ns.pvc("data-sb"))["metadata"]["uid"] == pvc["metadata"]["uid"]

    await ns.patch(SANDBOXES, "sb", {"spec": {"operatingMode": "Running"}})
    sandbox = await ns.ready(SANDBOXES, "sb")
    assert reason(sandbox, "Suspended") == "False/NotSuspended"
    assert await ns.log("sb") == "boot\n"


async def test_service_true_makes_a_headless_service(ns: Namespace) -> None:
    template = pod_template(ports=[{"name": "http", "containerPort": 8080}])
    await ns.create(SANDBOXES, "sb", {"podTemplate": template, "service": True})
    sandbox = await ns.ready(SANDBOXES, "sb")
    service = await ns.service("sb")
    assert owner(service) == ("Sandbox", "sb", sandbox["metadata"]["uid"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {HASH_LABEL: name_hash("sb")}
    assert [(p["port"], p["targetPort"], p["protocol"]) for p in service["spec"]["ports"]] == [(8080, 8080, "TCP")]
    assert sandbox["status"]["service"] == "sb"
    assert sandbox["status"]["serviceFQDN"] == f"sb.{ns.name}.svc.cluster.local"

    await ns.patch(SANDBOXES, "sb", {"spec": {"service": False}})
    await until(lambda: ns.service("sb"), lambda service: service == {}, "the Service deleted")
    sandbox = await until(
        lambda: ns.get(SANDBOXES, "sb"), lambda sb: "service" not in sb["status"], "no status.service"
    )
    assert is_ready(sandbox)


async def test_warm_pool_fills_and_scales_down(ns: Namespace) -> None:
    members = await ns.pool("pool", 2)
    pool = await ns.get(POOLS, "pool")
    assert pool["status"]["selector"] == f"{WARM_POOL_LABEL}={name_hash('pool')}"
    assert len(members) == 2
    for sandbox in members:
        name = sandbox["metadata"]["name"]
        assert name.startswith("pool-")
        assert len(name) == len("pool-") + 5
        assert owner(sandbox) == ("SandboxWarmPool", "pool", pool["metadata"]["uid"])
        assert (await ns.pod(name))["metadata"]["labels"][WARM_POOL_LABEL] == name_hash("pool")

    await ns.patch(POOLS, "pool", {"spec": {"replicas": 1}})
    await until(
        lambda: ns.sandboxes(f"{WARM_POOL_LABEL}={name_hash('pool')}"), lambda found: len(found) == 1, "one left"
    )
    await until(lambda: ns.get(POOLS, "pool"), lambda pool: pool["status"]["replicas"] == 1, "status.replicas 1")


async def test_claim_takes_a_warm_sandbox_and_the_pool_refills(ns: Namespace, timings: dict[str, list[float]]) -> None:
    (warm,) = await ns.pool("pool", 1)
    warm_name = warm["metadata"]["name"]

    started = time.monotonic()
    spec = {"warmPoolRef": {"name": "pool"}, "additionalPodMetadata": {"labels": {"team": "a"}}}
    await ns.create(CLAIMS, "claim", spec)
    claim = await ns.ready(CLAIMS, "claim")
    timings.setdefault("SandboxClaim create -> Ready (warm)", []).append(time.monotonic() - started)

    assert claim["status"]["sandbox"]["name"] == warm_name != "claim"
    assert claim["metadata"]["annotations"][SANDBOX_NAME_ANNOTATION] == warm_name
    sandbox = await ns.get(SANDBOXES, warm_name)
    assert owner(sandbox) == ("SandboxClaim", "claim", claim["metadata"]["uid"])
    assert len(sandbox["metadata"]["ownerReferences"]) == 1
    assert WARM_POOL_LABEL not in sandbox["metadata"]["labels"]
    pod = await until(lambda: ns.pod(warm_name), lambda pod: CLAIM_UID_LABEL in pod["metadata"]["labels"], "claim-uid")
    labels = pod["metadata"]["labels"]
    assert labels[CLAIM_UID_LABEL] == claim["metadata"]["uid"]
    assert labels["team"] == "a"
    assert WARM_POOL_LABEL not in labels
    assert claim["status"]["sandbox"]["podIPs"] == ips(pod)

    (refill,) = await until(
        lambda: ns.sandboxes(f"{WARM_POOL_LABEL}={name_hash('pool')}"),
        lambda found: len(found) == 1 and all(map(is_ready, found)),
        "the pool refilled",
    )
    assert refill["metadata"]["name"] != warm_name


async def test_claim_without_a_warm_sandbox_starts_cold(ns: Namespace, timings: dict[str, list[float]]) -> None:
    await ns.pool("pool", 0)
    started = time.monotonic()
    await ns.create(CLAIMS, "claim", {"warmPoolRef": {"name": "pool"}})
    claim = await ns.ready(CLAIMS, "claim")
    timings.setdefault("SandboxClaim create -> Ready (cold)", []).append(time.monotonic() - started)

    assert claim["status"]["sandbox"]["name"] == "claim"
    sandbox = await ns.get(SANDBOXES, "claim")
    assert owner(sandbox) == ("SandboxClaim", "claim", claim["metadata"]["uid"])
    assert sandbox["metadata"]["labels"][LAUNCH_TYPE_LABEL] == "cold"


async def test_a_burst_of_claims_gets_one_sandbox_each(ns: Namespace) -> None:
    await ns.pool("pool", 2)
    async with anyio.create_task_group() as group:
        for n in range(3):
            group.start_soon(ns.create, CLAIMS, f"claim-{n}", {"warmPoolRef": {"name": "pool"}})
    claims = [await ns.ready(CLAIMS, f"claim-{n}") for n in range(3)]
    names = {claim["status"]["sandbox"]["name"] for claim in claims}
    assert len(names) == 3
    for claim in claims:
        sandbox = await ns.get(SANDBOXES, claim["status"]["sandbox"]["name"])
        assert owner(sandbox) == ("SandboxClaim", claim["metadata"]["name"], claim["metadata"]["uid"])


async def test_claim_waits_for_its_pool_and_template(ns: Namespace) -> None:
    await ns.create(CLAIMS, "claim", {"warmPoolRef": {"name": "pool"}})
    await until(lambda: ns.get(CLAIMS, "claim"), lambda claim: reason(claim) == "False/WarmPoolNotFound", "no pool")
    await ns.create(POOLS, "pool", {"replicas": 1, "sandboxTemplateRef": {"name": "template"}})
    await until(lambda: ns.get(CLAIMS, "claim"), lambda claim: reason(claim) == "False/TemplateNotFound", "no template")
    await ns.create(TEMPLATES, "template", {"podTemplate": pod_template()})
    await ns.ready(CLAIMS, "claim")


async def test_deleting_the_claim_deletes_its_sandbox_and_volume(ns: Namespace) -> None:
    (warm,) = await ns.pool("pool", 1, volume=True)
    name = warm["metadata"]["name"]
    await ns.create(CLAIMS, "claim", {"warmPoolRef": {"name": "pool"}})
    await ns.ready(CLAIMS, "claim")
    pvc = await ns.pvc(f"data-{name}")
    volume, directory = pvc["spec"]["volumeName"], PV_ROOT / pvc["metadata"]["uid"]
    assert directory.is_dir()

    await ns.delete(CLAIMS, "claim")
    # kube-controller-manager's garbage collector: claim -> Sandbox -> Pod, PVC; then the PV is released
    await until(lambda: ns.get(SANDBOXES, name), lambda sandbox: sandbox == {}, "the Sandbox deleted")
    await until(lambda: ns.pod(name), lambda pod: pod == {}, "the Pod deleted")
    await until(lambda: ns.pvc(f"data-{name}"), lambda pvc: pvc == {}, "the PVC deleted")
    await until(lambda: ns.plain(ns.core.read_persistent_volume(volume)), lambda pv: pv == {}, "the PV deleted")
    assert not directory.exists()
