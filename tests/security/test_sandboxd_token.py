"""Finding 6: sandboxd's token. When a probe kills sandboxd, or locks the platform out of it, the session recovers by
itself: its next message works and it is never left `ready` while failing. No agent process can read the token (any
/proc/*/environ or cmdline, files under /run, home, workspace, /tmp, readable process memory) or replace it
(`PUT /token` on every unix socket and loopback port the sandbox can see). Probes in agent/kill.py and agent/token.py,
run in session b2 in this order (the kill first: a lock-out that never recovers must not hide it)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from tests.security.runner import ProbeRun, run_probes

if TYPE_CHECKING:
    from tests.security.platform import Platform

# A real LAP server on PostgreSQL, real bwrap sandboxes, a real LiteLLM proxy and Codex.
pytestmark = [pytest.mark.e2e, pytest.mark.bwrap, pytest.mark.postgres]


def _next_turn_works(platform: Platform, key: str) -> None:
    """The session's next message works, and the session is `ready` after it (never `ready` while failing)."""
    after = run_probes(platform, key, "noop")
    status = platform.status(key)
    why = f"the next turn {after.turn['status']}, and the session is {status}: {after.tail()}"
    assert after.turn["status"] == "completed", why
    assert "turn_ran" in after.results, why
    assert status == "ready", f"after a turn that worked the session is {status}"


def test_session_recovers_after_sandboxd_is_killed(platform: Platform) -> None:
    killed = run_probes(platform, "b2", "kill")
    killed.assert_held("sandboxd_kill_scheduled")
    time.sleep(3)  # the kill comes 2 s after the tool call
    _next_turn_works(platform, "b2")


@pytest.fixture(scope="module")
def hunt(platform: Platform) -> ProbeRun:
    """The token probes: the only secret they look for is this sandbox's own sandboxd token."""
    return run_probes(platform, "b2", "token", known={"sandboxd_token": platform.token_of("b2")})


@pytest.mark.parametrize(
    "name", ["sandboxd_token_unreadable", "sandboxd_token_not_in_readable_memory", "sandboxd_token_not_replaceable"]
)
def test_sandboxd_token_is_out_of_reach(hunt: ProbeRun, name: str) -> None:
    hunt.assert_held(name)


def test_session_recovers_after_a_token_replacement_attempt(hunt: ProbeRun, platform: Platform) -> None:
    _next_turn_works(platform, "b2")
