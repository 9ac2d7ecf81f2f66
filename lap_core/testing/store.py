"""The conformance suite of `SessionStore`: subclass `StoreConformance` and override its `store` fixture.

The fixture yields an open, migrated, empty store; the tests run on asyncio (anyio's pytest plugin)::

    class TestMyStore(StoreConformance):
        @pytest.fixture
        async def store(self, tmp_path):
            async with MyStore(f"mine://{tmp_path}") as store:
                await store.migrate()
                yield store
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, get_args

import anyio
import msgspec
import pytest

from lap_core import _events as ev
from lap_core._egress_policy import EgressPolicy
from lap_core._errors import Conflict, InvalidInput, NotFound
from lap_core._models import Session, Team, new_id
from lap_core.testing._base import (
    _EPOCH,
    _agent,
    _new_session,
    _pluck,
    _start,
    _team,
    _texts,
    _utc_aware,
    _without_at,
)
from lap_core.testing._turns import TurnTests
from lap_core.testing.integration import IntegrationStoreConformance
from lap_core.testing.secrets import SecretTests
from lap_core.testing.usage import UsageTests

if TYPE_CHECKING:
    from lap_core._store import SessionStore

__all__ = ["EVERY_EVENT", "StoreConformance"]

EVERY_EVENT: tuple[ev.SessionEvent, ...] = (
    ev.UserMessage(text="fix the bug, ünïcode ✓"),
    ev.TextDelta(text="Looking at it"),
    ev.ReasoningDelta(text="the test fails because"),
    ev.ToolCall(call_id="call_1", name="bash", input={"command": "ls -la", "args": [1, 2.5, None, True, {"k": "v"}]}),
    ev.ToolCall(call_id="call_2", name="noop"),
    ev.ToolResult(call_id="call_1", output="a\nb\n", is_error=True),
    ev.ToolResult(call_id="call_2"),
    ev.Usage(input_tokens=1200, output_tokens=345, cost=0.0125),
    ev.Usage(),
    ev.Status(phase="sandbox", detail="creating"),
    ev.Error(code="gateway_error", message="the gateway said 502"),
    ev.HarnessSession(native_session_id="ses_native_1"),
    ev.EgressDenied(host="example.com", port=443, reason="not in the agent's egress allow list"),
    ev.TurnEnd(status="failed", reason="tool crashed"),
    ev.TurnEnd(),
)
"""At least one event of every type of `SessionEvent`, with optional fields both set and defaulted."""


class StoreConformance(SecretTests, UsageTests, TurnTests, IntegrationStoreConformance):
    """Tests every method of `SessionStore`; subclass it and provide the `store` fixture."""

    # migrations
    async def test_migrate_again_applies_nothing(self, store: SessionStore) -> None:
        assert await store.migrate() == []
        assert await store.migrate() == []
        await store.check()

    # teams
    async def test_team_round_trip(self, store: SessionStore) -> None:
        team = Team(id=new_id("team"), name="acme", created_at=_EPOCH)
        assert await store.create_team(team) == team
        got = await store.get_team(team.id)
        assert got == team
        assert _utc_aware(got.created_at)
        assert team in await store.list_teams()
        with pytest.raises(NotFound):
            await store.get_team("team_missing")

    async def test_team_conflicts_on_id_and_name(self, store: SessionStore) -> None:
        team = await store.create_team(_team("acme"))
        with pytest.raises(Conflict):
            await store.create_team(Team(id=team.id, name="other"))
        with pytest.raises(Conflict):
            await store.create_team(Team(id=new_id("team"), name="acme"))
        assert [t.id for t in await store.list_teams()] == [team.id]

    async def test_list_teams_oldest_first(self, store: SessionStore) -> None:
        for minute in (2, 0, 1):
            at = _EPOCH + timedelta(minutes=minute)
            await store.create_team(Team(id=new_id("team"), name=f"t{minute}", created_at=at))
        assert [t.name for t in await store.list_teams()] == ["t0", "t1", "t2"]

    # agents
    async def test_agent_round_trip(self, store: SessionStore) -> None:
        team = await store.create_team(_team())
        options = {"temperature": 0.2, "tools": ["bash", "edit"], "nested": {"deep": [1, None, True]}}
        egress = EgressPolicy(allow=["github.com", "*.pypi.org:443"], deny=["10.0.0.0/8"], presets=["developer"])
        agent = _agent(
            team.id,
            prompt="Be brief.\nAlways test.",
            options=options,
            on_busy="reject",
            egress=egress,
            repo_url="https://github.com/acme/app.git",
            branch="main",
            created_at=_EPOCH,
        )
        assert await store.create_agent(agent) == agent
        got = await store.get_agent(agent.id)
        assert got == agent
        assert _utc_aware(got.created_at, got.updated_at)
        assert await store.get_agent(agent.id, team_id=team.id) == agent
        assert await store.find_agent(agent.name, team_id=team.id) == agent

    async def test_agent_not_found(self, store: SessionStore) -> None:
        team, other = await store.create_team(_team()), await store.create_team(_team())
        agent = await store.create_agent(_agent(team.id))
        with pytest.raises(NotFound):
            await store.get_agent("agt_missing")
        with pytest.raises(NotFound):
            await store.get_agent(agent.id, team_id=other.id)
        with pytest.raises(NotFound):
            await store.find_agent(agent.name, team_id=other.id)
        with pytest.raises(NotFound):
            await store.find_agent("nobody", team_id=team.id)

    async def test_agent_name_is_unique_per_team(self, store: SessionStore) -> None:
        team, other = await store.create_team(_team()), await store.create_team(_team())
        agent = await store.create_agent(_agent(team.id, "coder"))
        with pytest.raises(Conflict):
            await store.create_agent(_agent(team.id, "coder"))
        with pytest.raises(Conflict):
            await store.create_agent(_agent(other.id, "other", id=agent.id))
        await store.create_agent(_agent(other.id, "coder"))
        assert len(await store.list_agents()) == 2

    async def test_list_agents_by_name_filtered_and_paged(self, store: SessionStore) -> None:
        team, other = await store.create_team(_team()), await store.create_team(_team())
        for name in ("delta", "alpha", "charlie", "bravo"):
            await store.create_agent(_agent(team.id, name))
        await store.create_agent(_agent(other.id, "alpha"))
        assert _pluck(await store.list_agents(team_id=team.id), "name") == ["alpha", "bravo", "charlie", "delta"]
        assert _pluck(await store.list_agents(), "name") == ["alpha", "alpha", "bravo", "charlie", "delta"]
        assert _pluck(await store.list_agents(team_id=team.id, limit=2, offset=1), "name") == ["bravo", "charlie"]
        assert await store.list_agents(team_id=team.id, offset=4) == []
        assert _pluck(await store.list_agents(team_id=team.id, search="ha"), "name") == ["alpha", "charlie"]
        assert _pluck(await store.list_agents(search="alp"), "name") == ["alpha", "alpha"]
        assert await store.list_agents(team_id=other.id, search="zzz") == []

    async def test_list_agents_search_is_a_literal_substring(self, store: SessionStore) -> None:
        team = await store.create_team(_team())
        for name in ("100%", "1000", "a_b", "axb"):
            await store.create_agent(_agent(team.id, name))
        assert _pluck(await store.list_agents(team_id=team.id, search="0%"), "name") == ["100%"]
        assert _pluck(await store.list_agents(team_id=team.id, search="a_"), "name") == ["a_b"]

    async def test_update_agent(self, store: SessionStore) -> None:
        team = await store.create_team(_team())
        agent = await store.create_agent(_agent(team.id, "coder"))
        await store.create_agent(_agent(team.id, "taken"))
        changed = msgspec.structs.replace(
            agent,
            name="renamed",
            prompt="new",
            options={"k": 1},
            egress=EgressPolicy(allow=["x.org"]),
            updated_at=_EPOCH,
        )
        assert await store.update_agent(changed) == changed
        assert await store.get_agent(agent.id) == changed
        with pytest.raises(Conflict):
            await store.update_agent(msgspec.structs.replace(changed, name="taken"))
        assert (await store.get_agent(agent.id)).name == "renamed"
        with pytest.raises(NotFound):
            await store.update_agent(_agent(team.id, "ghost"))

    async def test_delete_agent(self, store: SessionStore) -> None:
        team, other = await store.create_team(_team()), await store.create_team(_team())
        agent = await store.create_agent(_agent(team.id))
        with pytest.raises(NotFound):
            await store.delete_agent(agent.id, team_id=other.id)
        await store.delete_agent(agent.id, team_id=team.id)
        with pytest.raises(NotFound):
            await store.get_agent(agent.id)
        with pytest.raises(NotFound):
            await store.delete_agent(agent.id)
        session = await _new_session(store)  # refused while the agent has sessions
        with pytest.raises(Conflict):
            await store.delete_agent(session.agent_id)
        assert (await store.get_agent(session.agent_id)).id == session.agent_id
        await store.delete_session(session.id)
        await store.delete_agent(session.agent_id)

    # sessions
    async def test_session_round_trip(self, store: SessionStore) -> None:
        team, other = await store.create_team(_team()), await store.create_team(_team())
        agent = await store.create_agent(_agent(team.id))
        session = Session(id=new_id("ses"), team_id=team.id, agent_id=agent.id, title="Fix CI", created_at=_EPOCH)
        assert await store.create_session(session) == session
        got = await store.get_session(session.id)
        assert got == session
        assert (got.last_seq, got.status) == (0, "new")
        assert _utc_aware(got.created_at, got.updated_at)
        assert await store.get_session(session.id, team_id=team.id) == session
        with pytest.raises(NotFound):
            await store.get_session(session.id, team_id=other.id)
        with pytest.raises(NotFound):
            await store.get_session("ses_missing")
        with pytest.raises(NotFound):
            await store.create_session(Session(id=new_id("ses"), team_id=team.id, agent_id="agt_missing"))
        with pytest.raises(NotFound):
            await store.create_session(Session(id=new_id("ses"), team_id=other.id, agent_id=agent.id))
        assert await store.list_sessions() == [session]

    async def test_list_sessions_newest_first_filtered_and_paged(self, store: SessionStore) -> None:
        team, other = await store.create_team(_team()), await store.create_team(_team())
        agent, agent2 = await store.create_agent(_agent(team.id, "a")), await store.create_agent(_agent(team.id, "b"))
        stranger = await store.create_agent(_agent(other.id))
        created = []
        for minute, owner in ((1, agent), (3, agent2), (2, agent), (0, stranger)):
            at = _EPOCH + timedelta(minutes=minute)
            session = Session(id=new_id("ses"), team_id=owner.team_id, agent_id=owner.id, created_at=at)
            created.append(await store.create_session(session))
        first, second, third, foreign = _pluck(created, "id")
        assert _pluck(await store.list_sessions(team_id=team.id), "id") == [second, third, first]
        assert _pluck(await store.list_sessions(), "id") == [second, third, first, foreign]
        assert _pluck(await store.list_sessions(agent_id=agent.id), "id") == [third, first]
        assert await store.list_sessions(team_id=other.id, agent_id=agent.id) == []
        assert _pluck(await store.list_sessions(team_id=team.id, limit=1, offset=1), "id") == [third]
        # The reconciler's questions: sessions in a state, and those not updated since a moment.
        await store.update_session(first, status="ready")
        await anyio.sleep(0.05)
        cutoff = datetime.now(UTC)
        await anyio.sleep(0.05)
        await store.update_session(third, status="suspended")
        assert _pluck(await store.list_sessions(status=["ready", "suspended"]), "id") == [third, first]
        assert _pluck(await store.list_sessions(status=["ready"], team_id=team.id), "id") == [first]
        assert await store.list_sessions(status=[]) == []
        assert _pluck(await store.list_sessions(updated_before=_EPOCH + timedelta(days=1)), "id") == []
        updated = _pluck(await store.list_sessions(updated_before=cutoff), "id")
        assert set(updated) == {first, second, foreign}  # not third: it changed after the cutoff
        assert _pluck(await store.list_sessions(status=["ready"], updated_before=cutoff), "id") == [first]

    async def test_update_session(self, store: SessionStore) -> None:
        session = await _new_session(store, updated_at=_EPOCH)
        changes: dict[str, Any] = {"status": "ready", "status_detail": "up", "title": "T"}
        changes |= {"sandbox_name": "sb", "native_session_id": "n", "sandbox_generation": 3}
        updated = await store.update_session(session.id, **changes)
        assert updated.updated_at > _EPOCH
        assert msgspec.structs.replace(updated, updated_at=_EPOCH) == msgspec.structs.replace(session, **changes)
        assert await store.get_session(session.id) == updated
        cleared = await store.update_session(session.id, sandbox_name=None)
        assert (cleared.sandbox_name, cleared.status) == (None, "ready")
        assert _utc_aware(updated.updated_at, cleared.updated_at)
        with pytest.raises(InvalidInput):
            await store.update_session(session.id, sandbox_generation=-1)
        for field in ("agent_id", "last_seq", "team_id", "created_at", "bogus"):
            with pytest.raises(InvalidInput):
                await store.update_session(session.id, **{field: "x"})
        assert await store.get_session(session.id) == cleared
        with pytest.raises(NotFound):
            await store.update_session("ses_missing", status="ready")

    async def test_delete_session_removes_turns_and_events(self, store: SessionStore) -> None:
        session, kept = await _new_session(store), await _new_session(store)
        turn, _ = await _start(store, session.id)
        await store.append_events(session.id, [ev.TextDelta(text="a"), ev.TurnEnd()], turn_id=turn.id)
        await store.append_events(kept.id, [ev.TextDelta(text="kept")])
        with pytest.raises(NotFound):
            await store.delete_session(session.id, team_id=kept.team_id)
        await store.delete_session(session.id, team_id=session.team_id)
        with pytest.raises(NotFound):
            await store.get_session(session.id)
        with pytest.raises(NotFound):
            await store.get_turn(turn.id)
        with pytest.raises(NotFound):
            await store.delete_session(session.id)
        assert (await store.list_turns(session.id), await store.read_events(session.id)) == ([], [])
        assert _texts(await store.read_events(kept.id)) == ["kept"]

    # the event log
    async def test_every_event_type_round_trips(self, store: SessionStore) -> None:
        assert {type(event) for event in EVERY_EVENT} == set(get_args(ev.SessionEvent)), "EVERY_EVENT misses a type"
        session = await _new_session(store)
        records = await store.append_events(session.id, EVERY_EVENT, turn_id="turn_x")
        assert [r.seq for r in records] == list(range(1, len(EVERY_EVENT) + 1))
        assert [r.event for r in records] == list(EVERY_EVENT)
        assert {(r.session_id, r.turn_id) for r in records} == {(session.id, "turn_x")}
        read = await store.read_events(session.id)
        assert _without_at(read) == _without_at(records)
        assert all(_utc_aware(r.at) for r in read)
        assert (await store.get_session(session.id)).last_seq == len(EVERY_EVENT)

    async def test_appends_continue_the_seqs(self, store: SessionStore) -> None:
        session = await _new_session(store)
        first = await store.append_events(session.id, [ev.TextDelta(text="a")])
        assert await store.append_events(session.id, []) == []
        second = await store.append_events(session.id, [ev.TextDelta(text="b"), ev.TextDelta(text="c")])
        assert [r.seq for r in first + second] == [1, 2, 3]
        assert first[0].turn_id is None
        assert _texts(await store.read_events(session.id)) == ["a", "b", "c"]
        with pytest.raises(NotFound):
            await store.append_events("ses_missing", [ev.TextDelta(text="x")])

    async def test_read_events_after_and_limit(self, store: SessionStore) -> None:
        session = await _new_session(store)
        await store.append_events(session.id, [ev.TextDelta(text=str(i)) for i in range(1, 11)])
        assert [r.seq for r in await store.read_events(session.id, after=3, limit=4)] == [4, 5, 6, 7]
        assert [r.seq for r in await store.read_events(session.id, after=8)] == [9, 10]
        assert [r.seq for r in await store.read_events(session.id, limit=2)] == [1, 2]
        assert await store.read_events(session.id, after=10) == []

    async def test_concurrent_appends_get_every_seq_once(self, store: SessionStore) -> None:
        session = await _new_session(store)
        batches: list[list[ev.EventRecord]] = []

        async def append(task: int) -> None:
            events = [ev.TextDelta(text=f"{task}:{i}") for i in range(10)]
            batches.append(await store.append_events(session.id, events))

        async with anyio.create_task_group() as tasks:
            for task in range(20):
                tasks.start_soon(append, task)
        assert sorted(r.seq for batch in batches for r in batch) == list(range(1, 201))
        for batch in batches:  # one append's events are contiguous and in order
            assert [r.seq for r in batch] == list(range(batch[0].seq, batch[0].seq + 10))
        log = await store.read_events(session.id, limit=1000)
        assert [r.seq for r in log] == list(range(1, 201))
        assert {r.seq: r.event for batch in batches for r in batch} == {r.seq: r.event for r in log}
        assert (await store.get_session(session.id)).last_seq == 200

    async def test_concurrent_turns_and_appends_share_one_sequence(self, store: SessionStore) -> None:
        session = await _new_session(store)
        async with anyio.create_task_group() as tasks:
            for index in range(10):
                tasks.start_soon(_start, store, session.id, str(index))
                tasks.start_soon(store.append_events, session.id, [ev.TextDelta(text="x"), ev.TextDelta(text="y")])
        log = await store.read_events(session.id)
        assert [r.seq for r in log] == list(range(1, 31))
        user_seqs = [r.seq for r in log if isinstance(r.event, ev.UserMessage)]
        assert sorted(t.user_seq for t in await store.list_turns(session.id)) == user_seqs
        assert len(user_seqs) == 10

    # text
    async def test_text_with_a_nul_character_is_invalid_input(self, store: SessionStore) -> None:
        # PostgreSQL's text cannot hold NUL: every store refuses it, so the API answers alike on each.
        team = await store.create_team(_team())
        refused = (
            lambda: store.create_agent(_agent(team.id, "a\x00b")),
            lambda: store.create_agent(_agent(team.id, prompt="x\x00")),
            lambda: store.get_agent("agt_\x00"),
            lambda: store.find_agent("a\x00", team_id=team.id),
            lambda: store.create_team(_team("t\x00")),
        )
        for call in refused:
            with pytest.raises(InvalidInput, match="NUL"):
                await call()
        session = await _new_session(store)
        # Inside JSON (options, events) a NUL is escaped, so it is kept.
        agent = await store.create_agent(_agent(team.id, options={"k": "v\x00"}))
        assert (await store.get_agent(agent.id)).options == {"k": "v\x00"}
        await store.append_events(session.id, [ev.TextDelta(text="a\x00b")])
        assert [r.event for r in await store.read_events(session.id)] == [ev.TextDelta(text="a\x00b")]
