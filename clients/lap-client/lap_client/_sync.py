"""The synchronous client, `Client`: every call is one of `_calls`, sent on an `httpx.Client`."""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

import httpx

from lap_client import _calls as calls
from lap_client._core import Call, Follower, Named, connection, method_signature, no_answer
from lap_client._errors import ApiError, error_of

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator
    from types import TracebackType

    from lap_client._models import TurnAccepted
    from lap_core import Agent, BusyPolicy, EventRecord

P = ParamSpec("P")
T = TypeVar("T")


class _Sender(Protocol):
    def _send(self, call: Call[T]) -> T: ...


def _method(build: Callable[P, Call[T]]) -> Callable[Concatenate[_Sender, P], T]:
    """A method that sends the call `build` makes (with its signature and docstring)."""

    @functools.wraps(build)
    def method(self: _Sender, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._send(build(*args, **kwargs))

    method.__signature__ = method_signature(build)  # type: ignore[attr-defined]
    return method


class _Resource(Named):
    def __init__(self, client: Client) -> None:
        self._client = client

    def _send(self, call: Call[T]) -> T:
        return self._client._send(call)


class Agents(_Resource):
    """`client.agents`: create, list, get, update and delete agents."""

    create = _method(calls.create_agent)
    list = _method(calls.list_agents)
    get = _method(calls.get_agent)
    update = _method(calls.update_agent)
    delete = _method(calls.delete_agent)

    def iter(self, search: str | None = None, *, page_size: int = 100) -> Iterator[Agent]:
        """Yield every agent by name (whose name contains `search`, if given), a page at a time."""
        offset: int | None = 0
        while offset is not None:
            page = self._send(calls.list_agents(search, limit=page_size, offset=offset))
            yield from page.items
            offset = page.next_offset


class Sessions(_Resource):
    """`client.sessions`: sessions, their messages, event streams, abort and restart."""

    create = _method(calls.create_session)
    list = _method(calls.list_sessions)
    get = _method(calls.get_session)
    delete = _method(calls.delete_session)
    send = _method(calls.send_message)
    send_and_wait = _method(calls.send_and_wait)
    history = _method(calls.history)
    abort = _method(calls.abort)
    restart = _method(calls.restart)

    def events(self, session_id: str, *, after: int = 0) -> EventStream:
        """Follow the session's events live, from the one after the seq `after` (0: from the start).

        The stream never ends on its own (close it, or leave the loop); it reconnects by itself after a
        dropped connection, resuming with `Last-Event-ID` exactly after the last event it yielded.
        """
        return EventStream(self._client, Follower(session_id, after=after))

    def stream(
        self, session_id: str, text: str, *, on_busy: BusyPolicy | None = None, idempotency_key: str | None = None
    ) -> EventStream:
        """Send a message and follow its turn's events, from the user message to the turn's `turn_end`.

        The message is sent when the iteration starts; then `EventStream.turn` is the turn.
        """
        send = calls.send_message(session_id, text, on_busy=on_busy, idempotency_key=idempotency_key)
        return EventStream(self._client, Follower(session_id), send)


class Teams(_Resource):
    """`client.teams`: teams and their budgets (the master key manages them)."""

    create = _method(calls.create_team)
    list = _method(calls.list_teams)
    set_budget = _method(calls.set_budget)


class Keys(_Resource):
    """`client.keys`: API keys."""

    create = _method(calls.create_key)
    list = _method(calls.list_keys)
    delete = _method(calls.delete_key)


class Secrets(_Resource):
    """`client.secrets`: secrets, whose values the server never shows."""

    create = _method(calls.create_secret)
    list = _method(calls.list_secrets)
    delete = _method(calls.delete_secret)


class EventStream:
    """An iterator of a session's `EventRecord`s over server-sent events, which reconnects by itself.

    Use it in a `with` block, or `close()` it, to end the connection as soon as you are done.
    `last_seq` is the seq of the last event it yielded.
    """

    def __init__(self, client: Client, follower: Follower, send: Call[TurnAccepted] | None = None) -> None:
        self.turn: TurnAccepted | None = None
        """The turn that `Sessions.stream` sent (None for `Sessions.events`, and until the iteration starts)."""
        self._follower = follower
        self._events = self._follow(client, send)

    @property
    def last_seq(self) -> int | None:
        """The seq of the last event yielded (None before the first)."""
        return self._follower.last_seq

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> EventRecord:
        return next(self._events)

    def close(self) -> None:
        """Close the connection; the iteration ends."""
        self._events.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _follow(self, client: Client, send: Call[TurnAccepted] | None) -> Generator[EventRecord, None, None]:
        follower, http = self._follower, client._http
        if send is not None:
            self.turn = client._send(send)
            follower.started(self.turn)
        while not follower.done:
            try:
                response = http.send(follower.request(http), stream=True)
                try:
                    if response.status_code >= 400:
                        response.read()
                        raise error_of(response)
                    follower.connected = True
                    for line in response.iter_lines():
                        record = follower.feed(line)
                        if record is not None:
                            yield record
                            if follower.done:
                                return
                finally:
                    response.close()
                delay = follower.dropped(None)
            except (httpx.TransportError, ApiError) as error:
                delay = follower.dropped(error)
            time.sleep(delay)


class Client(Named):
    """A synchronous client of a LAP server's REST API.

    `base_url` defaults to `LAP_SERVER_URL` (else `http://127.0.0.1:3000`), `api_key` (the master key
    or a team key) to `LAP_API_KEY`; `timeout` is in seconds, per request (a turn waited for has none).
    Errors are `ApiError`s (one class per family) and `ConnectionFailed`. Close it, or use it in `with`.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 30.0) -> None:
        self._http = httpx.Client(**connection(base_url, api_key, timeout))
        self.agents = Agents(self)
        self.sessions = Sessions(self)
        self.teams = Teams(self)
        self.keys = Keys(self)
        self.secrets = Secrets(self)

    usage = _method(calls.usage)
    health = _method(calls.health)
    ready = _method(calls.ready)
    metrics = _method(calls.metrics)

    @property
    def base_url(self) -> str:
        """The server's URL."""
        return str(self._http.base_url)

    def _send(self, call: Call[T]) -> T:
        try:
            response = self._http.send(call.request(self._http))
        except httpx.TransportError as error:
            raise no_answer(error) from error
        return call.result(response)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
