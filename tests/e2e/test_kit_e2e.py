"""The kit's fixtures end to end: each bundled harness CLI, in a real sandbox, talks through LAP's LLM proxy
straight to the kit's fake LLM (no LiteLLM), as a plugin author's tests do with `lap_core.testing`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from lap_core import TextDelta, ToolCall, TurnEnd
from lap_core.testing import BackendConformance, pytest_plugin

if TYPE_CHECKING:
    from pathlib import Path

    from lap_core import Lap
    from lap_core.testing import FakeLLM

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.bwrap]

# The kit's fixtures, here whether or not its entry point loads the plugin into this run.
lap_llm_server = pytest_plugin.lap_llm_server
lap_llm = pytest_plugin.lap_llm
lap_data_dir = pytest_plugin.lap_data_dir
lap_plugins = pytest_plugin.lap_plugins
lap_env = pytest_plugin.lap_env
lap = pytest_plugin.lap


@pytest.mark.parametrize(
    ("harness", "api"),
    [("opencode", "/chat/completions"), ("codex", "/responses"), ("claude-code", "/messages")],
)
async def test_a_harness_calls_a_tool_and_answers_through_the_kit(
    harness: str, api: str, lap: Lap, lap_llm: FakeLLM, lap_data_dir: Path, harness_root: Path, bwrap: None
) -> None:
    lap_llm.script(command="echo kit-proof > proof.txt", text="Done by the kit.")
    agent = await lap.agents.create("kit", harness=harness, model="fake-model")
    session = await lap.sessions.create(agent.id)
    with anyio.fail_after(180):
        records = [record async for record in lap.sessions.stream(session.id, "write the proof")]
    events = [record.event for record in records]
    assert events[-1] == TurnEnd(status="completed"), events
    assert [event for event in events if isinstance(event, ToolCall)]
    assert "".join(event.text for event in events if isinstance(event, TextDelta)).endswith("Done by the kit.")
    assert (lap_data_dir / "volumes" / session.id / "workspace" / "proof.txt").read_text() == "kit-proof\n"
    requests = lap_llm.requests()
    assert {request["key"] for request in requests} == {pytest_plugin.GATEWAY_KEY}  # the real key, swapped in
    assert any(request["path"].endswith(api) for request in requests)


class TestTheBackendSuiteOnTheKit(BackendConformance):
    """The backend suite with nothing but the backend's name: the kit's `lap` gives the backend."""

    sandbox_backend = "local"

    @pytest.fixture(autouse=True)
    def _needs_bwrap(self, bwrap: None) -> None:
        """Skip (or fail, under bin/test) without bubblewrap."""
