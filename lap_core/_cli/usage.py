"""`lap usage`: the tokens and cost of the model calls LAP's LLM proxy recorded."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast, get_args

import click

from lap_core._cli import run
from lap_core._errors import NotFound
from lap_core._models import UsageGroup
from lap_core._runtime import Lap

if TYPE_CHECKING:
    from lap_core._models import UsageTotals

GROUPS = get_args(UsageGroup)
WHEN = click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"])
_COLUMNS = {"team": "team_id", "agent": "agent_id", "session": "session_id", "model": "model", "day": "day"}


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _groups(by: str) -> list[UsageGroup]:
    names = list(dict.fromkeys(name.strip() for name in by.split(",") if name.strip()))
    unknown = [name for name in names if name not in GROUPS]
    if unknown:
        raise click.BadParameter(
            f"unknown group {unknown[0]!r} (one or more of {', '.join(GROUPS)})", param_hint="--by"
        )
    return cast("list[UsageGroup]", names)


async def _team_id(lap: Lap, team: str) -> str:
    for found in await lap.store.list_teams():
        if team in (found.id, found.name):
            return found.id
    raise NotFound(f"team {team!r} not found")


def _row(cells: list[str], widths: list[int]) -> str:
    # The first columns (the groups) to the left, the numbers to the right.
    numbers = len(cells) - 5
    return "  ".join(
        c.ljust(w) if i < numbers else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def _table(groups: list[UsageGroup], rows: list[UsageTotals], total: UsageTotals, names: dict[str, str]) -> list[str]:
    def cells(totals: UsageTotals, label: list[str]) -> list[str]:
        cost = f"${totals.cost_usd:.4f}" + ("*" if totals.unpriced_calls else "")
        counts = (totals.calls, totals.input_tokens, totals.output_tokens, totals.cached_tokens)
        return [*label, *(f"{count:,}" for count in counts), cost]

    lines = [[*groups, "calls", "input", "output", "cached", "cost"]]
    for totals in rows:
        values = [getattr(totals, _COLUMNS[group]) or "" for group in groups]
        lines.append(cells(totals, [names.get(value, value) for value in values]))
    lines.append(cells(total, ["total", *[""] * (len(groups) - 1)] if groups else []))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return [_row(line, widths) for line in lines]


@click.command()
@click.option("--team", default=None, help="Only this team's calls (name or id).")
@click.option("--agent", default=None, help="Only this agent's calls (name in the default team, or id).")
@click.option("--session", "session_id", default=None, help="Only this session's calls.")
@click.option("--since", type=WHEN, default=None, help="From this time on (UTC unless it says otherwise).")
@click.option("--until", type=WHEN, default=None, help="Before this time.")
@click.option("--by", default="", help=f"Group by any of {', '.join(GROUPS)} (comma-separated), e.g. --by team,day.")
def usage(
    team: str | None,
    agent: str | None,
    session_id: str | None,
    since: datetime | None,
    until: datetime | None,
    by: str,
) -> None:
    """Show the tokens and cost of the model calls the LLM proxy recorded (every team's by default)."""
    groups = _groups(by)

    async def main() -> None:
        async with Lap(run_turns=False) as lap:
            team_id = await _team_id(lap, team) if team else None
            agent_id = (await lap.agents.get(agent, team_id=team_id)).id if agent else None

            async def totals(*by: UsageGroup) -> list[UsageTotals]:
                return await lap.usage.totals(
                    team_id=team_id,
                    agent_id=agent_id,
                    session_id=session_id,
                    since=_utc(since),
                    until=_utc(until),
                    group_by=by,
                )

            (total,) = await totals()
            rows = await totals(*groups) if groups else []
            names = {t.id: t.name for t in await lap.store.list_teams()}
            if "agent" in groups:
                names |= {a.id: a.name for a in await lap.store.list_agents(limit=10_000)}
        if not total.calls:
            click.echo("no model calls recorded for this selection")
            return
        for line in _table(groups, rows, total, names):
            click.echo(line)
        if total.unpriced_calls:
            click.echo(f"* {total.unpriced_calls} call(s) without a cost from the gateway are not in the cost")

    run(main)
