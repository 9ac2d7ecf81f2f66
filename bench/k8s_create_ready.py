"""The Kubernetes backend's create -> ready: a cold `Sandbox` against a warm `SandboxClaim`.

Run on the test cluster (tests/k8s/cluster): `NETNS=lap-k8s tests/k8s/cluster/up.sh`, then
`tests/k8s/cluster/in-netns.sh .venv/bin/python bench/k8s_create_ready.py [--runs N]`. It starts
the stand-in agent-sandbox controller (tests/k8s/controller/) for a namespace of its own and
measures, with the codex sandbox image (tests/k8s/cluster/build-sandbox-image.sh):

- cold: `create` + `wait_ready` of a new sandbox (its PVC, token, Sandbox, a pod started, sandboxd
  answering), then `delete`;
- warm: the same through a claim against a warm pool kept at `--runs` sandboxes (the claim
  adopts a running one; LAP then moves its volume over and gives sandboxd a token of its own);
- delete: `delete` of a cold sandbox until its pod is gone.

Prints medians and ranges; compare within one run (the machines are noisy).
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import msgspec
from kubernetes_asyncio import client, config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lap_core import SandboxContext, SandboxSpec
from lap_kubernetes import KubernetesBackend, KubernetesSettings

REPO = Path(__file__).resolve().parents[1]


async def backend(namespace: str, image: str, warm: int) -> KubernetesBackend:
    settings = msgspec.convert(
        {
            "LAP_K8S_NAMESPACE": namespace,
            "LAP_K8S_IMAGE": image,
            "LAP_K8S_IMAGE_PULL_POLICY": "Never",
            "LAP_K8S_STORAGE_CLASS": "lap-hostpath",
            "LAP_K8S_VOLUME_SIZE": "64Mi",
            "LAP_K8S_WARM_POOL_SIZE": warm,
        },
        KubernetesSettings,
        strict=False,
    )
    context = SandboxContext(data_dir=Path(tempfile.gettempdir()), vault_url="http://10.88.0.1:14001")
    return await KubernetesBackend(settings, context=context).__aenter__()


async def up(backend: KubernetesBackend, spec: SandboxSpec) -> None:
    await backend.create(spec)
    await backend.wait_ready(spec.name, timeout=120)


async def timed(coroutine_function: object, *args: object) -> float:
    started = time.perf_counter()
    await coroutine_function(*args)  # type: ignore[operator]
    return time.perf_counter() - started


async def main(runs: int, image: str) -> None:
    namespace = f"bench-{secrets.token_hex(3)}"
    configuration = client.Configuration()
    await config.load_kube_config(client_configuration=configuration)
    api = client.ApiClient(configuration)
    core = client.CoreV1Api(api)
    await core.create_namespace({"metadata": {"name": namespace}})
    controller = await anyio.open_process(
        [sys.executable, "-m", "tests.k8s.controller", "--namespace", namespace], cwd=REPO, stderr=subprocess.DEVNULL
    )
    cold_backend, warm_backend = await backend(namespace, image, 0), await backend(namespace, image, runs)
    results: dict[str, list[float]] = {
        "cold Sandbox create -> ready": [],
        "warm Claim create -> ready": [],
        "delete": [],
    }
    try:
        await anyio.sleep(1)  # the controller lists and starts watching
        await warm_backend.warm.ensure_pool(SandboxSpec(name="pool", harness="codex", volume="pool"))
        for index in range(runs):
            spec = SandboxSpec(name=f"cold-{index}", harness="codex", volume=f"cold-{index}")
            results["cold Sandbox create -> ready"].append(await timed(up, cold_backend, spec))
            results["delete"].append(await timed(cold_backend.delete, spec.name))
        custom = client.CustomObjectsApi(api)
        with anyio.fail_after(300):
            while True:  # the pool is full and every sandbox of it ready
                pool = await custom.get_namespaced_custom_object(
                    "extensions.agents.x-k8s.io", "v1beta1", namespace, "sandboxwarmpools", "lap-codex"
                )
                if (pool.get("status") or {}).get("readyReplicas", 0) >= runs:
                    break
                await anyio.sleep(0.2)
        for index in range(runs):
            spec = SandboxSpec(name=f"warm-{index}", harness="codex", volume=f"warm-{index}")
            results["warm Claim create -> ready"].append(await timed(up, warm_backend, spec))
    finally:
        await cold_backend.aclose()
        await warm_backend.aclose()
        await core.delete_namespace(namespace)
        await api.close()
        controller.terminate()
        await controller.wait()
    print(f"{runs} runs each, codex sandbox image, single-node Kubernetes 1.20.2 (stand-in controller)")
    for what, values in results.items():
        print(f"  {what:32} median {statistics.median(values):6.2f} s  (min {min(values):.2f}, max {max(values):.2f})")
    cold = statistics.median(results["cold Sandbox create -> ready"])
    warm = statistics.median(results["warm Claim create -> ready"])
    print(f"  cold / warm: {cold / warm:.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    built = subprocess.run(
        [str(REPO / "tests/k8s/cluster/build-sandbox-image.sh"), "codex"], check=True, capture_output=True, text=True
    )
    anyio.run(main, runs, built.stdout.split()[-1])
