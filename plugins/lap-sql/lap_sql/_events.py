"""The event log's hot path: raw SQL, with no piccolo query or `Table` object built per row.

On PostgreSQL an append is one statement, which commits on its own (one round trip): it bumps the
session's `last_seq` by n, which locks the session's row until commit so concurrent appends never
share or skip a seq, inserts the n rows from arrays, and queues the NOTIFY, delivered at commit.
On SQLite (one writer at a time) the seqs are claimed, then the rows inserted with one executemany.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lap_core import EventRecord, decode_event, encode_event
from lap_sql._db import not_found
from lap_sql._notify import CHANNELS
from lap_sql._rows import utc

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from lap_core import SessionEvent
    from lap_sql._database import Database

_COLUMNS = "session_id, seq, turn_id, type, at, data"

# Parameters: session id, turn id, n, at, the events' types and their JSON. A data-modifying CTE
# runs whether or not the main query reads it; without the session, `claimed` is empty: no rows
# are inserted, nothing is notified, and no row comes back.
_APPEND = f"""WITH claimed AS (
    UPDATE sessions SET last_seq = last_seq + $3::bigint WHERE id = $1::text RETURNING last_seq - $3::bigint AS base
), inserted AS (
    INSERT INTO events ({_COLUMNS})
    SELECT $1::text, claimed.base + e.n, $2::text, e.type, $4::timestamptz, e.data
    FROM claimed, unnest($5::text[], $6::text[]) WITH ORDINALITY AS e(type, data, n)
)
SELECT base, pg_notify('{CHANNELS["events"]}', $1::text) FROM claimed"""

# PostgreSQL's claim of seqs, with its NOTIFY in the same round trip.
# Claiming no seqs (`queue_job` only locks the row) tells nobody the log grew.
_CLAIM = f"""UPDATE sessions SET last_seq = last_seq + $2::bigint WHERE id = $1::text
RETURNING last_seq, CASE WHEN $2::bigint > 0 THEN pg_notify('{CHANNELS["events"]}', $1::text) END"""

_INSERT = {
    "postgres": f"INSERT INTO events ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)",
    "sqlite": f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
}

_READ = """SELECT seq, turn_id, at, data FROM events WHERE session_id = $1::text AND seq > $2::bigint
ORDER BY seq LIMIT $3::bigint"""


async def claim(db: Database, session_id: str, count: int) -> int:
    """Reserve the session's next `count` seqs in the current transaction (notifying on PostgreSQL).

    Return the first; raise `NotFound`. Locks the session's row until commit.
    """
    if db.dialect == "postgres":
        rows = await db.fetch(_CLAIM, session_id, count)
    else:
        t = db.tables.sessions
        update = t.update({t.last_seq: t.last_seq + count}, use_auto_update=False).where(t.id == session_id)
        rows = await update.returning(t.last_seq)
    if not rows:
        raise not_found("session", session_id)
    return int(rows[0]["last_seq"]) - count + 1


async def insert(db: Database, rows: list[tuple[Any, ...]]) -> None:
    """Insert `events` rows (see `row`) in the current transaction."""
    await db.executemany(_INSERT[db.dialect], rows)


def row(session_id: str, seq: int, turn_id: str | None, at: datetime, event: SessionEvent) -> tuple[Any, ...]:
    """Return an `events` row for `insert`."""
    return (session_id, seq, turn_id, event.__struct_config__.tag, utc(at), encode_event(event).decode())


async def append(
    db: Database, session_id: str, events: Sequence[SessionEvent], turn_id: str | None, at: datetime
) -> int:
    """Append events with the session's next seqs in a transaction of their own; return the first seq."""
    if db.dialect == "postgres":
        types = [event.__struct_config__.tag for event in events]
        data = [encode_event(event).decode() for event in events]
        async with db.write(one_statement=True):
            rows = await db.fetch(_APPEND, session_id, turn_id, len(events), utc(at), types, data)
        if not rows:
            raise not_found("session", session_id)
        return int(rows[0]["base"]) + 1
    async with db.write():
        first = await claim(db, session_id, len(events))
        await insert(db, [row(session_id, first + i, turn_id, at, event) for i, event in enumerate(events)])
    return first


async def read(db: Database, session_id: str, after: int, limit: int) -> list[EventRecord]:
    """Return the session's records with `seq > after`, in order, at most `limit`."""
    async with db.read():
        if db.dialect == "postgres":
            rows = await db.fetch(_READ, session_id, after, limit)
        else:
            t = db.tables.events
            query = t.select(t.seq, t.turn_id, t.at, t.data).where(t.session_id == session_id, t.seq > after)
            rows = await query.order_by(t.seq).limit(limit)
    return [
        EventRecord(
            session_id=session_id, seq=r["seq"], event=decode_event(r["data"]), turn_id=r["turn_id"], at=utc(r["at"])
        )
        for r in rows
    ]
