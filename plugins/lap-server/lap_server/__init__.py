"""The LAP platform server: REST API and live SSE event streams over the core engine (Litestar).

Run it with `python -m lap_server` (MASTER_KEY required). Other plugins add routes through the
`lap_server_routes` hook, which this plugin adds to LAP with `lap_addhooks`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lap_core.hookspecs import hookimpl
from lap_server import hookspecs
from lap_server.app import ServerSettings, create_app

if TYPE_CHECKING:
    import pluggy

__all__ = ["ServerSettings", "create_app", "lap_addhooks"]


@hookimpl
def lap_addhooks(plugin_manager: pluggy.PluginManager) -> None:
    """Add the `lap_server_routes` hook."""
    plugin_manager.add_hookspecs(hookspecs)
