"""`GET /api/usage` and team budgets over HTTP, on SQLite and PostgreSQL: totals the database sums, per team."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from lap_core import UsageCollector, UsageRecord, new_id
from lap_core._vault import UsageCounters
from lap_core._vault.answer import Tokens
from lap_sql import SqlStore

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

MARCH = datetime(2025, 3, 31, 23, 0, tzinfo=UTC)
APRIL = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)


def _as(api: httpx.AsyncClient, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=str(api.base_url), headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def _record(url: str, *calls: tuple[str, str, datetime, int, float | None]) -> None:
    async with SqlStore(url) as store:
        for team, session, at, tokens, cost in calls:
            record = UsageRecord(
                id=new_id("use"),
                at=at,
                team_id=team,
                agent_id=f"agt_{session}",
                session_id=session,
                model="m1",
                input_tokens=tokens,
                output_tokens=tokens // 10,
                cost_usd=cost,
            )
            await store.record_usage(record)


def _sums(totals: dict[str, Any]) -> tuple[int, int, int, float, int]:
    return (
        totals["calls"],
        totals["input_tokens"],
        totals["output_tokens"],
        round(totals["cost_usd"], 6),
        totals["unpriced_calls"],
    )


async def test_usage_totals_and_groups_by_team_key_and_master_key(
    api: httpx.AsyncClient, data_dir: Path, database: dict[str, str]
) -> None:
    team_b = (await api.post("/api/teams", json={"name": "team-b"})).json()["id"]
    await _record(
        database.get("DATABASE_URL", f"sqlite:///{data_dir / 'lap.db'}"),
        ("team_default", "s1", MARCH, 1000, 0.5),
        ("team_default", "s1", APRIL, 200, None),
        ("team_default", "s2", APRIL, 30, 0.25),
        (team_b, "s3", APRIL, 4000, 2.0),
    )
    everything = (await api.get("/api/usage")).json()
    assert _sums(everything["totals"]) == (4, 5230, 523, 2.75, 1)
    assert everything["groups"] == []
    by_team = (await api.get("/api/usage", params={"group_by": "team"})).json()
    expected = {team_b: (1, 4000, 400, 2.0, 0), "team_default": (3, 1230, 123, 0.75, 1)}
    assert [(g["team_id"], _sums(g)) for g in by_team["groups"]] == sorted(expected.items())  # ordered by the group
    april = await api.get(
        "/api/usage", params={"team_id": "team_default", "since": "2025-04-01T00:00:00", "group_by": "session,day"}
    )
    body = april.json()
    assert _sums(body["totals"]) == (2, 230, 23, 0.25, 1)
    assert [(g["session_id"], g["day"], g["calls"]) for g in body["groups"]] == [
        ("s1", "2025-04-01", 1),
        ("s2", "2025-04-01", 1),
    ]
    assert body["since"].startswith("2025-04-01T00:00:00")  # a time without a zone is UTC
    until = (await api.get("/api/usage", params={"until": "2025-04-01T00:00:00+00:00", "agent_id": "agt_s1"})).json()
    assert _sums(until["totals"]) == (1, 1000, 100, 0.5, 0)

    # A team key sees its own team only.
    key_b = (await api.post("/api/keys", json={"name": "ci", "team_id": team_b})).json()["key"]
    async with _as(api, key_b) as b:
        own = (await b.get("/api/usage", params={"group_by": "team,model"})).json()
        assert _sums(own["totals"]) == (1, 4000, 400, 2.0, 0)
        assert [(g["team_id"], g["model"]) for g in own["groups"]] == [(team_b, "m1")]
        assert (await b.get("/api/usage", params={"session_id": "s1"})).json()["totals"]["calls"] == 0
        other = await b.get("/api/usage", params={"team_id": "team_default"})
        assert other.status_code == 404
        assert other.json()["error"]["code"] == "not_found"

    for params in ({"group_by": "week"}, {"since": "yesterday"}, {"until": "2025-13-01"}):
        bad = await api.get("/api/usage", params=params)
        assert 400 <= bad.status_code < 500, params
        assert set(bad.json()["error"]) == {"code", "message", "details"}


async def test_budgets_are_set_with_the_master_key_and_shown_with_the_team(api: httpx.AsyncClient) -> None:
    team = (await api.post("/api/teams", json={"name": "budgeted"})).json()
    assert team["budget"] == {"tokens_per_month": None, "usd_per_month": None}
    budget = {"tokens_per_month": 500_000, "usd_per_month": 25.5}
    patched = await api.patch(f"/api/teams/{team['id']}", json={"budget": budget})
    assert patched.status_code == 200, patched.text
    assert patched.json()["budget"] == budget
    listed = {t["id"]: t for t in (await api.get("/api/teams")).json()}
    assert listed[team["id"]]["budget"] == budget
    # Replaced whole: a limit left out is no limit.
    only_usd = await api.patch(f"/api/teams/{team['id']}", json={"budget": {"usd_per_month": 10}})
    assert only_usd.json()["budget"] == {"tokens_per_month": None, "usd_per_month": 10.0}

    key = (await api.post("/api/keys", json={"name": "ci", "team_id": team["id"]})).json()["key"]
    async with _as(api, key) as own:
        assert (await own.patch(f"/api/teams/{team['id']}", json={"budget": {}})).status_code == 403
        assert [t["budget"]["usd_per_month"] for t in (await own.get("/api/teams")).json()] == [10.0]
    assert (await api.patch("/api/teams/team_missing", json={"budget": {}})).status_code == 404
    for bad in (
        {"budget": {"tokens_per_month": -1}},
        {"budget": {"usd": 5}},
        {"name": "not a name"},
        {"unknown": 1},
        {"budget": "lots"},
    ):
        refused = await api.patch(f"/api/teams/{team['id']}", json=bad)
        assert 400 <= refused.status_code < 500, bad
        assert set(refused.json()["error"]) == {"code", "message", "details"}


def test_the_usage_counters_are_prometheus_counters_per_team() -> None:
    counters = UsageCounters()
    counters.count("team_a", "recorded", Tokens(input=100, output=10, cached=40, cost=0.5))
    counters.count("team_a", "recorded", Tokens(input=1, output=1))
    counters.count("team_b", "budget_exceeded")

    class Lap:
        usage_counters = counters

    registry = CollectorRegistry()
    registry.register(UsageCollector(Lap()))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    for line in (
        'lap_llm_tokens_total{kind="input",team="team_a"} 101.0',
        'lap_llm_tokens_total{kind="output",team="team_a"} 11.0',
        'lap_llm_tokens_total{kind="cached",team="team_a"} 40.0',
        'lap_llm_cost_usd_total{team="team_a"} 0.5',
        'lap_llm_calls_total{outcome="recorded",team="team_a"} 2.0',
        'lap_llm_calls_total{outcome="budget_exceeded",team="team_b"} 1.0',
    ):
        assert line in text, text
