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
import pytest

import lap_sql
from lap_core import (
    Agent,
    InvalidInput,
    Job,
    Session,
    StoreChange,
    StoreError,
    Team,
    TextDelta,
    TurnRecord,
    UserMessage,
    new_id,
)
from lap_core.testing import ApiKeyConformance, JobQueueConformance, StoreConformance, plugin_manager
from lap_sql import SqlStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from lap_core import SessionStore

MIGRATIONS = [
    "0001_initial",
    "0002_jobs",
    "0003_api_keys",
    "0004_busy_policy",
    "0005_client_keys",
    "0006_sandbox_generation",
    "0007_secrets",
    "0008_usage",
    "0009_egress",
    "0010_team_egress",
    "0011_integrations",
]
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


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SessionStore]:
    async with SqlStore(f"sqlite:///{tmp_path / 'lap.db'}") as store:
        assert await store.migrate() == MIGRATIONS
        yield store


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[SessionStore]:
    async with SqlStore(pg_url) as store:
        assert await store.migrate() == MIGRATIONS
        yield store


class TestSqliteStore(StoreConformance):
    @pytest.fixture
    def store(self, sqlite_store: SessionStore) -> SessionStore:
        return sqlite_store


class TestSqliteJobQueue(JobQueueConformance):
    @pytest.fixture
    def store(self, sqlite_store: SessionStore) -> SessionStore:
        return sqlite_store


class TestSqliteApiKeys(ApiKeyConformance):
    @pytest.fixture
    def store(self, sqlite_store: SessionStore) -> SessionStore:
        return sqlite_store


@pytest.mark.postgres
class TestPostgresApiKeys(ApiKeyConformance):
    @pytest.fixture
    def store(self, pg_store: SessionStore) -> SessionStore:
        return pg_store


@pytest.mark.postgres
class TestPostgresStore(StoreConformance):
    @pytest.fixture
    def store(self, pg_store: SessionStore) -> SessionStore:
        return pg_store


@pytest.mark.postgres
class TestPostgresJobQueue(JobQueueConformance):
    @pytest.fixture
    def store(self, pg_store: SessionStore) -> SessionStore:
        return pg_store


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


async def _lease_from(stores: list[SqlStore], queued: dict[str, list[str]], *, finish: bool) -> list[tuple[int, Job]]:
    """Lease from 5 tasks per store until none gets a job; return (store index, job) in lease order.

    With `finish`, each task finishes its job before it leases the next, and no session may have
    two jobs in hand at once.
    """
    leases: list[tuple[int, Job]] = []
    in_hand: set[str | None] = set()

    async def work(index: int, worker_id: str) -> None:
        store = stores[index]
        while (job := await store.lease_job(worker_id, lease_seconds=60)) is not None:
            assert job.session_id not in in_hand, "two jobs of one session leased at once"
            leases.append((index, job))
            if finish:
                in_hand.add(job.session_id)
                await anyio.sleep(0.001)
                in_hand.discard(job.session_id)
                assert await store.finish_job(job.id, worker_id, status="done")

    async with anyio.create_task_group() as group:
        for task in range(5):
            for index in range(len(stores)):
                group.start_soon(work, index, f"store{index}-task{task}")
    every = [job_id for job_ids in queued.values() for job_id in job_ids]
    assert len(leases) == len(every)  # no job leased twice ...
    assert sorted(job.id for _, job in leases) == sorted(every)  # ... and none lost
    for session_id, job_ids in queued.items():  # each session's jobs in the order they were queued
        assert [job.id for _, job in leases if job.session_id == session_id] == job_ids
    return leases


async def _queue_jobs(store: SqlStore, *, sessions: int, jobs_per_session: int) -> dict[str, list[str]]:
    queued: dict[str, list[str]] = {(await _session(store)).id: [] for _ in range(sessions)}
    for _ in range(jobs_per_session):
        for session_id, job_ids in queued.items():  # interleaved: the queue's order is not the sessions'
            job = Job(id=new_id("job"), kind="turn", session_id=session_id)
            await store.start_turn(TurnRecord(id=new_id("turn"), session_id=session_id), UserMessage(text="x"), job=job)
            job_ids.append(job.id)
    return queued


@pytest.mark.parametrize(("sessions", "finish"), [(40, False), (10, True)], ids=["40-sessions-held", "10-sessions"])
@pytest.mark.postgres
@pytest.mark.anyio
async def test_two_pools_lease_40_jobs(pg_url: str, sessions: int, finish: bool) -> None:
    async with SqlStore(pg_url) as first, SqlStore(pg_url) as second:
        await first.migrate()
        queued = await _queue_jobs(first, sessions=sessions, jobs_per_session=40 // sessions)
        leases = await _lease_from([first, second], queued, finish=finish)
        assert {index for index, _ in leases} == {0, 1}  # both pools took part
        jobs = await second.list_jobs(limit=1000)
        assert {job.status for job in jobs} == {"done" if finish else "leased"}
        assert all(job.attempts == 1 for job in jobs)


@pytest.mark.postgres
@pytest.mark.anyio
async def test_a_lease_skips_a_locked_job_without_waiting(pg_url: str) -> None:
    # A lease that waited for the lock would fail after 3 s (a cancel scope cannot: writes are shielded).
    async with SqlStore(f"{pg_url}&lock_timeout=3000") as store:
        await store.migrate()
        [first], [second] = (await _queue_jobs(store, sessions=2, jobs_per_session=1)).values()
        connection = await asyncpg.connect(pg_url)  # another worker, in the middle of leasing `first`
        try:
            async with connection.transaction():
                await connection.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", first)
                job = await store.lease_job("w1", lease_seconds=60)
                assert job is not None
                assert job.id == second
        finally:
            await connection.close()
        assert (await store.get_job(first)).status == "queued"


@pytest.mark.anyio
async def test_two_sqlite_stores_lease_from_one_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lap.db'}"
    async with SqlStore(url) as first, SqlStore(url) as second:
        await first.migrate()
        queued = await _queue_jobs(first, sessions=5, jobs_per_session=4)
        await _lease_from([first, second], queued, finish=True)
        assert {job.status for job in await second.list_jobs()} == {"done"}


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
        assert sorted(results) == [[], MIGRATIONS]
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
        assert await store.migrate() == MIGRATIONS
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
            await store.set_turn_status(turn.id, "done")
        with pytest.raises(InvalidInput):
            await store.list_agents(limit=-1)
        assert await store.read_events(session.id, limit=0) == []


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://", "sqlite:///", "mysql://x@y/z"])
def test_unusable_urls(url: str) -> None:
    with pytest.raises(InvalidInput):
        SqlStore(url)


def test_the_plugin_registers_the_sql_store() -> None:
    manager = plugin_manager(lap_sql)
    [spec] = [spec for specs in manager.hook.lap_session_stores() for spec in specs]
    assert spec.name == "sql"
    assert spec.factory is SqlStore
    assert set(spec.schemes) == {"sqlite", "postgres", "postgresql"}


def test_postgres_scheme_alias() -> None:
    assert repr(SqlStore("postgres://u:pw@db.example:5433/lap")) == "SqlStore('postgres://u:***@db.example:5433/lap')"


@pytest.mark.postgres
@pytest.mark.anyio
async def test_postgres_tells_other_processes_what_changed(pg_url: str) -> None:
    async with SqlStore(pg_url) as writer, SqlStore(pg_url) as watcher:
        await writer.migrate()
        session = await _session(writer)
        seen: list[StoreChange] = []
        async with anyio.create_task_group() as tasks:

            async def watch() -> None:
                async for change in watcher.watch():
                    seen.append(change)

            tasks.start_soon(watch)
            with anyio.fail_after(10):
                while len(seen) < 2:  # the first changes after connecting say "re-read everything"
                    await anyio.sleep(0.01)
                assert seen == [StoreChange(kind="events"), StoreChange(kind="jobs")]
                await writer.append_events(session.id, [TextDelta(text="x")])
                await writer.start_turn(
                    TurnRecord(id="turn_w", session_id=session.id),
                    UserMessage(text="hi"),
                    job=Job(id="job_w", kind="turn", session_id=session.id, payload={}),
                )
                expected = [
                    StoreChange(kind="events", session_id=session.id),
                    StoreChange(kind="jobs", session_id=session.id),
                ]
                while seen[2:] != [expected[0], expected[0], expected[1]]:
                    await anyio.sleep(0.01)
                # A job of its own queues no event: only the job is told.
                await writer.queue_job(Job(id="job_q", kind="restart", session_id=session.id))
                while len(seen) < 6:
                    await anyio.sleep(0.01)
                await anyio.sleep(0.2)  # room for a stray notification
                assert seen[5:] == [expected[1]]
            tasks.cancel_scope.cancel()
