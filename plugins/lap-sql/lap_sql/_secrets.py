"""The secret methods of `SqlStore`: each secret's ciphertext, never its value (the engine encrypts)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from lap_sql import _rows
from lap_sql._db import not_found

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lap_core import Secret
    from lap_sql._database import Database
    from lap_sql._schema import Tables


class Secrets:
    """A mixin over the store's `Database` and `Tables`."""

    _db: Database
    _t: Tables

    async def create_secret(self, secret: Secret, ciphertext: bytes) -> Secret:
        """Insert a secret with its ciphertext; raise `NotFound` (team, agent) or `Conflict` (id, name)."""
        t, teams, agents = self._t.secrets, self._t.teams, self._t.agents
        scope = f"agent {secret.agent_id!r}" if secret.agent_id else f"team {secret.team_id!r}"
        missing = not_found("agent", secret.agent_id) if secret.agent_id else not_found("team", secret.team_id)
        async with self._db.write(conflict=f"{scope} already has a secret named {secret.name!r}", foreign_key=missing):
            if not await teams.exists().where(teams.id == secret.team_id):
                raise not_found("team", secret.team_id)
            if secret.agent_id is not None and not await agents.exists().where(
                agents.id == secret.agent_id, agents.team_id == secret.team_id
            ):
                raise missing
            await t.insert(
                t(
                    id=secret.id,
                    team_id=secret.team_id,
                    agent_id=secret.agent_id,
                    name=secret.name,
                    hosts=msgspec.json.encode(list(secret.hosts)).decode(),
                    ciphertext=ciphertext,
                    created_at=_rows.utc(secret.created_at),
                    updated_at=_rows.utc(secret.updated_at),
                )
            )
        return secret

    def _columns(self) -> list[Any]:
        t = self._t.secrets
        return [t.id, t.team_id, t.agent_id, t.name, t.hosts, t.created_at, t.updated_at]

    async def get_secret(self, secret_id: str, *, team_id: str | None = None) -> Secret:
        """Return a secret (only if it is in `team_id`, when given); raise `NotFound`."""
        t = self._t.secrets
        where = [t.id == secret_id] + ([t.team_id == team_id] if team_id is not None else [])
        async with self._db.read():
            row = await t.select(*self._columns()).where(*where).first()
        if row is None:
            raise not_found("secret", secret_id)
        return _rows.secret(row)

    async def list_secrets(self, *, team_id: str | None = None, agent_id: str | None = None) -> list[Secret]:
        """Return secrets by name (an agent's own first), of one team; with `agent_id`, those it may get."""
        t, agents = self._t.secrets, self._t.agents
        where: list[Any] = [] if team_id is None else [t.team_id == team_id]
        async with self._db.read():
            if agent_id is not None:
                agent = await agents.select(agents.team_id).where(agents.id == agent_id).first()
                if agent is None or (team_id is not None and agent["team_id"] != team_id):
                    return []
                where += [t.team_id == agent["team_id"], (t.agent_id == agent_id) | t.agent_id.is_null()]
            query = t.select(*self._columns())
            rows = await (query.where(*where) if where else query)
        secrets = [_rows.secret(row) for row in rows]
        return sorted(secrets, key=lambda secret: (secret.name, secret.agent_id is None, secret.team_id, secret.id))

    async def secret_ciphertexts(self, secret_ids: Sequence[str]) -> dict[str, bytes]:
        """Return the ciphertexts of the secrets with these ids, by id (unknown ids are left out)."""
        if not secret_ids:
            return {}
        t = self._t.secrets
        async with self._db.read():
            rows = await t.select(t.id, t.ciphertext).where(t.id.is_in(list(secret_ids)))
        return {row["id"]: bytes(row["ciphertext"]) for row in rows}

    async def delete_secret(self, secret_id: str, *, team_id: str | None = None) -> None:
        """Delete a secret (only if it is in `team_id`, when given); raise `NotFound`."""
        t = self._t.secrets
        where = [t.id == secret_id] + ([t.team_id == team_id] if team_id is not None else [])
        async with self._db.write():
            deleted = await t.delete().where(*where).returning(t.id)
        if not deleted:
            raise not_found("secret", secret_id)
