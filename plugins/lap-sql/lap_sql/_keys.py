"""The API-key methods of `SqlStore`: a key's prefix and the hash of its secret, never the secret."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lap_sql import _rows
from lap_sql._db import not_found

if TYPE_CHECKING:
    from lap_core import ApiKey
    from lap_sql._database import Database
    from lap_sql._schema import Tables


class ApiKeys:
    """A mixin over the store's `Database` and `Tables`."""

    _db: Database
    _t: Tables

    async def create_api_key(self, key: ApiKey) -> ApiKey:
        """Insert an API key; raise `NotFound` for an unknown team, `Conflict` for a taken id or prefix."""
        t, teams = self._t.api_keys, self._t.teams
        missing_team = not_found("team", key.team_id)
        async with self._db.write(
            conflict=f"API key {key.id!r} or prefix {key.prefix!r} exists", foreign_key=missing_team
        ):
            if not await teams.exists().where(teams.id == key.team_id):
                raise missing_team
            await t.insert(
                t(
                    id=key.id,
                    team_id=key.team_id,
                    name=key.name,
                    prefix=key.prefix,
                    secret_hash=key.secret_hash,
                    created_at=_rows.utc(key.created_at),
                )
            )
        return key

    async def find_api_key(self, prefix: str) -> ApiKey:
        """Return the key with this prefix; raise `NotFound`."""
        t = self._t.api_keys
        async with self._db.read():
            row = await t.select().where(t.prefix == prefix).first()
        if row is None:
            raise not_found("API key with prefix", prefix)
        return _rows.api_key(row)

    async def list_api_keys(self, *, team_id: str | None = None) -> list[ApiKey]:
        """Return the keys (of one team, when given), oldest first."""
        t = self._t.api_keys
        query = t.select().order_by(t.created_at).order_by(t.id)
        if team_id is not None:
            query = query.where(t.team_id == team_id)
        async with self._db.read():
            rows = await query
        return [_rows.api_key(row) for row in rows]

    async def delete_api_key(self, key_id: str, *, team_id: str | None = None) -> None:
        """Delete a key (only if it is in `team_id`, when given); raise `NotFound`."""
        t = self._t.api_keys
        where = [t.id == key_id] + ([t.team_id == team_id] if team_id is not None else [])
        async with self._db.write():
            deleted = await t.delete().where(*where).returning(t.id)
        if not deleted:
            raise not_found("API key", key_id)
