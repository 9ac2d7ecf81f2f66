"""Codex's config.toml: valid TOML, one provider at LAP's proxy, and nothing that waits on the internet."""

from __future__ import annotations

import tomllib

from lap_codex.harness import codex_config
from lap_core import Agent, LLMAccess


def test_the_config_points_at_the_proxy_and_stays_offline() -> None:
    agent = Agent(id="a", team_id="t", name="n", harness="codex", model='odd "model"')
    config = tomllib.loads(codex_config(agent, LLMAccess(base_url="http://127.0.0.1:4000", api_key="stub")))
    assert config["model"] == 'odd "model"'
    provider = config["model_providers"][config["model_provider"]]
    assert provider == {
        "name": "LAP gateway",
        "base_url": "http://127.0.0.1:4000/v1",
        "env_key": "LITELLM_API_KEY",
        "wire_api": "responses",
    }
    assert "stub" not in codex_config(agent, LLMAccess(base_url="http://x", api_key="stub"))  # the key stays in env
    assert (config["approval_policy"], config["sandbox_mode"]) == ("never", "danger-full-access")
    # each of these, left on, makes every offline run wait for a network that is not there
    assert config["features"]["plugins"] is False
    assert config["analytics"]["enabled"] is False
    assert config["otel"]["metrics_exporter"] == "none"
    assert config["check_for_update_on_startup"] is False
