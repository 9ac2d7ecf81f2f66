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
from opentelemetry.trace import SpanKind, StatusCode

from lap_core import _tracing
from lap_core._engine.bus import EventBus
from lap_core._engine.jobs import KINDS, EngineJob, RestartJob, SuspendJob, TurnJob, work_of
from lap_core._engine.reconciler import Decisions
from lap_core._errors import LapError, NotFound, StoreError
from lap_core._events import Error, SessionEvent, TurnEnd, UserMessage
from lap_core._models import Job, new_id

if TYPE_CHECKING:
    from anyio.abc import TaskGroup, TaskStatus

    from lap_core._engine.turns import TurnRunner
    from lap_core._models import Agent, TurnRecord
    from lap_core._store import SessionStore

log = structlog.get_logger("lap.worker")

MAX_ATTEMPTS = 10
"""Leases of a turn's job after which a turn that keeps losing its worker is failed."""
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
        decisions: Decisions | None = None,
    ) -> None:
        self.name = worker_name()
        self._store = store
        self._runner = runner
        self._lease_seconds = lease_seconds
        self._poll_seconds = poll_seconds
        self._slots = anyio.Semaphore(concurrency)  # released by the job task, not the one that took it
        self._wake = anyio.Event()
        self._aborts = EventBus()
        self._active: dict[str, Job] = {}  # job id -> job, while this worker holds its lease
        self._lost: set[str] = set()  # job ids whose lease another worker took over
        self._draining = False
        self._decisions = decisions or Decisions()

    def wake(self) -> None:
        """Look for a job now (a job was just queued in this process)."""
        self._wake.set()

    def abort_requested(self, session_id: str) -> None:
        """A turn of the session was flagged for abort (here or in another process): check ours now."""
        self._aborts.notify(session_id)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Lease and run jobs until cancelled (or, after `drain`, until its jobs are gone)."""
        log.info("worker.started", worker=self.name)
        async with anyio.create_task_group() as jobs:
            task_status.started()
            while not self._draining:
                await self._slots.acquire()
                job = None
                if not self._draining:
                    try:
                        job = await self._store.lease_job(self.name, lease_seconds=self._lease_seconds, kinds=KINDS)
                    except StoreError as error:
                        log.warning("worker.lease_failed", error=error.message)  # retried after the poll
                if job is None:
                    self._slots.release()
                    with anyio.move_on_after(self._poll_seconds):
                        await self._wake.wait()
                    self._wake = anyio.Event()
                    continue
                self._active[job.id] = job
                jobs.start_soon(self._run_job, job, name=f"job {job.id}")
        log.info("worker.stopped", worker=self.name)

    async def drain(self, grace: float) -> None:
        """Stop taking jobs; let running ones finish for `grace` seconds, then hand them back.

        A turn handed back keeps running in its sandbox: the worker that leases its job next
        re-attaches to it. Used on shutdown (SIGTERM), so a deploy never kills a turn.
        """
        self._draining = True
        self._wake.set()
        await self._until_idle(grace)
        handed = [job for job in self._active.values() if job.session_id and self._runner.hand_off(job.session_id)]
        await self._until_idle(10)
        log.info("worker.drained", worker=self.name, handed_off=len(handed), left=len(self._active))

    async def _until_idle(self, seconds: float) -> None:
        """Wait until no job runs here, for `seconds` at most."""
        with anyio.move_on_after(seconds):
            while self._active:  # noqa: ASYNC110 - jobs end in their own tasks; a short poll is simplest
                await anyio.sleep(0.05)

    async def _run_job(self, job: Job) -> None:
        try:
            with structlog.contextvars.bound_contextvars(job_id=job.id, session_id=job.session_id):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(self._heartbeat, job, tasks.cancel_scope)
                    outcome = await self._dispatch(job, tasks)
                    tasks.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await self._settle(job, outcome)
        finally:
            self._active.pop(job.id, None)
            self._lost.discard(job.id)
            self._slots.release()
            self._wake.set()  # the session's next job may be eligible now

    async def _dispatch(self, job: Job, tasks: TaskGroup) -> tuple[Literal["done", "failed"], str] | None:
        try:
            work: EngineJob = work_of(job)
        except LapError as error:
            return "failed", error.message
        if job.session_id is None:
            return "failed", f"job {job.id} names no session"
        match work:
            case TurnJob():
                return await self._run_turn(job, work, tasks)
            case RestartJob():
                return await self._run_restart(job.session_id)
            case SuspendJob():
                return await self._run_suspend(job.session_id, work)

    async def _settle(self, job: Job, outcome: tuple[Literal["done", "failed"], str] | None) -> None:
        """Finish the job, or hand it back (`outcome` None) unless another worker has it already."""
        try:
            await self._settle_in_store(job, outcome)
        except StoreError as error:
            log.warning(
                "worker.job_left", reason="the store is unavailable; the lease will run out", error=error.message
            )

    async def _settle_in_store(self, job: Job, outcome: tuple[Literal["done", "failed"], str] | None) -> None:
        if job.id in self._lost:
            log.warning("worker.lease_lost", reason="another worker took the job over")
        elif outcome is None:
            await self._store.release_job(job.id, self.name)
            log.info("worker.job_released", reason="handed off")
        elif not await self._store.finish_job(job.id, self.name, status=outcome[0], error=outcome[1]):
            log.warning("worker.lease_lost", reason="the job was taken over before it finished")

    async def _heartbeat(self, job: Job, scope: anyio.CancelScope) -> None:
        while True:
            await anyio.sleep(self._lease_seconds / 3)
            try:
                kept = await self._store.heartbeat_job(job.id, self.name, lease_seconds=self._lease_seconds)
            except StoreError as error:
                log.warning("worker.heartbeat_failed", error=error.message)
                continue  # a short outage: the next beat may get through before the lease runs out
            if not kept:
                log.warning("worker.lease_lost", reason="heartbeat refused")
                self._lost.add(job.id)
                # Another worker has re-attached to the turn: stop following it, without stopping it.
                if not (
                    job.kind == TurnJob.__struct_config__.tag
                    and job.session_id
                    and self._runner.hand_off(job.session_id)
                ):
                    scope.cancel()
                return

    async def _ended(self, turn: TurnRecord, logged: list[SessionEvent]) -> bool:
        """Complete a turn whose worker stopped while ending it; return whether it had ended."""
        end = next((event for event in logged if isinstance(event, TurnEnd)), None)
        if end is not None:
            if turn.status != end.status:
                await self._store.set_turn_status(turn.id, end.status)
            return True
        if turn.status in ("completed", "failed", "aborted"):  # stored, but not logged yet
            await self._store.append_events(turn.session_id, [TurnEnd(status=turn.status)], turn_id=turn.id)
            return True
        return False

    async def _watch_abort(self, turn: TurnRecord) -> None:
        """Abort the turn once it is flagged: told at once via `abort_requested`, else seen by polling."""
        while True:
            told = self._aborts.watch(turn.session_id)
            with anyio.move_on_after(ABORT_POLL):
                await told.wait()
            try:
                flagged = (await self._store.get_turn(turn.id)).abort_requested
            except StoreError:
                continue  # the store is down for now
            # Not yet running here: the runner sees the flag itself as it starts the turn.
            if flagged and self._runner.abort(turn.session_id, turn_id=turn.id):
                return

    async def _run_suspend(self, session_id: str, work: SuspendJob) -> tuple[Literal["done", "failed"], str]:
        try:
            action, reason = await self._runner.suspend(session_id, work.idle_before)
        except NotFound as error:
            return "failed", f"not a suspend job of a live session: {error.message}"
        except LapError as error:
            return "failed", error.message
        self._decisions.record(action, reason, session_id=session_id)
        return "done", ""

    async def _run_restart(self, session_id: str) -> tuple[Literal["done", "failed"], str]:
        try:
            await self._runner.restart(session_id)
        except NotFound as error:
            return "failed", error.message  # deleted meanwhile
        except Exception as error:  # logged and shown on the session by the runner
            return "failed", str(error) or type(error).__name__
        return "done", ""

    async def _run_turn(
        self, job: Job, work: TurnJob, tasks: TaskGroup
    ) -> tuple[Literal["done", "failed"], str] | None:
        """Run the turn of a job; return the job's end status and error (None: hand the job back)."""
        try:
            return await self._turn_of(job, work, tasks)
        except StoreError as error:
            # The store is down: nothing can be logged or finished. The lease runs out, and a worker
            # resumes the turn (its work goes on in the sandbox) once the store is back.
            log.warning("worker.store_unavailable", error=error.message)
            return None

    async def _turn_of(self, job: Job, work: TurnJob, tasks: TaskGroup) -> tuple[Literal["done", "failed"], str] | None:
        try:
            turn = await self._store.get_turn(work.turn_id)
            session = await self._store.get_session(turn.session_id)
            agent = await self._store.get_agent(session.agent_id)
            message = (await self._store.read_events(turn.session_id, after=turn.user_seq - 1, limit=1))[0].event
        except (NotFound, IndexError) as error:
            return "failed", f"the job names no runnable turn: {error!r}"
        assert isinstance(message, UserMessage)
        # The trace of the request that sent the message (the same parent when another worker resumes it).
        attributes = _tracing.session_attributes(
            session,
            turn_id=turn.id,
            harness=agent.harness,
            model=agent.model,
            job_attempt=job.attempts,
            turn_resumed=turn.status != "queued",
            worker=self.name,
        )
        context = _tracing.context_of(work.traceparent)
        with _tracing.span("lap.turn", attributes, context=context, kind=SpanKind.CONSUMER) as span:
            outcome = await self._resume_or_run(job, turn, agent, message, tasks)
            span.set_attribute("lap.turn.outcome", "handed_off" if outcome is None else outcome[0])
            if outcome is not None and outcome[0] == "failed":
                span.set_status(StatusCode.ERROR, outcome[1])
            return outcome

    async def _resume_or_run(
        self, job: Job, turn: TurnRecord, agent: Agent, message: UserMessage, tasks: TaskGroup
    ) -> tuple[Literal["done", "failed"], str] | None:
        logged = None
        if turn.status != "queued":  # taken over from a worker that stopped
            logged = await self._runner.logged_events(turn)
            if await self._ended(turn, logged):
                return "done", ""
            if job.attempts > MAX_ATTEMPTS:
                # Its workers keep dying (the turn may be what kills them): stop trying.
                reason = f"the turn was interrupted {job.attempts - 1} times; send the message again"
                await self._store.append_events(
                    turn.session_id,
                    [Error(code="turn_interrupted", message=reason), TurnEnd(status="failed", reason=reason)],
                    turn_id=turn.id,
                )
                await self._store.set_turn_status(turn.id, "failed")
                return "failed", reason
        tasks.start_soon(self._watch_abort, turn)
        try:
            status = await self._runner.run(agent, turn, message.text, logged=logged)
        except StoreError:
            raise
        except LapError as error:
            return "failed", error.message
        if status is None:
            return None
        return ("done", "") if status in ("completed", "aborted") else ("failed", f"turn {status}")
