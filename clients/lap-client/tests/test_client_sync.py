"""`Client` against the real `lap serve`: every route family, typed answers and errors, events that resume."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import httpx
import pytest
from proxy import CuttingProxy

from lap_client import (
    AgentPage,
    ApiKeyInfo,
    Client,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    RestartAccepted,
    TurnAccepted,
    TurnResult,
    Unauthorized,
    UsageReport,
)
from lap_client import _core as core
from lap_core import Agent, Budget, EventRecord, HarnessSession, Secret, Session, Team, TextDelta, TurnEnd, UserMessage
from tests.fakes.litellm import free_port
from tests.server.process import serve_process

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.server.process import ServeProcess


@pytest.fixture
def admin(server: ServeProcess) -> Iterator[Client]:
    with Client(server.base_url, api_key=server.master_key) as client:
        yield client


def test_agents_are_created_listed_by_page_changed_and_deleted(admin: Client, name: str) -> None:
    made = [admin.agents.create(f"{name}-{n}", harness="script", model="m", prompt="p") for n in range(3)]
    assert all(isinstance(agent, Agent) for agent in made)
    page = admin.agents.list(name, limit=2)
    assert isinstance(page, AgentPage)
    assert [a.name for a in page.items] == [f"{name}-0", f"{name}-1"]
    assert page.next_offset == 2
    last = admin.agents.list(name, limit=2, offset=page.next_offset)
    assert ([a.name for a in last.items], last.next_offset) == ([f"{name}-2"], None)
    assert [a.id for a in admin.agents.iter(name, page_size=1)] == [a.id for a in made]

    changed = admin.agents.update(made[0].id, model="m2", repo_url="https://example.com/r.git")
    assert (changed.model, changed.prompt, changed.repo_url) == ("m2", "p", "https://example.com/r.git")
    cleared = admin.agents.update(made[0].id, repo_url=None)
    assert (cleared.repo_url, cleared.model) == (None, "m2")
    assert admin.agents.get(f"{name}-0") == cleared  # by name too

    admin.agents.delete(made[0].id)
    with pytest.raises(NotFound) as missing:
        admin.agents.get(made[0].id)
    assert (missing.value.status, missing.value.code) == (404, "not_found")


def test_a_session_answers_streams_aborts_restarts_and_goes(admin: Client, name: str) -> None:
    agent = admin.agents.create(name, harness="script", model="m")
    session = admin.sessions.create(agent.id, title="chat")
    assert isinstance(session, Session)
    assert (session.title, session.status) == ("chat", "new")
    assert [s.id for s in admin.sessions.list(agent_id=agent.id)] == [session.id]

    result = admin.sessions.send_and_wait(session.id, "hello")
    assert isinstance(result, TurnResult)
    assert (result.status, result.text) == ("completed", "you said: hello")
    assert isinstance(result.events[-1].event, TurnEnd)
    assert admin.sessions.get(session.id).status == "ready"
    history = admin.sessions.history(session.id)
    assert history == result.events
    assert admin.sessions.history(session.id, after=history[-2].seq) == history[-1:]

    with admin.sessions.stream(session.id, "stream: 3") as stream:
        records = list(stream)
    assert stream.turn is not None
    assert {r.turn_id for r in records} == {stream.turn.turn_id}
    assert isinstance(records[0].event, UserMessage)
    assert "".join(r.event.text for r in records if isinstance(r.event, TextDelta)) == "line 1\nline 2\nline 3\n"
    assert isinstance(records[-1].event, TurnEnd)
    assert [r.seq for r in records] == list(range(history[-1].seq + 1, history[-1].seq + 1 + len(records)))

    accepted = admin.sessions.send(session.id, "hang", idempotency_key="k-1")
    assert isinstance(accepted, TurnAccepted)
    assert admin.sessions.send(session.id, "hang", idempotency_key="k-1") == accepted  # the same turn
    with pytest.raises(Conflict) as busy:
        admin.sessions.send(session.id, "now", on_busy="reject")
    assert busy.value.status == 409
    with admin.sessions.events(session.id, after=accepted.user_seq - 1) as events:
        assert isinstance(next(events).event, UserMessage)
        assert admin.sessions.abort(session.id) is True
        end = next(r for r in events if isinstance(r.event, TurnEnd))
    assert (end.turn_id, end.event.status) == (accepted.turn_id, "aborted")
    assert admin.sessions.abort(session.id) is False

    restarted = admin.sessions.restart(session.id)
    assert isinstance(restarted, RestartAccepted)
    assert restarted.session_url == f"/api/sessions/{session.id}"
    # A session's jobs run in order: this turn runs in the new sandbox, after the restart (deleting the
    # session while the restart still brings a sandbox up would race it).
    assert admin.sessions.send_and_wait(session.id, "again").text == "you said: again"
    with pytest.raises(Conflict):  # the agent still has a session
        admin.agents.delete(agent.id)
    admin.sessions.delete(session.id)
    with pytest.raises(NotFound):
        admin.sessions.get(session.id)
    admin.agents.delete(agent.id)


def test_events_resume_after_a_dropped_connection(server: ServeProcess, admin: Client, name: str) -> None:
    session = admin.sessions.create(admin.agents.create(name, harness="script", model="m").id)
    proxy = CuttingProxy(int(server.base_url.rpartition(":")[2]))
    try:
        with (
            Client(proxy.url, api_key=server.master_key) as client,
            client.sessions.stream(session.id, "hang") as stream,
        ):
            seen: list[EventRecord] = []
            for record in stream:
                seen.append(record)
                if isinstance(record.event, HarnessSession):
                    break
            proxy.cut()  # mid-turn: the turn hangs until aborted
            assert admin.sessions.abort(session.id)
            seen += list(stream)
    finally:
        proxy.close()
    assert [r.seq for r in seen] == list(range(1, len(seen) + 1))  # nothing lost, nothing twice
    assert isinstance(seen[-1].event, TurnEnd)
    assert seen[-1].event.status == "aborted"
    streams = [request.lower() for request in proxy.requests if b"/events" in request]
    assert len(streams) == 2
    assert b"last-event-id" not in streams[0]
    assert f"last-event-id: {seen[-2].seq}\r\n".encode() in streams[1]


def test_an_event_stream_gives_up_when_the_server_stays_away(
    server: ServeProcess, admin: Client, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "RECONNECT_ATTEMPTS", 2)
    monkeypatch.setattr(core, "RECONNECT_DELAY", 0.0)
    session = admin.sessions.create(admin.agents.create(name, harness="script", model="m").id)
    admin.sessions.send_and_wait(session.id, "hello")
    proxy = CuttingProxy(int(server.base_url.rpartition(":")[2]))
    with Client(proxy.url, api_key=server.master_key) as client, client.sessions.events(session.id) as events:
        assert isinstance(next(events).event, UserMessage)
        proxy.close()  # the connection breaks, and reconnecting finds nobody
        with pytest.raises(ConnectionFailed) as failed:
            list(events)
    assert "failed 2 times in a row" in str(failed.value)
    assert events.last_seq is not None


def test_typed_errors_for_bad_keys_input_and_rights(server: ServeProcess, admin: Client, name: str) -> None:
    with Client(server.base_url, api_key="wrong-key") as stranger, pytest.raises(Unauthorized) as refused:
        stranger.agents.list()
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    with pytest.raises(InvalidInput) as invalid:
        admin.agents.create("not a name!", harness="script", model="m")
    assert (invalid.value.status, invalid.value.code) == (422, "validation_error")
    assert "name" in str(invalid.value.details["errors"])
    with pytest.raises(NotFound):
        next(admin.sessions.events("ses_missing"))  # at once: an error answer is not retried
    key = admin.keys.create(name)
    with Client(server.base_url, api_key=key.key) as team, pytest.raises(Forbidden) as forbidden:
        team.teams.create(name)
    assert (forbidden.value.status, forbidden.value.code) == (403, "forbidden")


def test_an_unreachable_server_is_connection_failed() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", api_key="k") as client:
        with pytest.raises(ConnectionFailed) as failed:
            client.agents.list()
        assert isinstance(failed.value.__cause__, httpx.ConnectError)
        assert "GET http://127.0.0.1:" in str(failed.value)
        with pytest.raises(ConnectionFailed):
            next(client.sessions.events("ses_x"))  # not retried: it never connected
        with pytest.raises(ConnectionFailed):
            client.health()


def test_a_team_key_sees_only_its_team(server: ServeProcess, admin: Client, name: str) -> None:
    team = admin.teams.create(name)
    assert isinstance(team, Team)
    key = admin.keys.create("ci", team_id=team.id)
    assert isinstance(key, ApiKeyInfo)
    assert key.key is not None
    assert key.team_id == team.id
    theirs = admin.agents.create(f"{name}-admin", harness="script", model="m")
    with Client(server.base_url, api_key=key.key) as member:
        assert member.teams.list() == [team]
        mine = member.agents.create(f"{name}-mine", harness="script", model="m")
        assert mine.team_id == team.id
        assert [a.id for a in member.agents.iter()] == [mine.id]
        with pytest.raises(NotFound):
            member.agents.get(theirs.id)
        assert {k.team_id for k in member.keys.list()} == {team.id}
        assert all(k.key is None for k in member.keys.list())
        with pytest.raises(Forbidden):
            member.teams.set_budget(team.id, Budget(tokens_per_month=1))
        assert member.usage().totals.calls == 0
        with pytest.raises(NotFound):
            member.usage(team_id="team_default")
        admin.keys.delete(key.id)
        with pytest.raises(Unauthorized):
            member.agents.list()
    assert mine.id in [a.id for a in admin.agents.iter()]


def test_teams_budgets_secrets_usage_and_health(admin: Client, name: str) -> None:
    team = admin.teams.create(name)
    assert team in admin.teams.list()
    budgeted = admin.teams.set_budget(team.id, Budget(tokens_per_month=1000, usd_per_month=2.5))
    assert budgeted.budget == Budget(tokens_per_month=1000, usd_per_month=2.5)

    value = f"ghp_{secrets.token_urlsafe(12)}"
    secret = admin.secrets.create("GH_TOKEN", value, hosts=["github.com"], team_id=team.id)
    assert isinstance(secret, Secret)
    assert (secret.name, secret.hosts, secret.team_id) == ("GH_TOKEN", ("github.com",), team.id)
    assert secret.id in [s.id for s in admin.secrets.list()]
    admin.secrets.delete(secret.id)
    assert secret.id not in [s.id for s in admin.secrets.list()]
    with pytest.raises(NotFound):
        admin.secrets.delete(secret.id)

    report = admin.usage(team_id=team.id, group_by=["agent", "day"])
    assert isinstance(report, UsageReport)
    assert (report.group_by, report.totals.calls, report.groups) == (["agent", "day"], 0, [])
    with pytest.raises(InvalidInput):
        admin.usage(group_by=["planet"])  # type: ignore[list-item]

    assert admin.health() is True
    assert admin.ready() is True
    assert "lap_" in admin.metrics()


def test_rate_limited_carries_retry_after(data_dir: Path, tmp_path: Path) -> None:
    key = secrets.token_urlsafe(16)
    with (
        serve_process(data_dir, tmp_path, master_key=key, env={"LAP_RATE_LIMIT": "2"}) as server,
        Client(server.base_url, api_key=key) as client,
    ):
        client.teams.list()
        client.teams.list()
        with pytest.raises(RateLimited) as limited:
            client.teams.list()
    assert (limited.value.status, limited.value.code) == (429, "rate_limited")
    assert limited.value.retry_after >= 1
