"""`SqlStore`: LAP's `SessionStore` on piccolo, for SQLite and PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, get_args

import msgspec
from piccolo.columns.combination import WhereRaw
from piccolo.engine.sqlite import SQLiteEngine

from lap_core import Conflict, EventRecord, InvalidInput, SessionStore, StoreChange, TurnStatus, utcnow
from lap_sql import _events, _notify, _rows
from lap_sql._database import Database
from lap_sql._db import not_found
from lap_sql._integrations import Integrations
from lap_sql._jobs import JobQueue
from lap_sql._keys import ApiKeys
from lap_sql._secrets import Secrets
from lap_sql._usage import Usage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from datetime import datetime

    from lap_core import Agent, Job, Session, SessionEvent, SessionStatus, Team, TurnRecord

_END_STATES = frozenset({"completed", "failed", "aborted"})
_OPEN_STATES = ["queued", "running"]


def _check_page(limit: int, offset: int) -> None:
    if limit < 0 or offset < 0:
        raise InvalidInput(f"limit and offset must not be negative (got limit={limit}, offset={offset})")


class SqlStore(ApiKeys, Secrets, JobQueue, Usage, Integrations, SessionStore):
    """A `SessionStore` in SQLite (`sqlite:///path/lap.db`) or PostgreSQL (`postgresql://...`).

    Each instance has its own engine and table classes, so stores of different databases can be
    used side by side. Event seqs come from `sessions.last_seq`, bumped and read back in the
    transaction that inserts the events, so concurrent appends never share or skip a seq. The job
    queue's methods come from `JobQueue`, the API keys' from `ApiKeys`, the secrets' from `Secrets`, the
    usage methods from `Usage`, the integrations' from `Integrations`.
    """

    def __init__(self, url: str) -> None:
        self._db = Database(url)
        self._t = self._db.tables
        self.watches_changes = self._db.dialect == "postgres"  # LISTEN/NOTIFY

    def __repr__(self) -> str:
        return f"SqlStore({self._db.display_url!r})"

    async def open(self) -> None:
        """Connect: open the PostgreSQL pool, or create the SQLite file (in WAL mode)."""
        await self._db.open()

    async def aclose(self) -> None:
        """Close the PostgreSQL pool."""
        await self._db.aclose()

    async def watch(self) -> AsyncIterator[StoreChange]:
        """Yield changes committed by any process: LISTEN/NOTIFY on PostgreSQL; nothing on SQLite."""
        if self._db.dialect != "postgres":
            async for change in super().watch():
                yield change
        async for change in _notify.listen(self._db.dsn):
            yield change

    async def migrate(self) -> list[str]:
        """Apply the pending migrations (serialised across processes); return their names."""
        return await self._db.migrate()

    async def check(self) -> None:
        """Raise `StoreError` unless the database is reachable and fully migrated."""
        await self._db.check()

    # teams
    async def create_team(self, team: Team) -> Team:
        """Insert a team; raise `Conflict` if its id or name exists."""
        t = self._t.teams
        async with self._db.write(conflict=f"a team with id {team.id!r} or name {team.name!r} already exists"):
            await t.insert(t(id=team.id, created_at=_rows.utc(team.created_at), **_rows.team_values(team)))
        return team

    async def update_team(self, team: Team) -> Team:
        """Replace a stored team (same id: its name, budget and egress); raise `NotFound` or `Conflict` (name taken)."""
        t = self._t.teams
        values = {getattr(t, name): value for name, value in _rows.team_values(team).items()}
        async with self._db.write(conflict=f"a team named {team.name!r} already exists", one_statement=True):
            rows = await t.update(values, use_auto_update=False).where(t.id == team.id).returning(*t.all_columns())
        if not rows:
            raise not_found("team", team.id)
        return _rows.team(rows[0])

    async def get_team(self, team_id: str) -> Team:
        """Return a team; raise `NotFound`."""
        t = self._t.teams
        async with self._db.read():
            row = await t.select().where(t.id == team_id).first()
        if row is None:
            raise not_found("team", team_id)
        return _rows.team(row)

    async def list_teams(self) -> list[Team]:
        """Return every team, oldest first."""
        t = self._t.teams
        async with self._db.read():
            rows = await t.select().order_by(t.created_at, t.id)
        return [_rows.team(row) for row in rows]

    # agents
    async def create_agent(self, agent: Agent) -> Agent:
        """Insert an agent; raise `Conflict` if the team has an agent of that name (or the id exists)."""
        t = self._t.agents
        conflict = f"team {agent.team_id!r} already has an agent named {agent.name!r} (or the id {agent.id!r} is taken)"
        async with self._db.write(conflict=conflict):
            await t.insert(t(id=agent.id, team_id=agent.team_id, **_rows.agent_values(agent)))
        return agent

    async def get_agent(self, agent_id: str, *, team_id: str | None = None) -> Agent:
        """Return an agent by id (only if it is in `team_id`, when given); raise `NotFound`."""
        t = self._t.agents
        where = [t.id == agent_id] + ([t.team_id == team_id] if team_id is not None else [])
        async with self._db.read():
            row = await t.select().where(*where).first()
        if row is None:
            raise not_found("agent", agent_id)
        return _rows.agent(row)

    async def find_agent(self, name: str, *, team_id: str) -> Agent:
        """Return the team's agent of that name; raise `NotFound`."""
        t = self._t.agents
        async with self._db.read():
            row = await t.select().where(t.team_id == team_id, t.name == name).first()
        if row is None:
            raise not_found("agent", name)
        return _rows.agent(row)

    async def list_agents(
        self, *, team_id: str | None = None, search: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Agent]:
        """Return agents by name, optionally of one team and whose name contains `search` (any case)."""
        _check_page(limit, offset)
        if limit == 0:
            return []
        t = self._t.agents
        where: list[Any] = []
        if team_id is not None:
            where.append(t.team_id == team_id)
        if search:
            # A plain substring test: LIKE would need its wildcards escaped, and piccolo has no ESCAPE.
            find = "instr" if isinstance(self._db.engine, SQLiteEngine) else "strpos"
            where.append(WhereRaw(f'{find}(lower("name"), lower({{}})) > 0', search))
        query = t.select().order_by(t.name, t.id).limit(limit).offset(offset)
        async with self._db.read():
            rows = await (query.where(*where) if where else query)
        return [_rows.agent(row) for row in rows]

    async def update_agent(self, agent: Agent) -> Agent:
        """Replace a stored agent (same id and team); raise `NotFound` or `Conflict` (name taken)."""
        t = self._t.agents
        async with self._db.write(conflict=f"team {agent.team_id!r} already has an agent named {agent.name!r}"):
            rows = await (
                t.update(_rows.agent_values(agent), use_auto_update=False)
                .where(t.id == agent.id, t.team_id == agent.team_id)
                .returning(t.id)
            )
            if not rows:
                raise not_found("agent", agent.id)
        return agent

    async def delete_agent(self, agent_id: str, *, team_id: str | None = None) -> None:
        """Delete an agent and (by the foreign key's cascade) its secrets; raise `NotFound`, or `Conflict`
        while it still has sessions."""
        t, sessions = self._t.agents, self._t.sessions
        busy = Conflict(f"agent {agent_id!r} still has sessions: delete them first")
        async with self._db.write(foreign_key=busy):
            where = [t.id == agent_id] + ([t.team_id == team_id] if team_id is not None else [])
            if not await t.select(t.id).where(*where).first():
                raise not_found("agent", agent_id)
            if await sessions.select(sessions.id).where(sessions.agent_id == agent_id).first():
                raise busy
            await t.delete().where(t.id == agent_id)

    # sessions
    async def create_session(self, session: Session) -> Session:
        """Insert a session; raise `NotFound` if its agent does not exist (in the session's team)."""
        t, agents = self._t.sessions, self._t.agents
        missing = not_found("agent", session.agent_id)
        async with self._db.write(conflict=f"session {session.id!r} already exists", foreign_key=missing):
            agent = (
                await agents.select(agents.id)
                .where(agents.id == session.agent_id, agents.team_id == session.team_id)
                .first()
            )
            if agent is None:
                raise missing
            values = msgspec.structs.asdict(session)
            values["created_at"], values["updated_at"] = _rows.utc(session.created_at), _rows.utc(session.updated_at)
            await t.insert(t(**values))
        return session

    async def get_session(self, session_id: str, *, team_id: str | None = None) -> Session:
        """Return a session (only if it is in `team_id`, when given); raise `NotFound`."""
        t = self._t.sessions
        where = [t.id == session_id] + ([t.team_id == team_id] if team_id is not None else [])
        async with self._db.read():
            row = await t.select().where(*where).first()
        if row is None:
            raise not_found("session", session_id)
        return _rows.session(row)

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
        """Return sessions, newest first (filtered as `SessionStore.list_sessions` says)."""
        _check_page(limit, offset)
        if limit == 0 or (status is not None and not status):
            return []
        t = self._t.sessions
        where = [t.team_id == team_id] if team_id is not None else []
        if agent_id is not None:
            where.append(t.agent_id == agent_id)
        if status is not None:
            where.append(t.status.is_in(list(status)))
        if updated_before is not None:
            where.append(t.updated_at < _rows.utc(updated_before))
        query = t.select().order_by(t.created_at, t.id, ascending=False).limit(limit).offset(offset)
        async with self._db.read():
            rows = await (query.where(*where) if where else query)
        return [_rows.session(row) for row in rows]

    async def update_session(self, session_id: str, **changes: Any) -> Session:
        """Set the given fields (`status`, `status_detail`, `sandbox_name`, `native_session_id`,
        `sandbox_generation`, `title`).

        Bumps `updated_at`; raise `NotFound`; `InvalidInput` for any other field or a value of the wrong type.
        """
        unknown = sorted(set(changes) - _rows.SESSION_FIELDS)
        if unknown:
            allowed = ", ".join(sorted(_rows.SESSION_FIELDS))
            raise InvalidInput(f"cannot update session field(s) {', '.join(unknown)} (allowed: {allowed})")
        try:
            msgspec.convert(changes, _rows.SessionChanges)
        except msgspec.ValidationError as exc:
            raise InvalidInput(f"invalid session change: {exc}") from exc
        t = self._t.sessions
        values: dict[Any, Any] = {getattr(t, name): value for name, value in changes.items()}
        values[t.updated_at] = utcnow()
        async with self._db.write():
            rows = await t.update(values, use_auto_update=False).where(t.id == session_id).returning(*t.all_columns())
            if not rows:
                raise not_found("session", session_id)
        return _rows.session(rows[0])

    async def delete_session(self, session_id: str, *, team_id: str | None = None) -> None:
        """Delete a session with its turns, events and jobs; raise `NotFound`."""
        t = self._t.sessions
        where = [t.id == session_id] + ([t.team_id == team_id] if team_id is not None else [])
        async with self._db.write():
            if not await t.select(t.id).where(*where).first():
                raise not_found("session", session_id)
            await self._t.events.delete().where(self._t.events.session_id == session_id)
            await self._t.turns.delete().where(self._t.turns.session_id == session_id)
            await self._t.jobs.delete().where(self._t.jobs.session_id == session_id)
            await t.delete().where(t.id == session_id)

    # the event log and turns
    async def start_turn(
        self, turn: TurnRecord, message: SessionEvent, *, job: Job | None = None, if_idle: bool = False
    ) -> tuple[TurnRecord, EventRecord]:
        """Insert a turn, append its user message to the log and queue `job` (if given), in one transaction.

        Returns the turn (with `user_seq` set) and the message's record. Raise `NotFound`, `Conflict`
        (also when `if_idle` and a turn is pending), or `InvalidInput` if the job is of another session.
        """
        if job is not None and job.session_id != turn.session_id:
            raise InvalidInput(f"the job of a turn of session {turn.session_id!r} names session {job.session_id!r}")
        t = self._t.turns
        taken = f"turn {turn.id!r}" + ("" if job is None else f" or job {job.id!r}")
        async with self._db.write(conflict=f"{taken} already exists"):
            seq = await _events.claim(self._db, turn.session_id, 1)
            # After `_events.claim` locked the session's row, so a racing `start_turn` waits for this one.
            if if_idle and await t.exists().where(t.session_id == turn.session_id, t.status.is_in(_OPEN_STATES)):
                raise Conflict("a turn of this session is still queued or running")
            stored = msgspec.structs.replace(turn, user_seq=seq)
            record = EventRecord(session_id=turn.session_id, seq=seq, event=message, turn_id=turn.id, at=utcnow())
            values = msgspec.structs.asdict(stored)
            values["created_at"] = _rows.utc(stored.created_at)
            values["finished_at"] = None if stored.finished_at is None else _rows.utc(stored.finished_at)
            await t.insert(t(**values))
            await _events.insert(self._db, [_events.row(turn.session_id, seq, turn.id, record.at, message)])
            if job is not None:
                # After `_events.claim` locked the session's row: the session's jobs queue in commit order.
                await self._queue_job(job)
                if self._db.dialect == "postgres":
                    await _notify.notify(t, "jobs", turn.session_id)
        return stored, record

    async def queue_job(self, job: Job) -> Job:
        """Queue a job that is not a turn's (see `SessionStore.queue_job`); return it as stored."""
        async with self._db.write(conflict=f"job {job.id!r} already exists"):
            if job.session_id is not None:
                # Locks the session's row (as `start_turn` does), so its jobs queue in commit order.
                await _events.claim(self._db, job.session_id, 0)
            await self._queue_job(job)
            if self._db.dialect == "postgres":
                await _notify.notify(self._t.jobs, "jobs", job.session_id or "")
        return await self.get_job(job.id)

    async def find_turn(self, session_id: str, client_key: str) -> TurnRecord:
        """Return the session's turn started with `client_key`; raise `NotFound`."""
        t = self._t.turns
        async with self._db.read():
            row = await t.select().where(t.session_id == session_id, t.client_key == client_key).first()
        if row is None:
            raise not_found("turn", client_key)
        return _rows.turn(row)

    async def get_turn(self, turn_id: str) -> TurnRecord:
        """Return a turn; raise `NotFound`."""
        t = self._t.turns
        async with self._db.read():
            row = await t.select().where(t.id == turn_id).first()
        if row is None:
            raise not_found("turn", turn_id)
        return _rows.turn(row)

    async def list_turns(self, session_id: str) -> list[TurnRecord]:
        """Return a session's turns, oldest (first started) first."""
        t = self._t.turns
        async with self._db.read():
            rows = await t.select().where(t.session_id == session_id).order_by(t.user_seq, t.created_at, t.id)
        return [_rows.turn(row) for row in rows]

    async def set_turn_status(self, turn_id: str, status: str) -> TurnRecord:
        """Set a turn's status (`running`, `completed`, `failed`, `aborted`); end states set `finished_at`."""
        if status not in get_args(TurnStatus):
            raise InvalidInput(f"unknown turn status {status!r} (expected one of {', '.join(get_args(TurnStatus))})")
        t = self._t.turns
        finished_at = utcnow() if status in _END_STATES else None
        async with self._db.write():
            rows = await (
                t.update({t.status: status, t.finished_at: finished_at}, use_auto_update=False)
                .where(t.id == turn_id)
                .returning(*t.all_columns())
            )
            if not rows:
                raise not_found("turn", turn_id)
        return _rows.turn(rows[0])

    async def request_abort(self, session_id: str, *, pending: bool = False) -> list[TurnRecord]:
        """Flag the session's oldest open turn (every open turn with `pending`) for abort; return them."""
        t = self._t.turns
        async with self._db.write():
            query = t.select(t.id).where(t.session_id == session_id, t.status.is_in(_OPEN_STATES)).order_by(t.user_seq)
            ids = [row["id"] for row in await (query if pending else query.limit(1))]
            rows = []
            if ids:
                rows = await (
                    t.update({t.abort_requested: True}, use_auto_update=False)
                    .where(t.id.is_in(ids))
                    .returning(*t.all_columns())
                )
                if self._db.dialect == "postgres":
                    await _notify.notify(t, "aborts", session_id)
            elif not await self._t.sessions.exists().where(self._t.sessions.id == session_id):
                raise not_found("session", session_id)
        return sorted((_rows.turn(row) for row in rows), key=lambda turn: turn.user_seq)

    async def append_events(
        self, session_id: str, events: Sequence[SessionEvent], *, turn_id: str | None = None
    ) -> list[EventRecord]:
        """Append events to the session's log with the next seqs, atomically; raise `NotFound`."""
        if not events:
            await self.get_session(session_id)
            return []
        at = utcnow()
        first = await _events.append(self._db, session_id, events, turn_id, at)
        return [
            EventRecord(session_id=session_id, seq=first + index, event=event, turn_id=turn_id, at=at)
            for index, event in enumerate(events)
        ]

    async def read_events(self, session_id: str, *, after: int = 0, limit: int = 1000) -> list[EventRecord]:
        """Return the session's records with `seq > after`, in order, at most `limit`."""
        _check_page(limit, 0)
        if limit == 0:
            return []
        return await _events.read(self._db, session_id, after, limit)
