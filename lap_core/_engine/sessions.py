"""Sessions: create them, send messages, follow their event logs, delete them."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, get_args, overload

import anyio
import structlog

from lap_core import _tracing
from lap_core._engine.jobs import RestartJob, TurnJob, job_for
from lap_core._engine.sandboxes import sandbox_of
from lap_core._engine.tails import LogTails, read_log
from lap_core._errors import Conflict, InvalidInput, NotFound, NotSupported, StoreError
from lap_core._events import EventRecord, TurnEnd, UserMessage
from lap_core._models import DEFAULT_TEAM_ID, BusyPolicy, Job, Session, TurnRecord, new_id

if TYPE_CHECKING:
    import builtins
    from collections.abc import AsyncIterator

    from lap_core._engine.agents import Agents
    from lap_core._engine.bus import EventBus
    from lap_core._engine.turns import TurnRunner
    from lap_core._engine.worker import Worker
    from lap_core._sandbox import SandboxBackend
    from lap_core._store import SessionStore

log = structlog.get_logger("lap.engine")
MAX_MESSAGE = 256 * 1024
# Followers re-read the log at least this often, in case a change elsewhere went untold; rarely
# when the store reports every change (`SessionStore.watches_changes`).
FOLLOW_POLL = 2.0
FOLLOW_POLL_WATCHED = 30.0
STORE_RETRY = 1.0  # seconds between a follower's reads while the store is unavailable

PAGE = 500  # sessions read from the store at once


class Sessions:
    """The session operations of a running `Lap` (`lap.sessions`)."""

    def __init__(
        self,
        store: SessionStore,
        agents: Agents,
        backend: SandboxBackend,
        runner: TurnRunner,
        bus: EventBus,
        worker: Worker,
    ) -> None:
        self._store = store
        self._agents = agents
        self._backend = backend
        self._runner = runner
        self._bus = bus
        self._worker = worker
        self._tails = LogTails(store)

    async def create(self, agent: str, *, title: str = "", team_id: str | None = DEFAULT_TEAM_ID) -> Session:
        """Start a session of an agent (by id or name; any team's with `team_id=None`).

        Its sandbox comes up with the first message.
        """
        found = await self._agents.get(agent, team_id=team_id)
        session = Session(id=new_id("ses"), team_id=found.team_id, agent_id=found.id, title=title)
        return await self._store.create_session(session)

    async def get(self, session_id: str, *, team_id: str | None = DEFAULT_TEAM_ID) -> Session:
        """Return a session; raise `NotFound`."""
        return await self._store.get_session(session_id, team_id=team_id)

    async def list(
        self,
        *,
        team_id: str | None = DEFAULT_TEAM_ID,
        agent: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Session]:
        """Return sessions, newest first (of one agent, by id or name, when given): all of them, or a
        page of `limit` from `offset`."""
        agent_id = (await self._agents.get(agent, team_id=team_id)).id if agent else None
        if limit is not None:
            return await self._store.list_sessions(team_id=team_id, agent_id=agent_id, limit=limit, offset=offset)
        found: list[Session] = []
        while page := await self._store.list_sessions(team_id=team_id, agent_id=agent_id, limit=PAGE, offset=offset):
            found += page
            offset += len(page)
            if len(page) < PAGE:
                break
        return found

    async def delete(self, session_id: str, *, team_id: str | None = DEFAULT_TEAM_ID) -> None:
        """Abort the running turn, delete the sandbox, its workspace and the session's log."""
        session = await self.get(session_id, team_id=team_id)
        self._runner.abort(session.id)
        await self._backend.delete(sandbox_of(session))
        try:
            await self._backend.delete_volume(session.id)
        except NotSupported:
            log.info("session.volume_kept", session_id=session.id, reason="the backend cannot delete volumes")
        await self._store.delete_session(session.id)

    async def send(
        self,
        session_id: str,
        text: str,
        *,
        team_id: str | None = DEFAULT_TEAM_ID,
        on_busy: BusyPolicy | None = None,
        client_key: str | None = None,
    ) -> TurnRecord:
        """Store a user message and queue its turn (one transaction); return the turn.

        A worker runs it (in this process or another); turns of a session run one at a time, in
        order. Follow the reply with `follow`. If a turn of the session is still queued or
        running, `on_busy` (by default the agent's) decides: `enqueue` waits its turn, `reject`
        raises `Conflict` and stores nothing, `interrupt` aborts the pending turns first.

        With `client_key` (the sender's idempotency key), sending again (after a lost answer,
        say) returns the turn the first send started, instead of starting another.
        """
        if not text.strip():
            raise InvalidInput("the message is empty")
        if len(text.encode()) > MAX_MESSAGE:
            raise InvalidInput(f"the message is larger than {MAX_MESSAGE // 1024} KiB")
        if on_busy is not None and on_busy not in get_args(BusyPolicy):
            raise InvalidInput(f"on_busy must be one of {', '.join(get_args(BusyPolicy))}")
        session = await self.get(session_id, team_id=team_id)
        if client_key is not None:
            with contextlib.suppress(NotFound):
                return await self._store.find_turn(session.id, client_key)
        policy = on_busy or (await self._store.get_agent(session.agent_id)).on_busy
        if policy == "interrupt":
            await self._request_abort(session.id, pending=True)
        turn = TurnRecord(id=new_id("turn"), session_id=session.id, client_key=client_key)
        attributes = _tracing.session_attributes(session, turn_id=turn.id)
        with _tracing.span("lap.send_message", attributes):
            job = job_for(session.id, TurnJob(turn_id=turn.id, traceparent=_tracing.traceparent()))
            turn = await self._start_turn(turn, text, job, policy, client_key)
        self._bus.notify(session.id)
        self._worker.wake()
        return turn

    async def _start_turn(
        self, turn: TurnRecord, text: str, job: Job, policy: BusyPolicy, client_key: str | None
    ) -> TurnRecord:
        session_id = turn.session_id
        try:
            turn, _ = await self._store.start_turn(turn, UserMessage(text=text), job=job, if_idle=policy == "reject")
        except Conflict as error:
            if client_key is not None:
                with contextlib.suppress(NotFound):
                    return await self._store.find_turn(session_id, client_key)  # sent twice at once
            if policy != "reject":
                raise
            raise Conflict(
                "the session is busy with another turn; wait for its turn_end, or send with on_busy "
                "'enqueue' (run after it) or 'interrupt' (abort it)",
                details={"session_id": session_id, "on_busy": policy},
            ) from error
        return turn

    async def abort(self, session_id: str, *, team_id: str | None = DEFAULT_TEAM_ID) -> bool:
        """Abort the session's current turn, wherever it runs; return whether there was one.

        The turn ends with `turn_end(status="aborted")`; a turn still queued ends so without running.
        """
        session = await self.get(session_id, team_id=team_id)
        return await self._request_abort(session.id, pending=False)

    async def _request_abort(self, session_id: str, *, pending: bool) -> bool:
        """Flag the current turn (every open one with `pending`) and tell the worker; return whether any."""
        if not await self._store.request_abort(session_id, pending=pending):
            return False
        self._worker.abort_requested(session_id)
        return True

    async def restart(self, session_id: str, *, team_id: str | None = DEFAULT_TEAM_ID) -> Job:
        """Queue a fresh sandbox for the session, with the same workspace and conversation; return the job.

        The current and queued turns are aborted first; messages sent afterwards run on the new
        sandbox. Progress shows on the session's `status` and `status_detail`.
        """
        session = await self.get(session_id, team_id=team_id)
        await self._request_abort(session.id, pending=True)
        job = await self._store.queue_job(job_for(session.id, RestartJob()))
        self._worker.wake()
        return job

    async def history(
        self, session_id: str, *, after: int = 0, team_id: str | None = DEFAULT_TEAM_ID
    ) -> builtins.list[EventRecord]:
        """Return the session's whole event log after `after`."""
        session = await self.get(session_id, team_id=team_id)
        return [record async for record in read_log(self._store, session.id, after=after)]

    @overload
    def follow(
        self, session_id: str, *, after: int = 0, until_turn: str | None = None, heartbeat: None = None
    ) -> AsyncIterator[EventRecord]: ...

    @overload
    def follow(
        self, session_id: str, *, after: int = 0, until_turn: str | None = None, heartbeat: float
    ) -> AsyncIterator[EventRecord | None]: ...

    async def follow(
        self, session_id: str, *, after: int = 0, until_turn: str | None = None, heartbeat: float | None = None
    ) -> AsyncIterator[EventRecord | None]:
        """Yield the session's events after `after`, live; stop after `until_turn`'s `turn_end` if given.

        With `heartbeat`, also yield None whenever that many seconds passed without an event (so a
        stream over the network can send keep-alives).
        """
        with self._tails.following(session_id) as tail:
            quiet_since = anyio.current_time()
            while True:
                waiting_since = anyio.current_time()
                changed = self._bus.watch(session_id)
                try:
                    batch = await self._tails.read(session_id, tail, after, waiting_since)
                except StoreError as error:
                    # The store is down for now: the stream pauses, and continues where it was.
                    log.warning("session.follow_paused", session_id=session_id, error=error.message)
                    await anyio.sleep(STORE_RETRY)
                    continue
                for record in batch:
                    yield record
                    after = record.seq
                    if until_turn and record.turn_id == until_turn and isinstance(record.event, TurnEnd):
                        return
                if batch:
                    quiet_since = anyio.current_time()
                    continue
                wait = FOLLOW_POLL_WATCHED if self._store.watches_changes else FOLLOW_POLL
                if heartbeat is not None:
                    wait = min(wait, max(0.0, quiet_since + heartbeat - anyio.current_time()))
                with anyio.move_on_after(wait):
                    await changed.wait()
                await self._tails.touch(session_id, tail)
                if heartbeat is not None and anyio.current_time() - quiet_since >= heartbeat:
                    yield None
                    quiet_since = anyio.current_time()

    async def stream(
        self, session_id: str, text: str, *, team_id: str | None = DEFAULT_TEAM_ID
    ) -> AsyncIterator[EventRecord]:
        """Send a message and yield the turn's events, its `user_message` first and `turn_end` last."""
        turn = await self.send(session_id, text, team_id=team_id)
        async for record in self.follow(session_id, after=turn.user_seq - 1, until_turn=turn.id):
            yield record
