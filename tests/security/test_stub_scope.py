"""Finding 2 and 8: a sandbox's stub key opens the LLM API only (the paths the three harnesses use), for the agent's
own model only, and only while its session and sandbox live; another session's stub (same team or another), a
deleted session's, or the one a session had before `restart` are refused. The proxy's socket, reached directly instead
of through the sandbox's forwarder, forwards nothing to the gateway (probes in agent/stubs.py and agent/restart.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.security.runner import ProbeRun, drop_loot, reached_model, run_probes

if TYPE_CHECKING:
    from tests.security.platform import Platform

# A real LAP server on PostgreSQL, real bwrap sandboxes, a real LiteLLM proxy and Codex.
pytestmark = [pytest.mark.e2e, pytest.mark.bwrap, pytest.mark.postgres]

ALLOWED = ["chat_completions", "responses", "messages", "count_tokens", "models"]
FORBIDDEN = ["key_generate", "user_new", "model_new", "config_update", "spend_logs", "health", "metrics", "root"]
REFUSED = [
    *(f"stub_refused_on_{name}" for name in FORBIDDEN),
    "no_key_is_401",
    "garbage_key_is_401",
    "proxy_refuses_garbage_and_keeps_serving",
]
# Refused requests that carried a marker (the run's nonce and these words): none may reach the model.
NEVER_AT_MODEL = {
    "stub_refused_for_other_model": "other-model",
    "foreign_stub_refused_live_same_team": "foreign live_same_team",
    "foreign_stub_refused_live_other_team": "foreign live_other_team",
    "foreign_stub_refused_deleted_session": "foreign deleted_session",
    "vault_socket_refuses_direct_connections": "direct",
}


@pytest.fixture(scope="module")
def stubs(platform: Platform) -> ProbeRun:
    """The stub probes in a1, with the stubs a colluding agent would pass it: a2's (same team), b1's (team B) and the
    deleted session's, each the last one its sandbox held."""
    sessions = platform.sessions
    foreign = {
        "live_same_team": sessions["a2"].stubs[-1],
        "live_other_team": sessions["b1"].stubs[-1],
        "deleted_session": sessions["a_deleted"].stubs[-1],
    }
    drop_loot(platform, "a1", "foreign-stubs.json", foreign)
    return run_probes(platform, "a1", "stubs")


@pytest.mark.parametrize("name", ALLOWED)
def test_stub_opens_the_llm_api(stubs: ProbeRun, name: str) -> None:
    stubs.assert_held(f"stub_opens_{name}")


@pytest.mark.parametrize("name", REFUSED)
def test_stub_is_refused(stubs: ProbeRun, name: str) -> None:
    stubs.assert_held(name)


@pytest.mark.parametrize("name", list(NEVER_AT_MODEL))
def test_refused_and_never_at_the_model(stubs: ProbeRun, platform: Platform, name: str) -> None:
    reached = reached_model(platform, f"{stubs.nonce} {NEVER_AT_MODEL[name]}")
    result = stubs.result(name)
    assert result["held"], f"{name}: {result['detail']}"
    assert not reached, f"{name}: the refused request reached the model at {reached}"


@pytest.fixture(scope="module")
def restarted(platform: Platform) -> ProbeRun:
    """The restart probes in a_restarted, whose sandbox `restart` replaced (its old stub is in its own drop box)."""
    return run_probes(platform, "a_restarted", "restart")


def test_stub_from_before_restart_is_refused(restarted: ProbeRun, platform: Platform) -> None:
    restarted.assert_held("stub_before_restart_refused")
    assert not reached_model(platform, f"{restarted.nonce} old stub")


def test_stub_after_restart_works(restarted: ProbeRun) -> None:
    restarted.assert_held("stub_after_restart_works")
