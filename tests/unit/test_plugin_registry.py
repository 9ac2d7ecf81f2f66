"""The plugin registry: which plugins load (LAP_LOAD_PLUGINS, LAP_DISABLE_PLUGINS), tracing their hooks
(LAP_TRACE_PLUGINS), and the errors that name what to fix (docs/plugins.md, "Choosing plugins")."""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING

import pytest
import structlog

from lap_core import HarnessSpec, PluginError, hookimpl
from lap_core._plugins import PluginRegistry
from tests.fakes.script_harness import ScriptHarness

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

INSTALLED = sorted(importlib.metadata.entry_points(group="lap").names)


def _loaded(**env: str) -> list[str]:
    return [row["name"] for row in PluginRegistry(env=env).describe()]


class ScriptPlugin:
    @hookimpl
    def lap_harnesses(self) -> Iterator[HarnessSpec]:
        yield HarnessSpec(name="script", factory=ScriptHarness)


def test_every_installed_plugin_loads_by_default() -> None:
    assert {"lap-local", "lap-sql"} <= set(INSTALLED)
    assert _loaded() == INSTALLED


def test_load_plugins_loads_only_the_named_ones() -> None:
    assert _loaded(LAP_LOAD_PLUGINS="lap-local, lap-sql") == ["lap-local", "lap-sql"]


def test_disable_plugins_leaves_the_named_ones_out_and_wins_over_load_plugins() -> None:
    assert _loaded(LAP_DISABLE_PLUGINS="lap-local,lap-sql") == [
        n for n in INSTALLED if n not in ("lap-local", "lap-sql")
    ]
    assert _loaded(LAP_LOAD_PLUGINS="lap-local,lap-sql", LAP_DISABLE_PLUGINS="lap-sql") == ["lap-local"]


def test_a_misspelled_plugin_to_load_is_an_error_listing_the_installed_ones() -> None:
    with pytest.raises(PluginError, match="LAP_LOAD_PLUGINS names lap-locl, which no installed plugin is") as caught:
        PluginRegistry(env={"LAP_LOAD_PLUGINS": "lap-locl"})
    assert "lap-local" in caught.value.message


def test_plugins_given_to_the_registry_load_whatever_the_variables_say() -> None:
    registry = PluginRegistry([ScriptPlugin()], env={"LAP_LOAD_PLUGINS": "lap-local"})
    assert list(registry.harnesses()) == ["script"]


def test_tracing_logs_the_registration_hooks_with_their_plugins_and_records() -> None:
    class ServerLike:
        @hookimpl
        def lap_addhooks(self, plugin_manager: object) -> None:
            pass

    server, script = ServerLike(), ScriptPlugin()
    with structlog.testing.capture_logs() as logs:
        registry = PluginRegistry([server, script], load_entry_points=False, env={"LAP_TRACE_PLUGINS": "1"})
        [spec] = registry.harnesses().values()
        registry.cli_commands()
    calls = {entry["hook"]: entry for entry in logs if entry["event"] == "plugin.hook"}
    assert set(calls) == {"lap_addhooks", "lap_harnesses", "lap_cli_commands"}
    assert all(entry["log_level"] == "debug" for entry in calls.values())
    assert calls["lap_addhooks"]["plugins"] == [registry.pm.get_name(server)]
    assert calls["lap_harnesses"]["plugins"] == [registry.pm.get_name(script)]
    assert calls["lap_harnesses"]["result"] == [spec]


def test_without_tracing_nothing_is_logged() -> None:
    with structlog.testing.capture_logs() as logs:
        PluginRegistry([ScriptPlugin()], load_entry_points=False, env={}).harnesses()
    assert not [entry for entry in logs if entry["event"] == "plugin.hook"]


def test_a_misspelled_hook_is_an_error_naming_it_and_the_hook_meant() -> None:
    class Misspelled:
        @hookimpl
        def lap_harness(self) -> Iterator[HarnessSpec]:
            yield HarnessSpec(name="script", factory=ScriptHarness)

    with pytest.raises(PluginError, match=r"unknown hook 'lap_harness': did you mean lap_harnesses\?"):
        PluginRegistry([Misspelled()], load_entry_points=False, env={})


def test_a_hook_another_plugin_adds_may_be_optional() -> None:
    class Routes:
        @hookimpl(optionalhook=True)
        def lap_server_routes(self) -> list[object]:
            return []

    class Unmarked:
        @hookimpl
        def lap_server_routes(self) -> list[object]:
            return []

    PluginRegistry([Routes()], load_entry_points=False, env={})
    with pytest.raises(PluginError, match="unknown hook 'lap_server_routes'"):
        PluginRegistry([Unmarked()], load_entry_points=False, env={})
    # Once the plugin that adds the hook is there, it is known, whichever registered first.
    assert PluginRegistry([Unmarked()], env={"LAP_LOAD_PLUGINS": "lap-server"}).pm.hook.lap_server_routes.has_spec()


@pytest.fixture
def broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installed plugin `lap-broken` whose module fails to import."""
    (tmp_path / "lap_broken.py").write_text("raise ImportError('no module named lap_missing_dependency')\n")
    dist = tmp_path / "lap_broken-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lap-broken\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[lap]\nlap-broken = lap_broken\n")
    monkeypatch.syspath_prepend(tmp_path)
    return "lap-broken"


def test_a_plugin_that_fails_to_import_says_how_to_start_without_it(broken_plugin: str) -> None:
    with pytest.raises(PluginError) as caught:
        PluginRegistry(env={"LAP_DISABLE_PLUGINS": "lap-kubernetes"})
    assert "plugin 'lap-broken' failed to import" in caught.value.message
    assert "lap_missing_dependency" in caught.value.message
    assert caught.value.message.endswith("set LAP_DISABLE_PLUGINS=lap-broken,lap-kubernetes")
    assert "lap-broken" not in _loaded(LAP_DISABLE_PLUGINS="lap-broken")
