"""SqlStore against the SessionStore conformance suite (SQLite and PostgreSQL), and what is SQL-specific."""

from __future__ import annotations

import asyncio
import os
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.lowlevel
import asyncpg
import pluggy
import pytest

import lap_sql
from lap_core import hookspecs
from lap_core.errors import InvalidInput, StoreError
from lap_core.events import TextDelta, UserMessage
from lap_core.models import Agent, Session, Team, TurnRecord, new_id
from lap_core.testing import StoreConformance
from lap_sql import SqlStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from lap_core.store import SessionStore

PG_URL = os.environ.get("DATABASE_URL_TEST", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def _with_search_path(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&search_path={schema}" if parts.query else f"search_path={schema}"
    return urlunsplit(parts._replace(query=query))


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(_with_database(PG_URL, "postgres"), timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """Create a database of our own for this run (dropped at the end); yield its URL."""
    name = f"lap_test_{secrets.token_hex(4)}"
    try:
        asyncio.run(_admin(f"CREATE DATABASE {name}"))
    except (OSError, asyncpg.PostgresError) as exc:
        reason = f"PostgreSQL is not reachable at DATABASE_URL_TEST={PG_URL}: {exc}"
        if os.environ.get("LAP_REQUIRE_ALL_TIERS"):
            pytest.fail(reason)
        pytest.skip(reason)
    yield _with_database(PG_URL, name)
    asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
async def pg_url(pg_database: str) -> AsyncIterator[str]:
    """Yield the URL of a fresh, empty schema in the run's database (via `search_path`)."""
    schema = f"t_{secrets.token_hex(6)}"
    connection = await asyncpg.connect(pg_database)
    try:
        await connection.execute(f"CREATE SCHEMA {schema}")
        yield _with_search_path(pg_database, schema)
        await connection.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await connection.close()


class TestSqliteStore(StoreConformance):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SessionStore]:
        async with SqlStore(f"sqlite:///{tmp_path / 'lap.db'}") as store:
            assert await store.migrate() == ["0001_initial"]
            yield store


@pytest.mark.postgres
class TestPostgresStore(StoreConformance):
    @pytest.fixture
    async def store(self, pg_url: str) -> AsyncIterator[SessionStore]:
        async with SqlStore(pg_url) as store:
            assert await store.migrate() == ["0001_initial"]
            yield store


async def _session(store: SessionStore) -> Session:
    team = await store.create_team(Team(id=new_id("team"), name=new_id("name")))
    agent = await store.create_agent(Agent(id=new_id("agt"), team_id=team.id, name="a", harness="h", model="m"))
    return await store.create_session(Session(id=new_id("ses"), team_id=team.id, agent_id=agent.id))


async def _append_from(stores: list[SqlStore], session_id: str, tasks_per_store: int) -> list[int]:
    seqs: list[int] = []

    async def append(store: SqlStore, task: int) -> None:
        records = await store.append_events(session_id, [TextDelta(text=f"{task}.{i}") for i in range(10)])
        seqs.extend(record.seq for record in records)

    async with anyio.create_task_group() as group:
        for index in range(tasks_per_store):
            for store in stores:
                group.start_soon(append, store, index)
    return seqs


@pytest.mark.postgres
@pytest.mark.anyio
async def test_two_pools_append_to_one_session(pg_url: str) -> None:
    async with SqlStore(pg_url) as first, SqlStore(pg_url) as second:
        await first.migrate()
        session = await _session(first)
        seqs = await _append_from([first, second], session.id, tasks_per_store=10)
        assert sorted(seqs) == list(range(1, 201))
        log = await second.read_events(session.id)
        assert [record.seq for record in log] == list(range(1, 201))
        assert (await first.get_session(session.id)).last_seq == 200


@pytest.mark.postgres
@pytest.mark.anyio
async def test_concurrent_migrate_applies_once(pg_url: str) -> None:
    async with SqlStore(pg_url) as first, SqlStore(pg_url) as second:
        with pytest.raises(StoreError, match="not migrated"):
            await first.check()
        results: list[list[str]] = []

        async def migrate(store: SqlStore) -> None:
            results.append(await store.migrate())

        async with anyio.create_task_group() as group:
            group.start_soon(migrate, first)
            group.start_soon(migrate, second)
        assert sorted(results) == [[], ["0001_initial"]]
        await first.check()
        await second.check()


@pytest.mark.anyio
async def test_unreachable_postgres_is_a_store_error_without_the_password() -> None:
    store = SqlStore("postgresql://lap:s3cret-pw@127.0.0.1:1/lap")
    assert "s3cret-pw" not in repr(store)
    with pytest.raises(StoreError) as opened:
        await store.open()
    with pytest.raises(StoreError) as checked:
        await store.check()
    await store.aclose()
    for error in (opened.value, checked.value):
        assert "cannot reach the database at postgresql://lap:***@127.0.0.1:1/lap" in error.message
        assert "s3cret-pw" not in str(error)


@pytest.mark.anyio
async def test_sqlite_check_then_migrate(tmp_path: Path) -> None:
    async with SqlStore(f"sqlite:///{tmp_path / 'lap.db'}") as store:
        with pytest.raises(StoreError, match=r"database is not migrated: run `lap migrate`"):
            await store.check()
        assert await store.migrate() == ["0001_initial"]
        assert await store.migrate() == []
        await store.check()
    assert (tmp_path / "lap.db").exists()


@pytest.mark.anyio
async def test_sqlite_unreachable_file(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    store = SqlStore(f"sqlite:///{tmp_path / 'a-file' / 'lap.db'}")
    with pytest.raises(StoreError, match="cannot reach the database"):
        await store.open()
    await store.aclose()


@pytest.mark.anyio
async def test_sqlite_relative_path_and_parent_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    async with SqlStore("sqlite:///data/dir/lap.db") as store:
        await store.migrate()
    assert (tmp_path / "data" / "dir" / "lap.db").exists()


@pytest.mark.anyio
async def test_stores_of_different_databases_coexist(tmp_path: Path) -> None:
    async with (
        SqlStore(f"sqlite:///{tmp_path / 'a.db'}") as first,
        SqlStore(f"sqlite:///{tmp_path / 'b.db'}") as second,
    ):
        await first.migrate()
        await second.migrate()
        session = await _session(first)
        assert await second.list_teams() == []
        assert await second.list_sessions() == []
        assert (await first.get_session(session.id)).id == session.id


@pytest.mark.anyio
async def test_two_sqlite_stores_append_to_one_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lap.db'}"
    async with SqlStore(url) as first, SqlStore(url) as second:
        await first.migrate()
        session = await _session(first)
        seqs = await _append_from([first, second], session.id, tasks_per_store=5)
        assert sorted(seqs) == list(range(1, 101))


@pytest.mark.anyio
async def test_a_cancelled_append_leaves_the_log_consistent(tmp_path: Path) -> None:
    async with SqlStore(f"sqlite:///{tmp_path / 'lap.db'}") as store:
        await store.migrate()
        session = await _session(store)
        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(store.append_events, session.id, [TextDelta(text="x")] * 3)
            await anyio.lowlevel.checkpoint()
            group.cancel_scope.cancel()
        await store.append_events(session.id, [TextDelta(text="after")])
        log = await store.read_events(session.id)
        assert [record.seq for record in log] == list(range(1, len(log) + 1))
        assert (await store.get_session(session.id)).last_seq == len(log)


@pytest.mark.anyio
async def test_invalid_values_are_invalid_input(tmp_path: Path) -> None:
    async with SqlStore(f"sqlite:///{tmp_path / 'lap.db'}") as store:
        await store.migrate()
        session = await _session(store)
        turn, _ = await store.start_turn(TurnRecord(id=new_id("turn"), session_id=session.id), UserMessage(text="x"))
        bad: list[tuple[str, Any]] = [("status", "sleeping"), ("title", 3)]
        for field, value in bad:
            with pytest.raises(InvalidInput):
                await store.update_session(session.id, **{field: value})
        with pytest.raises(InvalidInput):
            await store.finish_turn(turn.id, "done")
        with pytest.raises(InvalidInput):
            await store.list_agents(limit=-1)
        assert await store.read_events(session.id, limit=0) == []


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://", "sqlite:///", "mysql://x@y/z"])
def test_unusable_urls(url: str) -> None:
    with pytest.raises(InvalidInput):
        SqlStore(url)


def test_the_plugin_registers_the_sql_store() -> None:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(lap_sql)
    [spec] = [spec for specs in manager.hook.lap_session_stores() for spec in specs]
    assert spec.name == "sql"
    assert spec.factory is SqlStore
    assert set(spec.schemes) == {"sqlite", "postgres", "postgresql"}


def test_postgres_scheme_alias() -> None:
    assert repr(SqlStore("postgres://u:pw@db.example:5433/lap")) == "SqlStore('postgres://u:***@db.example:5433/lap')"
