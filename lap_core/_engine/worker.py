"""The worker: leases jobs from the store's durable queue and runs them.

A turn job is queued in the same transaction as its user message (`Sessions.send`); any worker,
in this process or another, may lease it. The store leases the jobs of one session one at a
time and in order, so turns run in the order their messages arrived. A lease is kept alive by
heartbeats; if the worker dies, another takes the job over once the lease expires.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Literal

import anyio
import structlog

from lap_core._engine.bus import EventBus
from lap_core.errors import LapError, NotFound
from lap_core.events import Error, TurnEnd, UserMessage
from lap_core.models import Job, new_id

if TYPE_CHECKING:
    from anyio.abc import TaskGroup, TaskStatus

    from lap_core._engine.turns import TurnRunner
    from lap_core.models import TurnRecord
    from lap_core.store import SessionStore

log = structlog.get_logger("lap.worker")

TURN = "turn"
RESTART = "restart"
# How often a running turn's abort flag is re-read when no notification came (a store that cannot watch).
ABORT_POLL = 5.0


def worker_name() -> str:
    """Return a name for this worker that says where it runs (host, pid) and is unique."""
    return f"{socket.gethostname()}:{os.getpid()}:{new_id('wrk')[4:12]}"


class Worker:
    """Runs queued jobs, at most `concurrency` at once (each session's turns stay in order)."""

    def __init__(
        self,
        store: SessionStore,
        runner: TurnRunner,
        *,
        lease_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        concurrency: int = 8,
    ) -> None:
        self.name = worker_name()
        self._store = store
        self._runner = runner
        self._lease_seconds = lease_seconds
        self._poll_seconds = poll_seconds
        self._slots = anyio.Semaphore(concurrency)  # released by the job task, not the one that took it
        self._wake = anyio.Event()
        self._aborts = EventBus()

    def wake(self) -> None:
        """Look for a job now (a job was just queued in this process)."""
        self._wake.set()

    def abort_requested(self, session_id: str) -> None:
        """A turn of the session was flagged for abort (here or in another process): check ours now."""
        self._aborts.notify(session_id)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Lease and run jobs until cancelled."""
        log.info("worker.started", worker=self.name)
        async with anyio.create_task_group() as jobs:
            task_status.started()
            while True:
                await self._slots.acquire()
                job = await self._store.lease_job(self.name, lease_seconds=self._lease_seconds, kinds=(TURN, RESTART))
                if job is None:
                    self._slots.release()
                    with anyio.move_on_after(self._poll_seconds):
                        await self._wake.wait()
                    self._wake = anyio.Event()
                    continue
                jobs.start_soon(self._run_job, job, name=f"job {job.id}")

    async def _run_job(self, job: Job) -> None:
        try:
            with structlog.contextvars.bound_contextvars(job_id=job.id, session_id=job.session_id):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(self._heartbeat, job, tasks.cancel_scope)
                    run = self._run_turn(job, tasks) if job.kind == TURN else self._run_restart(job)
                    status, error = await run
                    tasks.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    if not await self._store.finish_job(job.id, self.name, status=status, error=error):
                        log.warning("worker.lease_lost", reason="the job was taken over before it finished")
        finally:
            self._slots.release()

    async def _heartbeat(self, job: Job, scope: anyio.CancelScope) -> None:
        while True:
            await anyio.sleep(self._lease_seconds / 3)
            if not await self._store.heartbeat_job(job.id, self.name, lease_seconds=self._lease_seconds):
                log.warning("worker.lease_lost", reason="heartbeat refused")
                scope.cancel()
                return

    async def _watch_abort(self, turn: TurnRecord) -> None:
        """Abort the turn once it is flagged: told at once via `abort_requested`, else seen by polling."""
        while True:
            told = self._aborts.watch(turn.session_id)
            with anyio.move_on_after(ABORT_POLL):
                await told.wait()
            # Not yet running here: the runner sees the flag itself as it starts the turn.
            if (await self._store.get_turn(turn.id)).abort_requested and self._runner.abort(
                turn.session_id, turn_id=turn.id
            ):
                return

    async def _run_restart(self, job: Job) -> tuple[Literal["done", "failed"], str]:
        if job.session_id is None:
            return "failed", "a restart job names no session"
        try:
            await self._runner.restart(job.session_id)
        except NotFound as error:
            return "failed", error.message  # deleted meanwhile
        except Exception as error:  # logged and shown on the session by the runner
            return "failed", str(error) or type(error).__name__
        return "done", ""

    async def _run_turn(self, job: Job, tasks: TaskGroup) -> tuple[Literal["done", "failed"], str]:
        """Run the turn of a job; return the job's end status and error."""
        try:
            turn = await self._store.get_turn(str(job.payload["turn_id"]))
            session = await self._store.get_session(turn.session_id)
            agent = await self._store.get_agent(session.agent_id)
            message = (await self._store.read_events(turn.session_id, after=turn.user_seq - 1, limit=1))[0].event
        except (NotFound, KeyError, IndexError) as error:
            return "failed", f"the job names no runnable turn: {error!r}"
        if turn.status in ("completed", "failed", "aborted"):
            return "done", ""  # its worker ended the turn, then died before it could finish the job
        if turn.status != "queued":
            # Taken over from a worker that died mid-turn: never run a turn twice ([3/5] re-attaches).
            reason = "the worker running this turn stopped; send the message again"
            await self._store.append_events(
                turn.session_id,
                [Error(code="turn_interrupted", message=reason), TurnEnd(status="failed", reason=reason)],
                turn_id=turn.id,
            )
            await self._store.finish_turn(turn.id, "failed")
            return "failed", reason
        assert isinstance(message, UserMessage)
        tasks.start_soon(self._watch_abort, turn)
        try:
            status = await self._runner.run(agent, turn, message.text)
        except LapError as error:
            return "failed", error.message
        return ("done", "") if status in ("completed", "aborted") else ("failed", f"turn {status}")
