"""Sessions: create them, send messages, follow their event logs, delete them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import structlog

from lap_core._engine.sandboxes import sandbox_name
from lap_core._engine.worker import TURN
from lap_core.errors import InvalidInput, NotSupported
from lap_core.events import EventRecord, TurnEnd, UserMessage
from lap_core.models import DEFAULT_TEAM_ID, Job, Session, TurnRecord, new_id

if TYPE_CHECKING:
    import builtins
    from collections.abc import AsyncIterator, Callable

    from lap_core._engine.agents import Agents
    from lap_core._engine.bus import EventBus
    from lap_core._engine.turns import TurnRunner
    from lap_core.sandbox import SandboxBackend
    from lap_core.store import SessionStore

log = structlog.get_logger("lap.engine")
MAX_MESSAGE = 256 * 1024
# Followers re-read the log at least this often, in case a notification came from elsewhere.
FOLLOW_POLL = 2.0


class Sessions:
    """The session operations of a running `Lap` (`lap.sessions`)."""

    def __init__(
        self,
        store: SessionStore,
        agents: Agents,
        backend: SandboxBackend,
        runner: TurnRunner,
        bus: EventBus,
        on_queued: Callable[[], None],
    ) -> None:
        self._store = store
        self._agents = agents
        self._backend = backend
        self._runner = runner
        self._bus = bus
        self._on_queued = on_queued

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

    async def list(self, *, team_id: str | None = DEFAULT_TEAM_ID, agent: str | None = None) -> list[Session]:
        """Return sessions, newest first (of one agent, by id or name, when given)."""
        agent_id = (await self._agents.get(agent, team_id=team_id)).id if agent else None
        return await self._store.list_sessions(team_id=team_id, agent_id=agent_id)

    async def delete(self, session_id: str, *, team_id: str | None = DEFAULT_TEAM_ID) -> None:
        """Abort the running turn, delete the sandbox, its workspace and the session's log."""
        session = await self.get(session_id, team_id=team_id)
        self._runner.abort(session.id)
        await self._backend.delete(session.sandbox_name or sandbox_name(session.id))
        try:
            await self._backend.delete_volume(session.id)
        except NotSupported:
            log.info("session.volume_kept", session_id=session.id, reason="the backend cannot delete volumes")
        await self._store.delete_session(session.id)

    async def send(self, session_id: str, text: str, *, team_id: str | None = DEFAULT_TEAM_ID) -> TurnRecord:
        """Store a user message and queue its turn (one transaction); return the turn.

        A worker runs it (in this process or another); turns of a session run one at a time, in
        order. Follow the reply with `follow`.
        """
        if not text.strip():
            raise InvalidInput("the message is empty")
        if len(text.encode()) > MAX_MESSAGE:
            raise InvalidInput(f"the message is larger than {MAX_MESSAGE // 1024} KiB")
        session = await self.get(session_id, team_id=team_id)
        turn = TurnRecord(id=new_id("turn"), session_id=session.id)
        job = Job(id=new_id("job"), kind=TURN, session_id=session.id, payload={"turn_id": turn.id})
        turn, _ = await self._store.start_turn(turn, UserMessage(text=text), job=job)
        self._bus.notify(session.id)
        self._on_queued()
        return turn

    def abort(self, session_id: str) -> bool:
        """Abort the session's running turn (it ends with `turn_end(status="aborted")`)."""
        return self._runner.abort(session_id)

    async def history(
        self, session_id: str, *, after: int = 0, team_id: str | None = DEFAULT_TEAM_ID
    ) -> builtins.list[EventRecord]:
        """Return the session's whole event log after `after`."""
        session = await self.get(session_id, team_id=team_id)
        records: builtins.list[EventRecord] = []
        while batch := await self._store.read_events(session.id, after=after):
            records += batch
            after = batch[-1].seq
        return records

    async def follow(
        self, session_id: str, *, after: int = 0, until_turn: str | None = None
    ) -> AsyncIterator[EventRecord]:
        """Yield the session's events after `after`, live; stop after `until_turn`'s `turn_end` if given."""
        while True:
            changed = self._bus.watch(session_id)
            batch = await self._store.read_events(session_id, after=after)
            for record in batch:
                yield record
                after = record.seq
                if until_turn and record.turn_id == until_turn and isinstance(record.event, TurnEnd):
                    return
            if not batch:
                with anyio.move_on_after(FOLLOW_POLL):
                    await changed.wait()

    async def stream(
        self, session_id: str, text: str, *, team_id: str | None = DEFAULT_TEAM_ID
    ) -> AsyncIterator[EventRecord]:
        """Send a message and yield the turn's events, its `user_message` first and `turn_end` last."""
        turn = await self.send(session_id, text, team_id=team_id)
        async for record in self.follow(session_id, after=turn.user_seq - 1, until_turn=turn.id):
            yield record
