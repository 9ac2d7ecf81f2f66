"""Durable delivery of the event log to an integration (see `lap_core.Integration`).

One `IntegrationDelivery` per integration runs in every worker; the one holding the integration's lease
in the store delivers, the others wait to take over should it die (its lease expires). It asks the
store for the sessions whose log has events past the integration's cursor, delivers each session's
events in seq order (sessions side by side), and moves the cursor only after `on_event` returned: an
event is delivered at least once, and again, with the same key, after a crash before its acknowledgement.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import anyio
import structlog

from lap_core._errors import LapError
from lap_core._integration import Delivery, delivery_key

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from lap_core._events import EventRecord
    from lap_core._integration import Integration
    from lap_core._store import SessionStore

log = structlog.get_logger("lap.integrations")

BACKLOG_SESSIONS = 1000
"""Sessions with undelivered events looked at in one round."""
FULL_SCAN_EVERY = 30.0
"""Seconds between two looks at every session, when the store tells which sessions' logs grew (`watch`)."""
READ_BATCH = 100
ACK_EVERY = 1.0
"""Seconds between two acknowledgements of a session's delivered events (each costs a write)."""


class IntegrationDelivery:
    """Delivers every session's events to one integration while this process holds its lease."""

    def __init__(
        self,
        name: str,
        integration: Integration,
        store: SessionStore,
        *,
        holder: str,
        lease_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        concurrency: int = 8,
    ) -> None:
        self.name = name
        self._integration = integration
        self._store = store
        self._holder = holder
        self._lease_seconds = lease_seconds
        self._poll_seconds = poll_seconds
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._wake = anyio.Event()
        self._attempts: dict[str, int] = {}  # delivery key -> failed tries so far
        self._retry_at: dict[str, float] = {}  # session id -> when its failed event may be tried again
        self._in_flight: set[str] = set()  # sessions being delivered
        self._delivered: dict[str, int] = {}  # session id -> the last seq this process delivered
        self._changed: set[str] = set()  # sessions whose log grew since the last look (a store that watches)
        self._full_scan_at = 0.0  # when to look at every session next

    def wake(self) -> None:
        """Look for new events now (rather than at the next poll)."""
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver while holding the lease, else wait to take it over; until cancelled (then release it)."""
        task_status.started()
        try:
            while True:
                if await self._lease():
                    log.info("integration.delivering", integration=self.name, holder=self._holder)
                    async with anyio.create_task_group() as tasks:
                        tasks.start_soon(self._keep_lease, tasks.cancel_scope)
                        await self._deliver_forever()
                await self._sleep(self._lease_seconds / 3)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                try:
                    await self._store.release_integration(self.name, self._holder)
                except LapError as error:
                    log.warning("integration.release_failed", integration=self.name, error=error.message)

    async def _lease(self) -> bool:
        try:
            return await self._store.lease_integration(self.name, self._holder, lease_seconds=self._lease_seconds)
        except LapError as error:
            log.warning("integration.lease_failed", integration=self.name, error=error.message)
            return False

    async def _keep_lease(self, scope: anyio.CancelScope) -> None:
        """Renew the lease; stop delivering once it is lost, or could not be renewed for a whole lease."""
        renewed = anyio.current_time()
        while True:
            await anyio.sleep(self._lease_seconds / 3)
            try:
                if not await self._store.lease_integration(self.name, self._holder, lease_seconds=self._lease_seconds):
                    log.warning("integration.lease_lost", integration=self.name)
                    scope.cancel()
                    return
                renewed = anyio.current_time()
            except LapError as error:
                log.warning("integration.lease_failed", integration=self.name, error=error.message)
                if anyio.current_time() - renewed >= self._lease_seconds:
                    scope.cancel()
                    return

    async def _sleep(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._wake.wait()
        self._wake = anyio.Event()

    async def _deliver_forever(self) -> None:
        """Start a delivery task for each session with new events (one per session at a time), as they come.

        A session whose integration is slow or failing holds up only its own later events. Looking
        for them reads every session: with a store that tells which sessions' logs grew (PostgreSQL),
        only those are read but every `FULL_SCAN_EVERY` seconds; else every `poll_seconds`.
        """
        watches = self._store.watches_changes
        self._full_scan_at = 0.0
        async with anyio.create_task_group() as tasks:
            if watches:
                tasks.start_soon(self._watch)
            while True:
                wake = self._wake = anyio.Event()  # before reading: a wake-up from now on is not lost
                backlog = await self._backlog(watches)
                now = anyio.current_time()
                if backlog is None:  # the store failed: try again in a while
                    backlog = {}
                    self._full_scan_at = now + self._poll_seconds
                else:  # a due retry of a session with nothing left (deleted, say) is no more
                    for session_id in [s for s, at in self._retry_at.items() if at <= now and s not in backlog]:
                        if session_id not in self._in_flight:
                            del self._retry_at[session_id]
                for session_id, acknowledged in backlog.items():
                    if session_id not in self._in_flight and self._retry_at.get(session_id, 0) <= now:
                        self._in_flight.add(session_id)
                        tasks.start_soon(self._deliver_session, session_id, acknowledged)
                # Until the next retry falls due (the session's task wakes us if it is still running).
                waits = [at - now for at in self._retry_at.values() if at > now]
                if watches:
                    waits.append(self._full_scan_at - now)
                with anyio.move_on_after(min([self._poll_seconds if not watches else FULL_SCAN_EVERY, *waits])):
                    await wake.wait()

    async def _backlog(self, watches: bool) -> dict[str, int] | None:
        """Return the sessions to deliver now (with their cursors), or None if the store failed."""
        now = anyio.current_time()
        full = not watches or now >= self._full_scan_at
        if full:
            changed, self._changed = None, set()
            self._full_scan_at = now + FULL_SCAN_EVERY
        else:  # the sessions whose log grew, and those whose retry is due
            changed, self._changed = self._changed, set()
            changed |= {session for session, at in self._retry_at.items() if at <= now}
            if not changed:
                return {}
        try:
            return await self._store.delivery_backlog(
                self.name, sessions=None if changed is None else sorted(changed), limit=BACKLOG_SESSIONS
            )
        except LapError as error:  # look at every session next time: these changes are lost
            log.warning("integration.backlog_failed", integration=self.name, error=error.message)
            return None

    async def _watch(self) -> None:
        """Note the sessions whose log grew (in any process), and look at them now."""
        async for change in self._store.watch():
            if change.kind != "events":
                continue
            if change.session_id is None:  # anything may have changed (a reconnect)
                self._full_scan_at = 0.0
            else:
                self._changed.add(change.session_id)
            self.wake()

    async def _deliver_session(self, session_id: str, acknowledged: int) -> None:
        """Deliver the session's events after those delivered, in order, until its log ends or one fails."""
        # What this process delivered may be ahead of the cursor read before its last acknowledgement.
        after = max(acknowledged, self._delivered.get(session_id, 0))
        acked_at = anyio.current_time()
        try:
            async with self._limiter:
                while records := await self._store.read_events(session_id, after=after, limit=READ_BATCH):
                    for record in records:
                        if not await self._deliver(record):
                            return
                        after = self._delivered[session_id] = record.seq
                        if anyio.current_time() - acked_at >= ACK_EVERY:
                            await self._acknowledge(session_id, after)
                            acknowledged, acked_at = after, anyio.current_time()
        except LapError as error:
            log.warning("integration.read_failed", integration=self.name, session=session_id, error=error.message)
        finally:
            if after > acknowledged:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await self._acknowledge(session_id, after)
            self._in_flight.discard(session_id)
            self._changed.add(session_id)  # its log may have grown meanwhile
            self.wake()

    async def _acknowledge(self, session_id: str, seq: int) -> None:
        try:
            await self._store.acknowledge_delivery(self.name, session_id, seq)
        except LapError as error:  # delivered again later: at least once
            log.warning("integration.ack_failed", integration=self.name, session_id=session_id, error=error.message)

    async def _deliver(self, record: EventRecord) -> bool:
        """Hand one event to the integration; return whether it is done with (delivered, or skipped)."""
        integration, key = self._integration, delivery_key(self.name, record)
        attempt = self._attempts.get(key, 0) + 1
        try:
            with anyio.fail_after(integration.delivery_timeout):
                await integration.on_event(Delivery(key=key, record=record, attempt=attempt))
        except Exception as error:
            fields = {"integration": self.name, "session_id": record.session_id, "seq": record.seq}
            if integration.max_attempts is not None and attempt >= integration.max_attempts:
                log.error("integration.delivery_skipped", **fields, attempts=attempt, error=repr(error))
                self._done(key, record.session_id)
                return True
            delay = min(integration.retry_delay * 2 ** min(attempt - 1, 62), integration.retry_delay_max)
            log.warning("integration.delivery_failed", **fields, attempt=attempt, retry_in=delay, error=repr(error))
            self._attempts[key] = attempt
            self._retry_at[record.session_id] = anyio.current_time() + (delay if math.isfinite(delay) else 60.0)
            return False
        self._done(key, record.session_id)
        return True

    def _done(self, key: str, session_id: str) -> None:
        self._attempts.pop(key, None)
        self._retry_at.pop(session_id, None)
