"""The Kubernetes backend's settings under the seeds' names (K8S_*, WARM_POOL_SIZE), and each harness's image."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from lap_core import ConfigError, Lap, read_settings
from lap_kubernetes import KubernetesSettings

if TYPE_CHECKING:
    from pathlib import Path


def _settings(**env: str) -> KubernetesSettings:
    return read_settings(KubernetesSettings, env)


def test_the_seeds_names_set_the_same_settings() -> None:
    seeds = _settings(
        K8S_NAMESPACE="agents",
        K8S_IMAGE_PULL_POLICY="Always",
        K8S_HARNESS_IMAGE="registry.example/sandbox:1",
        K8S_HARNESS_IMAGE_CODEX="registry.example/codex:2",
        WARM_POOL_SIZE="3",
    )
    ours = _settings(
        LAP_K8S_NAMESPACE="agents",
        LAP_K8S_IMAGE_PULL_POLICY="Always",
        LAP_K8S_IMAGE="registry.example/sandbox:1",
        LAP_K8S_IMAGE_CODEX="registry.example/codex:2",
        LAP_K8S_WARM_POOL_SIZE="3",
    )
    assert seeds == ours
    assert (seeds.lap_k8s_namespace, seeds.lap_k8s_image_pull_policy, seeds.lap_k8s_warm_pool_size) == (
        "agents",
        "Always",
        3,
    )
    # Both names, to the same value, are one setting said twice.
    assert _settings(K8S_NAMESPACE="agents", LAP_K8S_NAMESPACE="agents") == _settings(K8S_NAMESPACE="agents")
    assert _settings() == KubernetesSettings()
    assert KubernetesSettings().lap_k8s_warm_pool_size == 0  # no warm pool unless asked for


def test_each_harness_may_have_an_image_of_its_own() -> None:
    settings = _settings(
        K8S_HARNESS_IMAGE_OPENCODE="r/opencode:1",
        LAP_K8S_IMAGE_CLAUDE_CODE="r/claude:2",
        LAP_K8S_IMAGE="r/sandbox-{harness}:3",
    )
    assert settings.image_for("opencode") == "r/opencode:1"
    assert settings.image_for("claude-code") == "r/claude:2"
    assert settings.image_for("codex") == "r/sandbox-codex:3"  # the template, {harness} replaced
    assert settings.image_for("echo") == "r/sandbox-echo:3"  # a third-party harness too
    assert _settings(K8S_HARNESS_IMAGE="r/one-for-all:4").image_for("codex") == "r/one-for-all:4"


def test_a_bad_value_is_reported_under_the_name_that_was_set() -> None:
    with pytest.raises(ConfigError) as caught:
        read_settings(KubernetesSettings, {"K8S_IMAGE_PULL_POLICY": "Sometimes"})
    problems = caught.value.problems
    assert set(problems) == {"K8S_IMAGE_PULL_POLICY"}
    assert "Sometimes" in problems["K8S_IMAGE_PULL_POLICY"]


@pytest.mark.anyio
async def test_conflicting_names_stop_the_start_in_one_error(tmp_path: Path) -> None:
    env = {
        "LAP_DATA_DIR": str(tmp_path),
        "LAP_SANDBOX_BACKEND": "kubernetes",
        "K8S_NAMESPACE": "a",
        "LAP_K8S_NAMESPACE": "b",
        "K8S_HARNESS_IMAGE": "r/x:1",
        "LAP_K8S_IMAGE": "r/y:1",
        "WARM_POOL_SIZE": "2",
        "LAP_K8S_WARM_POOL_SIZE": "5",
        "K8S_IMAGE_PULL_POLICY": "Never",
        "LAP_K8S_IMAGE_PULL_POLICY": "Never",  # the same value twice: fine
        "LAP_TURN_TIMEOUT": "soon",
    }
    with pytest.raises(ConfigError) as caught:
        async with Lap(env=env, run_turns=False):
            pass
    problems = caught.value.problems
    assert set(problems) == {"LAP_K8S_NAMESPACE", "LAP_K8S_IMAGE", "LAP_K8S_WARM_POOL_SIZE", "LAP_TURN_TIMEOUT"}
    assert problems["LAP_K8S_NAMESPACE"] == (
        "LAP_K8S_NAMESPACE and K8S_NAMESPACE name the same setting but are set to different values: set one"
    )
    assert "WARM_POOL_SIZE" in problems["LAP_K8S_WARM_POOL_SIZE"]
