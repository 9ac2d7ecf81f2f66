"""Finding 7: a sandbox's disk is limited (the servers run with LAP_SANDBOX_DISK_MB=64). Writing 200 MiB into the
workspace stops with ENOSPC (or EDQUOT) at about the limit, the host loses at most about 70 MiB, and the session's
event log says the disk limit was reached (probes in agent/disk.py, run in session a_disk)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from tests.security.platform import DISK_LIMIT_MIB
from tests.security.recorders import allocated_mib, free_mib
from tests.security.runner import FIGURES, ProbeRun, run_probes

if TYPE_CHECKING:
    from tests.security.platform import Platform

# A real LAP server on PostgreSQL, real bwrap sandboxes, a real LiteLLM proxy and Codex.
pytestmark = [pytest.mark.e2e, pytest.mark.bwrap, pytest.mark.postgres]

WRITE_MIB, HOST_BUDGET_MIB = 200, 70
NOISE_MIB = 30  # other processes on the host write too: free space is measured with this much slack


@pytest.fixture(scope="module")
def filled(platform: Platform) -> tuple[ProbeRun, dict[str, float]]:
    """The filling turn, and what the host lost meanwhile (MiB): allocated under the data directory, free space."""
    allocated, free = allocated_mib(platform.data_dir), free_mib(platform.data_dir)
    run = run_probes(platform, "a_disk", "disk", {"mib": WRITE_MIB, "limit_mib": DISK_LIMIT_MIB})
    lost = {"allocated": allocated_mib(platform.data_dir) - allocated, "free": free - free_mib(platform.data_dir)}
    written = run.results.get("workspace_write_stops_at_disk_limit", {}).get("detail", "no report")
    FIGURES.append(
        f"disk: a sandbox limited to {DISK_LIMIT_MIB} MiB {written}; the data directory grew by"
        f" {lost['allocated']:.0f} MiB, the host's free space dropped by {lost['free']:.0f} MiB"
    )
    return run, lost


def test_workspace_write_stops_at_the_limit(filled: tuple[ProbeRun, dict[str, float]]) -> None:
    filled[0].assert_held("workspace_write_stops_at_disk_limit")


def test_host_loses_at_most_the_limit(filled: tuple[ProbeRun, dict[str, float]]) -> None:
    _, lost = filled
    assert lost["allocated"] <= HOST_BUDGET_MIB, f"the sandbox took {lost['allocated']:.0f} MiB of the host's disk"
    assert lost["free"] <= HOST_BUDGET_MIB + NOISE_MIB, f"the host's free space dropped by {lost['free']:.0f} MiB"


def _says_disk_limit(event: dict[str, Any]) -> bool:
    text = json.dumps(event).lower()
    return event["type"] == "error" and "disk" in text and ("limit" in text or "full" in text or "space" in text)


def test_event_log_says_the_disk_limit_was_reached(
    filled: tuple[ProbeRun, dict[str, float]], platform: Platform
) -> None:
    events = [record["event"] for record in platform.history("a_disk")]
    errors = [event for event in events if event["type"] == "error"]
    assert any(_says_disk_limit(event) for event in events), f"no error event about the disk limit: {errors}"
