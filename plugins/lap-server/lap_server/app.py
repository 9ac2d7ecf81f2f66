"""`create_app`: the Litestar application over a running `Lap`, with every plugin's routes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec
from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from lap_core import Lap
from lap_server.auth import bearer_guard
from lap_server.errors import EXCEPTION_HANDLERS
from lap_server.routes import ROUTES

if TYPE_CHECKING:
    from litestar.types import ControllerRouterHandler

MAX_BODY = 1024 * 1024


class ServerSettings(msgspec.Struct, frozen=True, kw_only=True, rename="upper"):
    """Settings of the server (environment variables)."""

    master_key: Annotated[str, msgspec.Meta(min_length=8)]
    lap_host: str = "127.0.0.1"
    lap_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 3000


def create_app(lap: Lap, settings: ServerSettings) -> Litestar:
    """Build the app: core routes plus those of every plugin's `lap_server_routes` hook."""
    extra: list[ControllerRouterHandler] = [
        handler for batch in lap.plugins.pm.hook.lap_server_routes() for handler in batch
    ]

    async def provide_lap() -> Lap:
        return lap

    return Litestar(
        route_handlers=[*ROUTES, *extra],
        dependencies={"lap": Provide(provide_lap)},
        guards=[bearer_guard(settings.master_key)],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=MAX_BODY,
        openapi_config=OpenAPIConfig(title="LAP", version="0.1.0", path="/schema"),
        signature_types=[Lap],
        debug=False,
    )
