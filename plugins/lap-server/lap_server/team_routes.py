"""Teams and their API keys. The admin manages every team; a team key manages its own team's keys."""

from __future__ import annotations

import msgspec
from litestar import delete, get, patch, post
from litestar.di import NamedDependency
from litestar.exceptions import PermissionDeniedException
from litestar.params import FromPath, JSONBody

from lap_core import DEFAULT_TEAM_ID, ApiKey, Lap, NotFound, Team
from lap_server.auth import Principal
from lap_server.schemas import KeyIn, KeyOut, TeamIn, TeamPatch

LapDep = NamedDependency[Lap]
Caller = NamedDependency[Principal]


def _admin(caller: Principal) -> None:
    if caller.team_id is not None:
        raise PermissionDeniedException("only the master key manages teams")


def _key_out(key: ApiKey, secret: str | None = None) -> KeyOut:
    return KeyOut(
        id=key.id, team_id=key.team_id, name=key.name, prefix=key.prefix, created_at=key.created_at, key=secret
    )


@post("/api/teams", status_code=201)
async def create_team(data: JSONBody[TeamIn], lap: LapDep, caller: Caller) -> Team:
    """Create a team (master key only)."""
    _admin(caller)
    return await lap.teams.create(data.name, budget=data.budget, egress=data.egress)


@get("/api/teams")
async def list_teams(lap: LapDep, caller: Caller) -> list[Team]:
    """List teams: all of them for the master key, its own for a team key."""
    if caller.team_id is not None:
        return [await lap.teams.get(caller.team_id)]
    return await lap.teams.list()


@patch("/api/teams/{team_id:str}")
async def update_team(team_id: FromPath[str], data: JSONBody[TeamPatch], lap: LapDep, caller: Caller) -> Team:
    """Change a team (master key only): its `name`, monthly `budget` ({"tokens_per_month",
    "usd_per_month"}) or default `egress` policy; only the fields given change."""
    _admin(caller)
    team = await lap.teams.get(team_id)
    return await lap.teams.update(msgspec.structs.replace(team, **data.changes()))


@post("/api/keys", status_code=201)
async def create_key(data: JSONBody[KeyIn], lap: LapDep, caller: Caller) -> KeyOut:
    """Create an API key; the answer holds the key itself, which is never shown again."""
    team = caller.team_id or data.team_id or DEFAULT_TEAM_ID
    if data.team_id and data.team_id != team:
        raise NotFound(f"team {data.team_id!r} not found")
    return _key_out(*await lap.keys.create(data.name, team_id=team))


@get("/api/keys")
async def list_keys(lap: LapDep, caller: Caller) -> list[KeyOut]:
    """List API keys (never their secrets): every team's for the master key, else the caller's team's."""
    return [_key_out(key) for key in await lap.keys.list(team_id=caller.team_id)]


@delete("/api/keys/{key_id:str}")
async def delete_key(key_id: FromPath[str], lap: LapDep, caller: Caller) -> None:
    """Revoke an API key at once."""
    await lap.keys.delete(key_id, team_id=caller.team_id)


TEAM_ROUTES = [create_team, list_teams, update_team, create_key, list_keys, delete_key]
