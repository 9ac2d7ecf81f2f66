"""Finding 1: the LLM proxy at 127.0.0.1:4000 forwards only to the gateway. Request targets that would lead it
elsewhere (absolute-form, authority-form, `@host`, `//host`, dot segments, backslashes, control bytes, CONNECT) are a
400 with a JSON error; nothing reaches the recording echo server on host loopback, and the real key never comes back
(probes in agent/targets.py, run in session a1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.security.runner import ProbeRun, run_probes

if TYPE_CHECKING:
    from tests.security.platform import Platform

# A real LAP server on PostgreSQL, real bwrap sandboxes, a real LiteLLM proxy and Codex.
pytestmark = [pytest.mark.e2e, pytest.mark.bwrap, pytest.mark.postgres]

KINDS = [
    "absolute_form",
    "authority_form",
    "at_sign",
    "double_slash",
    "dot_segments",
    "encoded_dot_segments",
    "backslash",
    "control_bytes",
]
PROBES = [f"proxy_target_{kind}_{how}" for kind in KINDS for how in ("x_api_key", "bearer")]


@pytest.fixture(scope="module")
def targets(platform: Platform) -> ProbeRun:
    return run_probes(platform, "a1", "targets")


@pytest.mark.parametrize("name", [*PROBES, "proxy_target_curl_reproduction"])
def test_request_target_is_refused(targets: ProbeRun, name: str) -> None:
    targets.assert_held(name)


def test_nothing_reached_the_echo_server(targets: ProbeRun, platform: Platform) -> None:
    assert targets.complete, targets.tail()
    received = [f"{r['method']} {r['path']} (x-api-key: {'x-api-key' in r['headers']})" for r in platform.echo.received]
    assert not received, f"the proxy sent requests to {platform.echo.port} on host loopback: {received}"


def test_the_real_key_never_came_back(targets: ProbeRun, platform: Platform) -> None:
    assert targets.complete, targets.tail()
    echoed = "\n".join(targets.outputs).count(platform.real_key)
    assert echoed == 0, f"the real key reached the sandbox (and the event log) {echoed} times"
