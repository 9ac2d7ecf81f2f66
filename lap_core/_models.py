"""The records LAP stores and passes between its components.

All are `msgspec.Struct`s, frozen: change one with `msgspec.structs.replace`.
Timestamps are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

from lap_core._egress_policy import EgressPolicy

SessionStatus = Literal["new", "starting", "ready", "running", "failed", "suspended"]
"""Where a session is in its life: `new` until its sandbox is first brought up; `suspended` while
its sandbox is down (idle, or vanished): the next message brings it back, workspace and all."""

TurnStatus = Literal["queued", "running", "completed", "failed", "aborted"]

BusyPolicy = Literal["enqueue", "reject", "interrupt"]
"""What a message sent while a turn is running (or queued) does: `enqueue` (wait its turn),
`reject` (refused with `Conflict`), or `interrupt` (the pending turns are aborted, then it runs)."""

JobStatus = Literal["queued", "leased", "done", "failed"]
"""Where a job is: `queued` until a worker leases it, `leased` while one works on it, then `done` or `failed`."""


def utcnow() -> datetime:
    """Return the current time in UTC (the only clock LAP's records use)."""
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """Return a new random id such as `ses_3kq9...`: a type prefix and 20 url-safe characters."""
    return f"{prefix}_{secrets.token_urlsafe(15)}".replace("-", "x").lower()


class Budget(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A team's monthly limits on model use (the calendar month, in UTC); None: no limit.

    Tokens are input plus output tokens (cached input included). The LLM proxy refuses a team's
    model calls once the month's recorded usage has reached either limit; a call already running
    finishes, so usage can end a little above a limit.
    """

    tokens_per_month: Annotated[int, msgspec.Meta(ge=0, le=2**62)] | None = None
    usd_per_month: Annotated[float, msgspec.Meta(ge=0, le=1e12)] | None = None


class Team(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant: agents, sessions and keys belong to exactly one team.

    `egress` is the egress policy of the team's agents that have none of their own (None: nowhere
    but the LLM).
    """

    id: str
    name: str
    budget: Budget = msgspec.field(default_factory=Budget)
    egress: EgressPolicy | None = None
    created_at: datetime = msgspec.field(default_factory=utcnow)


DEFAULT_TEAM_ID = "team_default"
"""The team that owns everything created without one (embedded use and the CLI)."""


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """A team's API key. Only a hash of the secret is ever stored."""

    id: str
    team_id: str
    name: str
    prefix: str
    secret_hash: str
    created_at: datetime = msgspec.field(default_factory=utcnow)


class Secret(msgspec.Struct, frozen=True, kw_only=True):
    """A team's (or one agent's) secret, as LAP shows it: never its value.

    `name` is the environment variable that holds the secret's stub in the sandboxes of the
    team's agents (only those of `agent_id`, when set); `hosts` are the host names, or
    `*.suffix` patterns, whose requests the egress gateway puts the real value into.
    """

    id: str
    team_id: str
    name: str
    hosts: tuple[str, ...]
    agent_id: str | None = None
    created_at: datetime = msgspec.field(default_factory=utcnow)
    updated_at: datetime = msgspec.field(default_factory=utcnow)


class Agent(msgspec.Struct, frozen=True, kw_only=True):
    """What to run: a harness, a model and their settings. Sessions are started from an agent.

    `on_busy` is what a message sent to a busy session does, unless the message says otherwise.
    `egress` is where its sandboxes may reach through the egress gateway (None: its team's
    default, and without one nowhere but the LLM). `repo_url` (and `branch`) is cloned into each
    new session's workspace (None: the deployment's `PREINSTALLED_GITHUB_REPO`, if any).
    """

    id: str
    team_id: str
    name: str
    harness: str
    model: str
    prompt: str = ""
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    on_busy: BusyPolicy = "enqueue"
    egress: EgressPolicy | None = None
    repo_url: str | None = None
    branch: str | None = None
    created_at: datetime = msgspec.field(default_factory=utcnow)
    updated_at: datetime = msgspec.field(default_factory=utcnow)


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """One conversation with an agent, in its own sandbox and workspace.

    `last_seq` is the seq of the newest event in the session's log. `native_session_id` is the
    harness's own id for the conversation (opencode's session id, Claude's, Codex's thread id),
    kept so the next turn continues it. `sandbox_generation` counts the sandboxes LAP has made the
    session: the stub key of an earlier one is revoked.
    """

    id: str
    team_id: str
    agent_id: str
    title: str = ""
    status: SessionStatus = "new"
    status_detail: str = ""
    sandbox_name: str | None = None
    native_session_id: str | None = None
    sandbox_generation: int = 0
    last_seq: int = 0
    created_at: datetime = msgspec.field(default_factory=utcnow)
    updated_at: datetime = msgspec.field(default_factory=utcnow)


class TurnRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A stored turn: one user message and the work done to answer it.

    `abort_requested` is set (by any process) to stop the turn: the worker running it, wherever
    it runs, aborts it; a queued turn so flagged ends `aborted` without running. `client_key` is
    the sender's idempotency key: a message sent again with the same key is the same turn.
    """

    id: str
    session_id: str
    status: TurnStatus = "queued"
    user_seq: int = 0
    abort_requested: bool = False
    client_key: str | None = None
    created_at: datetime = msgspec.field(default_factory=utcnow)
    finished_at: datetime | None = None


def process_id(turn_id: str, attempt: int) -> str:
    """Return the sandbox process id of a turn's attempt (see `Turn.process_id`)."""
    return turn_id if not attempt else f"{turn_id}.{attempt}"


class Turn(msgspec.Struct, frozen=True, kw_only=True):
    """What a harness needs to run one turn.

    `native_session_id` is None on the first turn of a session; afterwards it is the id the
    harness reported (see `HarnessSession`), so the harness resumes its own conversation. Run the
    turn's work as a sandbox process named `process_id`, and map its output to events the same
    way every time: a worker that takes the turn over re-attaches to it and replays its output.
    """

    id: str
    session_id: str
    text: str
    agent: Agent
    native_session_id: str | None = None
    attempt: int = 0

    @property
    def process_id(self) -> str:
        """The id to give the turn's sandbox process: starting it again re-attaches to it.

        A turn that had to start over in a new sandbox (`attempt` > 0) gets a new id, so it never
        finds the dead attempt's process.
        """
        return process_id(self.id, self.attempt)


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """A unit of work in the store's durable queue, such as running one turn (`kind="turn"`).

    A worker leases a job (see `SessionStore.lease_job`) for a while and keeps the lease by
    heartbeats; if the worker dies, the lease expires and another worker takes the job over.
    Jobs of one session (`session_id`) are leased one at a time, in the order they were queued.
    `attempts` counts the leases so far; `leased_by` names the worker that holds (or last held)
    the lease and `lease_expires_at` when the lease runs out (None unless leased). `error` says
    why a `failed` job failed. The store stamps `created_at`, `updated_at` and `lease_expires_at`
    with its own clock.
    """

    id: str
    kind: str
    session_id: str | None = None
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    status: JobStatus = "queued"
    attempts: int = 0
    leased_by: str | None = None
    lease_expires_at: datetime | None = None
    error: str = ""
    created_at: datetime = msgspec.field(default_factory=utcnow)
    updated_at: datetime = msgspec.field(default_factory=utcnow)


UsageGroup = Literal["team", "agent", "session", "model", "day"]
"""What usage totals can be grouped by (`day`: the UTC date of the calls)."""


class UsageRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One model call, as the LLM proxy measured it; `id` is its idempotency key.

    `input_tokens` counts every input token, `cached_tokens` the part of them read from the
    provider's cache. `cost_usd` is what the gateway said the call cost (None: it did not say).
    """

    id: str
    at: datetime
    team_id: str
    agent_id: str
    session_id: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float | None = None


class UsageTotals(msgspec.Struct, frozen=True, kw_only=True):
    """The sums of a set of `UsageRecord`s, with the values of the fields they are grouped by.

    The grouping fields not asked for are None. `cost_usd` sums the known costs; `unpriced_calls`
    counts the calls whose cost the gateway did not report.
    """

    team_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    model: str | None = None
    day: str | None = None
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_calls: int = 0
