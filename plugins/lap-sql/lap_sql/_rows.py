"""Conversions between LAP's records and the rows of the tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from lap_core import Agent, ApiKey, Budget, EgressPolicy, Job, Secret, Session, SessionStatus, Team, TurnRecord

Row = dict[str, Any]


def utc(value: datetime) -> datetime:
    """Return `value` as an aware UTC datetime (a naive one is taken to be UTC already)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def team(row: Row) -> Team:
    """Return the `Team` of a `teams` row."""
    budget = Budget(tokens_per_month=row["budget_tokens_per_month"], usd_per_month=row["budget_usd_per_month"])
    egress = msgspec.json.decode(row["egress"], type=EgressPolicy) if row["egress"] else None
    return Team(id=row["id"], name=row["name"], budget=budget, egress=egress, created_at=utc(row["created_at"]))


def team_values(value: Team) -> dict[str, Any]:
    """Return the `teams` columns of a team by column name (all but `id` and `created_at`)."""
    return {
        "name": value.name,
        "budget_tokens_per_month": value.budget.tokens_per_month,
        "budget_usd_per_month": value.budget.usd_per_month,
        "egress": msgspec.json.encode(value.egress).decode() if value.egress is not None else None,
    }


def api_key(row: Row) -> ApiKey:
    """Return the `ApiKey` of an `api_keys` row."""
    return ApiKey(
        id=row["id"],
        team_id=row["team_id"],
        name=row["name"],
        prefix=row["prefix"],
        secret_hash=row["secret_hash"],
        created_at=utc(row["created_at"]),
    )


def secret(row: Row) -> Secret:
    """Return the `Secret` of a `secrets` row (its ciphertext stays in the row)."""
    return Secret(
        id=row["id"],
        team_id=row["team_id"],
        agent_id=row["agent_id"],
        name=row["name"],
        hosts=tuple(msgspec.json.decode(row["hosts"])),
        created_at=utc(row["created_at"]),
        updated_at=utc(row["updated_at"]),
    )


def agent(row: Row) -> Agent:
    """Return the `Agent` of an `agents` row."""
    return Agent(
        id=row["id"],
        team_id=row["team_id"],
        name=row["name"],
        harness=row["harness"],
        model=row["model"],
        prompt=row["prompt"],
        options=msgspec.json.decode(row["options"]),
        on_busy=row["on_busy"],
        egress=msgspec.json.decode(row["egress"], type=EgressPolicy) if row["egress"] else None,
        repo_url=row["repo_url"],
        branch=row["branch"],
        created_at=utc(row["created_at"]),
        updated_at=utc(row["updated_at"]),
    )


def agent_values(value: Agent) -> dict[Any, Any]:
    """Return the column values of an agent by column name, but its id and team."""
    return {
        "name": value.name,
        "harness": value.harness,
        "model": value.model,
        "prompt": value.prompt,
        "options": msgspec.json.encode(value.options).decode(),
        "egress": msgspec.json.encode(value.egress).decode() if value.egress is not None else None,
        "repo_url": value.repo_url,
        "branch": value.branch,
        "on_busy": value.on_busy,
        "created_at": utc(value.created_at),
        "updated_at": utc(value.updated_at),
    }


def session(row: Row) -> Session:
    """Return the `Session` of a `sessions` row."""
    return Session(
        id=row["id"],
        team_id=row["team_id"],
        agent_id=row["agent_id"],
        title=row["title"],
        status=row["status"],
        status_detail=row["status_detail"],
        sandbox_name=row["sandbox_name"],
        native_session_id=row["native_session_id"],
        sandbox_generation=row["sandbox_generation"],
        last_seq=row["last_seq"],
        created_at=utc(row["created_at"]),
        updated_at=utc(row["updated_at"]),
    )


def turn(row: Row) -> TurnRecord:
    """Return the `TurnRecord` of a `turns` row."""
    finished_at = row["finished_at"]
    return TurnRecord(
        id=row["id"],
        session_id=row["session_id"],
        status=row["status"],
        user_seq=row["user_seq"],
        abort_requested=bool(row["abort_requested"]),
        client_key=row["client_key"],
        created_at=utc(row["created_at"]),
        finished_at=None if finished_at is None else utc(finished_at),
    )


def job(row: Row) -> Job:
    """Return the `Job` of a `jobs` row."""
    expires = row["lease_expires_at"]
    return Job(
        id=row["id"],
        kind=row["kind"],
        session_id=row["session_id"],
        payload=msgspec.json.decode(row["payload"]),
        status=row["status"],
        attempts=row["attempts"],
        leased_by=row["leased_by"],
        lease_expires_at=None if expires is None else utc(expires),
        error=row["error"],
        created_at=utc(row["created_at"]),
        updated_at=utc(row["updated_at"]),
    )


class SessionChanges(msgspec.Struct, forbid_unknown_fields=True):
    """The fields `update_session` may set; `UNSET` ones are left alone."""

    status: SessionStatus | msgspec.UnsetType = msgspec.UNSET
    status_detail: str | msgspec.UnsetType = msgspec.UNSET
    sandbox_name: str | msgspec.UnsetType | None = msgspec.UNSET
    native_session_id: str | msgspec.UnsetType | None = msgspec.UNSET
    sandbox_generation: Annotated[int, msgspec.Meta(ge=0)] | msgspec.UnsetType = msgspec.UNSET
    title: str | msgspec.UnsetType = msgspec.UNSET


SESSION_FIELDS = frozenset(SessionChanges.__struct_fields__)
