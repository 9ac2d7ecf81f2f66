"""The live end of each followed session's log, read once per process and shared by its followers.

A thousand clients following one session must not mean a thousand queries per event: when the
log grows, the first follower to look reads the new records from the store into the session's
tail (under a lock); the others find them there. A follower that falls further behind than the
tail keeps reads the store directly until it catches up. The store stays the source of truth:
a follower only concludes "nothing new" from a store read that began after it started waiting.
"""

from __future__ import annotations

from collections import deque
from contextlib import contextmanager
from itertools import islice
from typing import TYPE_CHECKING

import anyio
import structlog

from lap_core._errors import LapError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from lap_core._events import EventRecord
    from lap_core._store import SessionStore

log = structlog.get_logger("lap.engine")

TAIL_RECORDS = 256
"""Records kept per followed session: enough for followers that are a moment behind."""
ACTIVITY_TOUCH = 60.0
"""How often a followed session is marked active (an open stream keeps its sandbox from being suspended)."""


async def read_log(
    store: SessionStore, session_id: str, *, after: int = 0, until: int | None = None
) -> AsyncIterator[EventRecord]:
    """Yield the session's records after seq `after` (and before seq `until`, when given), in order."""
    while batch := await store.read_events(session_id, after=after):
        for record in batch:
            if until is not None and record.seq >= until:
                return
            yield record
        after = batch[-1].seq


class Tail:
    """The newest records of one session's log: every record with `start < seq <= last`."""

    def __init__(self) -> None:
        self.records: deque[EventRecord] = deque(maxlen=TAIL_RECORDS)
        self.start: int | None = None  # None until the first read
        self.last = 0
        self.read_started = float("-inf")  # when the newest store read into the tail began
        self.lock = anyio.Lock()
        self.followers = 0
        self.touched = anyio.current_time()

    def after(self, seq: int) -> list[EventRecord] | None:
        """Return the records after `seq`, or None if the tail does not reach back to `seq`."""
        if self.start is None or not self.start <= seq <= self.last:
            return None
        return list(islice(self.records, seq - self.start, None))  # seqs are contiguous

    def extend(self, batch: list[EventRecord]) -> None:
        self.records.extend(batch)
        if batch:
            self.last = batch[-1].seq
        self.start = self.last - len(self.records)


class LogTails:
    """The tails of the sessions followed in this process."""

    def __init__(self, store: SessionStore) -> None:
        self._store = store
        self._tails: dict[str, Tail] = {}

    @contextmanager
    def following(self, session_id: str) -> Iterator[Tail]:
        """Keep the session's tail while the caller follows it."""
        tail = self._tails.setdefault(session_id, Tail())
        tail.followers += 1
        try:
            yield tail
        finally:
            tail.followers -= 1
            if not tail.followers:
                del self._tails[session_id]

    async def read(self, session_id: str, tail: Tail, after: int, since: float) -> list[EventRecord]:
        """Return the records after `after` (a batch at most).

        Empty only if a store read that began after `since` (when the caller started waiting) found
        nothing newer.
        """
        if (found := tail.after(after)) is None and tail.start is not None:
            return await self._store.read_events(session_id, after=after)  # behind (or ahead of) the tail
        if found:
            return found
        async with tail.lock:
            if found := tail.after(after):
                return found  # read meanwhile by another follower
            if tail.start is not None and tail.read_started >= since:
                return []
            began = anyio.current_time()
            if tail.start is None:
                tail.start = tail.last = after
            tail.extend(await self._store.read_events(session_id, after=tail.last))
            tail.read_started = began
            return tail.after(after) or []

    async def touch(self, session_id: str, tail: Tail) -> None:
        """Mark the session active now and then, while someone follows it (once per tail)."""
        if anyio.current_time() - tail.touched < ACTIVITY_TOUCH:
            return
        tail.touched = anyio.current_time()
        try:
            await self._store.update_session(session_id)
        except LapError as error:  # deleted, or the store is down: the stream itself carries on
            log.info("session.touch_failed", session_id=session_id, error=error.message)
