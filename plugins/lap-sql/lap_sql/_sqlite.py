"""SQLite connections kept open: one writer and a couple of readers per store.

Piccolo's `SQLiteEngine` opens a connection (and its thread) for every query outside a
transaction and for every transaction, and sends `PRAGMA foreign_keys` before every query: some
milliseconds a query. `SQLite` runs piccolo's query strings on connections it opens once, in
`open()`, and sets up once: WAL (readers run during a write), `synchronous=NORMAL` (safe in WAL:
a power cut may lose the last commits, never corrupt the file), foreign keys, and the busy
timeout (another process's write lock).

- The writer runs every transaction (`write_transaction`, `BEGIN IMMEDIATE`), one at a time: the
  caller (`Database.write`) serialises the store's writers and shields them from cancellation.
- A query outside a transaction goes to the least busy reader. Each runs in one call on the
  reader's thread (statement stepped to its end), in autocommit: a reader never holds a read
  transaction between queries, so every query sees what any process committed before it.

Until `open()` (and after `close()`) queries and transactions get connections of their own, as
piccolo's engine does.
"""

from __future__ import annotations

from contextlib import asynccontextmanager, suppress
from operator import attrgetter
from threading import Thread
from typing import TYPE_CHECKING, Any, cast

import aiosqlite
import anyio
from piccolo.engine.sqlite import SQLiteEngine, SQLiteTransaction, TransactionType, dict_factory

from lap_core import InvalidInput

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from piccolo.querystring import QueryString

Rows = list[dict[str, Any]]

SQLITE_READERS = 2
"""Read connections per store (each has a thread, so reads of one store can run in parallel)."""
_SETUP = ("PRAGMA foreign_keys = ON", "PRAGMA synchronous = NORMAL")
NUL_IN_TEXT = "text may not contain NUL characters (\\u0000)"
"""PostgreSQL's text cannot hold them (`_db.translate_errors` says so); SQLite's is refused alike."""


class _Reader:
    __slots__ = ("connection", "queued")

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self.connection = connection
        self.queued = 0
        """Queries sent and not yet answered."""


class SQLite(SQLiteEngine):
    """A piccolo SQLite engine on long-lived connections; see the module docstring."""

    def __init__(self, path: str, *, timeout: float) -> None:
        super().__init__(path=path, timeout=timeout)  # `timeout` is the connections' busy timeout
        self._open = False
        self._writer: aiosqlite.Connection | None = None
        self._readers: list[_Reader] = []

    async def check_version(self) -> None:
        """Skip piccolo's start-up version check (it only warns); see `_db.check_sqlite_version`."""

    async def _connect(self, *setup: str) -> aiosqlite.Connection:
        connection = aiosqlite.connect(**self.connection_kwargs)
        thread = getattr(connection, "_thread", None)
        if isinstance(thread, Thread):
            thread.daemon = True  # a store nobody closed must not keep the process alive at exit
        # Shielded: a connect cancelled half-way leaves its thread to answer a loop that is gone.
        with anyio.CancelScope(shield=True):
            await connection
        try:
            connection.row_factory = dict_factory  # type: ignore[assignment]  # typed as a class in aiosqlite
            for statement in setup + _SETUP:
                await connection.execute(statement)
        except BaseException:
            with anyio.CancelScope(shield=True), suppress(Exception):
                await connection.close()
            raise
        return connection

    async def open(self) -> None:
        """Open the writer (which puts the file in WAL mode, a setting stored in the file) and the readers."""
        if self._open:
            return
        writer = await self._connect("PRAGMA journal_mode = WAL")
        readers: list[aiosqlite.Connection] = []
        try:
            for _ in range(SQLITE_READERS):
                readers.append(await self._connect())
        except BaseException:
            await _close([writer, *readers])
            raise
        self._writer, self._readers, self._open = writer, [_Reader(c) for c in readers], True

    async def close(self) -> None:
        """Close the connections (a query already sent to one finishes first)."""
        connections = [reader.connection for reader in self._readers]
        if self._writer is not None:
            connections.append(self._writer)
        self._open, self._writer, self._readers = False, None, []
        await _close(connections)

    async def _run(self, sql: str, args: Sequence[Any]) -> Rows:
        if any(isinstance(arg, str) and "\x00" in arg for arg in args):
            raise InvalidInput(NUL_IN_TEXT)
        transaction = self.current_transaction.get()
        if transaction is not None:
            return cast("Rows", await transaction.connection.execute_fetchall(sql, args))
        if not self._readers:
            return cast("Rows", await self._run_in_new_connection(sql, list(args)))
        reader = min(self._readers, key=attrgetter("queued"))
        reader.queued += 1
        try:
            return cast("Rows", await reader.connection.execute_fetchall(sql, args))
        finally:
            reader.queued -= 1

    async def run_querystring(self, querystring: QueryString, in_pool: bool = False) -> Rows:
        """Run a piccolo query string: in the current transaction, else on a reader."""
        sql, args = querystring.compile_string(engine_type=self.engine_type)
        return await self._run(sql, args)

    async def run_ddl(self, ddl: str, in_pool: bool = False) -> Rows:
        """Run one statement: in the current transaction, else on a reader."""
        return await self._run(ddl, ())

    @asynccontextmanager
    async def write_transaction(self) -> AsyncIterator[None]:
        """Run the block in a `BEGIN IMMEDIATE` transaction on the writer.

        The caller runs one at a time and shields it from cancellation (see `Database.write`).
        """
        if not self._open:
            async with self.transaction(transaction_type=TransactionType.immediate):
                yield
            return
        if self._writer is None:  # dropped by a failed rollback (`_rollback`)
            self._writer = await self._connect()
        connection = self._writer
        transaction = SQLiteTransaction(engine=self, transaction_type=TransactionType.immediate)
        transaction.connection = connection
        await connection.execute("BEGIN IMMEDIATE")
        token = self.current_transaction.set(transaction)
        try:
            yield
            await connection.execute("COMMIT")
        except BaseException:
            await self._rollback(connection)
            raise
        finally:
            self.current_transaction.reset(token)

    async def _rollback(self, connection: aiosqlite.Connection) -> None:
        """Roll back what a failed transaction left; drop the writer if even that fails.

        SQLite rolls some errors back itself; a writer stuck in a transaction would hold the
        database's write lock, so it is closed (which rolls back) and the next write opens another.
        """
        try:
            if connection.in_transaction:
                await connection.execute("ROLLBACK")
        except Exception:
            if self._writer is connection:
                self._writer = None
            await _close([connection])


async def _close(connections: list[aiosqlite.Connection]) -> None:
    with anyio.CancelScope(shield=True):
        for connection in connections:
            with suppress(Exception):
                await connection.close()
