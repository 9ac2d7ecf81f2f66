"""What held before the fixes and must keep holding: the sandbox's environment, /proc, mounts, the host's files and
the network give an agent no secret and no way out (probes in agent/boundary.py, run in session a1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.security.runner import ProbeRun, run_probes

if TYPE_CHECKING:
    from tests.security.platform import Platform

# A real LAP server on PostgreSQL, real bwrap sandboxes, a real LiteLLM proxy and Codex.
pytestmark = [pytest.mark.e2e, pytest.mark.bwrap, pytest.mark.postgres]

PROBES = [
    "env_holds_no_secret",
    "proc_environ_holds_no_secret",
    "proc_cmdline_holds_no_secret",
    "proc_maps_holds_no_secret",
    "proc_1_holds_no_secret",
    "mounts_show_only_expected_host_paths",
    "writable_host_mounts_are_the_volume",
    "host_system_files_unreachable",
    "lap_data_dir_unreachable",
    "postgres_data_dir_unreachable",
    "other_sessions_files_unreachable",
    "readable_files_hold_no_secret",
    "no_route_to_external_hosts",
    "host_loopback_services_unreachable",
    "udp_to_external_dns_fails",
    "dns_resolution_fails",
    "only_loopback_interface",
]


@pytest.fixture(scope="module")
def boundary(platform: Platform) -> ProbeRun:
    """The boundary probes, run once in a1 (secrets they look for: the platform's, other sessions' stubs and
    markers; sandboxd's token has probes of its own, in test_sandboxd_token.py)."""
    return run_probes(platform, "a1", "boundary")


@pytest.mark.parametrize("name", PROBES)
def test_boundary(boundary: ProbeRun, name: str) -> None:
    boundary.assert_held(name)
