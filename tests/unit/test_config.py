"""Configuration: every failing key is reported at once, by its variable name."""

from __future__ import annotations

import pytest

from lap_core import ConfigError, Lap
from lap_core._config import CoreSettings, load_settings
from lap_server import ServerSettings

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


async def test_the_seeds_settings_are_accepted_and_checked(tmp_path: object) -> None:
    env = {
        "LAP_DATA_DIR": str(tmp_path),
        "PREINSTALLED_GITHUB_REPO": "https://github.com/acme/app.git",
        "WARM_POOL_SIZE": "4",
        "WARM_POOL_TTL_MINUTES": "15",
        "WARM_POOL_MAX_PROVISIONING": "3",
        "WARM_POOL_RECENT_AGENT_HOURS": "48",
        "LAP_ENV": "development",
    }
    async with Lap(env=env, run_turns=False) as lap:
        settings = lap.settings
        assert settings.preinstalled_github_repo == "https://github.com/acme/app.git"
        assert (settings.warm_pool_size, settings.warm_pool_ttl_minutes) == (4, 15)
        assert (settings.warm_pool_max_provisioning, settings.warm_pool_recent_agent_hours) == (3, 48)
    defaults = CoreSettings()
    assert (defaults.warm_pool_size, defaults.warm_pool_ttl_minutes) == (2, 30)  # the seeds' defaults
    assert (defaults.warm_pool_max_provisioning, defaults.warm_pool_recent_agent_hours) == (2, 24)
    assert (defaults.lap_env, defaults.preinstalled_github_repo) == ("development", None)


@pytest.mark.parametrize(
    "url",
    [
        "git@github.com:acme/app.git",  # ssh: the clone goes through the HTTP(S) egress gateway
        "https://ghp_token@github.com/acme/app",  # a token belongs in a secret
        "https://github.com/",
        "https://github.com/acme/app?ref=main",
        "ftp://github.com/acme/app",
        "github.com/acme/app",
    ],
)
def test_a_repository_must_be_an_http_url_without_credentials(url: str) -> None:
    _, problems = load_settings({"core": CoreSettings}, {"PREINSTALLED_GITHUB_REPO": url})
    assert problems["PREINSTALLED_GITHUB_REPO"].startswith("expected a repository's http(s) URL")
    assert "ghp_token" not in problems["PREINSTALLED_GITHUB_REPO"]


def test_the_seeds_names_are_checked_with_the_rest() -> None:
    env = {
        "WARM_POOL_SIZE": "-1",
        "WARM_POOL_TTL_MINUTES": "0",
        "WARM_POOL_MAX_PROVISIONING": "many",
        "WARM_POOL_RECENT_AGENT_HOURS": "1.5",
        "LAP_ENV": "prod",
        "BASE_URL": "lap.example.com",
        "UI_USERNAME": "",
        "MASTER_KEY": "long-enough",
    }
    _, problems = load_settings({"core": CoreSettings, "server": ServerSettings}, env)
    assert set(problems) == {
        "WARM_POOL_SIZE",
        "WARM_POOL_TTL_MINUTES",
        "WARM_POOL_MAX_PROVISIONING",
        "WARM_POOL_RECENT_AGENT_HOURS",
        "LAP_ENV",
        "BASE_URL",
    }  # an empty UI_USERNAME is unset: the default
    assert problems["BASE_URL"] == "expected an http(s) URL (got 'lap.example.com')"
    settings, _ = load_settings({"server": ServerSettings}, {"MASTER_KEY": "long-enough"})
    assert isinstance(server := settings["server"], ServerSettings)
    assert (server.ui_username, server.base_url) == ("admin", None)
    settings, _ = load_settings(
        {"server": ServerSettings},
        {"MASTER_KEY": "long-enough", "UI_USERNAME": "Ada", "BASE_URL": "https://lap.example.com"},
    )
    assert isinstance(server := settings["server"], ServerSettings)
    assert (server.ui_username, server.base_url) == ("Ada", "https://lap.example.com")
