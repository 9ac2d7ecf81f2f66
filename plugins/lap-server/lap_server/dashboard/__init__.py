"""The web dashboard at `/`: log in with the master key or a team key, agents, sessions and a live chat view.

Server-rendered Jinja templates (autoescaped) plus one small script and one stylesheet shipped in
this package: no build step, no CDN. A login is a signed cookie (`cookies`); every form carries a
CSRF token; every page is sent with a strict Content-Security-Policy (scripts only from `/static`,
no inline script or style). Agent output reaches the page as text only (the script sets
`textContent`, never HTML). A team key sees its own team only: anything else is 404, as in the API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Request, Router
from litestar.di import Provide
from litestar.exceptions import HTTPException

from lap_core import LapError
from lap_server.dashboard.pages import (
    agents_page,
    create_agent,
    delete_agent,
    error_page,
    home,
    login,
    login_page,
    logout,
    static,
)
from lap_server.dashboard.sessions import (
    abort,
    chat_events,
    chat_page,
    create_session,
    send_message,
    sessions_live,
    sessions_page,
)
from lap_server.dashboard.state import LOGIN_ATTEMPTS, SECURITY_HEADERS, Dashboard, Viewer, require_login

if TYPE_CHECKING:
    from lap_core import Lap
    from lap_server.app import ServerSettings

__all__ = ["LOGIN_ATTEMPTS", "SECURITY_HEADERS", "Dashboard", "Viewer", "dashboard_router"]


def dashboard_router(lap: Lap, settings: ServerSettings) -> Router:
    """The dashboard's routes, at `/`, behind its own login (the API's key guard skips them)."""
    dash = Dashboard(lap, settings)

    async def provide_dash() -> Dashboard:
        return dash

    async def provide_viewer(request: Request[Any, Any, Any]) -> Viewer:
        viewer: Viewer = request.state.viewer
        return viewer

    return Router(
        "/",
        route_handlers=[
            login_page,
            login,
            logout,
            home,
            agents_page,
            create_agent,
            delete_agent,
            sessions_page,
            create_session,
            sessions_live,
            chat_page,
            chat_events,
            send_message,
            abort,
            static,
        ],
        opt={"dashboard": dash},
        guards=[require_login],
        dependencies={"dash": Provide(provide_dash), "me": Provide(provide_viewer)},
        exception_handlers={HTTPException: error_page, LapError: error_page},
        signature_types=[Dashboard, Viewer],
        include_in_schema=False,
    )
