"""Secrets, team-scoped like agents: created with a value, shown and listed without one, ever."""

from __future__ import annotations

from litestar import delete, get, post
from litestar.di import NamedDependency
from litestar.exceptions import PermissionDeniedException
from litestar.params import FromPath, FromQuery, JSONBody

from lap_core import DEFAULT_TEAM_ID, Lap, Secret
from lap_server.auth import Principal
from lap_server.schemas import SecretIn

LapDep = NamedDependency[Lap]
Caller = NamedDependency[Principal]


@post("/api/secrets", status_code=201)
async def create_secret(data: JSONBody[SecretIn], lap: LapDep, caller: Caller) -> Secret:
    """Store a secret, encrypted; the answer (and every later one) holds its stub's name, never its value.

    Sandboxes of the team's agents (of `agent_id` only, when given) hold a stub in the variable
    `name`; the egress gateway puts the value into requests to `hosts` alone.
    """
    team = caller.team_id or data.team_id or DEFAULT_TEAM_ID
    if data.team_id and data.team_id != team:
        raise PermissionDeniedException("a team key creates secrets in its own team only")
    if caller.team_id is None:
        await lap.teams.get(team)  # 404 for an unknown team
    return await lap.secrets.create(data.name, data.value, hosts=data.hosts, team_id=team, agent_id=data.agent_id)


@get("/api/secrets")
async def list_secrets(lap: LapDep, caller: Caller, agent_id: FromQuery[str | None] = None) -> list[Secret]:
    """List secrets by name (never their values); with `agent_id`, those its sandboxes get."""
    return await lap.secrets.list(team_id=caller.team_id, agent_id=agent_id)


@delete("/api/secrets/{secret_id:str}")
async def delete_secret(secret_id: FromPath[str], lap: LapDep, caller: Caller) -> None:
    """Delete a secret at once: the gateway puts its value into no request any more."""
    await lap.secrets.delete(secret_id, team_id=caller.team_id)


SECRET_ROUTES = [create_secret, list_secrets, delete_secret]
