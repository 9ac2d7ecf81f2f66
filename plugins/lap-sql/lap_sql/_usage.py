"""The usage methods of `SqlStore`: one row per model call, totals summed by the database, team budgets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, get_args

from piccolo.querystring import QueryString

from lap_core import InvalidInput, UsageGroup, UsageTotals
from lap_sql import _rows

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from lap_core import UsageRecord
    from lap_sql._database import Database
    from lap_sql._schema import Tables

_COLUMNS = "id, at, team_id, agent_id, session_id, model, input_tokens, output_tokens, cached_tokens, cost_usd"
# A call recorded again (the same id) is no second call: the insert does nothing and returns no row.
_RECORD = f"INSERT INTO usage_records ({_COLUMNS}) VALUES ({{}}, {{}}, {{}}, {{}}, {{}}, {{}}, {{}}, {{}}, {{}}, {{}})"
_RECORD += " ON CONFLICT (id) DO NOTHING RETURNING id"

# The day of a call in UTC: PostgreSQL stores the instant; SQLite the UTC text `YYYY-MM-DD HH:MM:SS...`.
_DAY = {"postgres": "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD')", "sqlite": "substr(at, 1, 10)"}
# The field of `UsageTotals` each group sets (a column, but for `day`).
_GROUP_FIELDS: dict[str, str] = {
    "team": "team_id",
    "agent": "agent_id",
    "session": "session_id",
    "model": "model",
    "day": "day",
}
_SUMS = """COUNT(*) AS calls,
    CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens,
    CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens,
    CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT) AS cached_tokens,
    COALESCE(SUM(cost_usd), 0.0) AS cost_usd,
    COUNT(*) - COUNT(cost_usd) AS unpriced_calls"""


class Usage:
    """A mixin over the store's `Database` and `Tables`."""

    _db: Database
    _t: Tables

    async def record_usage(self, record: UsageRecord) -> bool:
        """Store one model call's usage; return False, storing nothing, if its id is stored already."""
        query = QueryString(
            _RECORD,
            record.id,
            _rows.utc(record.at),
            record.team_id,
            record.agent_id,
            record.session_id,
            record.model,
            record.input_tokens,
            record.output_tokens,
            record.cached_tokens,
            record.cost_usd,
        )
        async with self._db.write(one_statement=True):
            rows = await self._db.engine.run_querystring(query)
        return bool(rows)

    async def usage_totals(
        self,
        *,
        team_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: Sequence[UsageGroup] = (),
    ) -> list[UsageTotals]:
        """Return the sums of the matching usage records (see `SessionStore.usage_totals`)."""
        unknown = [group for group in group_by if group not in get_args(UsageGroup)]
        if unknown:
            raise InvalidInput(f"cannot group usage by {unknown[0]!r} (one of {', '.join(get_args(UsageGroup))})")
        groups = list(dict.fromkeys(group_by))
        expressions = [_DAY[self._db.dialect] if group == "day" else _GROUP_FIELDS[group] for group in groups]
        conditions: list[str] = []
        values: list[Any] = []
        for column, value in (("team_id", team_id), ("agent_id", agent_id), ("session_id", session_id)):
            if value is not None:
                conditions.append(f"{column} = {{}}")
                values.append(value)
        if since is not None:
            conditions.append("at >= {}")
            values.append(_rows.utc(since))
        if until is not None:
            conditions.append("at < {}")
            values.append(_rows.utc(until))
        selected = [f"{expression} AS g{index}" for index, expression in enumerate(expressions)]
        sql = f"SELECT {', '.join([*selected, _SUMS])} FROM usage_records"
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        if groups:
            keys = ", ".join(f"g{index}" for index in range(len(groups)))
            sql += f" GROUP BY {keys} ORDER BY {keys}"
        async with self._db.read():
            rows = await self._db.engine.run_querystring(QueryString(sql, *values))
        return [_totals(row, groups) for row in rows]


def _totals(row: Any, groups: Sequence[str]) -> UsageTotals:
    keys = {_GROUP_FIELDS[group]: row[f"g{index}"] for index, group in enumerate(groups)}
    return UsageTotals(
        **keys,
        calls=int(row["calls"]),
        input_tokens=int(row["input_tokens"]),
        output_tokens=int(row["output_tokens"]),
        cached_tokens=int(row["cached_tokens"]),
        cost_usd=float(row["cost_usd"]),
        unpriced_calls=int(row["unpriced_calls"]),
    )
