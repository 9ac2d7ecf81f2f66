"""The conformance suites of the Integration contract.

`IntegrationStoreConformance` tests a store's part (delivery cursors, delivery leases, external links;
`StoreConformance` includes it). `IntegrationConformance` tests an integration: subclass it and name
it; with the kit's pytest plugin (`lap_core.testing.pytest_plugin`) the suite takes it from the kit's
`lap` fixture. Or give an `integration` fixture of your own::

    class TestMyIntegration(IntegrationConformance):
        name = "mine"

        @pytest.fixture
        async def integration(self) -> AsyncIterator[Integration]: ...  # optional

A few store tests wait for real leases to expire (leases of 0.2 s).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import anyio
import pytest

from lap_core import _events as ev
from lap_core._errors import Conflict, InvalidInput, NotFound
from lap_core._integration import Delivery, Integration, delivery_key
from lap_core._models import new_id, utcnow
from lap_core.testing._base import StoreSuite, Suite, _new_session, _start

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lap_core._runtime import Lap
    from lap_core._store import SessionStore

__all__ = ["IntegrationConformance", "IntegrationStoreConformance", "deliveries"]

SHORT_LEASE = 0.2
"""Seconds of the leases the tests let expire."""
LONG_LEASE = 60.0
"""Seconds of the leases the tests never let expire."""


def deliveries(integration: str, session_id: str, events: Sequence[ev.SessionEvent]) -> list[Delivery]:
    """Return the deliveries of `events` as the log of `session_id` (seqs 1, 2, ...), keyed for `integration`."""
    records = [
        ev.EventRecord(session_id=session_id, seq=seq, event=event, turn_id=None, at=utcnow())
        for seq, event in enumerate(events, start=1)
    ]
    return [Delivery(key=delivery_key(integration, record), record=record) for record in records]


class IntegrationStoreConformance(StoreSuite):
    """Tests a store's integration methods; subclass it and provide the `store` fixture."""

    # delivery cursors
    async def test_the_backlog_names_sessions_with_unacknowledged_events(self, store: SessionStore) -> None:
        quiet, busy = await _new_session(store), await _new_session(store)
        assert await store.delivery_backlog("mine") == {}
        await store.append_events(busy.id, [ev.TextDelta(text="a"), ev.TextDelta(text="b")])
        assert await store.delivery_backlog("mine") == {busy.id: 0}
        await store.acknowledge_delivery("mine", busy.id, 1)
        assert await store.delivery_backlog("mine") == {busy.id: 1}
        assert await store.delivery_backlog("theirs") == {busy.id: 0}  # a cursor per integration
        await store.acknowledge_delivery("mine", busy.id, 2)
        assert await store.delivery_backlog("mine") == {}
        await _start(store, quiet.id)  # a turn's user message is an event like any other
        assert await store.delivery_backlog("mine") == {quiet.id: 0}

    async def test_the_backlog_of_some_sessions(self, store: SessionStore) -> None:
        first, second, idle = await _new_session(store), await _new_session(store), await _new_session(store)
        for session in (first, second):
            await store.append_events(session.id, [ev.TextDelta(text="x")])
        assert await store.delivery_backlog("mine", sessions=[first.id, idle.id, new_id("ses")]) == {first.id: 0}
        assert await store.delivery_backlog("mine", sessions=[first.id, first.id]) == {first.id: 0}
        assert await store.delivery_backlog("mine", sessions=[]) == {}
        assert await store.delivery_backlog("mine") == {first.id: 0, second.id: 0}

    async def test_a_cursor_never_moves_back(self, store: SessionStore) -> None:
        session = await _new_session(store)
        await store.append_events(session.id, [ev.TextDelta(text=str(i)) for i in range(3)])
        await store.acknowledge_delivery("mine", session.id, 2)
        await store.acknowledge_delivery("mine", session.id, 1)
        assert await store.delivery_backlog("mine") == {session.id: 2}

    async def test_the_backlog_is_limited(self, store: SessionStore) -> None:
        for _ in range(3):
            session = await _new_session(store)
            await store.append_events(session.id, [ev.TextDelta(text="x")])
        assert len(await store.delivery_backlog("mine", limit=2)) == 2
        assert await store.delivery_backlog("mine", limit=0) == {}
        with pytest.raises(InvalidInput):
            await store.delivery_backlog("mine", limit=-1)

    async def test_cursors_go_with_their_session(self, store: SessionStore) -> None:
        session = await _new_session(store)
        await store.append_events(session.id, [ev.TextDelta(text="x")])
        await store.acknowledge_delivery("mine", session.id, 1)
        await store.delete_session(session.id)
        await store.acknowledge_delivery("mine", session.id, 2)  # ignored: the session is gone
        assert await store.delivery_backlog("mine") == {}

    # delivery leases
    async def test_one_holder_at_a_time(self, store: SessionStore) -> None:
        assert await store.lease_integration("mine", "w1", lease_seconds=LONG_LEASE)
        assert not await store.lease_integration("mine", "w2", lease_seconds=LONG_LEASE)
        assert await store.lease_integration("mine", "w1", lease_seconds=LONG_LEASE)  # extended
        assert await store.lease_integration("theirs", "w2", lease_seconds=LONG_LEASE)  # a lease per integration
        assert not await store.release_integration("mine", "w2")
        assert await store.release_integration("mine", "w1")
        assert not await store.release_integration("mine", "w1")
        assert await store.lease_integration("mine", "w2", lease_seconds=LONG_LEASE)

    async def test_an_expired_lease_is_taken_over(self, store: SessionStore) -> None:
        assert await store.lease_integration("mine", "w1", lease_seconds=SHORT_LEASE)
        await anyio.sleep(SHORT_LEASE + 0.1)
        assert await store.lease_integration("mine", "w2", lease_seconds=LONG_LEASE)
        assert not await store.lease_integration("mine", "w1", lease_seconds=LONG_LEASE)
        assert not await store.release_integration("mine", "w1")

    async def test_concurrent_holders_never_share_the_lease(self, store: SessionStore) -> None:
        won: list[str] = []

        async def take(holder: str) -> None:
            if await store.lease_integration("mine", holder, lease_seconds=LONG_LEASE):
                won.append(holder)

        async with anyio.create_task_group() as tasks:
            for index in range(8):
                tasks.start_soon(take, f"w{index}")
        assert len(won) == 1

    async def test_lease_seconds_are_checked(self, store: SessionStore) -> None:
        for seconds in (0, -1, 86401, math.inf, math.nan):
            with pytest.raises(InvalidInput):
                await store.lease_integration("mine", "w1", lease_seconds=seconds)

    # external links
    async def test_links_map_external_records_to_sessions(self, store: SessionStore) -> None:
        session, other = await _new_session(store), await _new_session(store)
        await store.link_external("mine", "rec-1", session.id)
        await store.link_external("mine", "rec-1", session.id)  # again: nothing changes
        await store.link_external("mine", "rec-2", session.id)
        await store.link_external("theirs", "rec-1", other.id)  # external ids are the integration's own
        assert await store.find_external("mine", "rec-1") == session.id
        assert await store.find_external("theirs", "rec-1") == other.id
        assert await store.external_ids("mine", session.id) == ["rec-1", "rec-2"]
        assert await store.external_ids("mine", other.id) == []
        with pytest.raises(Conflict):
            await store.link_external("mine", "rec-1", other.id)
        await store.unlink_external("mine", "rec-1")
        with pytest.raises(NotFound):
            await store.find_external("mine", "rec-1")
        with pytest.raises(NotFound):
            await store.unlink_external("mine", "rec-1")
        await store.link_external("mine", "rec-1", other.id)
        assert await store.find_external("mine", "rec-1") == other.id

    async def test_a_link_needs_its_session_and_goes_with_it(self, store: SessionStore) -> None:
        with pytest.raises(NotFound):
            await store.link_external("mine", "rec-1", new_id("ses"))
        session = await _new_session(store)
        await store.link_external("mine", "rec-1", session.id)
        await store.delete_session(session.id)
        with pytest.raises(NotFound):
            await store.find_external("mine", "rec-1")


class IntegrationConformance(Suite):
    """Tests what every integration must do; a subclass sets `name` (and may provide `integration`)."""

    name: ClassVar[str] = ""
    """The registered name of the integration (its `IntegrationSpec.name`)."""

    @pytest.fixture
    def integration(self, lap: Lap) -> Integration:
        """Return the started integration `name` of the kit's `lap` (whose store knows none of the
        sessions these tests make up); or override this."""
        if self.name not in lap.integrations:
            installed = ", ".join(lap.integrations) or "none"
            raise LookupError(f"no integration {self.name!r} is registered (installed: {installed}): set `name`")
        return lap.integrations[self.name]

    async def test_it_is_an_integration_with_sane_delivery_settings(self, integration: Integration) -> None:
        assert isinstance(integration, Integration)
        assert integration.delivery_timeout > 0
        assert integration.max_attempts is None or integration.max_attempts >= 1
        assert 0 < integration.retry_delay <= integration.retry_delay_max

    async def test_every_event_of_a_session_it_does_not_know_is_acknowledged(self, integration: Integration) -> None:
        # A session started elsewhere: the integration must not fail on it (it would be retried, then skipped).
        from lap_core.testing.store import EVERY_EVENT

        for delivery in deliveries(self.name, new_id("ses"), EVERY_EVENT):
            with anyio.fail_after(integration.delivery_timeout):
                await integration.on_event(delivery)

    async def test_a_repeated_delivery_is_acknowledged_again(self, integration: Integration) -> None:
        # At least once: after a crash the same key comes back, and must not fail the second time.
        session_id = new_id("ses")
        for delivery in deliveries(self.name, session_id, [ev.UserMessage(text="hi"), ev.TextDelta(text="yo")]):
            await integration.on_event(delivery)
            await integration.on_event(Delivery(key=delivery.key, record=delivery.record, attempt=2))
