"""One store's database: its engine and tables, connections, transactions and migrations."""

from __future__ import annotations

from contextlib import asynccontextmanager, nullcontext, suppress
from typing import TYPE_CHECKING, Any

import anyio
from piccolo.engine.postgres import PostgresEngine

from lap_core import StoreError, utcnow
from lap_sql._db import (
    NOT_MIGRATED,
    build_engine,
    check_sqlite_version,
    dialect_of,
    redact,
    sqlite_path,
    translate_errors,
)
from lap_sql._schema import MIGRATIONS_TABLE, Tables, migrations
from lap_sql._sqlite import SQLite

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from lap_core import LapError

PG_POOL_SIZE = 10
PG_CLOSE_TIMEOUT = 10.0
"""Seconds `aclose()` waits for borrowed connections before terminating the pool."""
MIGRATION_LOCK_KEY = 0x1A9_5E55_0001
"""The PostgreSQL advisory lock that serialises `migrate()` across processes ("LAP sessions", 1)."""


async def _no_reset(_connection: object) -> None:
    """Skip asyncpg's reset query (a round trip) each time a connection goes back to the pool.

    The store leaves no session state on pooled connections (no SET, LISTEN, cursors or session
    advisory locks), and asyncpg still rolls back a transaction left open before calling this.
    """


class Database:
    """A piccolo engine and the tables bound to it, with LAP's transaction discipline.

    Writers take `write()`: one transaction, shielded from cancellation so a cancelled caller
    never leaves a connection mid-transaction. On SQLite, writers of this process also queue on
    an anyio lock (SQLite has one writer at a time; waiting here is cheaper than its busy loop),
    and the transaction is `BEGIN IMMEDIATE` so two writers never deadlock upgrading read locks.
    SQLite's connections stay open between queries (see `lap_sql._sqlite`).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = dialect_of(url)
        self.engine = build_engine(url)
        self.tables = Tables(self.engine)
        self._write_lock = anyio.Lock() if self.dialect == "sqlite" else None
        self._open = False

    @property
    def dsn(self) -> str:
        """The asyncpg connection string (PostgreSQL only)."""
        assert isinstance(self.engine, PostgresEngine)
        return str(self.engine.config["dsn"])

    @property
    def display_url(self) -> str:
        """The URL without its password."""
        return redact(self.url)

    async def open(self) -> None:
        """Connect: open PostgreSQL's pool, or create SQLite's file (in WAL mode) and open its connections."""
        if self._open:
            return
        with translate_errors(self.url):
            if isinstance(self.engine, PostgresEngine):
                # No floor of idle connections: while the server is down, asyncpg would keep trying to
                # restore it (a logged traceback each time); the first query after that reconnects.
                await self.engine.start_connection_pool(min_size=0, max_size=PG_POOL_SIZE, reset=_no_reset)
                pool = self.engine.pool
                assert pool is not None
                try:
                    async with pool.acquire():  # fail now if the server cannot be reached
                        pass
                except BaseException:
                    await self.engine.close_connection_pool()
                    raise
            else:
                check_sqlite_version()
                path = sqlite_path(self.url)
                await anyio.Path(path).parent.mkdir(parents=True, exist_ok=True)
                await self.engine.open()
        self._open = True

    async def aclose(self) -> None:
        """Close the pool (PostgreSQL) or the connections (SQLite)."""
        self._open = False
        if isinstance(self.engine, SQLite):
            assert self._write_lock is not None
            with anyio.CancelScope(shield=True):
                async with self._write_lock:  # no write is left halfway
                    await self.engine.close()
            return
        if not isinstance(self.engine, PostgresEngine) or self.engine.pool is None:
            return  # piccolo's close_connection_pool() warns without a pool, an error under `-W error`
        pool, self.engine.pool = self.engine.pool, None
        # A connection a failed commit never gave back would make `close()` wait forever.
        with anyio.CancelScope(shield=True), anyio.move_on_after(PG_CLOSE_TIMEOUT) as waited:
            await pool.close()
        if waited.cancelled_caught:
            pool.terminate()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[None]:
        """Translate driver errors of the queries run inside."""
        with translate_errors(self.url):
            yield

    @asynccontextmanager
    async def write(
        self, *, conflict: str = "", foreign_key: LapError | None = None, one_statement: bool = False
    ) -> AsyncIterator[None]:
        """Run the block in one transaction; see the class docstring.

        Unique violations become `Conflict(conflict)`, foreign-key violations `foreign_key`. With
        `one_statement` (the block runs a single statement, atomic on its own) PostgreSQL sends no
        BEGIN and COMMIT, two round trips fewer.
        """
        async with self._write_lock or nullcontext():
            with anyio.CancelScope(shield=True), translate_errors(self.url, conflict=conflict, foreign_key=foreign_key):
                if isinstance(self.engine, SQLite):
                    async with self.engine.write_transaction():
                        yield
                elif one_statement:
                    yield
                else:
                    async with self._transaction():
                        yield

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        """piccolo's transaction, made whole when COMMIT or ROLLBACK fails (the server went away).

        piccolo then skips returning the connection and resetting its current-transaction context
        variable: the task would go on using the dead transaction for good ("connection has been
        released back to the pool"), and the pool would lose the connection.
        """
        engine = self.engine
        assert isinstance(engine, PostgresEngine)
        before = engine.current_transaction.get()
        transaction = engine.transaction()
        try:
            async with transaction:
                yield
        finally:
            if engine.current_transaction.get() is not before:
                engine.current_transaction.set(before)
                connection = getattr(transaction, "connection", None)
                if connection is not None and engine.pool is not None:
                    with suppress(Exception):
                        await engine.pool.release(connection, timeout=1)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        """Run one PostgreSQL statement (`$n` parameters) in the current transaction, else on its own.

        Skips piccolo's query building: the event log's hot path.
        """
        engine = self.engine
        assert isinstance(engine, PostgresEngine)
        transaction = engine.current_transaction.get()
        if transaction is not None:
            return await transaction.connection.fetch(sql, *args)  # type: ignore[no-any-return]
        if engine.pool is None:  # not opened: a connection of its own, as piccolo does
            connection = await engine.get_new_connection()
            try:
                return await connection.fetch(sql, *args)  # type: ignore[no-any-return]
            finally:
                await connection.close()
        async with engine.pool.acquire() as connection:
            return await connection.fetch(sql, *args)  # type: ignore[no-any-return]

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Run `sql` once per row in the current transaction (`$n` parameters on PostgreSQL, `?` on SQLite)."""
        transaction = self.engine.current_transaction.get()
        assert transaction is not None, "executemany() runs in write()"
        await transaction.connection.executemany(sql, rows)

    async def _applied(self) -> set[str] | None:
        """Return the names of the applied migrations, or None if `lap_migrations` does not exist."""
        if self.dialect == "sqlite":
            query = "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'lap_migrations'"
        else:
            query = "SELECT to_regclass('lap_migrations') AS name"
        rows = await self.engine.run_ddl(query)
        if not rows or rows[0]["name"] is None:
            return None
        return {row["name"] for row in await self.tables.migrations.select(self.tables.migrations.name)}

    async def migrate(self) -> list[str]:
        """Apply the pending migrations in one transaction; return their names.

        Concurrent callers are serialised: by an advisory lock held until commit on PostgreSQL,
        by `BEGIN IMMEDIATE` (one writer at a time) on SQLite. The loser finds nothing to do.
        """
        applied_now: list[str] = []
        async with self.write():
            if self.dialect == "postgres":
                await self.engine.run_ddl(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
            await self.engine.run_ddl(MIGRATIONS_TABLE)
            done = await self._applied() or set()
            for name, statements in migrations(self.dialect):
                if name in done:
                    continue
                for statement in statements:
                    await self.engine.run_ddl(statement)
                await self.tables.migrations.insert(self.tables.migrations(name=name, applied_at=utcnow()))
                applied_now.append(name)
        return applied_now

    async def check(self) -> None:
        """Raise `StoreError` unless the database is reachable and every migration is applied."""
        async with self.read():
            done = await self._applied()
        pending = [name for name, _ in migrations(self.dialect) if name not in (done or set())]
        if pending:
            raise StoreError(NOT_MIGRATED, details={"pending": pending, "database": self.display_url})
