"""The SessionStore contract: where LAP keeps teams, agents, sessions and their event logs.

A store is selected by the scheme of `DATABASE_URL` (see `SessionStoreSpec.schemes`). Every
method is async and safe to call from several tasks at once. Conformance:
`lap_core.testing.StoreConformance` and, for the job queue, `lap_core.testing.JobQueueConformance`.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, Literal, Self

import anyio
import msgspec
from anyio.abc import AsyncResource

from lap_core._integration import IntegrationStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from datetime import datetime

    from lap_core._events import EventRecord, SessionEvent
    from lap_core._models import (
        Agent,
        ApiKey,
        Job,
        JobStatus,
        Secret,
        Session,
        SessionStatus,
        Team,
        TurnRecord,
        UsageGroup,
        UsageRecord,
        UsageTotals,
    )


class StoreChange(msgspec.Struct, frozen=True, kw_only=True):
    """A change another process made: a session's log grew (`events`), a job was queued (`jobs`),
    or a session's turns were flagged for abort (`aborts`)."""

    kind: Literal["events", "jobs", "aborts"]
    session_id: str | None = None


class SessionStore(IntegrationStore, AsyncResource):
    """Persistent state of a LAP installation. Subclass it to store LAP somewhere new.

    Set `watches_changes` if `watch()` reports every change any process commits: followers then
    re-read the log only when told (and rarely otherwise) instead of every couple of seconds.
    The methods integrations need (delivery cursors, leases, links) come from `IntegrationStore`.
    """

    watches_changes: bool = False

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def open(self) -> None:
        """Connect (open pools); called once before any other method."""

    async def aclose(self) -> None:
        """Release connections; the store is unusable afterwards."""

    async def watch(self) -> AsyncIterator[StoreChange]:
        """Yield changes as any process makes them, until cancelled (live fan-out across processes).

        Followers and workers re-read the store when told; they also poll, so a store that cannot
        watch (the default: it yields nothing) is slower, never wrong. PostgreSQL: LISTEN/NOTIFY.
        A change with no `session_id` means "anything may have changed" (e.g. after a reconnect).
        """
        await anyio.sleep_forever()
        yield StoreChange(kind="events")  # pragma: no cover - unreachable; makes this a generator

    @abstractmethod
    async def migrate(self) -> list[str]:
        """Bring the schema up to date; return the names of the migrations applied now (may be none)."""

    @abstractmethod
    async def check(self) -> None:
        """Raise `StoreError` unless the store is reachable and fully migrated."""

    # teams
    @abstractmethod
    async def create_team(self, team: Team) -> Team:
        """Insert a team; raise `Conflict` if its id or name exists."""

    @abstractmethod
    async def get_team(self, team_id: str) -> Team:
        """Return a team; raise `NotFound`."""

    @abstractmethod
    async def list_teams(self) -> list[Team]:
        """Return every team, oldest first."""

    @abstractmethod
    async def update_team(self, team: Team) -> Team:
        """Replace a stored team (same id: its name, budget and egress); raise `NotFound` or `Conflict` (name taken)."""

    # API keys (only a hash of each secret: the store never sees one)
    @abstractmethod
    async def create_api_key(self, key: ApiKey) -> ApiKey:
        """Insert an API key; raise `NotFound` for an unknown team, `Conflict` for a taken id or prefix."""

    @abstractmethod
    async def find_api_key(self, prefix: str) -> ApiKey:
        """Return the key with this prefix; raise `NotFound`."""

    @abstractmethod
    async def list_api_keys(self, *, team_id: str | None = None) -> list[ApiKey]:
        """Return the keys (of one team, when given), oldest first."""

    @abstractmethod
    async def delete_api_key(self, key_id: str, *, team_id: str | None = None) -> None:
        """Delete a key (only if it is in `team_id`, when given); raise `NotFound`."""

    # agents
    @abstractmethod
    async def create_agent(self, agent: Agent) -> Agent:
        """Insert an agent; raise `Conflict` if the team has an agent of that name."""

    @abstractmethod
    async def get_agent(self, agent_id: str, *, team_id: str | None = None) -> Agent:
        """Return an agent by id (only if it is in `team_id`, when given); raise `NotFound`."""

    @abstractmethod
    async def find_agent(self, name: str, *, team_id: str) -> Agent:
        """Return the team's agent of that name; raise `NotFound`."""

    @abstractmethod
    async def list_agents(
        self, *, team_id: str | None = None, search: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Agent]:
        """Return agents by name, optionally of one team and whose name contains `search`."""

    @abstractmethod
    async def update_agent(self, agent: Agent) -> Agent:
        """Replace a stored agent (same id); raise `NotFound` or `Conflict` (name taken)."""

    @abstractmethod
    async def delete_agent(self, agent_id: str, *, team_id: str | None = None) -> None:
        """Delete an agent and its own secrets; raise `NotFound`, or `Conflict` while it still has sessions."""

    # secrets: the store keeps each one's ciphertext, never a value (the engine encrypts and decrypts)
    @abstractmethod
    async def create_secret(self, secret: Secret, ciphertext: bytes) -> Secret:
        """Insert a secret with its ciphertext.

        Raise `NotFound` for an unknown team, or an agent that is not the secret's team's;
        `Conflict` if the id is taken, or the team (for an agent's secret: the agent) already has a
        secret of that name.
        """

    @abstractmethod
    async def get_secret(self, secret_id: str, *, team_id: str | None = None) -> Secret:
        """Return a secret (only if it is in `team_id`, when given); raise `NotFound`."""

    @abstractmethod
    async def list_secrets(self, *, team_id: str | None = None, agent_id: str | None = None) -> list[Secret]:
        """Return secrets by name, of one team when given; an agent's own before a team-wide one.

        With `agent_id`, only those its sandboxes may get: the agent's own and its team's team-wide ones.
        """

    @abstractmethod
    async def secret_ciphertexts(self, secret_ids: Sequence[str]) -> dict[str, bytes]:
        """Return the ciphertexts of the secrets with these ids, by id (unknown ids are left out)."""

    @abstractmethod
    async def delete_secret(self, secret_id: str, *, team_id: str | None = None) -> None:
        """Delete a secret (only if it is in `team_id`, when given); raise `NotFound`."""

    # sessions
    @abstractmethod
    async def create_session(self, session: Session) -> Session:
        """Insert a session; raise `NotFound` if its agent does not exist."""

    @abstractmethod
    async def get_session(self, session_id: str, *, team_id: str | None = None) -> Session:
        """Return a session (only if it is in `team_id`, when given); raise `NotFound`."""

    @abstractmethod
    async def list_sessions(
        self,
        *,
        team_id: str | None = None,
        agent_id: str | None = None,
        status: Sequence[SessionStatus] | None = None,
        updated_before: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Session]:
        """Return sessions, newest first: of one team or agent, in one of `status`, or not updated
        since `updated_before`, when given (the reconciler's questions)."""

    @abstractmethod
    async def update_session(self, session_id: str, **changes: Any) -> Session:
        """Set the given fields (`status`, `status_detail`, `sandbox_name`, `native_session_id`,
        `sandbox_generation`, `title`).

        Bumps `updated_at`; raise `NotFound`; `InvalidInput` for any other field.
        """

    @abstractmethod
    async def delete_session(self, session_id: str, *, team_id: str | None = None) -> None:
        """Delete a session with its turns, events and jobs; raise `NotFound`."""

    # the event log and turns
    @abstractmethod
    async def start_turn(
        self, turn: TurnRecord, message: SessionEvent, *, job: Job | None = None, if_idle: bool = False
    ) -> tuple[TurnRecord, EventRecord]:
        """Insert a turn and append its user message to the log, in one transaction.

        With `if_idle`, raise `Conflict` and store nothing if the session has a turn that is
        still `queued` or `running` (checked in the same transaction: of two such calls racing on
        an idle session, one wins).

        With `job`, queue that job in the same transaction: the turn, the message and the job are
        stored together or not at all. The job's `session_id` must be the turn's (else `InvalidInput`);
        it is stored `queued`, never leased (`attempts` 0, no lease, no error, whatever the record
        says), with `created_at` and `updated_at` from the store's clock. Queued after every job of
        the session queued before, it is leased after them (see `lease_job`).

        Returns the turn (with `user_seq` set) and the message's record. Raise `NotFound` (no such
        session) or `Conflict` (the turn's or the job's id is taken).
        """

    @abstractmethod
    async def get_turn(self, turn_id: str) -> TurnRecord:
        """Return a turn; raise `NotFound`."""

    @abstractmethod
    async def find_turn(self, session_id: str, client_key: str) -> TurnRecord:
        """Return the session's turn started with this `client_key`; raise `NotFound`.

        A session's turns never share a `client_key` (`start_turn` raises `Conflict`).
        """

    @abstractmethod
    async def list_turns(self, session_id: str) -> list[TurnRecord]:
        """Return a session's turns, oldest first."""

    @abstractmethod
    async def set_turn_status(self, turn_id: str, status: str) -> TurnRecord:
        """Set a turn's status (`running`, `completed`, `failed`, `aborted`); end states set `finished_at`."""

    @abstractmethod
    async def request_abort(self, session_id: str, *, pending: bool = False) -> list[TurnRecord]:
        """Flag the session's current turn (its oldest `queued` or `running` one) `abort_requested`.

        With `pending`, flag every `queued` or `running` turn of the session. Return the flagged
        turns (already flagged ones included), oldest first; none if the session is idle. Tell
        watchers in other processes (`StoreChange(kind="aborts")`). Raise `NotFound`.
        """

    @abstractmethod
    async def append_events(
        self, session_id: str, events: Sequence[SessionEvent], *, turn_id: str | None = None
    ) -> list[EventRecord]:
        """Append events to the session's log with the next seqs, atomically; raise `NotFound`.

        Concurrent appends to one session never share or skip a seq.
        """

    @abstractmethod
    async def read_events(self, session_id: str, *, after: int = 0, limit: int = 1000) -> list[EventRecord]:
        """Return the session's records with `seq > after`, in order, at most `limit`."""

    # the job queue
    @abstractmethod
    async def queue_job(self, job: Job) -> Job:
        """Queue a job that is not a turn's (a sandbox restart, say); return it as stored.

        Stored like `start_turn`'s job: `queued`, never leased, stamped by the store's clock, and
        leased after every job of its session queued before it. Raise `NotFound` (its session does
        not exist) or `Conflict` (its id is taken).
        """

    @abstractmethod
    async def lease_job(
        self, worker_id: str, *, lease_seconds: float, kinds: Sequence[str] | None = None
    ) -> Job | None:
        """Atomically take the next job for `worker_id`, or return None when no job is eligible.

        Eligible are queued jobs, and leased jobs whose lease has expired (their worker died or
        stalled: they are taken over), of one of `kinds` when given. A job with a `session_id` is
        not eligible while an older job of its session is still queued or leased (even with an
        expired lease), nor while another job of its session holds an unexpired lease: the jobs of
        one session are leased strictly in the order they were queued, one at a time. Of the
        eligible jobs the oldest (first queued) is taken: its status becomes `leased`, `leased_by`
        `worker_id`, `lease_expires_at` the store's now plus `lease_seconds`, and `attempts` grows
        by one. Concurrent callers, in this process or others, never get the same lease and never
        wait for each other's leases. Raise `InvalidInput` unless 0 < `lease_seconds` <= 86400.
        """

    @abstractmethod
    async def heartbeat_job(self, job_id: str, worker_id: str, *, lease_seconds: float) -> bool:
        """Extend `worker_id`'s lease of a job to the store's now plus `lease_seconds`; return True.

        Return False, changing nothing, if the job is not leased by `worker_id` any more: it was
        taken over after its lease expired, released, finished, or deleted with its session (or
        never existed). A lease that has expired but was not taken over yet is still the worker's.
        Raise `InvalidInput` unless 0 < `lease_seconds` <= 86400.
        """

    @abstractmethod
    async def finish_job(
        self, job_id: str, worker_id: str, *, status: Literal["done", "failed"], error: str = ""
    ) -> bool:
        """End `worker_id`'s lease of a job with `status` (and `error`, why it failed); return True.

        The lease is cleared (`lease_expires_at` None; `leased_by` keeps the worker's name) and the
        next job of the session becomes eligible. Return False, changing nothing, if the job is not
        leased by `worker_id` any more (see `heartbeat_job`). Raise `InvalidInput` for another status.
        """

    @abstractmethod
    async def release_job(self, job_id: str, worker_id: str) -> bool:
        """Hand a leased job back unfinished (a graceful shutdown); return True.

        The job is `queued` again with no lease, ahead of the jobs queued after it; `attempts`
        keeps counting the lease. Return False, changing nothing, if the job is not leased by
        `worker_id` any more (see `heartbeat_job`).
        """

    @abstractmethod
    async def get_job(self, job_id: str) -> Job:
        """Return a job; raise `NotFound`."""

    @abstractmethod
    async def prune_jobs(self, finished_before: datetime) -> int:
        """Delete the `done` and `failed` jobs last changed before `finished_before`; return how many."""

    @abstractmethod
    async def list_jobs(
        self, *, session_id: str | None = None, status: JobStatus | None = None, limit: int = 100
    ) -> list[Job]:
        """Return jobs in the order they were queued (oldest first), at most `limit`.

        Only the session's, and only those in `status`, when given. Raise `InvalidInput` for an
        unknown status or a negative limit.
        """

    # usage (conformance: `lap_core.testing.StoreConformance`)
    @abstractmethod
    async def record_usage(self, record: UsageRecord) -> bool:
        """Store one model call's usage; return False, storing nothing, if its `id` is stored already.

        The id is the call's idempotency key: recording a call again (a retried write) never
        counts it twice. Records outlive their session (deleting a session keeps its usage).
        """

    @abstractmethod
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
        """Return the sums of the matching usage records, computed by the store.

        Records match the ids given and `since <= at < until`. Without `group_by`, one
        `UsageTotals` (all zeros when nothing matches); with it, one per group that has records,
        ordered by the grouping fields in the order given. Raise `InvalidInput` for an unknown group.
        """
