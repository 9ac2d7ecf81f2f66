"""`create_app`: the Litestar application over a running `Lap`, with every plugin's routes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Litestar, Request
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from lap_core import Lap
from lap_server.auth import Principal, auth_guard
from lap_server.errors import EXCEPTION_HANDLERS
from lap_server.observability import Metrics, RequestObserver, metrics_route
from lap_server.ratelimit import RateLimited, RateLimiter, rate_limit_guard, rate_limited_response
from lap_server.routes import ROUTES
from lap_server.secret_routes import SECRET_ROUTES
from lap_server.team_routes import TEAM_ROUTES
from lap_server.usage_routes import USAGE_ROUTES
from lap_server.validation import LapRequest, strict_parameters

if TYPE_CHECKING:
    from litestar.types import ControllerRouterHandler

MAX_BODY = 1024 * 1024
HttpUrl = Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/]+(/\S*)?$", description="an http(s) URL")]


class ServerSettings(msgspec.Struct, frozen=True, kw_only=True, rename="upper"):
    """Settings of the server (environment variables)."""

    master_key: Annotated[str, msgspec.Meta(min_length=8)]
    lap_host: str = "127.0.0.1"
    lap_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 3000
    # Requests a minute per caller (per key; per address without one), in each web process; 0: no limit.
    lap_rate_limit: Annotated[int, msgspec.Meta(ge=0)] = 600
    # The server's public URL (behind a proxy, say), for links LAP gives to others.
    base_url: HttpUrl | None = None
    # The admin's (the master key's) display name, for the web UI (a later issue); accepted and checked now.
    ui_username: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")] = "admin"


def create_app(lap: Lap, settings: ServerSettings) -> Litestar:
    """Build the app: core routes plus those of every plugin's `lap_server_routes` hook.

    Every request gets a request id, a log line and metrics (`/metrics`), and is rate limited per caller.
    """
    extra: list[ControllerRouterHandler] = [
        handler for batch in lap.plugins.pm.hook.lap_server_routes() for handler in batch
    ]

    async def provide_lap() -> Lap:
        return lap

    async def provide_caller(request: Request[Any, Any, Any]) -> Principal:
        principal: Principal = request.state.principal  # set by the guard on every non-open route
        return principal

    metrics = Metrics()
    guard = auth_guard(lap, settings.master_key)
    if settings.lap_rate_limit:
        guard = rate_limit_guard(guard, RateLimiter(settings.lap_rate_limit), metrics.rate_limited)
    app = Litestar(
        route_handlers=[*ROUTES, *TEAM_ROUTES, *SECRET_ROUTES, *USAGE_ROUTES, metrics_route(lap, metrics), *extra],
        dependencies={"lap": Provide(provide_lap), "caller": Provide(provide_caller)},
        guards=[guard],
        before_request=strict_parameters,
        request_class=LapRequest,
        exception_handlers={**EXCEPTION_HANDLERS, RateLimited: rate_limited_response},
        request_max_body_size=MAX_BODY,
        openapi_config=OpenAPIConfig(title="LAP", version="0.1.0", path="/schema"),
        signature_types=[Lap, Principal],
        debug=False,
        logging_config=None,  # the entry point configures logging (lap_core._cli._logging), never the app
    )
    # Outermost, around Litestar's routing and error handling (app middleware runs only on
    # matched routes): unknown paths and 500s get a request id, a log line and metrics too.
    app.asgi_handler = RequestObserver(app.asgi_handler, metrics)
    return app
