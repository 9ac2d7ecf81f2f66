"""The client's own records, for the answers that are not one of lap_core's models.

Like lap_core's, they are frozen `msgspec.Struct`s; unknown fields (of a newer server) are ignored.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from lap_core import Agent, EventRecord, UsageTotals


class AgentPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of agents, by name; `next_offset` is the `offset` of the next page (None on the last one)."""

    items: list[Agent]
    next_offset: int | None = None


class TurnAccepted(msgspec.Struct, frozen=True, kw_only=True):
    """A message was stored and its turn queued: `user_seq` is the message's seq in the session's log."""

    turn_id: str
    user_seq: int
    events_url: str


class TurnResult(msgspec.Struct, frozen=True, kw_only=True):
    """A finished turn: its `status` (`completed`, `failed` or `aborted`), the reply's text and every event."""

    turn_id: str
    status: str
    text: str
    events: list[EventRecord]


class RestartAccepted(msgspec.Struct, frozen=True, kw_only=True):
    """A sandbox restart is queued as job `job_id`; the session's `status` shows how it goes."""

    job_id: str
    session_url: str


class ApiKeyInfo(msgspec.Struct, frozen=True, kw_only=True):
    """An API key as the server shows it: `key`, the secret itself, only in the answer that created it.

    The counters are the key's use of the models so far.
    """

    id: str
    team_id: str
    name: str
    prefix: str
    created_at: datetime
    key: str | None = None
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_calls: int = 0


class UsageReport(msgspec.Struct, frozen=True, kw_only=True):
    """Usage of the models: the `totals` of what matched and, with `group_by`, each group's totals."""

    since: datetime | None
    until: datetime | None
    group_by: list[str]
    totals: UsageTotals
    groups: list[UsageTotals]
