"""The web dashboard at `/`: log in with the master key or a team key, agents, sessions and a live chat view.

Server-rendered Jinja templates (autoescaped) plus one small script and one stylesheet shipped in
this package: no build step, no CDN. A login is a signed cookie (`cookies`); every form carries a
CSRF token; every page is sent with a strict Content-Security-Policy (scripts only from `/static`,
no inline script or style). Agent output reaches the page as text only (the script sets
`textContent`, never HTML). A team key sees its own team only: anything else is 404, as in the API.
"""

from __future__ import annotations

import math
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

import anyio
import jinja2
import msgspec
from litestar import Request, Response, Router, asgi, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.params import FromPath
from litestar.response import Redirect, ServerSentEvent, ServerSentEventMessage

from lap_core import DEFAULT_TEAM_ID, Conflict, InvalidInput, LapError, NotFound, StoreError
from lap_server.auth import Principal, principal_of
from lap_server.dashboard.cookies import LOGIN_SECONDS, SESSION_SECONDS, Login, Signer
from lap_server.ratelimit import RateLimiter
from lap_server.routes import SSE_KEEPALIVE, _event_name, _resume_after

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from litestar.handlers import BaseRouteHandler
    from litestar.types import Receive, Scope, Send

    from lap_core import Lap, Session
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
_STATUS = {NotFound: 404, Conflict: 409, InvalidInput: 422, StoreError: 503}


class Viewer(msgspec.Struct, frozen=True, kw_only=True):
    """Who is looking: their login, the name the pages show, and the CSRF token their forms carry."""

    login: Login
    name: str
    csrf: str

    @property
    def principal(self) -> Principal:
        """The caller the dashboard acts as."""
        return self.login.principal

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


def _field(fields: dict[str, str], name: str, *, max_length: int = 100_000) -> str:
    value = fields.get(name, "").strip()
    if len(value) > max_length:
        raise InvalidInput(f"{name} is longer than {max_length} characters")
    return value


def _see_other(path: str) -> Redirect:
    return Redirect(path, status_code=303)


# login


@get("/login", opt={"open": True})
async def login_page(dash: DashDep) -> Response[str]:
    """The login form, with a fresh login nonce in its own cookie (the form's CSRF token is its HMAC)."""
    nonce = dash.signer.new_login(Principal(team_id=None))[0].nonce
    response = dash.render("login.html", csrf=dash.signer.csrf(f"login:{nonce}"), error="")
    response.cookies.append(dash.cookie(dash.login_cookie_name, nonce, LOGIN_SECONDS))
    return response


@post("/login", opt={"open": True})
async def login(request: Request[Any, Any, Any], dash: DashDep) -> Response[Any]:
    """Check the key (rate limited per address); on success set the login cookie."""
    address = request.client.host if request.client else "unknown"
    wait = dash.login_limiter.take(f"login:{address}")
    if wait:
        retry = max(1, math.ceil(wait))
        response = dash.render("login.html", status=429, csrf="", error=f"Too many attempts: retry in {retry} s.")
        response.headers["Retry-After"] = str(retry)
        return response
    fields = {name: value for name, value in (await request.form()).items() if isinstance(value, str)}
    nonce = request.cookies.get(dash.login_cookie_name)
    if not nonce or not dash.signer.check_csrf(f"login:{nonce}", fields.get("csrf")):
        raise PermissionDeniedException("the login form expired or was not this site's: reload the page")
    token = fields.get("key", "").strip()
    principal = await principal_of(dash.lap, dash.master, token) if token else None
    if principal is None:
        return dash.render("login.html", status=401, csrf=fields.get("csrf", ""), error="Invalid key.")
    _login, cookie = dash.signer.new_login(principal)
    response = _see_other("/agents")
    response.cookies.append(dash.cookie(dash.cookie_name, cookie, SESSION_SECONDS))
    response.cookies.append(dash.cookie(dash.login_cookie_name, "", 0))
    return response


@post("/logout")
async def logout(request: Request[Any, Any, Any], dash: DashDep, me: Me) -> Redirect:
    """Forget the login cookie."""
    await dash.form(request, me)
    response = _see_other("/login")
    response.cookies.append(dash.cookie(dash.cookie_name, "", 0))
    return response


@get("/")
async def home() -> Redirect:
    """The dashboard starts at the agents."""
    return _see_other("/agents")


# agents


async def _agents_page(dash: Dashboard, me: Viewer, *, status: int = 200, error: str = "") -> Response[str]:
    agents = await dash.lap.agents.list(team_id=me.team_id)
    teams = await dash.lap.teams.list() if me.team_id is None else []
    harnesses = sorted(dash.lap.harnesses)
    return dash.render(
        "agents.html", status=status, viewer=me, agents=agents, teams=teams, harnesses=harnesses, error=error
    )


@get("/agents")
async def agents_page(dash: DashDep, me: Me) -> Response[str]:
    """The viewer's agents, and a form to create one."""
    return await _agents_page(dash, me)


@post("/agents")
async def create_agent(request: Request[Any, Any, Any], dash: DashDep, me: Me) -> Response[Any]:
    """Create an agent from the form (in the viewer's team; the admin picks one)."""
    fields = await dash.form(request, me)
    team = me.team_id or _field(fields, "team_id", max_length=100) or DEFAULT_TEAM_ID
    try:
        if me.team_id is None:
            await dash.lap.teams.get(team)
        await dash.lap.agents.create(
            _field(fields, "name", max_length=200),
            harness=_field(fields, "harness", max_length=100),
            model=_field(fields, "model", max_length=200),
            prompt=_field(fields, "prompt"),
            team_id=team,
        )
    except LapError as error:
        return await _agents_page(dash, me, status=_STATUS.get(type(error), 400), error=error.message)
    return _see_other("/agents")


@post("/agents/{agent_id:str}/delete")
async def delete_agent(agent_id: FromPath[str], request: Request[Any, Any, Any], dash: DashDep, me: Me) -> Redirect:
    """Delete an agent (one without sessions)."""
    await dash.form(request, me)
    await dash.lap.agents.delete(agent_id, team_id=me.team_id)
    return _see_other("/agents")


# sessions


@get("/sessions")
async def sessions_page(dash: DashDep, me: Me) -> Response[str]:
    """The viewer's sessions, newest first, their status kept live by `/sessions/live`."""
    sessions = await dash.lap.sessions.list(team_id=me.team_id)
    agents = await dash.lap.agents.list(team_id=me.team_id)
    names = {agent.id: agent.name for agent in agents}
    return dash.render("sessions.html", viewer=me, sessions=sessions, agents=agents, names=names)


@post("/sessions")
async def create_session(request: Request[Any, Any, Any], dash: DashDep, me: Me) -> Redirect:
    """Open a session of an agent and go to its chat."""
    fields = await dash.form(request, me)
    session = await dash.lap.sessions.create(
        _field(fields, "agent_id", max_length=200), title=_field(fields, "title", max_length=200), team_id=me.team_id
    )
    return _see_other(f"/sessions/{session.id}")


@get("/sessions/{session_id:str}")
async def chat_page(session_id: FromPath[str], dash: DashDep, me: Me) -> Response[str]:
    """A session's chat: the page's script replays its events and follows them live."""
    session = await dash.lap.sessions.get(session_id, team_id=me.team_id)
    agent = await dash.lap.agents.get(session.agent_id, team_id=me.team_id)
    return dash.render("chat.html", viewer=me, session=session, agent=agent)


@get("/sessions/{session_id:str}/events")
async def chat_events(
    session_id: FromPath[str], request: Request[Any, Any, Any], dash: DashDep, me: Me
) -> ServerSentEvent:
    """The session's events as SSE, as `/api/sessions/{id}/events`: a reconnect resumes by `Last-Event-ID`."""
    await dash.lap.sessions.get(session_id, team_id=me.team_id)
    start = _resume_after(request.headers.get("last-event-id"), 0)

    async def stream() -> AsyncIterator[ServerSentEventMessage]:
        async for record in dash.lap.sessions.follow(session_id, after=start, heartbeat=SSE_KEEPALIVE):
            if record is None:
                yield ServerSentEventMessage(comment="keep-alive", data=None)
                continue
            data = msgspec.json.encode(record).decode()
            yield ServerSentEventMessage(data=data, event=_event_name(record), id=record.seq)

    return ServerSentEvent(stream(), headers=SECURITY_HEADERS)


@post("/sessions/{session_id:str}/messages")
async def send_message(session_id: FromPath[str], request: Request[Any, Any, Any], dash: DashDep, me: Me) -> Redirect:
    """Send a message (the agent's busy policy applies); the reply arrives on the event stream."""
    fields = await dash.form(request, me)
    text = _field(fields, "text")
    if not text:
        raise InvalidInput("the message is empty")
    await dash.lap.sessions.send(session_id, text, team_id=me.team_id)
    return _see_other(f"/sessions/{session_id}")


@post("/sessions/{session_id:str}/abort")
async def abort(session_id: FromPath[str], request: Request[Any, Any, Any], dash: DashDep, me: Me) -> Redirect:
    """Abort the session's running turn."""
    await dash.form(request, me)
    await dash.lap.sessions.abort(session_id, team_id=me.team_id)
    return _see_other(f"/sessions/{session_id}")


def _status_message(session: Session) -> bytes:
    data = msgspec.json.encode(
        {"id": session.id, "status": session.status, "detail": session.status_detail, "last_seq": session.last_seq}
    )
    return b"event: session\ndata: " + data + b"\n\n"


@asgi("/sessions/live", is_mount=False, copy_scope=False)
async def sessions_live(scope: Scope, receive: Receive, send: Send) -> None:
    """SSE: a `session` event with a session's status whenever one of the viewer's sessions logs an event.

    Follows the newest `LIVE_SESSIONS` sessions' event logs (the engine's live fan-out), one task each.
    """
    connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope, receive=receive, send=send)
    dash = cast("Dashboard", scope["route_handler"].opt["dashboard"])
    viewer: Viewer = connection.state.viewer
    sessions = (await dash.lap.sessions.list(team_id=viewer.team_id))[:LIVE_SESSIONS]
    headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"x-accel-buffering", b"no")]
    headers += [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    outbox, inbox = anyio.create_memory_object_stream[bytes](100)

    async def watch(session: Session) -> None:
        async for record in dash.lap.sessions.follow(session.id, after=session.last_seq, heartbeat=SSE_KEEPALIVE):
            if record is None:
                await outbox.send(b": keep-alive\n\n")
                continue
            try:
                await outbox.send(_status_message(await dash.lap.sessions.get(session.id, team_id=viewer.team_id)))
            except NotFound:  # deleted meanwhile
                return

    async def until_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        tasks.cancel_scope.cancel()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(until_disconnect)
        for session in sessions:
            tasks.start_soon(watch, session)
        await send({"type": "http.response.body", "body": b": live\n\n", "more_body": True})
        async with inbox:
            async for message in inbox:
                await send({"type": "http.response.body", "body": message, "more_body": True})


# static files and errors


@get("/static/{name:str}", opt={"open": True})
async def static(name: FromPath[str]) -> Response[bytes]:
    """The dashboard's script and stylesheet (package data)."""
    media_type = STATIC.get(name)
    if media_type is None:
        raise NotFound(f"no static file {name!r}")
    content = resources.files("lap_server.dashboard").joinpath("static", name).read_bytes()
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return Response(content, media_type=media_type, headers=headers)


def _error_page(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    dash = cast("Dashboard", request.route_handler.opt["dashboard"])
    if isinstance(error, NotAuthorizedException):
        if request.method == "GET" and not request.url.path.endswith(("/events", "/live")):
            return _see_other("/login")
        status, message = 401, "Please log in."
    elif isinstance(error, LapError):
        status, message = _STATUS.get(type(error), 400), error.message
    elif isinstance(error, HTTPException):
        status, message = error.status_code, str(error.detail)
    else:  # pragma: no cover - only the two above are routed here
        status, message = 500, "internal error"
    viewer = request.state.get("viewer")
    response = dash.render("error.html", status=status, viewer=viewer, status_code=status, message=message)
    if isinstance(error, HTTPException) and error.headers:
        response.headers.update(error.headers)
    return response


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
        exception_handlers={HTTPException: _error_page, LapError: _error_page},
        signature_types=[Dashboard, Viewer],
        include_in_schema=False,
    )
