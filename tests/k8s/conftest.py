"""Fixtures of the k8s tier: the test cluster at $KUBECONFIG, the stand-in controller, a namespace per test.

tests/k8s/run-tier.sh runs the tier. By hand, with the cluster up (`NETNS=lap-k8s tests/k8s/cluster/up.sh`):
`tests/k8s/cluster/in-netns.sh env LAP_K8S_TIER=1 .venv/bin/pytest tests/k8s -p no:cacheprovider`.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from kubernetes_asyncio import client, config

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from _pytest.terminal import TerminalReporter

REPO = Path(__file__).resolve().parents[2]
START_CLUSTER = (
    "start it with `NETNS=lap-k8s tests/k8s/cluster/up.sh` and run pytest through tests/k8s/cluster/in-netns.sh"
)
# The session's namespaces end with it, and its controller serves only those: sessions may share the cluster.
SESSION = f"-{secrets.token_hex(2)}"
NAMESPACES: list[str] = []  # the session's, deleted by the tests and gone before the controller stops
# Durations the tests measure, printed at the end of the run: what -> seconds.
TIMINGS: dict[str, list[float]] = {}


async def _cluster_problem() -> str | None:
    """Return why the cluster at $KUBECONFIG cannot be used, or None."""
    try:
        configuration = client.Configuration()
        await config.load_kube_config(client_configuration=configuration)
        async with client.ApiClient(configuration) as api:
            await client.VersionApi(api).get_code(_request_timeout=5)
    except Exception as error:
        return repr(error)
    return None


async def _leftovers(timeout: float = 60) -> list[str]:
    """Wait for the session's namespaces, and the volumes of their claims, to be gone; return what is left."""
    configuration = client.Configuration()
    await config.load_kube_config(client_configuration=configuration)
    async with client.ApiClient(configuration) as api:
        core = client.CoreV1Api(api)
        deadline = time.monotonic() + timeout
        while True:
            left = [
                f"namespace {ns.metadata.name}"
                for ns in (await core.list_namespace()).items
                if ns.metadata.name in NAMESPACES
            ]
            for pv in (await core.list_persistent_volume()).items:
                if pv.spec.claim_ref is not None and pv.spec.claim_ref.namespace in NAMESPACES:
                    left.append(f"PV {pv.metadata.name} ({pv.status.phase})")
            if not left or time.monotonic() > deadline:
                return left
            await asyncio.sleep(0.2)


@pytest.fixture(scope="session")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Run the stand-in controller (`python -m tests.k8s.controller`) for the session's namespaces; yield its log."""
    kubeconfig = os.environ.get("KUBECONFIG", "")
    if not Path(kubeconfig).is_file():
        pytest.fail(
            f"KUBECONFIG ({kubeconfig or 'unset'}) names no kubeconfig of the k8s test cluster: {START_CLUSTER}"
        )
    if problem := asyncio.run(_cluster_problem()):
        pytest.fail(f"the k8s test cluster at KUBECONFIG={kubeconfig} is not reachable ({problem}): {START_CLUSTER}")
    log = tmp_path_factory.mktemp("k8s") / "controller.log"
    with log.open("wb") as out:
        command = [sys.executable, "-m", "tests.k8s.controller", f"--namespace-suffix={SESSION}"]
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=out)
    deadline = time.monotonic() + 30
    while "ready:" not in log.read_text():  # it logs "ready:" once its watches have listed everything
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the controller did not start:\n{log.read_text()}")
        time.sleep(0.05)
    yield log
    left = asyncio.run(_leftovers())  # the controller deletes the PVs
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"the controller ignored SIGTERM; its log: {log}")
    if process.returncode != 0:
        pytest.fail(f"the controller exited with {process.returncode} on SIGTERM; its log: {log}")
    if left:
        pytest.fail(f"still there a minute after the tests deleted them: {', '.join(left)}; controller log: {log}")


@pytest.fixture
async def kube(anyio_backend: str) -> AsyncIterator[client.ApiClient]:
    """An API client for the test cluster."""
    configuration = client.Configuration()
    await config.load_kube_config(client_configuration=configuration)
    async with client.ApiClient(configuration) as api:
        yield api


@pytest.fixture
def namespace_prefix() -> str:
    """The prefix of the tests' namespaces; a test module may override it."""
    return "k8s-test"


@pytest.fixture
async def namespace(controller: Path, kube: client.ApiClient, namespace_prefix: str) -> AsyncIterator[str]:
    """A fresh namespace, deleted afterwards (in the background: the session waits for it at the end)."""
    core = client.CoreV1Api(kube)
    name = f"{namespace_prefix}-{secrets.token_hex(3)}{SESSION}"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    NAMESPACES.append(name)
    yield name
    await core.delete_namespace(name)


@pytest.fixture(scope="session")
def timings() -> dict[str, list[float]]:
    """Where a test records a duration it measured (what -> seconds), for the summary at the end."""
    return TIMINGS


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("k8s timings")
    for what, seconds in TIMINGS.items():
        values = ", ".join(f"{s:.2f}" for s in seconds)
        terminalreporter.write_line(f"{what}: {values} s")
