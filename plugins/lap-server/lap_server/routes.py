"""The core routes: agents, sessions, messages, the SSE event stream, health."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.exceptions import PermissionDeniedException, ValidationException
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from lap_core import DEFAULT_TEAM_ID, EventRecord, Lap, TextDelta, TurnEnd
from lap_server.auth import Principal
from lap_server.errors import error_response
from lap_server.schemas import (
    Aborted,
    AgentIn,
    AgentList,
    AgentOut,
    AgentPatch,
    MessageIn,
    RestartAccepted,
    SessionIn,
    SessionOut,
    TurnAccepted,
    TurnResult,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

LapDep = NamedDependency[Lap]
Caller = NamedDependency[Principal]
Limit = Annotated[int, QueryParameter(ge=1, le=500)]
# Bounded: a database integer is 64 bits, and no list is that long.
MAX_SEQ = 2**62
Offset = Annotated[int, QueryParameter(ge=0, le=1_000_000)]
Seq = Annotated[int, QueryParameter(ge=0, le=MAX_SEQ)]
Flag = FromQuery[bool]
IdempotencyKey = Annotated[
    str | None, HeaderParameter(name="Idempotency-Key", min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")
]
_DECIMAL = re.compile(r"[0-9]{1,19}")
SSE_KEEPALIVE = 15.0
"""Seconds of silence after which an event stream sends a comment line."""


@post("/api/agents", status_code=201)
async def create_agent(data: JSONBody[AgentIn], lap: LapDep, caller: Caller) -> AgentOut:
    """Create an agent."""
    team = caller.team_id or data.team_id or DEFAULT_TEAM_ID
    if data.team_id and data.team_id != team:
        raise PermissionDeniedException("a team key creates agents in its own team only")
    if caller.team_id is None:
        await lap.teams.get(team)  # 404 for an unknown team
    agent = await lap.agents.create(
        data.name,
        harness=data.harness,
        model=data.model,
        prompt=data.prompt,
        options=data.options,
        on_busy=data.on_busy,
        team_id=team,
        egress=data.egress,
        repo_url=data.repo_url,
        branch=data.branch,
    )
    return AgentOut.of(agent)


@get("/api/agents")
async def list_agents(
    lap: LapDep, caller: Caller, search: FromQuery[str | None] = None, limit: Limit = 50, offset: Offset = 0
) -> AgentList:
    """List agents by name, optionally those whose name contains `search`."""
    found = await lap.agents.list(team_id=caller.team_id, search=search, limit=limit + 1, offset=offset)
    more = len(found) > limit
    return AgentList(items=[AgentOut.of(a) for a in found[:limit]], next_offset=offset + limit if more else None)


@get("/api/agents/{agent_id:str}")
async def get_agent(agent_id: FromPath[str], lap: LapDep, caller: Caller) -> AgentOut:
    """Return an agent (by id or name)."""
    return AgentOut.of(await lap.agents.get(agent_id, team_id=caller.team_id))


@patch("/api/agents/{agent_id:str}")
async def update_agent(agent_id: FromPath[str], data: JSONBody[AgentPatch], lap: LapDep, caller: Caller) -> AgentOut:
    """Change an agent's name, model, prompt, options or `on_busy`; running sessions see it from their next turn."""
    agent = await lap.agents.get(agent_id, team_id=caller.team_id)
    return AgentOut.of(await lap.agents.update(msgspec.structs.replace(agent, **data.changes())))


@delete("/api/agents/{agent_id:str}")
async def delete_agent(agent_id: FromPath[str], lap: LapDep, caller: Caller) -> None:
    """Delete an agent that has no sessions left (409 otherwise)."""
    await lap.agents.delete(agent_id, team_id=caller.team_id)


@post("/api/sessions", status_code=201)
async def create_session(data: JSONBody[SessionIn], lap: LapDep, caller: Caller) -> SessionOut:
    """Open a session of an agent; its sandbox comes up with the first message."""
    return SessionOut.of(await lap.sessions.create(data.agent_id, title=data.title, team_id=caller.team_id))


@get("/api/sessions")
async def list_sessions(lap: LapDep, caller: Caller, agent_id: FromQuery[str | None] = None) -> list[SessionOut]:
    """List sessions, newest first."""
    return [SessionOut.of(s) for s in await lap.sessions.list(agent=agent_id, team_id=caller.team_id)]


@get("/api/sessions/{session_id:str}")
async def get_session(session_id: FromPath[str], lap: LapDep, caller: Caller) -> SessionOut:
    """Return a session with its live status."""
    return SessionOut.of(await lap.sessions.get(session_id, team_id=caller.team_id))


@delete("/api/sessions/{session_id:str}")
async def delete_session(session_id: FromPath[str], lap: LapDep, caller: Caller) -> None:
    """Delete a session, its sandbox, workspace and history."""
    await lap.sessions.delete(session_id, team_id=caller.team_id)


@post("/api/sessions/{session_id:str}/messages", status_code=202)
async def send_message(
    session_id: FromPath[str],
    data: JSONBody[MessageIn],
    lap: LapDep,
    caller: Caller,
    wait: Flag = False,
    idempotency_key: IdempotencyKey = None,
) -> Response[Any]:
    """Send a message: 202 with the turn and where to follow it, or with `?wait=true` the finished turn.

    With an `Idempotency-Key` header, sending again (after a lost answer) gives the same turn.

    If the session is busy, `on_busy` (default: the agent's) queues it, rejects it (409) or interrupts.
    """
    turn = await lap.sessions.send(
        session_id, data.text, team_id=caller.team_id, on_busy=data.on_busy, client_key=idempotency_key
    )
    if not wait:
        url = f"/api/sessions/{session_id}/events?after={turn.user_seq - 1}"
        return Response(TurnAccepted(turn_id=turn.id, user_seq=turn.user_seq, events_url=url), status_code=202)
    records = [r async for r in lap.sessions.follow(session_id, after=turn.user_seq - 1, until_turn=turn.id)]
    end = records[-1].event
    status = end.status if isinstance(end, TurnEnd) else "failed"
    text = "".join(r.event.text for r in records if isinstance(r.event, TextDelta))
    return Response(TurnResult(turn_id=turn.id, status=status, text=text, events=records), status_code=200)


@get("/api/sessions/{session_id:str}/messages")
async def history(session_id: FromPath[str], lap: LapDep, caller: Caller, after: Seq = 0) -> list[EventRecord]:
    """Return the session's event log after `after`."""
    return await lap.sessions.history(session_id, after=after, team_id=caller.team_id)


def _event_name(record: EventRecord) -> str:
    return str(type(record.event).__struct_config__.tag)


def _resume_after(last_event_id: str | None, after: int) -> int:
    """The seq a stream starts after: `Last-Event-ID` if sent (an ASCII decimal seq), else `after`."""
    if last_event_id is None:
        return after
    if not _DECIMAL.fullmatch(last_event_id) or int(last_event_id) > MAX_SEQ:
        raise ValidationException(f"Last-Event-ID must be an event's seq: digits 0-9, at most {MAX_SEQ}")
    return int(last_event_id)


@get("/api/sessions/{session_id:str}/events")
async def events(
    session_id: FromPath[str], lap: LapDep, caller: Caller, request: Request[Any, Any, Any], after: Seq = 0
) -> ServerSentEvent:
    """Stream the session's events live (SSE; `id` is the event's seq, so `Last-Event-ID` resumes exactly)."""
    await lap.sessions.get(session_id, team_id=caller.team_id)  # 404 now rather than an empty stream
    start = _resume_after(request.headers.get("last-event-id"), after)

    async def stream() -> AsyncIterator[ServerSentEventMessage]:
        async for record in lap.sessions.follow(session_id, after=start, heartbeat=SSE_KEEPALIVE):
            if record is None:  # a comment line keeps proxies and load balancers from closing an idle stream
                yield ServerSentEventMessage(comment="keep-alive", data=None)
                continue
            data = msgspec.json.encode(record).decode()
            yield ServerSentEventMessage(data=data, event=_event_name(record), id=record.seq)

    return ServerSentEvent(stream())


@post("/api/sessions/{session_id:str}/abort", status_code=202)
async def abort(session_id: FromPath[str], lap: LapDep, caller: Caller) -> Aborted:
    """Abort the session's running turn (it ends with `turn_end` status `aborted`)."""
    return Aborted(aborted=await lap.sessions.abort(session_id, team_id=caller.team_id))


@post("/api/sessions/{session_id:str}/restart", status_code=202)
async def restart(session_id: FromPath[str], lap: LapDep, caller: Caller) -> RestartAccepted:
    """Give the session a fresh sandbox with the same workspace and conversation, asynchronously.

    The current and queued turns are aborted; the session's `status` shows the progress.
    """
    job = await lap.sessions.restart(session_id, team_id=caller.team_id)
    return RestartAccepted(job_id=job.id, session_url=f"/api/sessions/{session_id}")


@get("/healthz")
async def healthz() -> dict[str, bool]:
    """The process is up."""
    return {"ok": True}


@get("/readyz")
async def readyz(lap: LapDep) -> Response[Any]:
    """The store is reachable and migrated, and the sandbox backend answers."""
    try:
        await lap.health()
    except Exception as error:
        return error_response(503, "not_ready", f"{type(error).__name__}: {error}")
    return Response({"ok": True})


ROUTES = [
    create_agent,
    list_agents,
    get_agent,
    update_agent,
    delete_agent,
    create_session,
    list_sessions,
    get_session,
    delete_session,
    send_message,
    history,
    events,
    abort,
    restart,
    healthz,
    readyz,
]
