"""Teams: create, find, list and change them (their budget and default egress policy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lap_core._errors import InvalidInput
from lap_core._models import Budget, Team, new_id

if TYPE_CHECKING:
    from lap_core._egress_policy import EgressPolicy
    from lap_core._store import SessionStore

MAX_NAME = 64


class Teams:
    """The team operations of a running `Lap` (`lap.teams`)."""

    def __init__(self, store: SessionStore) -> None:
        self._store = store

    @staticmethod
    def _check(team: Team) -> None:
        problems: dict[str, str] = {}
        name = team.name
        if not name or len(name) > MAX_NAME or not all(c.isalnum() or c in "-_." for c in name):
            problems["name"] = f"1 to {MAX_NAME} letters, digits, '-', '_' or '.'"
        if team.egress is not None and (egress_problems := team.egress.problems()):
            problems["egress"] = "; ".join(egress_problems)
        if problems:
            raise InvalidInput(
                "invalid team: " + "; ".join(f"{k}: {v}" for k, v in sorted(problems.items())), details=problems
            )

    async def create(self, name: str, *, budget: Budget | None = None, egress: EgressPolicy | None = None) -> Team:
        """Create a team; raise `InvalidInput` (bad name or egress policy) or `Conflict` (name taken).

        `egress` is the policy of its agents that have none of their own.
        """
        team = Team(id=new_id("team"), name=name, budget=budget or Budget(), egress=egress)
        self._check(team)
        return await self._store.create_team(team)

    async def get(self, team_id: str) -> Team:
        """Return a team; raise `NotFound`."""
        return await self._store.get_team(team_id)

    async def list(self) -> list[Team]:
        """Return every team, oldest first."""
        return await self._store.list_teams()

    async def update(self, team: Team) -> Team:
        """Store changes to a team (its name, budget, default egress policy), validated like `create`."""
        self._check(team)
        return await self._store.update_team(team)
