"""LAP's hook specifications (pluggy project `lap`).

Hooks are called once at start-up to collect typed records; all runtime work happens on the
objects those records build. Hook implementations are plain `def` functions: pluggy is
synchronous, and LAP rejects `async def` implementations when a plugin is registered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from collections.abc import Iterable

    import click

    from lap_core._specs import HarnessSpec, IntegrationSpec, SandboxBackendSpec, SessionStoreSpec

PROJECT = "lap"
hookspec = pluggy.HookspecMarker(PROJECT)
"""Marks a hook specification of LAP's project (`lap`); for plugins that add hooks of their own (`lap_addhooks`)."""
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Marks a plugin's implementation of a LAP hook: `@hookimpl def lap_harnesses(): ...` (see docs/plugins.md)."""


@hookspec
def lap_sandbox_backends() -> Iterable[SandboxBackendSpec]:  # type: ignore[empty-body]
    """Return the sandbox backends this plugin provides.

    Called once when a `Lap` starts. Example: `yield SandboxBackendSpec(name="local", factory=LocalBackend)`.
    """


@hookspec
def lap_harnesses() -> Iterable[HarnessSpec]:  # type: ignore[empty-body]
    """Return the harnesses (agent CLIs) this plugin provides.

    Called once when a `Lap` starts. Example: `yield HarnessSpec(name="opencode", factory=OpencodeHarness)`.
    """


@hookspec
def lap_session_stores() -> Iterable[SessionStoreSpec]:  # type: ignore[empty-body]
    """Return the session stores this plugin provides, each with the `DATABASE_URL` schemes it serves.

    Called once when a `Lap` starts.
    Example: `yield SessionStoreSpec(name="sql", factory=SqlStore, schemes=("sqlite",))`.
    """


@hookspec
def lap_integrations() -> Iterable[IntegrationSpec]:  # type: ignore[empty-body]
    """Return the integrations this plugin provides.

    Called once when a `Lap` starts. Example: `yield IntegrationSpec(name="linear", factory=LinearIntegration)`.
    """


@hookspec
def lap_cli_commands() -> Iterable[click.Command]:  # type: ignore[empty-body]
    """Return commands to add to the `lap` command line (lap-server adds `lap serve`).

    Called once when `lap` starts. Example: `yield click.Command("serve", callback=serve)`.
    """


@hookspec(historic=True)
def lap_addhooks(plugin_manager: pluggy.PluginManager) -> None:
    """Add hook specifications of your own (lap-server adds `lap_server_routes` this way).

    Called for every plugin as it is registered. Example: `plugin_manager.add_hookspecs(my_hookspecs)`.
    """
