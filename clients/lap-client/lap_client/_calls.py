"""Every API call of the clients, built once: `Client` and `AsyncClient` send what these return.

Each function's signature and docstring are those of the client method made from it (`agents.create` is
`create_agent`), sync and async alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, UnsetType

from lap_client._core import Call, decoder, nothing, path, query
from lap_client._models import AgentPage, ApiKeyInfo, RestartAccepted, TurnAccepted, TurnResult, UsageReport
from lap_core import Agent, Budget, BusyPolicy, EgressPolicy, EventRecord, Secret, Session, Team, UsageGroup

if TYPE_CHECKING:
    from datetime import datetime


class _Aborted(msgspec.Struct):
    aborted: bool


def _aborted(content: bytes) -> bool:
    return decoder(_Aborted)(content).aborted


def _given(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not UNSET}


# Agents


def create_agent(
    name: str,
    *,
    harness: str,
    model: str,
    prompt: str | UnsetType = UNSET,
    options: dict[str, Any] | UnsetType = UNSET,
    on_busy: BusyPolicy | UnsetType = UNSET,
    team_id: str | UnsetType = UNSET,
    egress: EgressPolicy | UnsetType | None = UNSET,
    repo_url: str | UnsetType | None = UNSET,
    branch: str | UnsetType | None = UNSET,
) -> Call[Agent]:
    """Create an agent: a harness, a model and their settings (the server's defaults for what is left out).

    `team_id` is the master key's choice (a team key creates in its own team); `on_busy` is what a message
    sent to a busy session does (`enqueue`, `reject` or `interrupt`); `egress` where its sandboxes may reach.
    """
    body = _given(
        name=name,
        harness=harness,
        model=model,
        prompt=prompt,
        options=options,
        on_busy=on_busy,
        team_id=team_id,
        egress=egress,
        repo_url=repo_url,
        branch=branch,
    )
    return Call("POST", "/api/agents", decoder(Agent), body=body)


def list_agents(search: str | None = None, *, limit: int = 50, offset: int = 0) -> Call[AgentPage]:
    """Return a page of agents by name (those whose name contains `search`, if given).

    The next page is at `offset=page.next_offset`; `iter` walks every page.
    """
    return Call("GET", "/api/agents", decoder(AgentPage), params=query(search=search, limit=limit, offset=offset))


def get_agent(agent_id: str) -> Call[Agent]:
    """Return an agent, by id or name."""
    return Call("GET", path("/api/agents/{}", agent_id), decoder(Agent))


def update_agent(
    agent_id: str,
    *,
    name: str | UnsetType = UNSET,
    model: str | UnsetType = UNSET,
    prompt: str | UnsetType = UNSET,
    options: dict[str, Any] | UnsetType = UNSET,
    on_busy: BusyPolicy | UnsetType = UNSET,
    egress: EgressPolicy | UnsetType | None = UNSET,
    repo_url: str | UnsetType | None = UNSET,
    branch: str | UnsetType | None = UNSET,
) -> Call[Agent]:
    """Change the fields given of an agent (None clears `egress`, `repo_url`, `branch`); return it changed.

    Running sessions see the change from their next turn.
    """
    body = _given(
        name=name,
        model=model,
        prompt=prompt,
        options=options,
        on_busy=on_busy,
        egress=egress,
        repo_url=repo_url,
        branch=branch,
    )
    return Call("PATCH", path("/api/agents/{}", agent_id), decoder(Agent), body=body)


def delete_agent(agent_id: str) -> Call[None]:
    """Delete an agent that has no sessions left (`Conflict` otherwise)."""
    return Call("DELETE", path("/api/agents/{}", agent_id), nothing)


# Sessions


def create_session(agent_id: str, *, title: str = "") -> Call[Session]:
    """Open a session of an agent (by id or name); its sandbox comes up with the first message.

    The server does not show a session's sandbox details: `sandbox_name`, `native_session_id` and
    `sandbox_generation` keep their defaults in what the client returns.
    """
    return Call("POST", "/api/sessions", decoder(Session), body={"agent_id": agent_id, "title": title})


def list_sessions(agent_id: str | None = None) -> Call[list[Session]]:
    """Return the sessions (of one agent, if given), newest first."""
    return Call("GET", "/api/sessions", decoder(list[Session]), params=query(agent_id=agent_id))


def get_session(session_id: str) -> Call[Session]:
    """Return a session with its live `status` (`starting` while its sandbox comes up, `running` in a turn)."""
    return Call("GET", path("/api/sessions/{}", session_id), decoder(Session))


def delete_session(session_id: str) -> Call[None]:
    """Delete a session, its sandbox, workspace and history."""
    return Call("DELETE", path("/api/sessions/{}", session_id), nothing)


def _message(session_id: str, text: str, on_busy: BusyPolicy | None, key: str | None, wait: bool) -> dict[str, Any]:
    return {
        "method": "POST",
        "path": path("/api/sessions/{}/messages", session_id),
        "body": {"text": text} if on_busy is None else {"text": text, "on_busy": on_busy},
        "headers": {"Idempotency-Key": key} if key else {},
        "params": {"wait": "true"} if wait else {},
        "long": wait,
    }


def send_message(
    session_id: str, text: str, *, on_busy: BusyPolicy | None = None, idempotency_key: str | None = None
) -> Call[TurnAccepted]:
    """Send a message; return at once with its turn (follow it with `events`, or use `stream`).

    `on_busy` overrides the agent's policy if the session is busy (`reject` raises `Conflict`). Sent again
    with the same `idempotency_key` (after a lost answer, say), it is the same turn, not a second one.
    """
    return Call(decode=decoder(TurnAccepted), **_message(session_id, text, on_busy, idempotency_key, False))


def send_and_wait(
    session_id: str, text: str, *, on_busy: BusyPolicy | None = None, idempotency_key: str | None = None
) -> Call[TurnResult]:
    """Send a message and wait (with no read timeout) for its turn to end; return the reply and its events."""
    return Call(decode=decoder(TurnResult), **_message(session_id, text, on_busy, idempotency_key, True))


def history(session_id: str, *, after: int = 0) -> Call[list[EventRecord]]:
    """Return the session's event log: every event after the seq `after`."""
    url = path("/api/sessions/{}/messages", session_id)
    return Call("GET", url, decoder(list[EventRecord]), params=query(after=after))


def abort(session_id: str) -> Call[bool]:
    """Abort the session's running turn (it ends with `turn_end` status `aborted`); return whether one was running."""
    return Call("POST", path("/api/sessions/{}/abort", session_id), _aborted)


def restart(session_id: str) -> Call[RestartAccepted]:
    """Give the session a fresh sandbox, same workspace and conversation; its current and queued turns are aborted.

    It happens in the background: the session's `status` goes `starting`, then `ready` (or `failed`).
    """
    return Call("POST", path("/api/sessions/{}/restart", session_id), decoder(RestartAccepted))


# Teams, keys, secrets, usage


def create_team(name: str) -> Call[Team]:
    """Create a team (master key only)."""
    return Call("POST", "/api/teams", decoder(Team), body={"name": name})


def list_teams() -> Call[list[Team]]:
    """Return the teams: every one for the master key, its own for a team key."""
    return Call("GET", "/api/teams", decoder(list[Team]))


def set_budget(team_id: str, budget: Budget) -> Call[Team]:
    """Set a team's monthly budget, replaced whole (master key only); return the team."""
    return Call("PATCH", path("/api/teams/{}", team_id), decoder(Team), body={"budget": budget})


def create_key(name: str, *, team_id: str | None = None) -> Call[ApiKeyInfo]:
    """Create an API key (in `team_id`, the master key's choice; else the caller's team).

    The answer's `key` is the key itself, shown this once.
    """
    body = {"name": name} if team_id is None else {"name": name, "team_id": team_id}
    return Call("POST", "/api/keys", decoder(ApiKeyInfo), body=body)


def list_keys() -> Call[list[ApiKeyInfo]]:
    """Return the API keys (never their secrets): every team's for the master key, else the caller's team's."""
    return Call("GET", "/api/keys", decoder(list[ApiKeyInfo]))


def delete_key(key_id: str) -> Call[None]:
    """Revoke an API key, at once."""
    return Call("DELETE", path("/api/keys/{}", key_id), nothing)


def create_secret(
    name: str, value: str, *, hosts: list[str], agent_id: str | None = None, team_id: str | None = None
) -> Call[Secret]:
    """Store a secret, encrypted; never shown again. Sandboxes hold a stub in the variable `name`.

    The egress gateway puts the value into requests to `hosts` alone; `agent_id` limits it to that agent's
    sandboxes; `team_id` is the master key's choice.
    """
    body = {"name": name, "value": value, "hosts": hosts, "agent_id": agent_id, "team_id": team_id}
    return Call("POST", "/api/secrets", decoder(Secret), body={k: v for k, v in body.items() if v is not None})


def list_secrets(agent_id: str | None = None) -> Call[list[Secret]]:
    """Return the secrets by name, never their values (with `agent_id`: those its sandboxes get)."""
    return Call("GET", "/api/secrets", decoder(list[Secret]), params=query(agent_id=agent_id))


def delete_secret(secret_id: str) -> Call[None]:
    """Delete a secret, at once: the gateway puts its value into no request any more."""
    return Call("DELETE", path("/api/secrets/{}", secret_id), nothing)


def usage(
    *,
    team_id: str | None = None,
    agent_id: str | None = None,
    session_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    group_by: list[UsageGroup] | None = None,
) -> Call[UsageReport]:
    """Return the tokens and cost of the model calls that match, in total and grouped by `group_by`.

    `since` is inclusive, `until` exclusive (a time without a zone is UTC); a team key sees its own
    team's usage only.
    """
    params = query(team_id=team_id, agent_id=agent_id, session_id=session_id, since=since, until=until,
                   group_by=group_by or None)  # fmt: skip
    return Call("GET", "/api/usage", decoder(UsageReport), params=params)


def metrics() -> Call[str]:
    """Return the server's Prometheus metrics, as text (master key only)."""
    return Call("GET", "/metrics", bytes.decode)


class _Health(msgspec.Struct):
    ok: bool = False


def _ok(content: bytes) -> bool:
    try:
        return decoder(_Health)(content).ok
    except msgspec.DecodeError:
        return False


def health() -> Call[bool]:
    """Return whether the server process is up (`/healthz`; no key needed)."""
    return Call("GET", "/healthz", _ok)


def ready() -> Call[bool]:
    """Return whether the server is ready: its store reachable and migrated, its sandbox backend answering.

    `/readyz`; no key needed. False when it answers 503 (not ready, or a proxy saying it is down).
    """
    return Call("GET", "/readyz", _ok, answers=frozenset({503}))
