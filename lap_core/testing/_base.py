"""What the conformance suites share: the asyncio backend, the `store` fixture to override, helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from lap_core import _events as ev
from lap_core._models import Agent, Session, Team, TurnRecord, new_id

if TYPE_CHECKING:
    from collections.abc import Iterable

    from lap_core._store import SessionStore


_EPOCH = datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _utc_aware(*values: datetime | None) -> bool:
    return all(value is not None and value.utcoffset() == timedelta(0) for value in values)


def _pluck(items: Iterable[Any], field: str) -> list[Any]:
    return [getattr(item, field) for item in items]


def _team(name: str = "") -> Team:
    team_id = new_id("team")
    return Team(id=team_id, name=name or team_id)


def _agent(team_id: str, name: str = "coder", **fields: Any) -> Agent:
    return Agent(team_id=team_id, name=name, **{"id": new_id("agt"), "harness": "opencode", "model": "m1", **fields})


async def _new_session(store: SessionStore, **fields: Any) -> Session:
    team = await store.create_team(_team())
    agent = await store.create_agent(_agent(team.id))
    return await store.create_session(Session(id=new_id("ses"), team_id=team.id, agent_id=agent.id, **fields))


async def _start(store: SessionStore, session_id: str, text: str = "go") -> tuple[TurnRecord, ev.EventRecord]:
    return await store.start_turn(TurnRecord(id=new_id("turn"), session_id=session_id), ev.UserMessage(text=text))


def _texts(records: list[ev.EventRecord]) -> list[str]:
    return [record.event.text for record in records if isinstance(record.event, ev.TextDelta)]


def _without_at(records: list[ev.EventRecord]) -> list[ev.EventRecord]:
    return [msgspec.structs.replace(record, at=_EPOCH) for record in records]


class Suite:
    """Base of every conformance suite: async tests, on asyncio."""

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def anyio_backend(self) -> str:
        """Run on asyncio (piccolo, asyncpg, httpx and friends need it)."""
        return "asyncio"


class StoreSuite(Suite):
    """Base of the store conformance suites; a subclass provides the `store` fixture."""

    @pytest.fixture
    def store(self) -> SessionStore:
        """Yield an open, migrated, empty store: override this in your subclass."""
        raise NotImplementedError(f"subclass {type(self).__name__} and override the `store` fixture")
