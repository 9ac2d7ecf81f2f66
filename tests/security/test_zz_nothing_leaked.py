"""The global assertion, after every other probe (this file runs last): the real key, the master key, every team
key and its secret, the gateway's upstream keys, team A's secret, the egress gateway's private keys and every sandboxd
token appear in no event log of any session, no API answer and no log line (console or JSON); no session's event log
holds another session's stub (a key's or a secret's) or marker file; no log line holds any stub or marker.

Before it, the LLM proxy moves to the JSON-logging server (the console one stops, as in a rolling restart) and the
request-target probes (which make the proxy fail) run again there, so the JSON log goes through the failures the
console log went through.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.security.recorders import wait_until
from tests.security.runner import run_probes

if TYPE_CHECKING:
    from tests.security.platform import Platform

# A real LAP server on PostgreSQL, real bwrap sandboxes, a real LiteLLM proxy and Codex.
pytestmark = [pytest.mark.e2e, pytest.mark.bwrap, pytest.mark.postgres]


def test_proxy_moves_to_the_other_server_and_keeps_serving(platform: Platform) -> None:
    assert platform.stop_server("console") == 0, "lap serve did not stop cleanly on SIGTERM"
    json_log = platform.servers["json"].log
    assert wait_until(lambda: "vault.listening" in json_log.read_text(errors="replace"), 30), "no proxy took over"
    try:
        targets = run_probes(platform, "b1", "targets")
        assert targets.complete, f"the probes did not finish behind the new proxy: {targets.tail()}"
        run_probes(platform, "b1", "noop").assert_held("turn_ran")
    finally:
        platform.restart_server("console")


def _platform_secrets(platform: Platform) -> dict[str, str]:
    platform.collect_tokens()
    tokens = {f"sandboxd_token_{i}": token for i, token in enumerate(sorted(platform.sandbox_tokens))}
    return platform.fixed_secrets() | tokens


def _found(text: str, known: dict[str, str]) -> list[str]:
    return sorted(label for label, value in known.items() if value in text)


def _redacted(text: str, known: dict[str, str]) -> str:
    for label, value in known.items():
        text = text.replace(value, f"<{label}>")
    return text


def _event_logs(platform: Platform) -> dict[str, str]:
    """Every session's event log as text: read through the API now, or (for the deleted one) every answer about it."""
    logs = {}
    for key, session in platform.sessions.items():
        if session.deleted:
            logs[key] = "\n".join(answer for answer in platform.answers if session.id in answer)
        else:
            logs[key] = json.dumps(platform.history(key))
    return logs


def test_no_platform_secret_in_any_event_log(platform: Platform) -> None:
    known = _platform_secrets(platform)
    leaks = {key: found for key, text in _event_logs(platform).items() if (found := _found(text, known))}
    assert not leaks, f"secrets in event logs: {leaks}"


def test_no_other_sessions_stub_or_marker_in_an_event_log(platform: Platform) -> None:
    leaks = {}
    for key, text in _event_logs(platform).items():
        if found := _found(text, platform.foreign_secrets(key)):
            leaks[key] = found
    assert not leaks, f"other sessions' stubs or markers in event logs: {leaks}"


def test_no_platform_secret_in_any_api_answer(platform: Platform) -> None:
    known = _platform_secrets(platform)
    leaks = []
    for answer in platform.answers:
        allowed = {f"team_key_{t}" for t in platform.team_keys} | {f"team_key_{t}_secret" for t in platform.team_keys}
        # The answer that creates a key is the one place it is shown.
        found = [
            label for label in _found(answer, known) if not (answer.startswith("POST /api/keys ") and label in allowed)
        ]
        if found:
            leaks.append(f"{answer[:80]}...: {found}")
    assert not leaks, f"secrets in API answers: {leaks[:10]}"


def test_no_secret_in_any_log_line(platform: Platform) -> None:
    known = _platform_secrets(platform)
    for session in platform.sessions.values():
        known |= {f"stub_of_{session.key}_{i}": stub for i, stub in enumerate(session.stubs)}
        known |= {f"secret_stub_of_{session.key}_{i}": stub for i, stub in enumerate(session.secret_stubs)}
        if session.marker:
            known[f"marker_of_{session.key}"] = session.marker
    lines = platform.log_lines()
    assert lines, "the servers logged nothing"
    counts: dict[str, int] = {}
    first: list[str] = []
    for file, line in lines:
        for label in _found(line, known):
            counts[f"{file}: {label}"] = counts.get(f"{file}: {label}", 0) + 1
            if len(first) < 3:
                first.append(f"{file}: {_redacted(line, known)[:200]!r}")
    assert not counts, f"log lines holding secrets (by file and secret): {counts}; for example {first}"
