"""SqlStore on SQLite keeps its connections open: what that must not change."""

from __future__ import annotations

import sqlite3
import sys
import threading
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

from lap_core import (
    Agent,
    Conflict,
    Job,
    NotFound,
    Session,
    StoreError,
    Team,
    TextDelta,
    TurnRecord,
    UserMessage,
    new_id,
)
from lap_sql import SqlStore
from lap_sql._sqlite import SQLITE_READERS, SQLite

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'lap.db'}"


@pytest.fixture
async def store(url: str) -> AsyncIterator[SqlStore]:
    async with SqlStore(url) as store:
        await store.migrate()
        yield store


def _engine(store: SqlStore) -> SQLite:
    engine = store._db.engine
    assert isinstance(engine, SQLite)
    return engine


async def _session(store: SqlStore) -> Session:
    team = await store.create_team(Team(id=new_id("team"), name=new_id("name")))
    agent = await store.create_agent(Agent(id=new_id("agt"), team_id=team.id, name="a", harness="h", model="m"))
    return await store.create_session(Session(id=new_id("ses"), team_id=team.id, agent_id=agent.id))


async def test_reads_see_what_other_processes_commit(store: SqlStore, url: str, tmp_path: Path) -> None:
    session = await _session(store)
    assert (await store.get_session(session.id)).title == ""
    script = "import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute(sys.argv[2], sys.argv[3:]).connection.commit()"
    sql = "UPDATE sessions SET title = ? WHERE id = ?"
    for title in ("one", "two"):
        await anyio.run_process([sys.executable, "-c", script, str(tmp_path / "lap.db"), sql, title, session.id])
        assert (await store.get_session(session.id)).title == title
    async with SqlStore(url) as other:
        await other.append_events(session.id, [TextDelta(text="x")])
        assert [record.seq for record in await store.read_events(session.id)] == [1]
        await store.update_session(session.id, title="three")
        assert (await other.get_session(session.id)).title == "three"


async def test_timestamps_come_back_aware(store: SqlStore) -> None:
    session = await _session(store)
    [record] = await store.append_events(session.id, [TextDelta(text="x")])
    assert (await store.get_session(session.id)).created_at == session.created_at
    [read] = await store.read_events(session.id)
    assert read.at == record.at
    assert read.at.utcoffset() is not None
    [row] = await store._db.engine.run_ddl("SELECT created_at FROM sessions")  # piccolo's TIMESTAMPTZ converter
    assert row["created_at"] == session.created_at
    assert row["created_at"].utcoffset() is not None


async def test_a_failed_write_rolls_back_all_of_it(store: SqlStore, url: str) -> None:
    session = await _session(store)
    job = await store.queue_job(Job(id=new_id("job"), kind="turn", session_id=session.id))
    turn = TurnRecord(id=new_id("turn"), session_id=session.id)
    with pytest.raises(Conflict):  # the seq was claimed and the turn inserted before the job's id clashed
        await store.start_turn(turn, UserMessage(text="x"), job=Job(id=job.id, kind="turn", session_id=session.id))
    with pytest.raises(NotFound):
        await store.get_turn(turn.id)
    assert (await store.get_session(session.id)).last_seq == 0
    with pytest.raises(NotFound):  # raised inside the transaction
        await store.delete_session("ses_missing")
    # The writer is back in autocommit: another connection can take the write lock at once.
    connection = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
    finally:
        connection.close()
    assert (await store.append_events(session.id, [TextDelta(text="x")]))[0].seq == 1


async def test_a_foreign_key_violation_is_a_store_error(store: SqlStore) -> None:
    values = "('ses_missing', 1, 'x', '2020-01-01', '{}')"

    async def insert() -> None:
        async with store._db.write():
            await store._db.engine.run_ddl(f"INSERT INTO events (session_id, seq, type, at, data) VALUES {values}")

    with pytest.raises(StoreError, match="FOREIGN KEY"):
        await insert()


async def test_a_writer_that_cannot_roll_back_is_replaced(store: SqlStore, url: str) -> None:
    engine = _engine(store)
    writer = engine._writer
    assert writer is not None
    execute = writer.execute

    def failing(sql: str, *args: Any) -> Any:
        if sql == "ROLLBACK":
            raise sqlite3.OperationalError("disk I/O error")
        return execute(sql, *args)

    writer.execute = failing  # type: ignore[method-assign]
    with pytest.raises(NotFound):
        await store.delete_session("ses_missing")
    assert engine._writer is None  # closed, which rolled back and let go of the write lock
    session = await _session(store)
    assert engine._writer not in (None, writer)
    async with SqlStore(url) as other:
        await other.update_session(session.id, title="t")


def _connections() -> int:
    """Count the open aiosqlite connections (each has a thread)."""
    return sum("_connection_worker_thread" in thread.name for thread in threading.enumerate())


async def _settled_connections() -> int:
    """Count them once the threads of earlier tests' one-off connections have ended."""
    count = _connections()
    for _ in range(50):
        await anyio.sleep(0.02)
        if (now := _connections()) == count:
            return now
        count = now
    return count


async def test_connections_are_opened_once_and_closed(url: str) -> None:
    before = await _settled_connections()
    async with SqlStore(url) as store:
        await store.migrate()
        assert _connections() == before + 1 + SQLITE_READERS
        session = await _session(store)
        for _ in range(20):
            await store.get_session(session.id)
            await store.append_events(session.id, [TextDelta(text="x")])
        assert _connections() == before + 1 + SQLITE_READERS
    assert _connections() == before


async def test_cancelled_reads_leave_the_readers_usable(store: SqlStore) -> None:
    session = await _session(store)
    await store.append_events(session.id, [TextDelta(text=str(i)) for i in range(500)])
    async with anyio.create_task_group() as group:
        for _ in range(10):
            group.start_soon(store.read_events, session.id)
            group.start_soon(store.get_session, session.id)
        await anyio.lowlevel.checkpoint()
        group.cancel_scope.cancel()
    assert [reader.queued for reader in _engine(store)._readers] == [0] * SQLITE_READERS
    assert len(await store.read_events(session.id)) == 500


async def test_a_store_never_opened_still_works(url: str) -> None:
    store = SqlStore(url)
    await store.migrate()
    session = await _session(store)
    assert (await store.append_events(session.id, [TextDelta(text="x")]))[0].seq == 1
    assert (await store.get_session(session.id)).last_seq == 1
    await store.aclose()
