"""The integration methods of `SqlStore`: delivery cursors, delivery leases and external links.

A delivery lease is one upsert that takes the row when it is free, ours, or expired, timed by the
job queue's clock (the server's on PostgreSQL). Cursors are per session: a session's events commit
in seq order (appends lock its row), so "every seq above the cursor" never skips one committed late,
which a global counter on PostgreSQL could (ids are handed out before commit, not in commit order).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lap_core import Conflict, InvalidInput, NotFound, utcnow
from lap_sql._db import not_found
from lap_sql._jobs import Clock, Sql, check_lease, compile_sql

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lap_sql._database import Database
    from lap_sql._schema import Tables

_LEASE = """INSERT INTO integration_leases (integration, holder, expires_at) VALUES ({integration}, {holder}, {expires})
ON CONFLICT (integration) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE integration_leases.holder = excluded.holder OR integration_leases.expires_at <= {now}
RETURNING integration"""
_RELEASE = """DELETE FROM integration_leases WHERE integration = {integration} AND holder = {holder}
RETURNING integration"""

_BACKLOG = """SELECT s.id AS session_id, COALESCE(c.seq, 0) AS seq FROM sessions AS s
LEFT JOIN integration_cursors AS c ON c.integration = {integration} AND c.session_id = s.id
WHERE s.last_seq > COALESCE(c.seq, 0){only}
ORDER BY s.id
LIMIT {limit}"""
# Inserts nothing when the session is gone; never moves a cursor back.
_ACKNOWLEDGE = """INSERT INTO integration_cursors (integration, session_id, seq)
SELECT {integration}, id, {seq} FROM sessions WHERE id = {session_id}
ON CONFLICT (integration, session_id) DO UPDATE SET seq = excluded.seq WHERE integration_cursors.seq < excluded.seq"""

_FIND = "SELECT session_id FROM integration_links WHERE integration = {integration} AND external_id = {external_id}"
_LINK = """INSERT INTO integration_links (integration, external_id, session_id, created_at)
VALUES ({integration}, {external_id}, {session_id}, {now})"""
_IDS = """SELECT external_id FROM integration_links WHERE integration = {integration} AND session_id = {session_id}
ORDER BY created_at, external_id"""
_UNLINK = """DELETE FROM integration_links WHERE integration = {integration} AND external_id = {external_id}
RETURNING session_id"""
_SESSION = "SELECT id FROM sessions WHERE id = {session_id}"


class Integrations:
    """A mixin over the store's `Database` and `Tables`."""

    _db: Database
    _t: Tables

    async def _sql(self, template: str, **values: Any) -> list[dict[str, Any]]:
        sql, args = compile_sql(template, **values)
        rows: list[dict[str, Any]] = await self._t.sessions.raw(sql, *args)
        return rows

    async def lease_integration(self, integration: str, holder: str, *, lease_seconds: float) -> bool:
        """Take or extend `holder`'s lease of the integration's delivery; return whether it holds it now."""
        seconds = check_lease(lease_seconds)
        clock = Clock(postgres=self._db.dialect == "postgres", at=utcnow())
        async with self._db.write():
            rows = await self._sql(
                _LEASE, integration=integration, holder=holder, expires=clock.after(seconds), now=clock.now
            )
        return bool(rows)

    async def release_integration(self, integration: str, holder: str) -> bool:
        """Give up `holder`'s lease of the integration's delivery; False if it did not hold it."""
        async with self._db.write():
            rows = await self._sql(_RELEASE, integration=integration, holder=holder)
        return bool(rows)

    async def delivery_backlog(
        self, integration: str, *, sessions: Sequence[str] | None = None, limit: int = 100
    ) -> dict[str, int]:
        """Return session id -> last acknowledged seq, of the sessions (of `sessions`) with undelivered events."""
        if limit < 0:
            raise InvalidInput(f"limit must not be negative (got {limit})")
        if isinstance(sessions, str):
            raise InvalidInput(f"sessions is a sequence of session ids, not one string (got {sessions!r})")
        if sessions is not None and not sessions:
            return {}
        only = Sql("")
        if sessions is not None:
            ids = tuple(dict.fromkeys(sessions))
            only = Sql(f" AND s.id IN ({', '.join('{}' for _ in ids)})", ids)
        async with self._db.read():
            rows = await self._sql(_BACKLOG, integration=integration, only=only, limit=limit)
        return {row["session_id"]: int(row["seq"]) for row in rows}

    async def acknowledge_delivery(self, integration: str, session_id: str, seq: int) -> None:
        """Move the integration's cursor of the session up to `seq` (never back)."""
        async with self._db.write():
            await self._sql(_ACKNOWLEDGE, integration=integration, session_id=session_id, seq=seq)

    async def link_external(self, integration: str, external_id: str, session_id: str) -> None:
        """Link the integration's `external_id` to a session; `NotFound`, or `Conflict` if linked elsewhere."""
        taken = Conflict(f"{integration} record {external_id!r} is linked to another session")
        async with self._db.write(conflict=str(taken), foreign_key=not_found("session", session_id)):
            rows = await self._sql(_FIND, integration=integration, external_id=external_id)
            if rows:
                if rows[0]["session_id"] != session_id:
                    raise taken
                return
            if not await self._sql(_SESSION, session_id=session_id):
                raise not_found("session", session_id)
            await self._sql(
                _LINK, integration=integration, external_id=external_id, session_id=session_id, now=utcnow()
            )

    async def find_external(self, integration: str, external_id: str) -> str:
        """Return the session the integration's `external_id` is linked to; raise `NotFound`."""
        async with self._db.read():
            rows = await self._sql(_FIND, integration=integration, external_id=external_id)
        if not rows:
            raise _no_link(integration, external_id)
        return str(rows[0]["session_id"])

    async def external_ids(self, integration: str, session_id: str) -> list[str]:
        """Return the integration's external ids linked to the session, oldest link first."""
        async with self._db.read():
            rows = await self._sql(_IDS, integration=integration, session_id=session_id)
        return [row["external_id"] for row in rows]

    async def unlink_external(self, integration: str, external_id: str) -> None:
        """Remove the link of the integration's `external_id`; raise `NotFound` if there is none."""
        async with self._db.write():
            rows = await self._sql(_UNLINK, integration=integration, external_id=external_id)
        if not rows:
            raise _no_link(integration, external_id)


def _no_link(integration: str, external_id: str) -> NotFound:
    return NotFound(
        f"no session is linked to {integration} record {external_id!r}",
        details={"kind": "link", "id": external_id},
    )
