"""The dashboard's sessions: the list with live statuses, and the chat view with its event stream."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import anyio
import msgspec
from litestar import Request, Response, asgi, get, post
from litestar.connection import ASGIConnection
from litestar.params import FromPath
from litestar.response import Redirect, ServerSentEvent, ServerSentEventMessage

from lap_core import InvalidInput, NotFound
from lap_server.dashboard.state import (
    LIVE_SESSIONS,
    SECURITY_HEADERS,
    Dashboard,
    DashDep,
    Me,
    Viewer,
    form_field,
    see_other,
)
from lap_server.routes import SSE_KEEPALIVE, _event_name, _resume_after

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from litestar.types import Receive, Scope, Send

    from lap_core import Session


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
        form_field(fields, "agent_id", max_length=200),
        title=form_field(fields, "title", max_length=200),
        team_id=me.team_id,
    )
    return see_other(f"/sessions/{session.id}")


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
    text = form_field(fields, "text")
    if not text:
        raise InvalidInput("the message is empty")
    await dash.lap.sessions.send(session_id, text, team_id=me.team_id)
    return see_other(f"/sessions/{session_id}")


@post("/sessions/{session_id:str}/abort")
async def abort(session_id: FromPath[str], request: Request[Any, Any, Any], dash: DashDep, me: Me) -> Redirect:
    """Abort the session's running turn."""
    await dash.form(request, me)
    await dash.lap.sessions.abort(session_id, team_id=me.team_id)
    return see_other(f"/sessions/{session_id}")


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

    async with outbox, inbox, anyio.create_task_group() as tasks:
        tasks.start_soon(until_disconnect)
        for session in sessions:
            tasks.start_soon(watch, session)
        await send({"type": "http.response.body", "body": b": live\n\n", "more_body": True})
        async for message in inbox:
            await send({"type": "http.response.body", "body": message, "more_body": True})
