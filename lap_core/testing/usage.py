"""Conformance tests for the usage methods of a `SessionStore` (part of `StoreConformance`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import pytest

from lap_core._egress_policy import EgressPolicy
from lap_core._errors import Conflict, InvalidInput, NotFound
from lap_core._models import Budget, Team, UsageRecord, UsageTotals, new_id
from lap_core.testing._base import StoreSuite, _new_session

if TYPE_CHECKING:
    from lap_core._store import SessionStore

_DAY_1 = datetime(2025, 3, 31, 22, 0, tzinfo=UTC)
_DAY_2 = datetime(2025, 4, 1, 1, 30, tzinfo=UTC)


def _call(team: str, agent: str, session: str, **fields: Any) -> UsageRecord:
    values: dict[str, Any] = {"at": _DAY_1, "model": "m1", "input_tokens": 100, "output_tokens": 10, **fields}
    return UsageRecord(id=new_id("use"), team_id=team, agent_id=agent, session_id=session, **values)


def _sums(totals: UsageTotals) -> tuple[int, int, int, int, float, int]:
    cost = round(totals.cost_usd, 9)
    return totals.calls, totals.input_tokens, totals.output_tokens, totals.cached_tokens, cost, totals.unpriced_calls


class UsageTests(StoreSuite):
    """Tests `record_usage`, `usage_totals` and `update_team`; `StoreConformance` includes them."""

    async def _calls(self, store: SessionStore) -> list[UsageRecord]:
        """Record five calls: two teams, three sessions, two models, two days (one in another time zone)."""
        west = timezone(timedelta(hours=-5))  # DAY_2 there is still March 31
        calls = [
            _call("team_u1", "agt_a", "ses_a1", cached_tokens=40, cost_usd=0.25),
            _call("team_u1", "agt_a", "ses_a1", at=_DAY_2, model="m2", input_tokens=7, output_tokens=3),
            _call("team_u1", "agt_b", "ses_b1", at=_DAY_2.astimezone(west), cost_usd=0.5, output_tokens=20),
            _call("team_u2", "agt_c", "ses_c1", cached_tokens=5, cost_usd=1.0),
            _call("team_u2", "agt_c", "ses_c1", at=_DAY_2 + timedelta(hours=1), input_tokens=1, output_tokens=1),
        ]
        for call in calls:
            assert await store.record_usage(call) is True
        return calls

    async def test_totals_are_filtered_by_team_agent_session_and_time(self, store: SessionStore) -> None:
        await self._calls(store)
        (everything,) = await store.usage_totals()
        assert _sums(everything) == (5, 308, 44, 45, 1.75, 2)
        assert everything.team_id is everything.day is None
        (team,) = await store.usage_totals(team_id="team_u1")
        assert _sums(team) == (3, 207, 33, 40, 0.75, 1)
        (agent,) = await store.usage_totals(team_id="team_u1", agent_id="agt_b")
        assert _sums(agent) == (1, 100, 20, 0, 0.5, 0)
        (session,) = await store.usage_totals(session_id="ses_a1")
        assert _sums(session) == (2, 107, 13, 40, 0.25, 1)
        # `since` is inclusive, `until` exclusive.
        (since,) = await store.usage_totals(since=_DAY_2)
        assert _sums(since) == (3, 108, 24, 0, 0.5, 2)
        (until,) = await store.usage_totals(until=_DAY_2)
        assert _sums(until) == (2, 200, 20, 45, 1.25, 0)
        (window,) = await store.usage_totals(since=_DAY_2, until=_DAY_2 + timedelta(hours=1))
        assert _sums(window) == (2, 107, 23, 0, 0.5, 1)
        (nothing,) = await store.usage_totals(team_id="team_missing")
        assert nothing == UsageTotals()

    async def test_totals_are_grouped_in_the_order_asked(self, store: SessionStore) -> None:
        await self._calls(store)
        by_team = await store.usage_totals(group_by=["team"])
        assert [(t.team_id, t.calls, t.input_tokens) for t in by_team] == [("team_u1", 3, 207), ("team_u2", 2, 101)]
        assert all(t.agent_id is t.model is t.day is None for t in by_team)
        by_day = await store.usage_totals(group_by=["day"])  # the UTC date, whatever zone `at` was given in
        assert [(t.day, t.calls) for t in by_day] == [("2025-03-31", 2), ("2025-04-01", 3)]
        by_model = await store.usage_totals(team_id="team_u1", group_by=["model", "session"])
        assert [(t.model, t.session_id, t.calls) for t in by_model] == [
            ("m1", "ses_a1", 1),
            ("m1", "ses_b1", 1),
            ("m2", "ses_a1", 1),
        ]
        by_agent_day = await store.usage_totals(group_by=["agent", "day"], since=_DAY_2)
        assert [(t.agent_id, t.day, _sums(t)) for t in by_agent_day] == [
            ("agt_a", "2025-04-01", (1, 7, 3, 0, 0.0, 1)),
            ("agt_b", "2025-04-01", (1, 100, 20, 0, 0.5, 0)),
            ("agt_c", "2025-04-01", (1, 1, 1, 0, 0.0, 1)),
        ]
        assert await store.usage_totals(team_id="team_missing", group_by=["team"]) == []
        with pytest.raises(InvalidInput):
            await store.usage_totals(group_by=["week"])  # type: ignore[list-item]

    async def test_a_call_recorded_again_counts_once(self, store: SessionStore) -> None:
        call = _call("team_u3", "agt_a", "ses_a1", cost_usd=0.125)
        assert await store.record_usage(call) is True
        assert await store.record_usage(call) is False
        # The id decides, even when the rest differs (a retried write of a call is the same call).
        changed = msgspec.structs.replace(call, input_tokens=9, at=_DAY_2)
        assert await store.record_usage(changed) is False
        results: list[bool] = []
        racing = _call("team_u3", "agt_a", "ses_a2")

        async def record() -> None:
            results.append(await store.record_usage(racing))

        async with anyio.create_task_group() as tasks:
            for _ in range(8):
                tasks.start_soon(record)
        assert sorted(results) == [False] * 7 + [True]
        (totals,) = await store.usage_totals(team_id="team_u3")
        assert _sums(totals) == (2, 200, 20, 0, 0.125, 1)

    async def test_usage_outlives_its_session(self, store: SessionStore) -> None:
        session = await _new_session(store)
        await store.record_usage(_call(session.team_id, session.agent_id, session.id))
        await store.delete_session(session.id)
        (totals,) = await store.usage_totals(session_id=session.id)
        assert totals.calls == 1

    async def test_team_budgets(self, store: SessionStore) -> None:
        team = await store.create_team(Team(id=new_id("team"), name=new_id("name")))
        assert team.budget == Budget() == (await store.get_team(team.id)).budget
        budget = Budget(tokens_per_month=1_000_000_000_000, usd_per_month=12.5)
        assert (await store.update_team(msgspec.structs.replace(team, budget=budget))).budget == budget
        assert (await store.get_team(team.id)).budget == budget
        assert next(t for t in await store.list_teams() if t.id == team.id).budget == budget
        free = Budget(usd_per_month=0.0)
        assert (await store.update_team(msgspec.structs.replace(team, budget=free))).budget == free
        assert (await store.get_team(team.id)).budget == free
        with pytest.raises(NotFound):
            await store.update_team(Team(id="team_missing", name=new_id("name")))
        # A team created with a budget keeps it.
        other = Team(id=new_id("team"), name=new_id("name"), budget=Budget(tokens_per_month=5))
        await store.create_team(other)
        assert (await store.get_team(other.id)).budget == Budget(tokens_per_month=5)

    async def test_update_team(self, store: SessionStore) -> None:
        team = await store.create_team(Team(id=new_id("team"), name=new_id("name")))
        assert team.egress is None
        policy = EgressPolicy(allow=["github.com", "*.pypi.org"], deny=["gist.github.com"])
        changed = msgspec.structs.replace(team, name=new_id("renamed"), egress=policy)
        assert await store.update_team(changed) == changed
        assert await store.get_team(team.id) == changed
        assert (await store.update_team(msgspec.structs.replace(changed, egress=None))).egress is None
        assert (await store.get_team(team.id)).egress is None
        other = await store.create_team(Team(id=new_id("team"), name=new_id("name")))
        with pytest.raises(Conflict):
            await store.update_team(msgspec.structs.replace(other, name=changed.name))
        assert (await store.get_team(other.id)).name == other.name
