"""The turn half of `StoreConformance`: turns, their user messages, the busy check and abort flags."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
import msgspec
import pytest

from lap_core import _events as ev
from lap_core._errors import Conflict, NotFound
from lap_core._models import TurnRecord, new_id
from lap_core.testing._base import _EPOCH, StoreSuite, _new_session, _start, _utc_aware, _without_at

if TYPE_CHECKING:
    from lap_core._store import SessionStore


class TurnTests(StoreSuite):
    """Tests the turn methods of `SessionStore` (part of `StoreConformance`)."""

    async def test_start_turn_appends_the_user_message(self, store: SessionStore) -> None:
        session = await _new_session(store)
        await store.append_events(session.id, [ev.Status(phase="sandbox")])
        turn = TurnRecord(id=new_id("turn"), session_id=session.id, created_at=_EPOCH)
        message = ev.UserMessage(text="hello")
        stored, record = await store.start_turn(turn, message)
        assert stored == msgspec.structs.replace(turn, user_seq=2)
        assert (record.session_id, record.seq, record.turn_id, record.event) == (session.id, 2, turn.id, message)
        got = await store.get_turn(turn.id)
        assert got == stored
        assert (got.status, got.finished_at) == ("queued", None)
        assert _utc_aware(record.at, got.created_at)
        assert _without_at(await store.read_events(session.id, after=1)) == _without_at([record])
        assert (await store.get_session(session.id)).last_seq == 2
        after = await store.append_events(session.id, [ev.TextDelta(text="hi")], turn_id=turn.id)
        assert [(r.seq, r.turn_id) for r in after] == [(3, turn.id)]
        lost = TurnRecord(id=new_id("turn"), session_id="ses_missing")
        with pytest.raises(NotFound):
            await store.start_turn(lost, ev.UserMessage(text="hello"))
        with pytest.raises(NotFound):
            await store.get_turn(lost.id)
        assert await store.list_turns("ses_missing") == []

    async def test_start_turn_if_idle(self, store: SessionStore) -> None:
        session = await _new_session(store)
        message = ev.UserMessage(text="now")

        async def start_if_idle() -> TurnRecord:
            return (
                await store.start_turn(TurnRecord(id=new_id("turn"), session_id=session.id), message, if_idle=True)
            )[0]

        first = await start_if_idle()
        with pytest.raises(Conflict):
            await start_if_idle()  # queued
        await store.set_turn_status(first.id, "running")
        with pytest.raises(Conflict):
            await start_if_idle()
        assert await store.list_turns(session.id) == [await store.get_turn(first.id)]
        assert len(await store.read_events(session.id)) == 1  # the refused messages were not stored
        await store.set_turn_status(first.id, "failed")
        second = await start_if_idle()
        await store.set_turn_status(second.id, "completed")
        # Racing on an idle session: exactly one wins.
        results: list[object] = []

        async def race() -> None:
            try:
                results.append(await start_if_idle())
            except Conflict as error:
                results.append(error)

        async with anyio.create_task_group() as tasks:
            for _ in range(5):
                tasks.start_soon(race)
        assert sum(isinstance(result, TurnRecord) for result in results) == 1
        assert len(await store.list_turns(session.id)) == 3

    async def test_request_abort(self, store: SessionStore) -> None:
        session, other = await _new_session(store), await _new_session(store)
        assert await store.request_abort(session.id) == []
        assert await store.request_abort(session.id, pending=True) == []
        done, _ = await _start(store, session.id)
        await store.set_turn_status(done.id, "completed")
        running, _ = await _start(store, session.id)
        await store.set_turn_status(running.id, "running")
        queued = [(await _start(store, session.id))[0] for _ in range(2)]
        other_turn, _ = await _start(store, other.id)
        flagged = await store.request_abort(session.id)
        assert [t.id for t in flagged] == [running.id]
        assert flagged[0].abort_requested
        assert flagged[0] == await store.get_turn(running.id)
        assert flagged[0].status == "running"
        assert not (await store.get_turn(queued[0].id)).abort_requested
        everything = await store.request_abort(session.id, pending=True)
        assert [t.id for t in everything] == [running.id, *(t.id for t in queued)]
        assert all(t.abort_requested for t in everything)
        assert not (await store.get_turn(done.id)).abort_requested
        assert not (await store.get_turn(other_turn.id)).abort_requested
        with pytest.raises(NotFound):
            await store.request_abort("ses_missing")

    async def test_list_turns_oldest_first(self, store: SessionStore) -> None:
        session, other = await _new_session(store), await _new_session(store)
        started = []
        for index in range(3):
            turn = TurnRecord(id=new_id("turn"), session_id=session.id, created_at=_EPOCH + timedelta(seconds=index))
            started.append((await store.start_turn(turn, ev.UserMessage(text=str(index))))[0])
        await _start(store, other.id)
        assert await store.list_turns(session.id) == started

    async def test_set_turn_status(self, store: SessionStore) -> None:
        session = await _new_session(store)
        turn, _ = await _start(store, session.id)
        running = await store.set_turn_status(turn.id, "running")
        assert (running.status, running.finished_at) == ("running", None)
        for status in ("completed", "failed", "aborted"):
            done = await store.set_turn_status(turn.id, status)
            assert done.status == status
            assert _utc_aware(done.finished_at)
            assert await store.get_turn(turn.id) == done
            assert msgspec.structs.replace(done, status="queued", finished_at=None) == turn
        with pytest.raises(NotFound):
            await store.set_turn_status("turn_missing", "completed")

    async def test_client_keys_are_unique_per_session(self, store: SessionStore) -> None:
        session, other = await _new_session(store), await _new_session(store)
        message = ev.UserMessage(text="once")
        first, _ = await store.start_turn(
            TurnRecord(id=new_id("turn"), session_id=session.id, client_key="k1"), message
        )
        assert first.client_key == "k1"
        assert await store.find_turn(session.id, "k1") == first == await store.get_turn(first.id)
        with pytest.raises(Conflict):
            await store.start_turn(TurnRecord(id=new_id("turn"), session_id=session.id, client_key="k1"), message)
        assert len(await store.read_events(session.id)) == 1  # the refused message was not stored
        # Another session may use the same key; turns without a key never collide.
        await store.start_turn(TurnRecord(id=new_id("turn"), session_id=other.id, client_key="k1"), message)
        for _ in range(2):
            await store.start_turn(TurnRecord(id=new_id("turn"), session_id=session.id), message)
        with pytest.raises(NotFound):
            await store.find_turn(session.id, "k2")
