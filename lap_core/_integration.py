"""The Integration contract: a connection to an outside system (e.g. Linear)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from anyio.abc import AsyncResource

if TYPE_CHECKING:
    from lap_core._events import EventRecord


class Integration(AsyncResource):
    """Reacts to session events and starts sessions from an outside system."""

    async def aclose(self) -> None:
        """Release the integration's resources."""

    async def on_event(self, record: EventRecord) -> None:
        """Called for each new event of every session (within a time limit)."""
