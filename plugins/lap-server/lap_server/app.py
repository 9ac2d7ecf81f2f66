"""The server's ASGI app: `ServerApp` (owns its `Lap`) and `create_app` (over a running `Lap`), every plugin's routes.

Only the `lap serve` command and ASGI servers import this module (Litestar is slow to import).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Annotated, Any, cast

import msgspec
from litestar import Litestar, Request
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from lap_core import ConfigError, Lap, LapError, configure_logging
from lap_server.auth import Principal, auth_guard
from lap_server.cli import CONFIG_HINT
from lap_server.dashboard import dashboard_router
from lap_server.errors import EXCEPTION_HANDLERS
from lap_server.observability import Metrics, RequestObserver, metrics_route
from lap_server.ratelimit import RateLimited, RateLimiter, rate_limit_guard, rate_limited_response
from lap_server.routes import ROUTES
from lap_server.secret_routes import SECRET_ROUTES
from lap_server.team_routes import TEAM_ROUTES
from lap_server.usage_routes import USAGE_ROUTES
from lap_server.validation import LapRequest, strict_parameters

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, MutableMapping

    from litestar.types import ControllerRouterHandler

    # Plain ASGI (Litestar's own types leave the lifespan scope out).
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[Message, Receive, Send], Awaitable[None]]

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
    # The admin's (the master key's) display name, shown by the dashboard.
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
        route_handlers=[
            *ROUTES,
            *TEAM_ROUTES,
            *SECRET_ROUTES,
            *USAGE_ROUTES,
            metrics_route(lap, metrics),
            dashboard_router(lap, settings),
            *extra,
        ],
        dependencies={"lap": Provide(provide_lap), "caller": Provide(provide_caller)},
        guards=[guard],
        before_request=strict_parameters,
        request_class=LapRequest,
        exception_handlers={**EXCEPTION_HANDLERS, RateLimited: rate_limited_response},
        request_max_body_size=MAX_BODY,
        openapi_config=OpenAPIConfig(title="LAP", version="0.1.0", path="/schema"),
        signature_types=[Lap, Principal],
        debug=False,
        logging_config=None,  # the entry point configures logging (lap_core.configure_logging), never the app
    )
    # Outermost, around Litestar's routing and error handling (app middleware runs only on
    # matched routes): unknown paths and 500s get a request id, a log line and metrics too.
    app.asgi_handler = RequestObserver(app.asgi_handler, metrics)
    return app


class ServerApp:
    """The server as an ordinary ASGI app whose lifespan owns its `Lap`: run it under any ASGI server.

    Constructing it loads the plugins; the ASGI lifespan's startup starts the `Lap` (validating
    the whole configuration, `ServerSettings` included, at once: a `LapError` fails the startup
    with its message) and builds the app over it (`create_app`); the shutdown closes both, handing
    running turns back as `lap worker` does. With `worker=False` turns wait for `lap worker`
    processes. `env` and `plugins` are as for `Lap` (tests, embedders). `lap serve` runs this app.
    """

    def __init__(
        self, *, worker: bool = True, env: Mapping[str, str] | None = None, plugins: Iterable[object] = ()
    ) -> None:
        self.lap = Lap(plugins=plugins, env=env, settings={"server": ServerSettings}, run_turns=worker)
        self._app: ASGIApp | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ServerSettings]:
        """Start the `Lap` and the app over it, yielding the server's settings; close both on exit.

        What the ASGI lifespan does; for a caller that starts the server itself (`lap serve`).
        """
        async with self.lap:
            settings: ServerSettings = self.lap.settings_of("server")
            app = create_app(self.lap, settings)
            async with app.lifespan():
                self._app = cast("ASGIApp", app)
                try:
                    yield settings
                finally:
                    self._app = None

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        """The ASGI entry point: the lifespan starts and stops LAP, everything else goes to the app."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif self._app is not None:
            await self._app(scope, receive, send)
        elif scope["type"] == "http":  # an ASGI server running it with its lifespan off
            await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"LAP is not started (run it with the ASGI lifespan on)"})
        else:
            await send({"type": "websocket.close", "code": 1013})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        started = False
        try:
            async with self.running():
                await send({"type": "lifespan.startup.complete"})
                started = True
                await receive()  # lifespan.shutdown
        except LapError as error:  # the configuration, a store that cannot be reached …: a message, not a traceback
            failed = "lifespan.shutdown.failed" if started else "lifespan.startup.failed"
            hint = f"\n{CONFIG_HINT}" if isinstance(error, ConfigError) else ""
            await send({"type": failed, "message": error.message + hint})
            return
        await send({"type": "lifespan.shutdown.complete"})


def app_factory() -> ServerApp:
    """The server configured from the environment, for ASGI servers: `uvicorn 'lap_server:app_factory' --factory`.

    Sets up logging as `lap serve` does (`configure_logging`: `LAP_LOG_LEVEL`, `LAP_LOG_JSON`,
    secrets masked in every line, the ASGI server's included).
    """
    configure_logging()
    return ServerApp()
