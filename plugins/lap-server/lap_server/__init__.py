"""The LAP platform server: REST API and live SSE event streams over the core engine (Litestar).

Run it with `lap serve` (MASTER_KEY required), or under any ASGI server:
`uvicorn 'lap_server:app_factory' --factory` (see docs/server.md). Other plugins add routes
through the `lap_server_routes` hook, which this plugin adds to LAP with `lap_addhooks`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lap_core import hookimpl
from lap_server import hookspecs
from lap_server.cli import serve_command

if TYPE_CHECKING:
    from collections.abc import Iterator

    import click
    import pluggy

    from lap_server.app import ServerApp, ServerSettings, app_factory, create_app
    from lap_server.auth import Principal

__all__ = [
    "Principal",
    "ServerApp",
    "ServerSettings",
    "app_factory",
    "create_app",
    "lap_addhooks",
    "lap_cli_commands",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: every `lap` command loads this plugin, and Litestar is slow to import.
    if name == "Principal":
        from lap_server import auth

        return auth.Principal
    if name not in ("ServerApp", "ServerSettings", "app_factory", "create_app"):
        raise AttributeError(f"module 'lap_server' has no attribute {name!r}")
    from lap_server import app

    return getattr(app, name)


@hookimpl
def lap_addhooks(plugin_manager: pluggy.PluginManager) -> None:
    """Add the `lap_server_routes` hook."""
    plugin_manager.add_hookspecs(hookspecs)


@hookimpl
def lap_cli_commands() -> Iterator[click.Command]:
    """Add `lap serve`."""
    yield serve_command
