"""The reconciler: keeps sandboxes and sessions in step, from every worker.

Every few seconds it deletes orphan sandboxes (their session is gone), marks sessions whose
sandbox vanished `suspended` (the next message brings the sandbox back, workspace and all),
fails bring-ups nobody is working on any more, queues a `suspend` job for sessions idle for
`SESSION_IDLE_TIMEOUT`, and deletes jobs finished over a week ago. Suspending is a job so that
it runs in the session's queue, never beside one of its turns; the job checks again that nothing
happened since (a turn, an open stream, a process still running in the sandbox) before it deletes
the sandbox. Every decision is idempotent (several workers may reconcile at once), logged with
its reason and counted (`Decisions`).
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
import structlog

from lap_core._engine.jobs import SuspendJob, job_for
from lap_core._engine.sandboxes import sandbox_of
from lap_core._errors import LapError, NotFound, NotSupported
from lap_core._models import utcnow

if TYPE_CHECKING:
    from collections.abc import Callable

    from lap_core._models import Session
    from lap_core._sandbox import SandboxBackend, SandboxRef
    from lap_core._store import SessionStore

log = structlog.get_logger("lap.reconciler")

PAGE = 500
JOB_RETENTION = timedelta(days=7)
"""How long finished jobs stay in the queue's table (for `list_jobs` and debugging)."""


class Decisions:
    """What the reconciler (and the suspend jobs) decided, by action and reason, since start."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def record(self, action: str, reason: str, **context: object) -> None:
        """Count a decision and log it with its reason."""
        self.counts[action, reason] += 1
        log.info("reconciler.decision", action=action, reason=reason, **context)


class Reconciler:
    """Runs `reconcile` every `interval` seconds (see the module docstring)."""

    def __init__(
        self,
        store: SessionStore,
        backend: SandboxBackend,
        decisions: Decisions,
        *,
        interval: float,
        idle_timeout: float,
        stuck_after: float,
        on_queued: Callable[[], None],
    ) -> None:
        self._store = store
        self._backend = backend
        self._decisions = decisions
        self._interval = interval
        self._idle_timeout = idle_timeout
        self._stuck_after = stuck_after
        self._on_queued = on_queued

    async def run(self) -> None:
        """Reconcile until cancelled; a failed round (the store is down, say) is retried next time."""
        while True:
            await anyio.sleep(self._interval)
            try:
                await self.reconcile()
            except LapError as error:
                log.warning("reconciler.round_failed", error=error.message)

    async def reconcile(self) -> None:
        """One round: orphans, vanished sandboxes, stuck bring-ups, idle sessions."""
        refs = await self._backend.list()
        await self._delete_orphans(refs)
        await self._mark_vanished({ref.name: ref for ref in refs})
        await self._fail_stuck()
        if self._idle_timeout:
            await self._suspend_idle()
        if pruned := await self._store.prune_jobs(utcnow() - JOB_RETENTION):
            self._decisions.record("prune_jobs", f"finished over {JOB_RETENTION.days} days ago", jobs=pruned)

    async def _sessions(self, **filters: object) -> list[Session]:
        found: list[Session] = []
        while page := await self._store.list_sessions(limit=PAGE, offset=len(found), **filters):  # type: ignore[arg-type]
            found += page
            if len(page) < PAGE:
                break
        return found

    async def _delete_orphans(self, refs: list[SandboxRef]) -> None:
        for ref in refs:
            session_id = ref.labels.get("lap.session")
            if session_id is None:
                continue  # not one of ours
            try:
                await self._store.get_session(session_id)
                continue
            except NotFound:
                pass
            await self._backend.delete(ref.name)
            try:
                await self._backend.delete_volume(session_id)
            except NotSupported:
                pass
            self._decisions.record("delete_sandbox", "its session no longer exists", sandbox=ref.name)

    async def _mark_vanished(self, sandboxes: dict[str, SandboxRef]) -> None:
        for session in await self._sessions(status=["ready"]):
            name = sandbox_of(session)
            if name in sandboxes and sandboxes[name].state not in ("stopped", "failed"):
                continue
            ref = await self._backend.status(name)  # again: it may have come up since the list
            if ref is not None and ref.state not in ("stopped", "failed"):
                continue
            if ref is not None:
                await self._backend.delete(name)
            detail = "the sandbox vanished; the next message brings it back"
            await self._store.update_session(session.id, status="suspended", status_detail=detail)
            self._decisions.record("mark_suspended", "the sandbox vanished", session_id=session.id)

    async def _fail_stuck(self) -> None:
        before = utcnow() - timedelta(seconds=self._stuck_after)
        for session in await self._sessions(status=["starting"], updated_before=before):
            if await self._store.list_jobs(session_id=session.id, status="leased", limit=1):
                continue  # a worker is on it (a dead one's lease runs out, and the next resumes)
            detail = f"the sandbox did not come up within {self._stuck_after:.0f} s; send a message to retry"
            await self._store.update_session(session.id, status="failed", status_detail=detail)
            self._decisions.record("fail_bring_up", "stuck starting with no worker on it", session_id=session.id)

    async def _suspend_idle(self) -> None:
        before = utcnow() - timedelta(seconds=self._idle_timeout)
        for session in await self._sessions(status=["ready"], updated_before=before):
            queued = await self._store.list_jobs(session_id=session.id, status="queued", limit=1)
            if queued or await self._store.list_jobs(session_id=session.id, status="leased", limit=1):
                continue  # work is waiting: not idle (or a suspend is queued already)
            job = job_for(session.id, SuspendJob(idle_before=before))
            await self._store.queue_job(job)
            self._on_queued()
            self._decisions.record("queue_suspend", f"idle for {self._idle_timeout:.0f} s", session_id=session.id)
