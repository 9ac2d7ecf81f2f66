"""The dashboard's login, agents, static files and error pages."""

from __future__ import annotations

import math
import secrets
from importlib import resources
from typing import Any, cast

from litestar import Request, Response, get, post
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.params import FromPath
from litestar.response import Redirect

from lap_core import DEFAULT_TEAM_ID, LapError, NotFound
from lap_server.auth import principal_of
from lap_server.dashboard.cookies import LOGIN_SECONDS, SESSION_SECONDS
from lap_server.dashboard.state import (
    ERROR_STATUS,
    SECURITY_HEADERS,
    STATIC,
    Dashboard,
    DashDep,
    Me,
    Viewer,
    form_field,
    see_other,
)


@get("/login", opt={"open": True})
async def login_page(dash: DashDep) -> Response[str]:
    """The login form, with a fresh login nonce in its own cookie (the form's CSRF token is its HMAC)."""
    nonce = secrets.token_urlsafe(18)
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
    response = see_other("/agents")
    response.cookies.append(dash.cookie(dash.cookie_name, cookie, SESSION_SECONDS))
    response.cookies.append(dash.cookie(dash.login_cookie_name, "", 0))
    return response


@post("/logout")
async def logout(request: Request[Any, Any, Any], dash: DashDep, me: Me) -> Redirect:
    """Forget the login cookie."""
    await dash.form(request, me)
    response = see_other("/login")
    response.cookies.append(dash.cookie(dash.cookie_name, "", 0))
    return response


@get("/")
async def home() -> Redirect:
    """The dashboard starts at the agents."""
    return see_other("/agents")


# agents


async def _agents_page(dash: Dashboard, me: Viewer, *, status: int = 200, error: str = "") -> Response[str]:
    agents = await dash.lap.agents.list(team_id=me.team_id)
    teams = await dash.lap.teams.list() if me.team_id is None else []
    harnesses = sorted(dash.lap.harnesses)
    return dash.render(
        "agents.html",
        status=status,
        viewer=me,
        agents=agents,
        teams=teams,
        team_names={team.id: team.name for team in teams},
        harnesses=harnesses,
        error=error,
    )


@get("/agents")
async def agents_page(dash: DashDep, me: Me) -> Response[str]:
    """The viewer's agents, and a form to create one."""
    return await _agents_page(dash, me)


@post("/agents")
async def create_agent(request: Request[Any, Any, Any], dash: DashDep, me: Me) -> Response[Any]:
    """Create an agent from the form (in the viewer's team; the admin picks one)."""
    fields = await dash.form(request, me)
    team = me.team_id or form_field(fields, "team_id", max_length=100) or DEFAULT_TEAM_ID
    try:
        if me.team_id is None:
            await dash.lap.teams.get(team)
        await dash.lap.agents.create(
            form_field(fields, "name", max_length=200),
            harness=form_field(fields, "harness", max_length=100),
            model=form_field(fields, "model", max_length=200),
            prompt=form_field(fields, "prompt"),
            team_id=team,
        )
    except LapError as error:
        return await _agents_page(dash, me, status=ERROR_STATUS.get(type(error), 400), error=error.message)
    return see_other("/agents")


@post("/agents/{agent_id:str}/delete")
async def delete_agent(agent_id: FromPath[str], request: Request[Any, Any, Any], dash: DashDep, me: Me) -> Redirect:
    """Delete an agent (one without sessions)."""
    await dash.form(request, me)
    await dash.lap.agents.delete(agent_id, team_id=me.team_id)
    return see_other("/agents")


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


def error_page(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    dash = cast("Dashboard", request.route_handler.opt["dashboard"])
    if isinstance(error, NotAuthorizedException):
        if request.method == "GET" and not request.url.path.endswith(("/events", "/live")):
            return see_other("/login")
        status, message = 401, "Please log in."
    elif isinstance(error, LapError):
        status, message = ERROR_STATUS.get(type(error), 400), error.message
    elif isinstance(error, HTTPException):
        status, message = error.status_code, str(error.detail)
    else:  # pragma: no cover - only the two above are routed here
        status, message = 500, "internal error"
    viewer = request.state.get("viewer")
    response = dash.render("error.html", status=status, viewer=viewer, status_code=status, message=message)
    if isinstance(error, HTTPException) and error.headers:
        response.headers.update(error.headers)
    return response
