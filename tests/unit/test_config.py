"""Configuration: every failing key is reported at once, by its variable name."""

from __future__ import annotations

import pytest

from lap_core import ConfigError, Lap

pytestmark = pytest.mark.anyio


async def test_all_problems_are_listed_in_one_error(tmp_path: object) -> None:
    env = {
        "LAP_DATA_DIR": str(tmp_path),
        "LITELLM_API_BASE": "not a url",
        "LAP_TURN_TIMEOUT": "soon",
        "LAP_SANDBOX_BACKEND": "nowhere",
        "DATABASE_URL": "mysql://db/lap",
        "LAP_SANDBOX_PIDS": "3",
    }
    with pytest.raises(ConfigError) as caught:
        async with Lap(env=env):
            pass
    problems = caught.value.problems
    assert set(problems) == {
        "LITELLM_API_BASE",
        "LITELLM_API_KEY",
        "LAP_TURN_TIMEOUT",
        "LAP_SANDBOX_BACKEND",
        "DATABASE_URL",
    }
    message = caught.value.message
    for key in problems:
        assert key in message
    assert "nowhere" in problems["LAP_SANDBOX_BACKEND"]
    assert "local" in problems["LAP_SANDBOX_BACKEND"]


async def test_component_settings_are_validated_with_the_core(tmp_path: object) -> None:
    env = {"LAP_DATA_DIR": str(tmp_path), "LAP_SANDBOX_PIDS": "3", "LAP_TURN_TIMEOUT": "-1"}
    with pytest.raises(ConfigError) as caught:
        async with Lap(env=env, run_turns=False):
            pass
    assert set(caught.value.problems) == {"LAP_SANDBOX_PIDS", "LAP_TURN_TIMEOUT"}


async def test_admin_tools_need_no_gateway(tmp_path: object) -> None:
    async with Lap(env={"LAP_DATA_DIR": str(tmp_path)}, run_turns=False) as lap:
        assert await lap.agents.list() == []
