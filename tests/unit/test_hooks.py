"""Every hook does what docs/plugins.md says, through a plugin written as a third party would
(datasette's rule: each hook has a test here, `test_hook_<name>`; a meta-test holds us to it)."""

from __future__ import annotations

import inspect
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING

import click
import httpx
import pytest
from litestar import get
from litestar.di import NamedDependency

from lap_core import (
    HarnessSpec,
    Integration,
    IntegrationSpec,
    Lap,
    SandboxBackendSpec,
    SessionStoreSpec,
    hookimpl,
    hookspec,
)
from lap_core import _hookspecs as core_hookspecs
from lap_core._plugins import PluginRegistry
from lap_server import Principal, ServerSettings, create_app
from lap_server import hookspecs as server_hookspecs
from lap_sql import SqlStore
from tests.fakes.process_backend import ProcessBackend
from tests.fakes.script_harness import ScriptHarness
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.anyio
HOOKS = sorted(
    name
    for module in (core_hookspecs, server_hookspecs)
    for name, value in inspect.getmembers(module, inspect.isfunction)
    if name.startswith("lap_")
)


def test_every_hook_has_a_test_here() -> None:
    tested = {name.removeprefix("test_hook_") for name in globals() if name.startswith("test_hook_")}
    assert set(HOOKS) == tested


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hooks_heading_in_the_guide_is_its_signature(hook: str) -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
    module = core_hookspecs if hasattr(core_hookspecs, hook) else server_hookspecs
    params = ", ".join(inspect.signature(getattr(module, hook)).parameters)
    assert f"### `{hook}({params})`" in guide


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    return lap_env(data_dir, LITELLM_API_BASE="http://127.0.0.1:9", LITELLM_API_KEY="k", **extra)


async def test_hook_lap_sandbox_backends(data_dir: Path) -> None:
    class Plugin:
        @hookimpl
        def lap_sandbox_backends(self) -> Iterator[SandboxBackendSpec]:
            yield SandboxBackendSpec(name="mine", factory=ProcessBackend)

    async with Lap(plugins=[Plugin()], env=_env(data_dir, LAP_SANDBOX_BACKEND="mine"), run_turns=False) as lap:
        assert isinstance(lap.backend, ProcessBackend)


async def test_hook_lap_harnesses(data_dir: Path) -> None:
    class Plugin:
        @hookimpl
        def lap_harnesses(self) -> Iterator[HarnessSpec]:
            yield HarnessSpec(name="mine", factory=ScriptHarness)

    async with Lap(plugins=[Plugin()], env=_env(data_dir), run_turns=False) as lap:
        assert isinstance(lap.harnesses["mine"], ScriptHarness)
        assert (await lap.agents.create("a", harness="mine", model="m")).harness == "mine"


async def test_hook_lap_session_stores(data_dir: Path) -> None:
    opened: list[str] = []

    def factory(url: str) -> SqlStore:
        opened.append(url)
        return SqlStore("sqlite:///" + url.removeprefix("mine://"))

    class Plugin:
        @hookimpl
        def lap_session_stores(self) -> Iterator[SessionStoreSpec]:
            yield SessionStoreSpec(name="mine", factory=factory, schemes=("mine",))

    url = f"mine://{data_dir}/mine.db"
    async with Lap(plugins=[Plugin()], env=_env(data_dir, DATABASE_URL=url), run_turns=False, migrate=True) as lap:
        await lap.agents.create("a", harness="opencode", model="m")
    assert opened == [url]
    assert (data_dir / "mine.db").exists()


def test_hook_lap_integrations() -> None:
    class Mine(Integration):
        pass

    class Plugin:
        @hookimpl
        def lap_integrations(self) -> Iterator[IntegrationSpec]:
            yield IntegrationSpec(name="mine", factory=Mine)

    registry = PluginRegistry([Plugin()], env={"LAP_LOAD_PLUGINS": "lap-sql"})
    assert registry.integrations()["mine"].factory is Mine


def test_hook_lap_cli_commands() -> None:
    @click.command("hello")
    def hello() -> None:
        """Say hello."""

    class Plugin:
        @hookimpl
        def lap_cli_commands(self) -> Iterator[click.Command]:
            yield hello

    registry = PluginRegistry([Plugin()], env={"LAP_LOAD_PLUGINS": "lap-sql"})
    assert hello in registry.cli_commands()


def test_hook_lap_addhooks(monkeypatch: pytest.MonkeyPatch) -> None:
    specs = types.ModuleType("my_hookspecs")

    @hookspec
    def my_widgets() -> list[str]:  # type: ignore[empty-body]
        """Return widgets."""

    specs.my_widgets = my_widgets  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "my_hookspecs", specs)

    class Adder:
        @hookimpl
        def lap_addhooks(self, plugin_manager: object) -> None:
            plugin_manager.add_hookspecs(specs)  # type: ignore[attr-defined]

    class Implementer:
        @hookimpl
        def my_widgets(self) -> list[str]:
            return ["a widget"]

    registry = PluginRegistry([Adder(), Implementer()], env={"LAP_LOAD_PLUGINS": "lap-sql"})
    assert registry.pm.hook.my_widgets() == [["a widget"]]


async def test_hook_lap_server_routes(data_dir: Path) -> None:
    @get("/api/mine", sync_to_thread=False)
    def mine() -> dict[str, str]:
        return {"hello": "from a plugin"}

    class Plugin:
        @hookimpl
        def lap_server_routes(self) -> Iterator[object]:
            yield mine

    env = _env(data_dir, MASTER_KEY="lap_test_master_key_0123456789")
    async with Lap(plugins=[Plugin()], env=env, settings={"server": ServerSettings}, run_turns=False) as lap:
        app = create_app(lap, lap.settings_of("server"))
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": "Bearer lap_test_master_key_0123456789"}
        async with httpx.AsyncClient(transport=transport, base_url="http://lap", headers=headers) as client:
            answer = await client.get("/api/mine")
    assert answer.json() == {"hello": "from a plugin"}


async def test_a_plugin_route_gets_lap_and_the_caller_and_may_opt_out_of_authentication(data_dir: Path) -> None:
    @get("/api/mine/whoami", sync_to_thread=False)
    def whoami(lap: NamedDependency[Lap], caller: NamedDependency[Principal]) -> dict[str, str | None]:
        return {"team": caller.team_id, "lap": type(lap).__name__}

    @get("/api/mine/hook", opt={"exclude_from_auth": True}, sync_to_thread=False)
    def hook() -> str:
        return "open"

    class Plugin:
        @hookimpl
        def lap_server_routes(self) -> Iterator[object]:
            yield from (whoami, hook)

    env = _env(data_dir, MASTER_KEY="lap_test_master_key_0123456789")
    async with Lap(plugins=[Plugin()], env=env, settings={"server": ServerSettings}, run_turns=False) as lap:
        _, key = await lap.keys.create("k")
        transport = httpx.ASGITransport(app=create_app(lap, lap.settings_of("server")))
        async with httpx.AsyncClient(transport=transport, base_url="http://lap") as client:
            anonymous = await client.get("/api/mine/whoami")
            mine = await client.get("/api/mine/whoami", headers={"Authorization": f"Bearer {key}"})
            opened = await client.get("/api/mine/hook")
    assert anonymous.status_code == 401
    assert mine.json() == {"team": "team_default", "lap": "Lap"}
    assert (opened.status_code, opened.text) == (200, "open")
