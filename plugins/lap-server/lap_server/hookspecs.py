"""The hook lap-server adds to LAP (through `lap_addhooks`), so the core never imports Litestar."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lap_core import hookspec

if TYPE_CHECKING:
    from collections.abc import Iterable

    from litestar.types import ControllerRouterHandler


@hookspec
def lap_server_routes() -> Iterable[ControllerRouterHandler]:  # type: ignore[empty-body]
    """Return Litestar route handlers, controllers or routers to mount on the server.

    Called once when the server app is built. Example: `yield Router(path="/api/linear", route_handlers=[...])`.
    """
