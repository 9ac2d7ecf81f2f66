"""`lap chat -m`: its exit status says whether the turns completed (scripts depend on it)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import anyio
import pytest
from click.testing import CliRunner

from lap_core import Lap
from lap_core._cli import chat as chat_module
from tests.fakes.plugin import FakesPlugin
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def runner(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """Runs `lap chat` on the fake backend and scripted harness (whose message `fail` fails the turn)."""
    env = lap_env(data_dir, LAP_SANDBOX_BACKEND="process", LITELLM_API_BASE="http://127.0.0.1:9", LITELLM_API_KEY="k")
    configured = functools.partial(Lap, plugins=[FakesPlugin()], env=env)

    async def create_agent() -> None:
        async with configured() as lap:
            await lap.agents.create("scripted", harness="script", model="m")

    anyio.run(create_agent)
    monkeypatch.setattr(chat_module, "Lap", configured)
    return CliRunner()


def test_a_completed_turn_exits_0(runner: CliRunner) -> None:
    result = runner.invoke(chat_module.chat, ["scripted", "-m", "hello"])
    assert result.exit_code == 0, result.output
    assert "you said: hello" in result.stdout


def test_a_failed_turn_exits_1_and_says_why(runner: CliRunner) -> None:
    result = runner.invoke(chat_module.chat, ["scripted", "-m", "fail", "-m", "hello"])
    assert result.exit_code == 1, result.output
    assert "the harness broke" in result.stderr
    assert "error: the turn failed" in result.stderr
    assert "you said: hello" not in result.stdout  # the chat stopped at the failed turn
