"""The LAP platform server: REST API and live SSE event streams over the core engine (Litestar).

Run it with `lap serve` (MASTER_KEY required). Other plugins add routes through the
`lap_server_routes` hook, which this plugin adds to LAP with `lap_addhooks`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lap_core import hookimpl
from lap_server import hookspecs
from lap_server.app import ServerSettings, create_app
from lap_server.cli import serve_command

if TYPE_CHECKING:
    from collections.abc import Iterator

    import click
    import pluggy

__all__ = ["ServerSettings", "create_app", "lap_addhooks", "lap_cli_commands"]


@hookimpl
def lap_addhooks(plugin_manager: pluggy.PluginManager) -> None:
    """Add the `lap_server_routes` hook."""
    plugin_manager.add_hookspecs(hookspecs)


@hookimpl
def lap_cli_commands() -> Iterator[click.Command]:
    """Add `lap serve`."""
    yield serve_command
