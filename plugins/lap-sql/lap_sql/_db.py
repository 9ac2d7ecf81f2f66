"""Connecting to the database: URL parsing, piccolo engines, and the translation of driver errors.

Piccolo's engines are built per store (never from a global `piccolo_conf`), so several stores
with different databases can live in one process.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
from piccolo.engine.postgres import PostgresEngine

from lap_core import Conflict, InvalidInput, LapError, NotFound, StoreError
from lap_sql._sqlite import NUL_IN_TEXT, SQLite

if TYPE_CHECKING:
    from collections.abc import Iterator

Dialect = Literal["sqlite", "postgres"]
Failure = Literal["unique", "foreign_key", "not_migrated", "unreachable", "busy", "nul_in_text", "other"]

NOT_MIGRATED = "database is not migrated: run `lap migrate`"
SQLITE_BUSY_TIMEOUT = 30.0
"""Seconds a SQLite connection waits for another process's write lock before giving up."""
PG_CONNECT_TIMEOUT = 10.0
PG_COMMAND_TIMEOUT = 120.0
"""Seconds any one PostgreSQL statement may take (writes are shielded from cancellation, so bound them)."""

# SQLite extended result codes (https://www.sqlite.org/rescode.html).
_SQLITE_UNIQUE = {1555, 2067}  # SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE
_SQLITE_FOREIGN_KEY = 787  # SQLITE_CONSTRAINT_FOREIGNKEY


SQLITE_MIN_VERSION = (3, 35)
"""`UPDATE ... RETURNING`, which hands out event seqs, arrived in SQLite 3.35."""


def check_sqlite_version() -> None:
    """Raise `StoreError` if Python's SQLite library is too old for LAP."""
    if sqlite3.sqlite_version_info < SQLITE_MIN_VERSION:
        wanted = ".".join(map(str, SQLITE_MIN_VERSION))
        raise StoreError(f"SQLite {sqlite3.sqlite_version} is too old: LAP needs {wanted} or later")


class _Postgres(PostgresEngine):
    """A PostgreSQL engine that does no I/O when it is built.

    Piccolo's `Engine.__init__` runs `check_version()` synchronously, which connects to the server
    (blocking, from a constructor) and only warns when it cannot.
    """

    async def check_version(self) -> None:
        """Skip piccolo's blocking version check; `SqlStore.open` connects instead."""

    async def prep_database(self) -> None:
        """Create no extensions (LAP needs none)."""


def redact(url: str) -> str:
    """Return `url` with its password (in the user info or a `password=` parameter) masked, for messages."""
    parts = urlsplit(url)
    if parts.password is None and "password=" not in parts.query:
        return url  # untouched: urlunsplit() would also drop the empty host of `sqlite:////abs/path`
    if parts.password is not None:
        user_info, _, host = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{user_info.split(':', 1)[0]}:***@{host}")
    if "password=" in parts.query:
        query = [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        parts = parts._replace(query=urlencode(query, safe="*"))
    return urlunsplit(parts)


def dialect_of(url: str) -> Dialect:
    """Return the dialect a URL names; raise `InvalidInput` for anything but SQLite and PostgreSQL."""
    scheme = urlsplit(url).scheme.split("+")[0].lower()
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgres", "postgresql"):
        return "postgres"
    raise InvalidInput(f"unsupported database URL {redact(url)!r}: use sqlite:/// or postgresql://")


def sqlite_path(url: str) -> Path:
    """Return the file a `sqlite:` URL names.

    As in SQLAlchemy: `sqlite:///relative/lap.db` is relative to the working directory and
    `sqlite:////absolute/lap.db` (which is what `f"sqlite:///{path}"` gives for an absolute
    path) is absolute. In-memory databases are refused: each connection would have a database of its own.
    """
    rest = url.split(":", 1)[1]
    if not rest.startswith("///"):
        raise InvalidInput(f"invalid SQLite URL {url!r}: expected sqlite:///path/to/lap.db")
    path = rest[3:].split("?", 1)[0]
    if not path or path == ":memory:":
        raise InvalidInput(f"invalid SQLite URL {url!r}: LAP needs a database file, not an in-memory database")
    return Path(path)


def build_engine(url: str) -> SQLite | PostgresEngine:
    """Return a piccolo engine for `url`, doing no I/O."""
    if dialect_of(url) == "sqlite":
        return SQLite(path=str(sqlite_path(url)), timeout=SQLITE_BUSY_TIMEOUT)
    dsn = "postgresql" + url[url.index(":") :]  # asyncpg knows neither `postgres+driver:` nor all aliases
    return _Postgres(config={"dsn": dsn, "timeout": PG_CONNECT_TIMEOUT, "command_timeout": PG_COMMAND_TIMEOUT})


def classify(exc: BaseException) -> Failure | None:
    """Say what kind of database failure `exc` is, or None if it is not a database error."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return "unique"
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return "foreign_key"
    if isinstance(exc, asyncpg.UndefinedTableError):
        return "not_migrated"
    if isinstance(exc, asyncpg.CharacterNotInRepertoireError):  # a NUL: the only str that is not valid text
        return "nul_in_text"
    if isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.InvalidCatalogNameError
        | asyncpg.InvalidAuthorizationSpecificationError
        | asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError  # a pooled connection caught mid-operation as the server went away
        | asyncpg.OperatorInterventionError  # the server is shutting down (admin or crash)
        | TimeoutError
        | OSError,
    ):
        return "unreachable"
    if isinstance(exc, sqlite3.IntegrityError):
        code = getattr(exc, "sqlite_errorcode", None)
        if code in _SQLITE_UNIQUE:
            return "unique"
        if code == _SQLITE_FOREIGN_KEY:
            return "foreign_key"
        return "other"
    if isinstance(exc, sqlite3.OperationalError):
        message = str(exc)
        if message.startswith("no such table"):
            return "not_migrated"
        if "unable to open database" in message:
            return "unreachable"
        if "locked" in message or "busy" in message:
            return "busy"
        return "other"
    if isinstance(exc, asyncpg.PostgresError | sqlite3.Error):
        return "other"
    return None


@contextmanager
def translate_errors(url: str, *, conflict: str = "", foreign_key: LapError | None = None) -> Iterator[None]:
    """Turn driver errors into LAP's: unique violations into `Conflict(conflict)`, the rest into `StoreError`.

    A foreign-key violation becomes `foreign_key` when given (a row that vanished under us).
    """
    try:
        yield
    except LapError:
        raise
    except Exception as exc:
        failure = classify(exc)
        if failure is None:
            raise
        if failure == "unique":
            raise Conflict(conflict or f"already exists: {exc}") from exc
        if failure == "foreign_key" and foreign_key is not None:
            raise foreign_key from exc
        if failure == "not_migrated":
            raise StoreError(NOT_MIGRATED) from exc
        if failure == "nul_in_text":
            raise InvalidInput(NUL_IN_TEXT) from exc
        if failure == "unreachable":
            raise StoreError(f"cannot reach the database at {redact(url)}: {_describe(exc)}") from exc
        if failure == "busy":
            raise StoreError(f"the database at {redact(url)} is busy (locked by another process): {exc}") from exc
        raise StoreError(f"database error ({redact(url)}): {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def not_found(kind: str, key: str) -> NotFound:
    """Return the `NotFound` error of a missing (or invisible) object."""
    return NotFound(f"{kind} {key!r} not found", details={"kind": kind, "id": key})
