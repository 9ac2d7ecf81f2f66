"""The Integration contract: a connection to an outside system (e.g. Linear)."""

from __future__ import annotations

from abc import ABC
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import TracebackType

    from lap_core.events import EventRecord


class Integration(ABC):  # noqa: B024 - every method is optional
    """Reacts to session events and starts sessions from an outside system."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release the integration's resources."""

    async def on_event(self, record: EventRecord) -> None:  # noqa: B027 - optional hook, empty by default
        """Called for each new event of every session (within a time limit)."""
