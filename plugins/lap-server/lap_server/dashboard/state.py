"""The dashboard's shared parts: who is looking (`Viewer`), its state (`Dashboard`), its guard and headers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import jinja2
import msgspec
from litestar import Request, Response
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.response import Redirect

from lap_core import Conflict, InvalidInput, NotFound, StoreError
from lap_server.dashboard.cookies import Login, Signer
from lap_server.ratelimit import RateLimiter

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers import BaseRouteHandler

    from lap_core import Lap
    from lap_server.app import ServerSettings

LOGIN_ATTEMPTS = 10
"""Login attempts a minute per client address (per web process)."""
LIVE_SESSIONS = 100
"""Sessions whose status the sessions page follows live (the newest)."""
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}
ERROR_STATUS = {NotFound: 404, Conflict: 409, InvalidInput: 422, StoreError: 503}


class Viewer(msgspec.Struct, frozen=True, kw_only=True):
    """Who is looking: their login, the name the pages show, and the CSRF token their forms carry."""

    login: Login
    name: str
    csrf: str

    @property
    def team_id(self) -> str | None:
        """The viewer's team; None for the admin (every team)."""
        return self.login.team_id


class Dashboard:
    """The dashboard's state: the server, its cookie signer, the login rate limiter and the templates."""

    def __init__(self, lap: Lap, settings: ServerSettings) -> None:
        self.lap = lap
        self.settings = settings
        self.signer = Signer(settings.master_key)
        self.master = settings.master_key.encode()
        self.secure = (settings.base_url or "").startswith("https://")
        # `__Host-` cookies are only sent over https, for this host and path "/": no subdomain can set them.
        self.cookie_name = "__Host-lap_session" if self.secure else "lap_session"
        self.login_cookie_name = "__Host-lap_login" if self.secure else "lap_login"
        self.login_limiter = RateLimiter(LOGIN_ATTEMPTS)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("lap_server.dashboard", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> Dashboard:
        return self  # Litestar copies route options (`opt`), where it lives: there is one dashboard

    def render(
        self, template: str, *, status: int = 200, viewer: Viewer | None = None, **context: Any
    ) -> Response[str]:
        """A page from a template (every value escaped), with the security headers."""
        html = self.templates.get_template(template).render(viewer=viewer, **context)
        return Response(html, status_code=status, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    def cookie(self, name: str, value: str, max_age: int) -> Cookie:
        """A cookie only this site's pages send back, never readable by a script."""
        return Cookie(
            key=name, value=value, max_age=max_age, path="/", httponly=True, samesite="strict", secure=self.secure
        )

    async def viewer(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Viewer | None:
        """The logged-in viewer of a request, or None; a deleted team key's login is over."""
        login = self.signer.read_login(connection.cookies.get(self.cookie_name))
        if login is None:
            return None
        if login.team_id is None:
            name = self.settings.ui_username
        else:
            try:
                key = await self.lap.store.find_api_key(login.key_prefix or "")
                team = await self.lap.teams.get(login.team_id)
            except NotFound:
                return None
            if key.id != login.key_id or key.team_id != login.team_id:
                return None
            name = f"{team.name} · {key.name}"
        return Viewer(login=login, name=name, csrf=self.signer.csrf(login.nonce))

    async def form(self, request: Request[Any, Any, Any], viewer: Viewer) -> dict[str, str]:
        """The posted form's fields, after checking its CSRF token (403 without the right one)."""
        fields = {name: value for name, value in (await request.form()).items() if isinstance(value, str)}
        if not self.signer.check_csrf(viewer.login.nonce, fields.get("csrf")):
            raise PermissionDeniedException("missing or invalid CSRF token: reload the page and try again")
        return fields


DashDep = NamedDependency[Dashboard]
Me = NamedDependency[Viewer]


async def require_login(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """The dashboard's guard: a valid login cookie, else 401 (a page: to the login form)."""
    if handler.opt.get("open"):
        return
    dash = cast("Dashboard", handler.opt["dashboard"])
    viewer = await dash.viewer(connection)
    if viewer is None:
        raise NotAuthorizedException("please log in")
    connection.state.viewer = viewer


def form_field(fields: dict[str, str], name: str, *, max_length: int = 100_000) -> str:
    """A form field's value, stripped ("" when absent); 422 when longer than `max_length`."""
    value = fields.get(name, "").strip()
    if len(value) > max_length:
        raise InvalidInput(f"{name} is longer than {max_length} characters")
    return value


def see_other(path: str) -> Redirect:
    """Go to `path` with a GET (after a form's POST)."""
    return Redirect(path, status_code=303)
