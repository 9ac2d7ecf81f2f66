"""The Kubernetes backend on the real test cluster: the backend conformance suite, the harness
conformance suite (a real codex turn in a pod, behind a real LiteLLM proxy), a pod lost mid-session,
and the warm path. Runs in the cluster's network namespace (see conftest.py)."""

from __future__ import annotations

import subprocess
import time
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import pytest
from kubernetes_asyncio import client

from lap_core import WORKSPACE_DIR, Lap, SandboxContext, SandboxSpec, StartProcess, Status, TurnEnd
from lap_core.testing import BackendConformance, HarnessConformance
from lap_kubernetes import KubernetesBackend, KubernetesSettings
from tests.fixtures import cleanup_sandboxes, lap_env
from tests.k8s.conftest import REPO

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from lap_core import Session
    from tests.fakes.litellm import LiteLLMProxy
    from tests.fakes.llm_server import FakeLLM

pytestmark = [pytest.mark.k8s, pytest.mark.anyio]
CLAIM = ("extensions.agents.x-k8s.io", "v1beta1")
GATEWAY = "10.88.0.1"  # the pod network's bridge: where pods reach processes of this network namespace
VAULT_PORT = 14001


@pytest.fixture(scope="session")
def codex_image(harness_root: Path) -> str:
    """The codex sandbox image, built (cached) and imported into the cluster's containerd."""
    built = subprocess.run(
        [str(REPO / "tests/k8s/cluster/build-sandbox-image.sh"), "codex"], capture_output=True, text=True, check=False
    )
    if built.returncode != 0:
        pytest.fail(f"building the codex sandbox image failed:\n{built.stderr[-3000:]}")
    return built.stdout.strip().splitlines()[-1]


def settings(namespace: str, image: str, **changes: Any) -> dict[str, str]:
    """The environment of a LAP on the Kubernetes backend in `namespace`."""
    return {
        "LAP_SANDBOX_BACKEND": "kubernetes",
        "LAP_K8S_NAMESPACE": namespace,
        "LAP_K8S_IMAGE": image,
        "LAP_K8S_IMAGE_PULL_POLICY": "Never",
        "LAP_K8S_STORAGE_CLASS": "lap-hostpath",
        "LAP_K8S_VOLUME_SIZE": "64Mi",
        "LAP_K8S_MEMORY_MB": "1024",
        "LAP_VAULT_LISTEN": f"0.0.0.0:{VAULT_PORT}",
        "LAP_VAULT_URL": f"http://{GATEWAY}:{VAULT_PORT}",
        **{key.upper(): str(value) for key, value in changes.items()},
    }


async def open_backend(data_dir: Path, namespace: str, image: str, **changes: Any) -> KubernetesBackend:
    env = settings(namespace, image, **changes)
    fields = {name: value for name, value in env.items() if name.startswith("LAP_K8S_")}
    parsed = msgspec.convert(fields, KubernetesSettings, strict=False)
    context = SandboxContext(data_dir=data_dir, vault_url=env["LAP_VAULT_URL"])
    return await KubernetesBackend(parsed, context=context).__aenter__()


class TestKubernetesBackendConformance(BackendConformance):
    harness = "codex"

    @pytest.fixture
    async def backend(self, data_dir: Path, namespace: str, codex_image: str) -> AsyncIterator[KubernetesBackend]:
        backend = await open_backend(data_dir, namespace, codex_image)
        try:
            yield backend
        finally:
            await backend.aclose()


@pytest.fixture
async def k8s_lap(
    data_dir: Path, namespace: str, codex_image: str, harness_root: Path, litellm_proxy: LiteLLMProxy, llm: FakeLLM
) -> AsyncIterator[Lap]:
    """A LAP whose sandboxes are pods of the test cluster, its gateway a real LiteLLM proxy."""
    env = lap_env(
        data_dir,
        LITELLM_API_BASE=litellm_proxy.url,
        LITELLM_API_KEY=litellm_proxy.master_key,
        LAP_SANDBOX_START_TIMEOUT="120",
        **settings(namespace, codex_image),
    )
    async with Lap(env=env) as lap:
        try:
            yield lap
        finally:
            await cleanup_sandboxes(lap)


class TestCodexOnKubernetes(HarnessConformance):
    """The harness conformance suite (turns, tools, abort, lost sandboxes, replay) with pods as sandboxes."""

    harness = "codex"

    @pytest.fixture
    def lap(self, k8s_lap: Lap) -> Lap:
        return k8s_lap

    @pytest.fixture
    def scripted_llm(self, llm: FakeLLM) -> FakeLLM:
        return llm


async def _session_after_a_turn(lap: Lap, agent_name: str, text: str) -> tuple[Session, str]:
    """A codex session that has completed one turn, and the name of its sandbox."""
    agent = await lap.agents.create(agent_name, harness="codex", model=HarnessConformance.model)
    session = await lap.sessions.create(agent.id)
    with anyio.fail_after(120):
        records = [record async for record in lap.sessions.stream(session.id, text)]
    assert records[-1].event == TurnEnd(status="completed")
    sandbox = (await lap.sessions.get(session.id)).sandbox_name
    assert sandbox is not None
    return session, sandbox


async def _pod_uid(kube: client.ApiClient, namespace: str, name: str) -> str | None:
    try:
        pod = await client.CoreV1Api(kube).read_namespaced_pod(name, namespace)
    except client.exceptions.ApiException as error:
        if error.status == 404:
            return None
        raise
    return str(pod.metadata.uid) if not pod.metadata.deletion_timestamp else None


async def test_a_deleted_pod_comes_back_with_the_volume_and_the_conversation(
    k8s_lap: Lap, llm: FakeLLM, kube: client.ApiClient, namespace: str, timings: dict[str, list[float]]
) -> None:
    lap = k8s_lap
    session, sandbox = await _session_after_a_turn(lap, "k8s-codex", "make a note")
    async with await lap.backend.connect(sandbox) as sandboxd:
        await sandboxd.exec(["sh", "-c", f"echo kept > {WORKSPACE_DIR}/kept.txt"])
    old_uid = await _pod_uid(kube, namespace, sandbox)
    assert old_uid is not None
    # The kubelet's pod goes (a node drain, an eviction); the controller makes a new one.
    await client.CoreV1Api(kube).delete_namespaced_pod(sandbox, namespace, grace_period_seconds=0)
    started = time.monotonic()
    with anyio.fail_after(120):
        while (uid := await _pod_uid(kube, namespace, sandbox)) in (None, old_uid):
            await anyio.sleep(0.1)
        await lap.backend.wait_ready(sandbox, timeout=120)
    timings.setdefault("pod deleted -> sandbox Ready again", []).append(time.monotonic() - started)
    assert uid != old_uid
    before = len(llm.requests())
    with anyio.fail_after(120):
        second = [record async for record in lap.sessions.stream(session.id, "what did I ask before?")]
    assert second[-1].event == TurnEnd(status="completed")
    # The harness resumed its own session from the volume: the model sees turn 1 again.
    assert "make a note" in str(llm.requests()[before:])
    async with await lap.backend.connect(sandbox) as sandboxd:
        assert (await sandboxd.exec(["cat", f"{WORKSPACE_DIR}/kept.txt"])).stdout == "kept\n"


async def test_create_to_ready_cold_sandbox_and_warm_claim(
    data_dir: Path, namespace: str, codex_image: str, timings: dict[str, list[float]], kube: client.ApiClient
) -> None:
    backend = await open_backend(data_dir, namespace, codex_image, lap_k8s_warm_pool_size=2)
    try:
        cold = await open_backend(data_dir, namespace, codex_image)
        for index in range(3):
            spec = SandboxSpec(name=f"cold-{index}", harness="codex", volume=f"cold-{index}")
            started = time.monotonic()
            await cold.create(spec)
            await cold.wait_ready(spec.name, timeout=120)
            timings.setdefault("create -> ready, cold Sandbox", []).append(time.monotonic() - started)
        await cold.aclose()
        # Fill the pool (the first claim against it creates it), then wait until both are warm.
        await backend.warm.ensure_pool(SandboxSpec(name="x", harness="codex", volume="x"))
        custom = backend.custom
        with anyio.fail_after(120):
            while True:
                pool = await custom.get_namespaced_custom_object(
                    "extensions.agents.x-k8s.io", "v1beta1", namespace, "sandboxwarmpools", "lap-codex"
                )
                if (pool.get("status") or {}).get("readyReplicas", 0) >= 2:
                    break
                await anyio.sleep(0.2)
        for index in range(2):
            spec = SandboxSpec(name=f"warm-{index}", harness="codex", volume=f"warm-{index}", labels={"n": str(index)})
            started = time.monotonic()
            await backend.create(spec)
            ready = await backend.wait_ready(spec.name, timeout=120)
            timings.setdefault("create -> ready, warm SandboxClaim", []).append(time.monotonic() - started)
            assert (ready.name, ready.state) == (spec.name, "ready")
            # A claimed sandbox is the session's: its own token, its volume kept past the claim.
            async with await backend.connect(spec.name) as sandboxd:
                await sandboxd.exec(["sh", "-c", f"echo warm > {WORKSPACE_DIR}/w.txt"])
            assert await backend.volume_exists(spec.volume)
            if index == 0:
                # Its pod goes and comes back: the new one starts with the session's token, not the pool's.
                claimed = (
                    await backend.custom.get_namespaced_custom_object(*CLAIM, namespace, "sandboxclaims", spec.name)
                )["status"]
                pod = claimed["sandbox"]["name"]
                old = await _pod_uid(kube, namespace, pod)
                await client.CoreV1Api(kube).delete_namespaced_pod(pod, namespace, grace_period_seconds=1)
                with anyio.fail_after(120):
                    while (await _pod_uid(kube, namespace, pod)) in (None, old):
                        await anyio.sleep(0.1)
                await backend.wait_ready(spec.name, timeout=120)
                async with await backend.connect(spec.name) as sandboxd:
                    assert (await sandboxd.exec(["cat", f"{WORKSPACE_DIR}/w.txt"])).stdout == "warm\n"
            assert spec.name in {ref.name for ref in await backend.list({"n": str(index)})}
            await backend.delete(spec.name)
            assert await backend.status(spec.name) is None
            assert await backend.volume_exists(spec.volume)
            # The session's next sandbox is a cold one on the same volume.
            await backend.create(spec)
            await backend.wait_ready(spec.name, timeout=120)
            async with await backend.connect(spec.name) as sandboxd:
                assert (await sandboxd.exec(["cat", f"{WORKSPACE_DIR}/w.txt"])).stdout == "warm\n"
    finally:
        await backend.aclose()


async def test_suspend_and_resume_keep_the_sandbox_and_its_files(
    data_dir: Path, namespace: str, codex_image: str, kube: client.ApiClient
) -> None:
    backend = await open_backend(data_dir, namespace, codex_image)
    try:
        assert [check.ok for check in await backend.diagnose()] == [True]
        spec = SandboxSpec(name="sleepy", harness="codex", volume="sleepy")
        await backend.create(spec)
        await backend.wait_ready(spec.name, timeout=120)
        async with await backend.connect(spec.name) as sandboxd:
            await sandboxd.exec(["sh", "-c", f"echo before > {WORKSPACE_DIR}/f.txt"])
        await backend.suspend(spec.name)
        with anyio.fail_after(60):
            while (ref := await backend.status(spec.name)) is not None and await _pod_uid(kube, namespace, spec.name):
                await anyio.sleep(0.1)
        assert ref is not None
        assert ref.state == "suspended"
        assert (await backend.resume(spec.name)).state == "ready"
        async with await backend.connect(spec.name) as sandboxd:
            assert (await sandboxd.exec(["cat", f"{WORKSPACE_DIR}/f.txt"])).stdout == "before\n"
        await backend.delete(spec.name)
        await backend.delete_volume(spec.volume)
    finally:
        await backend.aclose()


async def test_a_namespace_per_team(data_dir: Path, namespace: str, codex_image: str, kube: client.ApiClient) -> None:
    per_team = {"lap_k8s_namespace_per_team": "{team}-" + namespace}
    red = SandboxSpec(name="red-1", harness="codex", volume="red-1", labels={"lap.team": "red"})
    blue = SandboxSpec(name="blue-1", harness="codex", volume="blue-1", labels={"lap.team": "blue"})
    backend = await open_backend(data_dir, namespace, codex_image, **per_team)
    try:
        for spec in (red, blue):
            await backend.create(spec)
        for spec in (red, blue):
            await backend.wait_ready(spec.name, timeout=120)
        assert await _pod_uid(kube, f"red-{namespace}", "red-1")
        assert await _pod_uid(kube, f"blue-{namespace}", "blue-1")
        # Another worker (no memory of where they are) finds them by name and by label.
        other = await open_backend(data_dir, namespace, codex_image, **per_team)
        try:
            assert (await other.status("red-1")).state == "ready"  # type: ignore[union-attr]
            async with await other.connect("blue-1") as sandboxd:
                assert (await sandboxd.exec(["true"])).exit_code == 0
            assert [ref.name for ref in await other.list({"lap.team": "red"})] == ["red-1"]
            assert await other.volume_exists("blue-1")
            for spec in (red, blue):
                await other.delete(spec.name)
                await other.delete_volume(spec.volume)
                assert await other.status(spec.name) is None
                assert not await other.volume_exists(spec.volume)
        finally:
            await other.aclose()
    finally:
        await backend.aclose()
        for team in ("red", "blue"):
            await client.CoreV1Api(kube).delete_namespace(f"{team}-{namespace}")


async def test_port_forward_reaches_sandboxd_from_outside_the_cluster(
    data_dir: Path, namespace: str, codex_image: str
) -> None:
    # What LAP does where pod IPs do not route: every connection tunnels through the API server.
    backend = await open_backend(data_dir, namespace, codex_image, lap_k8s_connect="port-forward")
    try:
        spec = SandboxSpec(name="far", harness="codex", volume="far")
        await backend.create(spec)
        await backend.wait_ready(spec.name, timeout=120)
        async with await backend.connect(spec.name) as sandboxd:
            assert str(sandboxd._http.base_url).startswith("http://127.0.0.1:")
            big = (await sandboxd.exec(["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x"])).stdout
            assert big == "x" * 3_000_000
            await sandboxd.start_process(StartProcess(id="p1", argv=["sh", "-c", "for i in 1 2 3; do echo $i; done"]))
            lines = [record.data async for record in sandboxd.output("p1")]
            assert lines == ["1", "2", "3", "0"]  # three lines, then the exit code
        await backend.delete(spec.name)
        await backend.delete_volume(spec.volume)
    finally:
        await backend.aclose()


async def test_a_pod_the_cluster_recreates_mid_turn_restarts_the_turn(
    k8s_lap: Lap, llm: FakeLLM, kube: client.ApiClient, namespace: str
) -> None:
    # Not LAP's delete: the pod goes (an eviction, a drain) and the controller makes a new one under
    # the same name. The turn's process went with the old pod: the turn starts over, once.
    lap = k8s_lap
    llm.script(command="sleep 3 && echo ran-evicted", text="finished-evicted", fail_status=None)
    session, sandbox = await _session_after_a_turn(lap, "k8s-evicted", "warm up")
    before = len(llm.requests())
    turn = await lap.sessions.send(session.id, "do the long thing")
    with anyio.fail_after(60):
        while not any(request["body"].get("tools") for request in llm.requests()[before:]):
            await anyio.sleep(0.1)
    await client.CoreV1Api(kube).delete_namespaced_pod(sandbox, namespace, grace_period_seconds=1)
    with anyio.fail_after(180):
        records = [r async for r in lap.sessions.follow(session.id, after=turn.user_seq - 1, until_turn=turn.id)]
    phases = [record.event.phase for record in records if isinstance(record.event, Status)]
    assert "turn_restarted" in phases
    assert "sandbox_creating" not in phases  # the cluster made the new pod, not LAP
    assert records[-1].event == TurnEnd(status="completed")
    assert [record for record in records if isinstance(record.event, TurnEnd)] == [records[-1]]
