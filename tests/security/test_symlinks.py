"""Finding 5: the host never follows a path the sandbox can write. A probe replaces every entry of the sandbox's
run directory (`/run/lap`, the host's `<data>/sandboxes/<name>/run`, where sandboxd's socket is today) with a
symlink to a unix socket the test listens on; the next turn runs normally and nothing ever connects to the test's
socket, so no sandboxd token reaches it (probes in agent/symlinks.py, run in session a2)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.security.runner import ProbeRun, run_probes

if TYPE_CHECKING:
    from tests.security.platform import Platform

# A real LAP server on PostgreSQL, real bwrap sandboxes, a real LiteLLM proxy and Codex.
pytestmark = [pytest.mark.e2e, pytest.mark.bwrap, pytest.mark.postgres]


@pytest.fixture(scope="module")
def symlinked(platform: Platform) -> tuple[ProbeRun, ProbeRun]:
    """The planting turn, and the ordinary turn after it."""
    planted = run_probes(platform, "a2", "symlinks")
    assert planted.result("run_dir_symlinks_planted")["planted"], planted.result("run_dir_symlinks_planted")
    return planted, run_probes(platform, "a2", "noop")


def test_host_never_connects_to_a_sandbox_symlink(symlinked: tuple[ProbeRun, ProbeRun], platform: Platform) -> None:
    connections = len(platform.recorder.connections)
    heads = [data.split(b"\r\n", 1)[0] for data in platform.recorder.connections[:3]]
    assert connections == 0, f"the host connected {connections} times to the test's socket, sending {heads}"


def test_no_token_reaches_a_sandbox_symlink(symlinked: tuple[ProbeRun, ProbeRun], platform: Platform) -> None:
    received = b"\n".join(platform.recorder.connections)
    tokens = sum(token.encode() in received for token in platform.sandbox_tokens)
    assert tokens == 0, f"{tokens} sandboxd tokens were sent to the test's socket"
    assert b"authorization" not in received.lower(), "an Authorization header was sent to the test's socket"


def test_session_works_after_its_run_dir_was_symlinked(symlinked: tuple[ProbeRun, ProbeRun]) -> None:
    symlinked[1].assert_held("turn_ran")
