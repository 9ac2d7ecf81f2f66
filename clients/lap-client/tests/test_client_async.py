"""`AsyncClient` against the real `lap serve`: the same calls as `Client`, awaited, and its event streams."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest
from proxy import CuttingProxy

from lap_client import (
    AgentPage,
    AsyncClient,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidInput,
    NotFound,
    TurnResult,
    Unauthorized,
    UsageReport,
)
from lap_core import Agent, Budget, EventRecord, HarnessSession, Session, TextDelta, TurnEnd, UserMessage
from tests.fakes.litellm import free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.server.process import ServeProcess

pytestmark = pytest.mark.anyio


@pytest.fixture
async def admin(server: ServeProcess) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.base_url, api_key=server.master_key) as client:
        yield client


async def test_agents_and_sessions(admin: AsyncClient, name: str) -> None:
    made = [await admin.agents.create(f"{name}-{n}", harness="script", model="m") for n in range(3)]
    assert all(isinstance(agent, Agent) for agent in made)
    page = await admin.agents.list(name, limit=2)
    assert isinstance(page, AgentPage)
    assert page.next_offset == 2
    assert [a.id async for a in admin.agents.iter(name, page_size=2)] == [a.id for a in made]
    assert (await admin.agents.update(made[2].id, prompt="be brief")).prompt == "be brief"
    assert (await admin.agents.get(made[2].name)).prompt == "be brief"
    await admin.agents.delete(made[2].id)

    session = await admin.sessions.create(made[0].id)
    assert isinstance(session, Session)
    assert [s.id for s in await admin.sessions.list(agent_id=made[0].id)] == [session.id]
    result = await admin.sessions.send_and_wait(session.id, "hi")
    assert isinstance(result, TurnResult)
    assert result.text == "you said: hi"
    assert await admin.sessions.history(session.id) == result.events
    assert (await admin.sessions.get(session.id)).last_seq == result.events[-1].seq

    async with admin.sessions.stream(session.id, "stream: 2") as stream:
        records = [record async for record in stream]
    assert stream.turn is not None
    assert {r.turn_id for r in records} == {stream.turn.turn_id}
    assert "".join(r.event.text for r in records if isinstance(r.event, TextDelta)) == "line 1\nline 2\n"
    assert isinstance(records[-1].event, TurnEnd)

    accepted = await admin.sessions.send(session.id, "hang")
    with pytest.raises(Conflict):
        await admin.sessions.send(session.id, "now", on_busy="reject")
    assert await admin.sessions.abort(session.id) is True
    async with admin.sessions.events(session.id, after=accepted.user_seq - 1) as events:
        async for record in events:
            if isinstance(record.event, TurnEnd):
                assert (record.turn_id, record.event.status) == (accepted.turn_id, "aborted")
                break
    assert (await admin.sessions.restart(session.id)).job_id
    assert (await admin.sessions.send_and_wait(session.id, "again")).text == "you said: again"  # after the restart
    with pytest.raises(Conflict):
        await admin.agents.delete(made[0].id)
    await admin.sessions.delete(session.id)
    with pytest.raises(NotFound):
        await admin.sessions.get(session.id)


async def test_events_resume_after_a_dropped_connection(server: ServeProcess, admin: AsyncClient, name: str) -> None:
    session = await admin.sessions.create((await admin.agents.create(name, harness="script", model="m")).id)
    proxy = CuttingProxy(int(server.base_url.rpartition(":")[2]))
    seen: list[EventRecord] = []
    try:
        async with AsyncClient(proxy.url, api_key=server.master_key) as client:
            with anyio.fail_after(60):
                async with client.sessions.stream(session.id, "hang") as stream:
                    async for record in stream:
                        seen.append(record)
                        if isinstance(record.event, HarnessSession):
                            proxy.cut()  # mid-turn: the turn hangs until aborted
                            assert await admin.sessions.abort(session.id)
    finally:
        proxy.close()
    assert [r.seq for r in seen] == list(range(1, len(seen) + 1))
    assert isinstance(seen[0].event, UserMessage)
    assert isinstance(seen[-1].event, TurnEnd)
    assert seen[-1].event.status == "aborted"
    streams = [request.lower() for request in proxy.requests if b"/events" in request]
    assert len(streams) == 2
    assert f"last-event-id: {seen[-2].seq}\r\n".encode() in streams[1]


async def test_errors_teams_keys_secrets_usage(server: ServeProcess, admin: AsyncClient, name: str) -> None:
    async with AsyncClient(server.base_url, api_key="nope") as stranger:
        with pytest.raises(Unauthorized):
            await stranger.teams.list()
        assert await stranger.health() is True  # open routes need no key
    with pytest.raises(InvalidInput) as invalid:
        await admin.sessions.create("")
    assert invalid.value.status == 422
    with pytest.raises(NotFound):
        await anext(admin.sessions.events("ses_missing"))

    team = await admin.teams.create(name)
    await admin.teams.set_budget(team.id, Budget(usd_per_month=1.0))
    key = await admin.keys.create("k", team_id=team.id)
    secret = await admin.secrets.create("TOKEN", "v4lue", hosts=["api.example.com"], team_id=team.id)
    other = await admin.agents.create(f"{name}-other", harness="script", model="m")
    async with AsyncClient(server.base_url, api_key=key.key) as member:
        assert [t.id for t in await member.teams.list()] == [team.id]
        assert [s.id for s in await member.secrets.list()] == [secret.id]
        assert [a async for a in member.agents.iter()] == []
        with pytest.raises(NotFound):
            await member.sessions.create(other.id)
        with pytest.raises(Forbidden):
            await member.metrics()
        report = await member.usage(group_by=["model"])
        assert isinstance(report, UsageReport)
        assert report.totals.team_id is None
        await member.secrets.delete(secret.id)
        assert await member.secrets.list() == []
        await member.keys.delete(key.id)
        with pytest.raises(Unauthorized):
            await member.keys.list()
    assert key.id not in [k.id for k in await admin.keys.list()]
    assert await admin.ready() is True
    assert "lap_" in await admin.metrics()


async def test_an_unreachable_server_is_connection_failed() -> None:
    async with AsyncClient(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(ConnectionFailed):
            await client.ready()
        with pytest.raises(ConnectionFailed):
            await anext(client.sessions.events("ses_x"))
