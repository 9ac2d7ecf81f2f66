"""Request and response bodies of the API (msgspec; unknown fields are refused)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from lap_core import Agent, Budget, BusyPolicy, EgressPolicy, EventRecord, Session

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=256 * 1024)]
Model = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Prompt = Annotated[str, msgspec.Meta(max_length=64 * 1024)]
RepoUrl = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
Branch = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class _In(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class AgentIn(_In, frozen=True):
    """A new agent."""

    name: Name
    harness: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    model: Model
    prompt: Prompt = ""
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    on_busy: BusyPolicy = "enqueue"
    team_id: str | None = None  # the admin's choice; a team key always creates in its own team
    egress: EgressPolicy | None = None
    repo_url: RepoUrl | None = None
    branch: Branch | None = None


class AgentPatch(_In, frozen=True):
    """Changes to an agent: only the fields given are changed."""

    name: Name | UnsetType = UNSET
    model: Model | UnsetType = UNSET
    prompt: Prompt | UnsetType = UNSET
    options: dict[str, Any] | UnsetType = UNSET
    on_busy: BusyPolicy | UnsetType = UNSET
    egress: EgressPolicy | UnsetType | None = UNSET
    repo_url: RepoUrl | UnsetType | None = UNSET
    branch: Branch | UnsetType | None = UNSET

    def changes(self) -> dict[str, Any]:
        """Return the fields that were given."""
        return {f: v for f in self.__struct_fields__ if (v := getattr(self, f)) is not UNSET}


class AgentOut(msgspec.Struct, frozen=True, kw_only=True):
    """An agent."""

    id: str
    team_id: str
    name: str
    harness: str
    model: str
    prompt: str
    options: dict[str, Any]
    on_busy: BusyPolicy
    egress: EgressPolicy | None
    repo_url: str | None
    branch: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, agent: Agent) -> AgentOut:
        return cls(**{f: getattr(agent, f) for f in cls.__struct_fields__})


class AgentList(msgspec.Struct, frozen=True, kw_only=True):
    """A page of agents; `next_offset` is null on the last page."""

    items: list[AgentOut]
    next_offset: int | None = None


class SessionIn(_In, frozen=True):
    """A new session of an agent."""

    agent_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    title: Annotated[str, msgspec.Meta(max_length=256)] = ""


class SessionOut(msgspec.Struct, frozen=True, kw_only=True):
    """A session, with its live status (`starting` while its sandbox comes up)."""

    id: str
    team_id: str
    agent_id: str
    title: str
    status: str
    status_detail: str
    last_seq: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, session: Session) -> SessionOut:
        return cls(**{f: getattr(session, f) for f in cls.__struct_fields__})


class MessageIn(_In, frozen=True):
    """A user message; `on_busy` overrides the agent's policy for a session that is busy."""

    text: Text
    on_busy: BusyPolicy | None = None


class TurnAccepted(msgspec.Struct, frozen=True, kw_only=True):
    """The message is stored and its turn queued; follow `events_url` (from `after_seq`)."""

    turn_id: str
    user_seq: int
    events_url: str


class TurnResult(msgspec.Struct, frozen=True, kw_only=True):
    """A finished turn (`?wait=true`): its status, the reply text and every event."""

    turn_id: str
    status: str
    text: str
    events: list[EventRecord]


class Aborted(msgspec.Struct, frozen=True, kw_only=True):
    """Whether a turn was running (and is now being aborted)."""

    aborted: bool


class RestartAccepted(msgspec.Struct, frozen=True, kw_only=True):
    """A sandbox restart is queued; watch the session's `status` (`starting`, then `ready` or `failed`)."""

    job_id: str
    session_url: str


class TeamIn(_In, frozen=True):
    """A new team; `egress` is the policy of its agents that have none of their own."""

    name: Name
    budget: Budget | None = None
    egress: EgressPolicy | None = None


class TeamPatch(_In, frozen=True):
    """Changes to a team: only the fields given are changed (a budget is replaced whole; a limit left
    out or null is no limit; an `egress` of null removes the team's default policy)."""

    name: Name | UnsetType = UNSET
    budget: Budget | UnsetType = UNSET
    egress: EgressPolicy | UnsetType | None = UNSET

    def changes(self) -> dict[str, Any]:
        """Return the fields that were given."""
        return {f: v for f in self.__struct_fields__ if (v := getattr(self, f)) is not UNSET}


class KeyIn(_In, frozen=True):
    """A new API key (of the caller's team; the admin names the team)."""

    name: Name
    team_id: str | None = None


class SecretIn(_In, frozen=True):
    """A new secret: `name` is the variable holding its stub in sandboxes, `hosts` where its value may go.

    The value is never returned; `agent_id` (an id or name) limits it to one agent's sandboxes.
    """

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    value: Annotated[str, msgspec.Meta(min_length=1, max_length=64 * 1024)]
    hosts: Annotated[list[Annotated[str, msgspec.Meta(max_length=256)]], msgspec.Meta(min_length=1, max_length=32)]
    agent_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    team_id: str | None = None  # the admin's choice; a team key always creates in its own team


class KeyOut(msgspec.Struct, frozen=True, kw_only=True):
    """An API key; `key` (the secret) is only in the answer that created it."""

    id: str
    team_id: str
    name: str
    prefix: str
    created_at: datetime
    key: str | None = None
