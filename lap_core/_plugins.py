"""The one typed façade over pluggy: loading plugins and collecting their records.

`pm.hook.*` is called in this module only. Each `Lap` owns its own `PluginRegistry`.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import pluggy
import structlog

from lap_core import _hookspecs as hookspecs
from lap_core._errors import PluginError
from lap_core._specs import HarnessSpec, IntegrationSpec, SandboxBackendSpec, SessionStoreSpec

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

log = structlog.get_logger("lap.plugins")
SpecT = TypeVar("SpecT", bound="msgspec.Struct")
ENTRY_POINT_GROUP = "lap"


class PluginSettings(msgspec.Struct, frozen=True, kw_only=True, rename="upper"):
    """Which plugins load (read before every other setting: the others depend on the plugins)."""

    # Comma-separated entry point names: load only these.
    lap_load_plugins: str = ""
    # Comma-separated entry point names: never load these.
    lap_disable_plugins: str = ""
    # Not empty: log every hook call (at debug level).
    lap_trace_plugins: str = ""


def _names(value: str | None) -> set[str]:
    return {name.strip() for name in (value or "").split(",") if name.strip()}


class PluginRegistry:
    """Registers plugins (given ones and, optionally, the `lap` entry points) and returns their specs.

    Environment: see `PluginSettings`.
    """

    def __init__(self, plugins: Iterable[object] = (), *, load_entry_points: bool = True, env: Mapping[str, str]):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        # Historic: replayed for every plugin registered later, so it can add its own hookspecs.
        self.pm.hook.lap_addhooks.call_historic(kwargs={"plugin_manager": self.pm})
        names = {field.encode_name for field in msgspec.structs.fields(PluginSettings)}
        settings = msgspec.convert({k: v for k, v in env.items() if k in names}, PluginSettings)
        if settings.lap_trace_plugins:
            self.pm.trace.root.setwriter(lambda message: log.debug("hook", trace=message.rstrip()))
            self.pm.enable_tracing()
        for plugin in plugins:
            self.register(plugin)
        if load_entry_points:
            self._load_entry_points(_names(settings.lap_load_plugins), _names(settings.lap_disable_plugins))

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object or module; reject `async def` hook implementations."""
        label = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        if self.pm.is_registered(plugin) or (name and self.pm.get_plugin(name) is not None):
            return
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as error:
            raise PluginError(f"plugin {label!r} is invalid: {error}") from error
        for caller in self.pm.get_hookcallers(plugin) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and (
                    inspect.iscoroutinefunction(impl.function) or inspect.isasyncgenfunction(impl.function)
                ):
                    self.pm.unregister(plugin)
                    raise PluginError(
                        f"plugin {label!r}: hook {caller.name} must be a plain def (hooks only register objects;"
                        " put async work on the objects they return)"
                    )

    def _load_entry_points(self, only: set[str], disabled: set[str]) -> None:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if entry_point.name in disabled or (only and entry_point.name not in only):
                continue
            try:
                plugin = entry_point.load()
            except Exception as error:
                raise PluginError(f"plugin {entry_point.name!r} failed to import: {error!r}") from error
            self.register(plugin, name=entry_point.name)

    def plugin_names(self) -> list[str]:
        """Return the names of the registered plugins, sorted."""
        return sorted(name for name, _ in self.pm.list_name_plugin())

    def _collect(self, hook_name: str, spec_type: type[SpecT]) -> dict[str, SpecT]:
        hook = getattr(self.pm.hook, hook_name)
        found: dict[str, SpecT] = {}
        owners: dict[str, str] = {}
        for impl in hook.get_hookimpls():
            owner = self.pm.get_name(impl.plugin) or repr(impl.plugin)
            try:
                records = list(impl.function() or ())
            except Exception as error:
                raise PluginError(f"plugin {owner!r}: {hook_name}() failed: {error!r}") from error
            for record in records:
                if not isinstance(record, spec_type):
                    raise PluginError(
                        f"plugin {owner!r}: {hook_name}() yielded {type(record).__name__}, not {spec_type.__name__}"
                    )
                name: str = record.name  # type: ignore[attr-defined]
                if name in found:
                    raise PluginError(
                        f"{spec_type.__name__} {name!r} is provided by both {owners[name]!r} and {owner!r}"
                    )
                found[name], owners[name] = record, owner
        return dict(sorted(found.items()))

    def sandbox_backends(self) -> dict[str, SandboxBackendSpec]:
        """Return the registered sandbox backends by name."""
        return self._collect("lap_sandbox_backends", SandboxBackendSpec)

    def harnesses(self) -> dict[str, HarnessSpec]:
        """Return the registered harnesses by name."""
        return self._collect("lap_harnesses", HarnessSpec)

    def session_stores(self) -> dict[str, SessionStoreSpec]:
        """Return the registered session stores by name."""
        return self._collect("lap_session_stores", SessionStoreSpec)

    def integrations(self) -> dict[str, IntegrationSpec]:
        """Return the registered integrations by name."""
        return self._collect("lap_integrations", IntegrationSpec)

    def cli_commands(self) -> list[Any]:
        """Return the `click` commands plugins add to `lap`."""
        return [command for batch in self.pm.hook.lap_cli_commands() for command in batch or ()]

    def describe(self) -> list[dict[str, Any]]:
        """Return each plugin with its distribution and the hooks it implements (for `lap plugins`)."""
        distributions = {ep.name: ep.dist for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
        rows = []
        for name, plugin in sorted(self.pm.list_name_plugin()):
            dist = distributions.get(name)
            hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
            version = dist.version if dist is not None else ""
            rows.append({"name": name, "version": version, "hooks": hooks})
        return rows
