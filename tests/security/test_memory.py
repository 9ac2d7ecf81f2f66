"""Finding 4: host memory through the proxy. 16 connections from one sandbox, each sending a 30 MiB body at once,
grow no `lap serve` process by 100 MiB or more (VmRSS before and at its peak, sampled every 20 ms); the proxy and
the server keep serving (probes in agent/flood.py, run in session b1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from tests.security.recorders import RssSampler
from tests.security.runner import FIGURES, ProbeRun, run_probes

if TYPE_CHECKING:
    from tests.security.platform import Platform

# A real LAP server on PostgreSQL, real bwrap sandboxes, a real LiteLLM proxy and Codex.
pytestmark = [pytest.mark.e2e, pytest.mark.bwrap, pytest.mark.postgres]

CONNECTIONS, MIB, LIMIT_MIB = 16, 30, 100


@pytest.fixture(scope="module")
def flood(platform: Platform) -> tuple[ProbeRun, dict[str, float]]:
    """The flood, and how much each server grew (MiB) while it ran."""
    pids = {name: server.process.pid for name, server in platform.servers.items()}
    with RssSampler(list(pids.values())) as sampler:
        run = run_probes(platform, "b1", "flood", {"connections": CONNECTIONS, "mib": MIB, "seconds": 20})
    growth = {name: sampler.growth()[pid] for name, pid in pids.items()}
    sent = run.results.get("proxy_flood_sent", {}).get("detail", "no report")
    for name, pid in pids.items():
        FIGURES.append(
            f"memory: lap serve ({name}) {sampler.before[pid]:.0f} MiB before the flood, {sampler.peak[pid]:.0f} MiB"
            f" at its peak (+{growth[name]:.0f} MiB); the sandbox's {CONNECTIONS} x {MIB} MiB flood: {sent}"
        )
    return run, growth


@pytest.mark.parametrize("server", ["console", "json"])
def test_server_memory_stays_bounded(flood: tuple[ProbeRun, dict[str, float]], server: str) -> None:
    run, growth = flood
    assert growth[server] < LIMIT_MIB, (
        f"lap serve ({server}) grew by {growth[server]:.0f} MiB: {run.result('proxy_flood_sent')['detail']}"
    )


def test_proxy_serves_after_the_flood(flood: tuple[ProbeRun, dict[str, float]]) -> None:
    flood[0].assert_held("proxy_serves_after_flood")


def test_server_serves_after_the_flood(flood: tuple[ProbeRun, dict[str, float]], platform: Platform) -> None:
    for server in platform.servers.values():
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    run_probes(platform, "b1", "noop").assert_held("turn_ran")
