"""In-process notification of new events, per session.

Subscribers are told *that* a session's log grew, then read the log from their last seq, so a
slow or late subscriber never misses an event (the log is the source of truth).
"""

from __future__ import annotations

from collections import defaultdict

import anyio


class EventBus:
    """Wakes the waiters of a session when events are appended to its log."""

    def __init__(self) -> None:
        self._events: defaultdict[str, anyio.Event] = defaultdict(anyio.Event)

    def notify(self, session_id: str) -> None:
        """Wake everyone waiting on `session_id`."""
        event = self._events.pop(session_id, None)
        if event is not None:
            event.set()

    def watch(self, session_id: str) -> anyio.Event:
        """Return an event set at the session's next append.

        Take it *before* reading the log, then wait on it: an append in between still sets it.
        """
        return self._events[session_id]

    def notify_all(self) -> None:
        """Wake every waiter (the store may have missed telling us something)."""
        events, self._events = self._events, defaultdict(anyio.Event)
        for event in events.values():
            event.set()
