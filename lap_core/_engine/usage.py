"""Usage: what the LLM proxy metered, summed by the store (`lap.usage`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from lap_core._models import UsageGroup, UsageTotals
    from lap_core._store import SessionStore


class Usage:
    """The usage operations of a running `Lap` (`lap.usage`): model calls' tokens and cost."""

    def __init__(self, store: SessionStore) -> None:
        self._store = store

    async def totals(
        self,
        *,
        team_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: Sequence[UsageGroup] = (),
    ) -> list[UsageTotals]:
        """Return the sums of the model calls that match (`since <= at < until`; every team's with `team_id=None`).

        Without `group_by`, one `UsageTotals` (zeros when nothing matches); with it, one per group
        (team, agent, session, model, day) that has calls. Raise `InvalidInput` for an unknown group.
        """
        return await self._store.usage_totals(
            team_id=team_id, agent_id=agent_id, session_id=session_id, since=since, until=until, group_by=group_by
        )
