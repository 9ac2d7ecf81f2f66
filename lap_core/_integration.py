"""The Integration contract: a connection to an outside system (Linear, Slack, GitHub...).

An integration is built once per `Lap` by its spec's factory (with its validated settings), started
with the running `Lap` (`Integration.start`) and closed when the `Lap` exits. In the processes that run
turns (workers), LAP delivers every event of every session's log to it, durably: the store keeps a
cursor per integration and session, advanced only after `on_event` returned, so an event is
delivered at least once, in log order per session, even when a worker dies mid-delivery. Conformance:
`lap_core.testing.IntegrationConformance` (an integration) and `IntegrationStoreConformance` (a store).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import msgspec
from anyio.abc import AsyncResource

from lap_core._events import EventRecord

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lap_core._runtime import Lap


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One event of a session's log handed to an integration.

    `key` is the same every time this event is delivered to this integration (`"<integration>:<session
    id>:<seq>"`): pass it as the idempotency key of whatever the integration does with the event, so a
    delivery repeated after a crash has no second effect. `attempt` counts the tries in this process.
    """

    key: str
    record: EventRecord
    attempt: int = 1


def delivery_key(integration: str, record: EventRecord) -> str:
    """Return the idempotency key of delivering `record` to `integration` (see `Delivery.key`)."""
    return f"{integration}:{record.session_id}:{record.seq}"


class Integration(AsyncResource):
    """Reacts to session events, starts sessions from an outside system and links its records to them.

    Subclass it and register it with `IntegrationSpec`. LAP calls, in this order: `start(lap)` once the
    `Lap` is running (in every process: a web process serves the integration's routes, a worker also
    delivers events), `on_event(delivery)` for each event (workers only), `aclose()` on exit.

    Delivery: the events of one session come in log order, one at a time; events of different
    sessions may come concurrently. Return from `on_event` to acknowledge an event; raise to have it
    delivered again after `retry_delay` seconds, doubling up to `retry_delay_max`, at most
    `max_attempts` times (None: until it succeeds), after which it is logged and skipped. A call
    longer than `delivery_timeout` seconds is cancelled and counts as a failure. With several
    workers, one of them at a time delivers an integration's events (a lease in the store).
    """

    delivery_timeout: ClassVar[float] = 30.0
    """Seconds one `on_event` call may take."""
    max_attempts: ClassVar[int | None] = 8
    """Tries of one event before it is skipped (None: retry until it succeeds, holding its session's later events)."""
    retry_delay: ClassVar[float] = 1.0
    """Seconds before the first retry of a failed event; each further retry waits twice as long."""
    retry_delay_max: ClassVar[float] = 60.0
    """The longest wait between two tries of an event."""

    async def start(self, lap: Lap) -> None:
        """Keep what the integration needs of the running `lap` (`lap.sessions`, `lap.agents`, `lap.store`).

        Called once, after the `Lap` started and before any `on_event`. An exception here stops the `Lap`.
        """

    async def aclose(self) -> None:
        """Release the integration's resources (called once, when the `Lap` exits)."""

    async def on_event(self, delivery: Delivery) -> None:
        """Handle one event; return to acknowledge it, raise to have it delivered again (see the class)."""


class IntegrationStore(ABC):
    """The store's part of the Integration contract; every `SessionStore` has these methods.

    Delivery cursors (one per integration and session: the last seq the integration acknowledged),
    the lease that lets one worker at a time deliver an integration's events, and links from an
    integration's own records (`external_id`, e.g. a Linear agent session) to LAP sessions. Cursors and
    links go with their session when it is deleted. Conformance: `lap_core.testing.IntegrationStoreConformance`.
    """

    @abstractmethod
    async def lease_integration(self, integration: str, holder: str, *, lease_seconds: float) -> bool:
        """Take or extend the lease of the integration's delivery for `holder`; return whether it holds it now.

        Taken when no one holds it, `holder` does already (extended to the store's now plus
        `lease_seconds`), or its holder's lease expired. Concurrent callers never both get it.
        Raise `InvalidInput` unless 0 < `lease_seconds` <= 86400.
        """

    @abstractmethod
    async def release_integration(self, integration: str, holder: str) -> bool:
        """Give up `holder`'s lease of the integration's delivery; return False if it did not hold it."""

    @abstractmethod
    async def delivery_backlog(
        self, integration: str, *, sessions: Sequence[str] | None = None, limit: int = 100
    ) -> dict[str, int]:
        """Return the sessions whose log has events the integration has not acknowledged, at most `limit`.

        Maps each session id to the last seq the integration acknowledged (0 for none): read the rest
        with `read_events(session_id, after=seq)`. Only of `sessions`, when given (unknown ids are
        left out). Raise `InvalidInput` for a negative limit.
        """

    @abstractmethod
    async def acknowledge_delivery(self, integration: str, session_id: str, seq: int) -> None:
        """Record that the integration has every event of the session up to `seq`.

        A cursor never moves back (a lower `seq` changes nothing); a deleted session is ignored.
        """

    @abstractmethod
    async def link_external(self, integration: str, external_id: str, session_id: str) -> None:
        """Link the integration's record `external_id` to a session (again: nothing changes).

        Raise `NotFound` if the session does not exist, `Conflict` if `external_id` is linked to another session.
        """

    @abstractmethod
    async def find_external(self, integration: str, external_id: str) -> str:
        """Return the id of the session the integration's `external_id` is linked to; raise `NotFound`."""

    @abstractmethod
    async def external_ids(self, integration: str, session_id: str) -> list[str]:
        """Return the integration's external ids linked to the session, in the order they were linked."""

    @abstractmethod
    async def unlink_external(self, integration: str, external_id: str) -> None:
        """Remove the link of the integration's `external_id`; raise `NotFound` if there is none."""
