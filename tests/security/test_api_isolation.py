"""Teams through the API (held before, must keep holding): a team key sees and touches only its own team's agents,
sessions and events (another team's are 404), manages no team and no other team's keys; a deleted session is gone
for everyone. Bad input carrying the keys is a 4xx with the JSON error shape, never a 5xx (whose log would hold
them). Each probe runs both ways: team A's key on team B's server (JSON logs), team B's on team A's (console)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.security.platform import SERVER_OF_TEAM

if TYPE_CHECKING:
    from tests.security.platform import Platform

# A real LAP server on PostgreSQL, real bwrap sandboxes, a real LiteLLM proxy and Codex.
pytestmark = [pytest.mark.e2e, pytest.mark.bwrap, pytest.mark.postgres]

WAYS = [("a", "b"), ("b", "a")]


def _session_ids(platform: Platform, team: str) -> list[str]:
    return [s.id for s in platform.sessions.values() if s.team == team and not s.deleted]


@pytest.mark.parametrize(("caller", "owner"), WAYS)
def test_other_teams_agents_are_404(platform: Platform, caller: str, owner: str) -> None:
    agent = platform.agent_ids[owner]
    for method, path, body in [
        ("GET", f"/api/agents/{agent}", None),
        ("GET", f"/api/agents/agent-{owner}", None),
        ("PATCH", f"/api/agents/{agent}", {"prompt": "hijacked"}),
        ("DELETE", f"/api/agents/{agent}", None),
        ("POST", "/api/sessions", {"agent_id": agent}),
    ]:
        answer = platform.api(caller, method, path, server=SERVER_OF_TEAM[owner], json=body)
        assert answer.status_code == 404, f"{method} {path}: {answer.status_code} {answer.text}"
    listed = platform.api(caller, "GET", "/api/agents", server=SERVER_OF_TEAM[owner]).json()["items"]
    assert agent not in [a["id"] for a in listed]


@pytest.mark.parametrize(("caller", "owner"), WAYS)
def test_other_teams_sessions_and_events_are_404(platform: Platform, caller: str, owner: str) -> None:
    server = SERVER_OF_TEAM[owner]
    for session in _session_ids(platform, owner):
        for path in (f"/api/sessions/{session}", f"/api/sessions/{session}/messages"):
            answer = platform.api(caller, "GET", path, server=server)
            assert answer.status_code == 404, f"GET {path}: {answer.status_code} {answer.text}"
        with httpx.stream(
            "GET", f"{platform.servers[server].url}/api/sessions/{session}/events",
            headers={"Authorization": f"Bearer {platform.key_of(caller)}"}, timeout=10,
        ) as stream:  # fmt: skip
            assert stream.status_code == 404, f"the event stream of {session}: {stream.status_code}"
    listed = [s["id"] for s in platform.api(caller, "GET", "/api/sessions", server=server).json()]
    assert not set(listed) & set(_session_ids(platform, owner))


@pytest.mark.parametrize(("caller", "owner"), WAYS)
def test_other_teams_sessions_cannot_be_acted_on(platform: Platform, caller: str, owner: str) -> None:
    session = _session_ids(platform, owner)[0]
    for method, path, body in [
        ("POST", f"/api/sessions/{session}/messages", {"text": "hijacked"}),
        ("POST", f"/api/sessions/{session}/abort", None),
        ("POST", f"/api/sessions/{session}/restart", None),
        ("DELETE", f"/api/sessions/{session}", None),
    ]:
        answer = platform.api(caller, method, path, server=SERVER_OF_TEAM[owner], json=body)
        assert answer.status_code == 404, f"{method} {path}: {answer.status_code} {answer.text}"
    assert platform.api("master", "GET", f"/api/sessions/{session}").status_code == 200


@pytest.mark.parametrize(("caller", "owner"), WAYS)
def test_team_keys_manage_no_team_and_no_other_teams_keys(platform: Platform, caller: str, owner: str) -> None:
    assert platform.api(caller, "POST", "/api/teams", json={"name": "mine-now"}).status_code == 403
    other = platform.api(caller, "POST", "/api/keys", json={"name": "stolen", "team_id": platform.team_ids[owner]})
    assert other.status_code == 404, other.text
    keys = platform.api(caller, "GET", "/api/keys").json()
    assert {k["team_id"] for k in keys} == {platform.team_ids[caller]}
    assert all(k["key"] is None for k in keys), "a listed key shows its secret"


def test_a_deleted_session_is_gone(platform: Platform) -> None:
    session = platform.sessions["a_deleted"].id
    for who in ("a", "master"):
        for path in (
            f"/api/sessions/{session}",
            f"/api/sessions/{session}/messages",
            f"/api/sessions/{session}/events",
        ):
            answer = platform.api(who, "GET", path, timeout=10)
            assert answer.status_code == 404, f"{who}: GET {path}: {answer.status_code}"


def _is_json_error(text: str) -> bool:
    try:
        return isinstance(json.loads(text).get("error"), dict)
    except (ValueError, AttributeError):
        return False


def _bad_requests(platform: Platform) -> list[tuple[str, str, dict[bytes, bytes], bytes]]:
    session = platform.sessions["a1"].id
    events = f"/api/sessions/{session}/events"
    deep = b'{"name": "x", "harness": "codex", "model": "m", "options": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    json_type: dict[bytes, bytes] = {b"Content-Type": b"application/json"}
    return [
        ("GET", events, {b"Last-Event-ID": "²".encode()}, b""),
        ("GET", events, {b"Last-Event-ID": b"9" * 5000}, b""),
        ("GET", events, {b"Last-Event-ID": str(2**63).encode()}, b""),
        ("POST", "/api/agents", json_type, deep),
        ("POST", "/api/agents", json_type, b'{"name": "\xff\xfe", "harness": "codex", "model": "m"}'),
        ("POST", "/api/teams", json_type, b'{"name": ' + b'"' + b"x" * 1_000_000 + b'"}'),
    ]


@pytest.mark.parametrize("who", ["master", "a", "b"])
def test_bad_input_with_a_key_is_a_4xx(platform: Platform, who: str) -> None:
    failures = []
    for method, path, headers, body in _bad_requests(platform):
        server = platform.servers[SERVER_OF_TEAM.get(who, "console")]
        headers = {**headers, b"Authorization": f"Bearer {platform.key_of(who)}".encode()}
        with httpx.stream(method, server.url + path, headers=headers, content=body, timeout=10) as answer:
            text = answer.read().decode(errors="replace") if answer.status_code != 200 else ""
        platform.answers.append(f"{method} {path} -> {answer.status_code} {text}")
        shaped = answer.status_code == 200 or _is_json_error(text)
        if not (answer.status_code < 500 and shaped) or (path.endswith("/events") and answer.status_code == 200):
            failures.append(
                f"{method} {path} ({len(body)} bytes, {headers.get(b'Last-Event-ID', b'')[:12]!r}): "
                f"{answer.status_code} {text[:100]}"
            )
    assert not failures, failures
