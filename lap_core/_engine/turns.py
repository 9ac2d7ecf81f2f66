"""Running one turn: bring up the sandbox, drive the harness, append every event to the log.

Clients never get events from here directly: they follow the session's log (see
`Sessions.follow`). The contract (tests/unit/test_engine.py): a turn's events start with its
`user_message` and end with exactly one `turn_end`; a failure in between becomes an `error`
event and `turn_end(status="failed")`, and the session stays usable for the next message.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

import anyio
import structlog

from lap_core import _tracing
from lap_core._engine.resume import from_harness, plan_attempt, restarts_in
from lap_core._engine.sandboxes import sandbox_name
from lap_core._engine.tails import read_log
from lap_core._errors import HarnessError, LapError, StoreError
from lap_core._events import Error, HarnessSession, SessionEvent, Status, TurnEnd
from lap_core._models import Turn, process_id
from lap_core._native_state import (
    REPLAYED,
    native_session_before,
    restore_native_state,
    snapshot_native_state,
    with_history,
)
from lap_core._sandbox_client import SandboxdError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from datetime import datetime

    from lap_core._engine.bus import EventBus
    from lap_core._engine.sandboxes import SandboxProvider
    from lap_core._events import EventRecord
    from lap_core._harness import Harness
    from lap_core._models import Agent, TurnRecord, TurnStatus
    from lap_core._sandbox import SandboxClient
    from lap_core._store import SessionStore

log = structlog.get_logger("lap.engine")


def error_event(error: BaseException) -> Error:
    """Return the `error` event that tells a user what went wrong (no traceback)."""
    if isinstance(error, SandboxdError):  # before LapError, its base: users see the sandbox failed
        return Error(code="sandbox_error", message=f"sandboxd: {error}")
    if isinstance(error, LapError):
        return Error(code=error.code, message=error.message)
    if isinstance(error, TimeoutError):
        return Error(code="turn_timeout", message="the turn took longer than LAP_TURN_TIMEOUT")
    return Error(code="internal_error", message=f"{type(error).__name__}: {error}")


SANDBOX_RETRIES = 2
"""How many times a turn that lost touch with its sandbox re-attaches, or starts over in a new one."""


class _Attempt:
    """The sandbox client and harness turn of a turn's current attempt (closed by `_run`)."""

    def __init__(self) -> None:
        self.sandbox: SandboxClient | None = None
        self.turn: Turn | None = None

    async def close(self) -> None:
        if self.sandbox is not None:
            with anyio.CancelScope(shield=True):
                await self.sandbox.aclose()
        self.sandbox = self.turn = None


class TurnRunner:
    """Runs turns one at a time per session, in the order their messages arrived."""

    def __init__(
        self,
        store: SessionStore,
        sandboxes: SandboxProvider,
        harnesses: Mapping[str, Harness],
        bus: EventBus,
        *,
        turn_timeout: float,
    ) -> None:
        self._store = store
        self._sandboxes = sandboxes
        self._harnesses = harnesses
        self._bus = bus
        self._turn_timeout = turn_timeout
        self._locks: defaultdict[str, anyio.Lock] = defaultdict(anyio.Lock)
        self._running: dict[str, tuple[str, anyio.CancelScope]] = {}  # session id -> (turn id, scope)
        self._handed_off: set[str] = set()  # turn ids

    def abort(self, session_id: str, *, turn_id: str | None = None) -> bool:
        """Cancel the session's turn running here (only if it is `turn_id`, when given); return whether one was.

        This is the local half of an abort: `Sessions.abort` flags the turn in the store, and the
        worker running it, in whichever process, calls this.
        """
        running = self._running.get(session_id)
        if running is None or turn_id not in (None, running[0]):
            return False
        running[1].cancel()
        return True

    async def _append(self, turn: TurnRecord, *events: SessionEvent) -> None:
        await self._store.append_events(turn.session_id, events, turn_id=turn.id)
        self._bus.notify(turn.session_id)

    async def _bring_up_event(self, session_id: str, event: SessionEvent, turn: TurnRecord | None = None) -> None:
        """Show a sandbox bring-up phase on the session (and in the turn's log, during a turn)."""
        if isinstance(event, Status):
            await self._store.update_session(session_id, status_detail=event.phase)
        if turn is not None:
            await self._append(turn, event)

    async def restart(self, session_id: str) -> None:
        """Replace the session's sandbox with a fresh one (workspace and harness home kept).

        Runs between turns (the session's lock); progress shows on the session's status: `starting`
        with the bring-up phase, then `ready`, or `failed` with the reason (the next turn tries again).
        """
        async with self._locks[session_id]:
            with structlog.contextvars.bound_contextvars(session_id=session_id):
                session = await self._store.update_session(session_id, status="starting", status_detail="restarting")
                agent = await self._store.get_agent(session.agent_id)
                try:
                    harness = self._harnesses.get(agent.harness)
                    if harness is None:
                        raise HarnessError(f"harness {agent.harness!r} is not installed in this LAP")
                    with anyio.fail_after(self._turn_timeout):
                        await self._sandboxes.replace(
                            session, agent, harness, lambda e: self._bring_up_event(session_id, e)
                        )
                except Exception as error:
                    problem = error_event(error)
                    log.warning("sandbox.restart_failed", code=problem.code, error=problem.message)
                    await self._store.update_session(session_id, status="failed", status_detail=problem.message)
                    raise
                await self._store.update_session(
                    session_id, status="ready", status_detail="", sandbox_name=sandbox_name(session_id)
                )
                log.info("sandbox.restarted")

    async def suspend(self, session_id: str, idle_before: datetime) -> tuple[str, str]:
        """Park an idle session's sandbox (between turns); return the decision and its reason."""
        async with self._locks[session_id]:
            session = await self._store.get_session(session_id)
            if session.status != "ready" or session.updated_at >= idle_before:
                return "keep", "active again"  # a turn, a stream or a restart since it was queued
            if not await self._sandboxes.suspend_if_idle(session):
                await self._store.update_session(session_id)  # counts as activity: look again later
                return "keep", "a process is running in the sandbox"
            detail = f"idle since {session.updated_at:%Y-%m-%d %H:%M:%S} UTC; the next message resumes it"
            await self._store.update_session(session_id, status="suspended", status_detail=detail)
            return "suspend", "idle"

    def hand_off(self, session_id: str) -> bool:
        """Stop following the session's running turn here, leaving its work running in the sandbox.

        For a worker that shuts down: `run` returns None, and the next worker resumes the turn.
        """
        running = self._running.get(session_id)
        if running is None:
            return False
        self._handed_off.add(running[0])
        running[1].cancel()
        return True

    async def run(
        self, agent: Agent, turn: TurnRecord, text: str, *, logged: list[SessionEvent] | None = None
    ) -> TurnStatus | None:
        """Run a stored turn to its end (after the turns queued before it); return how it ended.

        With `logged` (the turn's events in the log: see `logged_events`), the turn was started by
        a worker that is gone: re-attach to its work in the sandbox and log only what the log does
        not have yet. None: the turn was handed off. Raises `StoreError` when the store fails
        mid-turn: the turn's work goes on in the sandbox, for a worker to resume.
        """
        async with self._locks[turn.session_id]:
            with structlog.contextvars.bound_contextvars(session_id=turn.session_id, turn_id=turn.id):
                with anyio.CancelScope() as scope:
                    self._running[turn.session_id] = (turn.id, scope)
                    try:
                        # Flagged while it waited in the queue: it ends aborted, never having run.
                        if not (await self._store.set_turn_status(turn.id, "running")).abort_requested:
                            return await self._run(agent, turn, text, logged=logged)
                    finally:
                        del self._running[turn.session_id]
                if turn.id in self._handed_off:
                    self._handed_off.discard(turn.id)
                    log.info("turn.handed_off")
                    return None
                await self._end(turn, "aborted", TurnEnd(status="aborted", reason="aborted by the user"))
                return "aborted"

    async def logged_events(self, turn: TurnRecord) -> list[SessionEvent]:
        """Return the turn's events in the log after its user message."""
        records = read_log(self._store, turn.session_id, after=turn.user_seq)
        return [record.event async for record in records if record.turn_id == turn.id]

    async def _run(self, agent: Agent, turn: TurnRecord, text: str, *, logged: list[SessionEvent] | None) -> TurnStatus:
        harness = self._harnesses.get(agent.harness)
        current = _Attempt()
        try:
            if harness is None:
                raise HarnessError(f"harness {agent.harness!r} is not installed in this LAP (see `lap plugins`)")
            if logged is not None:
                log.info("turn.resuming", logged=len(logged))
                await self._append(turn, Status(phase="turn_resumed", detail="a worker took the turn over"))
            with anyio.fail_after(self._turn_timeout):
                for retry in range(SANDBOX_RETRIES):
                    try:
                        return await self._attempt(agent, turn, text, harness, current, logged)
                    except SandboxdError as error:
                        if error.status:
                            raise  # sandboxd answered: not a connection lost
                        # Lost touch with the sandbox: re-attach if it is still there, else start over.
                        log.warning("turn.sandbox_unreachable", retry=retry + 1, error=str(error))
                    await current.close()
                    logged = await self.logged_events(turn)
                return await self._attempt(agent, turn, text, harness, current, logged)
        except StoreError:
            raise  # nothing can be logged now; the work goes on in the sandbox for a worker to resume
        except anyio.get_cancelled_exc_class():
            if turn.id not in self._handed_off:
                with anyio.CancelScope(shield=True):
                    await self._abort_in_sandbox(harness, current)
            raise
        except Exception as error:
            problem = error_event(error)
            log.warning(
                "turn.failed", code=problem.code, error=problem.message, exc_info=problem.code == "internal_error"
            )
            with anyio.CancelScope(shield=True):
                await self._abort_in_sandbox(harness, current)
            await self._end(turn, "failed", TurnEnd(status="failed", reason=problem.message), problem)
            return "failed"
        finally:
            await current.close()

    @staticmethod
    async def _knows(sandbox: SandboxClient, process: str) -> bool:
        """Whether the sandbox still has the attempt's process.

        A sandbox of the same name may be a new one that LAP did not make: a pod the cluster
        recreated, a restarted sandboxd. The process went with the old one, so the turn starts
        over (rather than run its process a second time under the same attempt).
        """
        try:
            await sandbox.process(process)
        except SandboxdError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def _attempt(
        self,
        agent: Agent,
        turn: TurnRecord,
        text: str,
        harness: Harness,
        current: _Attempt,
        logged: list[SessionEvent] | None,
    ) -> TurnStatus:
        """Bring the sandbox up and run the harness once; `current` keeps what `_run` must clean up.

        With `logged` (the turn's events so far), the turn is continued: re-attached to its process
        if its sandbox is still there, else started over in a new one (`turn_restarted`).
        """
        # Read the session now: the turn before may have set the harness's native session id.
        session = await self._store.update_session(turn.session_id, status="starting", status_detail="")
        with _tracing.span("lap.sandbox.bring_up", _tracing.session_attributes(session)) as span:
            current.sandbox, bring_up = await self._sandboxes.get(
                session, agent, harness, functools.partial(self._bring_up_event, turn.session_id, turn=turn)
            )
            span.set_attribute("lap.sandbox.created", bring_up.created)
        known = None
        if logged is not None and not bring_up.created:
            known = await self._knows(current.sandbox, process_id(turn.id, restarts_in(logged)))
        plan = plan_attempt(
            logged,
            bring_up,
            process_known=known,
            stored_native=session.native_session_id,
            native_before=await native_session_before(self._before(turn)) if logged is not None else None,
        )
        native, told = plan.native_session_id, plan.tell_history
        if plan.forget_native:
            session = await self._store.update_session(session.id, native_session_id=None)
        if told:
            text = await with_history(self._before(turn), text)
        if plan.restart:
            if plan.restore_native and not await restore_native_state(current.sandbox, harness, turn.id):
                # No copy from before the turn (none declared, or not taken): the session as the
                # lost attempt left it would hold the message twice. A new one is told the story.
                log.info("turn.native_session_replayed")
                native, text, told = None, await with_history(self._before(turn), text), True
            session = await self._store.update_session(session.id, native_session_id=native)
            detail = f"the sandbox was lost; {REPLAYED}" if told else "the sandbox was lost"
            await self._append(turn, Status(phase="turn_restarted", detail=detail))
        elif plan.snapshot:
            await snapshot_native_state(current.sandbox, harness, turn.id)  # before the first attempt only
        await self._store.update_session(
            session.id, status="running", status_detail="", sandbox_name=sandbox_name(session.id)
        )
        current.turn = Turn(
            id=turn.id, session_id=session.id, text=text, agent=agent, native_session_id=native, attempt=plan.attempt
        )
        attributes = _tracing.session_attributes(
            session, turn_id=turn.id, harness=agent.harness, model=agent.model, attempt=plan.attempt
        )
        with (
            _tracing.span("lap.harness", attributes) as span,
            _tracing.harness_span(session.id, span),  # the parent of the model calls the proxy relays
        ):
            return await self._drive(turn, harness, current.sandbox, current.turn, plan.replay)

    async def _drive(
        self, turn: TurnRecord, harness: Harness, sandbox: SandboxClient, run: Turn, replay: list[SessionEvent]
    ) -> TurnStatus:
        """Run the harness's process in the sandbox, logging its events (`replay`: those logged already)."""
        session_id = turn.session_id
        events = harness.run_turn(sandbox, run)
        replayed = 0
        try:
            async for event in events:
                if replayed < len(replay) and from_harness(event):
                    # Re-attached: the harness replays its process's output from the start.
                    if event != replay[replayed]:
                        log.warning("turn.replay_differs", logged=replay[replayed], replayed=event)
                    replayed += 1
                    continue
                if isinstance(event, HarnessSession):
                    await self._store.update_session(session_id, native_session_id=event.native_session_id)
                if isinstance(event, TurnEnd):
                    await self._end(turn, event.status, event)
                    return event.status
                await self._append(turn, event)
        finally:
            if isinstance(events, AsyncGenerator):  # close it now, not whenever it is collected
                await events.aclose()
        await self._end(turn, "completed", TurnEnd(status="completed"))
        return "completed"

    def _before(self, turn: TurnRecord) -> AsyncIterator[EventRecord]:
        """Return the session's log before the turn."""
        return read_log(self._store, turn.session_id, until=turn.user_seq)

    async def _abort_in_sandbox(self, harness: Harness | None, current: _Attempt) -> None:
        if harness is None or current.sandbox is None or current.turn is None:
            return
        with anyio.move_on_after(5):
            try:
                await harness.abort(current.sandbox, current.turn)
            except Exception as error:  # the sandbox may be the thing that failed
                log.info("turn.abort_in_sandbox_failed", error=repr(error))

    async def _end(self, turn: TurnRecord, status: TurnStatus, event: TurnEnd, *before: SessionEvent) -> None:
        # Shielded: an abort arriving now must not leave a turn half ended, or end it twice.
        with anyio.CancelScope(shield=True):
            full = await self._sandboxes.disk_problem(turn.session_id)
            if full is not None:
                before = (*before, full)
            await self._store.set_turn_status(turn.id, status)
            # The session stays usable after a failed turn; the detail says why the last one failed.
            detail = event.reason if status == "failed" else ""
            await self._store.update_session(turn.session_id, status="ready", status_detail=detail)
            # Last, so whoever sees `turn_end` also sees the turn and session in their final state;
            # with the error before it in one append, so the log never ends a turn half-way.
            await self._append(turn, *before, event)
