"""Usage of the models and team budgets: `GET /api/usage` and `PATCH /api/teams/{id}`.

A team key sees its own team's usage only; the master key sees every team's (or one's, with
`team_id`) and alone sets budgets.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, cast, get_args

import msgspec
from litestar import get
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import FromQuery, QueryParameter

from lap_core import Lap, NotFound, UsageGroup, UsageTotals
from lap_server.auth import Principal

LapDep = NamedDependency[Lap]
Caller = NamedDependency[Principal]
Id = Annotated[str | None, QueryParameter(min_length=1, max_length=128)]
GROUPS = get_args(UsageGroup)


class UsageOut(msgspec.Struct, frozen=True, kw_only=True):
    """Usage of the models: the totals of what matched, and (with `group_by`) the totals of each group."""

    since: datetime | None
    until: datetime | None
    group_by: list[str]
    totals: UsageTotals
    groups: list[UsageTotals]


def _utc(value: datetime | None) -> datetime | None:
    """A time without a zone is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _groups(group_by: str | None) -> list[UsageGroup]:
    names = list(dict.fromkeys(name.strip() for name in (group_by or "").split(",") if name.strip()))
    unknown = [name for name in names if name not in GROUPS]
    if unknown:
        raise ValidationException(f"group_by: unknown group {unknown[0]!r} (one or more of {', '.join(GROUPS)})")
    return cast("list[UsageGroup]", names)


@get("/api/usage")
async def usage(
    lap: LapDep,
    caller: Caller,
    team_id: Id = None,
    agent_id: Id = None,
    session_id: Id = None,
    since: FromQuery[datetime | None] = None,
    until: FromQuery[datetime | None] = None,
    group_by: Annotated[str | None, QueryParameter(max_length=128)] = None,
) -> UsageOut:
    """Return the tokens and cost of the model calls that match, in total and grouped.

    Filters: `team_id`, `agent_id`, `session_id`, `since` (inclusive) and `until` (exclusive; ISO 8601
    times, UTC unless they say otherwise). `group_by`: comma-separated, of team, agent, session, model
    and day (UTC), e.g. `?group_by=agent,day`.
    """
    if caller.team_id is not None:
        if team_id is not None and team_id != caller.team_id:
            raise NotFound(f"team {team_id!r} not found")
        team_id = caller.team_id
    groups, since, until = _groups(group_by), _utc(since), _utc(until)

    async def totals(*by: UsageGroup) -> list[UsageTotals]:
        return await lap.usage.totals(
            team_id=team_id, agent_id=agent_id, session_id=session_id, since=since, until=until, group_by=by
        )

    (overall,) = await totals()
    grouped = await totals(*groups) if groups else []
    return UsageOut(since=since, until=until, group_by=list(groups), totals=overall, groups=grouped)


USAGE_ROUTES = [usage]
