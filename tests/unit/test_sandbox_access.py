"""How the engine keeps its way into a session's sandbox, and what it hands the sandbox for the LLM proxy."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from lap_core import Lap, Status, TurnEnd
from lap_core._engine.sandboxes import llm_scope, sandbox_name
from tests.fakes.plugin import FakesPlugin
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from lap_core import EventRecord

pytestmark = pytest.mark.anyio


@pytest.fixture
def plugin() -> FakesPlugin:
    return FakesPlugin()


@pytest.fixture
async def lap(data_dir: Path, plugin: FakesPlugin) -> AsyncIterator[Lap]:
    env = lap_env(data_dir, LAP_SANDBOX_BACKEND="process", LITELLM_API_BASE="http://127.0.0.1:9", LITELLM_API_KEY="k")
    async with Lap(plugins=[plugin], env=env) as running:
        yield running


async def _turn(lap: Lap, session_id: str, text: str) -> list[EventRecord]:
    with anyio.fail_after(30):
        return [record async for record in lap.sessions.stream(session_id, text)]


def _phases(records: list[EventRecord]) -> list[str]:
    return [r.event.phase for r in records if isinstance(r.event, Status)]


async def test_each_new_sandbox_is_a_new_generation_and_the_scope_follows_it(lap: Lap) -> None:
    agent = await lap.agents.create("a", harness="script", model="the-model")
    session = await lap.sessions.create(agent.name)
    assert (await lap.store.get_session(session.id)).sandbox_generation == 0
    await _turn(lap, session.id, "hello")
    await _turn(lap, session.id, "again")  # the same sandbox: the same generation
    scope = await llm_scope(lap.store, session.id)
    assert scope is not None
    assert (scope.generation, scope.models) == (1, ("the-model",))
    job = await lap.sessions.restart(session.id)
    with anyio.fail_after(30):
        while (await lap.store.get_job(job.id)).status != "done":
            await anyio.sleep(0.05)
    assert (await lap.store.get_session(session.id)).sandbox_generation == 2
    await lap.sessions.delete(session.id)
    assert await llm_scope(lap.store, session.id) is None


async def test_a_sandbox_that_does_not_let_lap_in_is_replaced_and_the_turn_goes_on(
    lap: Lap, plugin: FakesPlugin
) -> None:
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.name)
    await _turn(lap, session.id, "hello")
    # Its sandboxd now wants another token (as if an agent had replaced it): it still looks healthy.
    backend = plugin.backend
    assert backend is not None
    name = sandbox_name(session.id)
    process, _, labels = backend._sandboxes[name]
    backend._sandboxes[name] = (process, "not-the-token-lap-knows", labels)
    assert (await backend.status(name)).state == "ready"  # type: ignore[union-attr]
    records = await _turn(lap, session.id, "still there?")
    assert "sandbox_creating" in _phases(records)
    assert records[-1].event == TurnEnd(status="completed")
    current = await lap.store.get_session(session.id)
    assert (current.status, current.sandbox_generation) == ("ready", 2)
