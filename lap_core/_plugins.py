"""The one typed façade over pluggy: loading plugins and collecting their records.

`pm.hook.*` is called in this module only. Each `Lap` owns its own `PluginRegistry`.
"""

from __future__ import annotations

import difflib
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
    from collections.abc import Iterable, Mapping, Sequence

log = structlog.get_logger("lap.plugins")
SpecT = TypeVar("SpecT", bound="msgspec.Struct")
ENTRY_POINT_GROUP = "lap"


class PluginSettings(msgspec.Struct, frozen=True, kw_only=True, rename="upper"):
    """Which plugins load (read before every other setting: the others depend on the plugins)."""

    # Comma-separated entry point names (as `lap plugins` lists them): load only these.
    lap_load_plugins: str = ""
    # Comma-separated entry point names: never load these (wins over LAP_LOAD_PLUGINS).
    lap_disable_plugins: str = ""
    # Not empty: log every hook call (at debug level): the hook, the plugins called, what they returned.
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
        names = {field.encode_name for field in msgspec.structs.fields(PluginSettings)}
        settings = msgspec.convert({k: v for k, v in env.items() if k in names}, PluginSettings)
        self._tracing = bool(settings.lap_trace_plugins)
        if self._tracing:  # before any registration: `lap_addhooks` is called as each plugin registers
            self.pm.add_hookcall_monitoring(lambda *_: None, self._traced)
        # Historic: replayed for every plugin registered later, so it can add its own hookspecs.
        self.pm.hook.lap_addhooks.call_historic(kwargs={"plugin_manager": self.pm})
        for plugin in plugins:
            self.register(plugin)
        if load_entry_points:
            self._load_entry_points(_names(settings.lap_load_plugins), _names(settings.lap_disable_plugins))
        self._check_hook_names()

    def _trace(self, hook_name: str, plugins: Sequence[str], **outcome: object) -> None:
        if self._tracing:
            log.debug("plugin.hook", hook=hook_name, plugins=list(plugins), **outcome)

    def _traced(
        self, outcome: pluggy.Result[object], hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: object
    ) -> None:
        error = outcome.exception
        found = {"error": repr(error)} if error is not None else {"result": outcome.get_result()}
        self._trace(hook_name, [impl.plugin_name for impl in impls], **found)

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
        entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        unknown = only - set(entry_points.names)
        if unknown:
            raise PluginError(
                f"LAP_LOAD_PLUGINS names {', '.join(sorted(unknown))}, which no installed plugin is"
                f" (installed: {', '.join(sorted(entry_points.names)) or 'none'})"
            )
        for entry_point in entry_points:
            if entry_point.name in disabled or (only and entry_point.name not in only):
                continue
            try:
                plugin = entry_point.load()
            except Exception as error:
                without = ",".join(sorted({*disabled, entry_point.name}))
                raise PluginError(
                    f"plugin {entry_point.name!r} failed to import: {error!r}."
                    f" To start without it, set LAP_DISABLE_PLUGINS={without}"
                ) from error
            self.register(plugin, name=entry_point.name)

    def _check_hook_names(self) -> None:
        """Refuse a hook implementation that no hook specification knows (a misspelled name, say).

        Checked once every plugin is registered: a plugin may add specs (`lap_addhooks`) after
        another registered its implementations.
        """
        known = [name for name in vars(self.pm.hook) if getattr(self.pm.hook, name).has_spec()]
        for name, caller in sorted(vars(self.pm.hook).items()):
            if name.startswith("_") or caller.has_spec():
                continue
            for impl in caller.get_hookimpls():
                if impl.optionalhook:
                    continue
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {close[0]}?" if close else f"LAP's hooks are {', '.join(sorted(known))}."
                raise PluginError(
                    f"plugin {impl.plugin_name!r} implements an unknown hook {name!r}: {hint} (a hook that"
                    " another plugin adds, and that may be absent, is marked @hookimpl(optionalhook=True))"
                )

    def _collect(self, hook_name: str, spec_type: type[SpecT]) -> dict[str, SpecT]:
        hook = getattr(self.pm.hook, hook_name)
        found: dict[str, SpecT] = {}
        owners: dict[str, str] = {}
        for impl in hook.get_hookimpls():
            owner = self.pm.get_name(impl.plugin) or repr(impl.plugin)
            # Called one plugin at a time (not through pluggy), so that errors name their plugin.
            try:
                records = list(impl.function() or ())
            except Exception as error:
                self._trace(hook_name, [owner], error=repr(error))
                raise PluginError(f"plugin {owner!r}: {hook_name}() failed: {error!r}") from error
            self._trace(hook_name, [owner], result=records)
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
