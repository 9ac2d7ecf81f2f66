"""What the sync and async clients share: each API call built and decoded once, and the event stream's logic.

A `Call` says what to send and how to read the answer; `Client` and `AsyncClient` only send it (the way
httpx's two clients share their models). `Follower` reads server-sent events and decides when and where
to reconnect; the two `EventStream`s only move bytes and sleep.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from lap_client._errors import ApiError, ClientError, ConnectionFailed, error_of
from lap_core import EventRecord, TurnEnd

if TYPE_CHECKING:
    from collections.abc import Callable

    from lap_client._models import TurnAccepted

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:3000"
"""Where `lap serve` listens by default; used when neither `base_url` nor `LAP_SERVER_URL` is given."""
STREAM_READ_TIMEOUT = 60.0
"""Seconds of silence after which an event stream counts as dropped (the server sends a comment every 15 s)."""
RECONNECT_ATTEMPTS = 10
"""Reconnections in a row, without an event in between, before an event stream gives up."""
RECONNECT_DELAY = 0.5
"""Seconds before the second reconnection in a row (the first is at once); doubled each time, up to 10 s."""
MAX_RECONNECT_DELAY = 10.0
_VERSION = "0.1.0"


def connection(base_url: str | None, api_key: str | None, timeout: float) -> dict[str, Any]:
    """Return the keyword arguments of the client's httpx client: URL and key from the arguments or the env."""
    url = base_url or os.environ.get("LAP_SERVER_URL") or DEFAULT_URL
    key = api_key if api_key is not None else os.environ.get("LAP_API_KEY")
    headers = {"User-Agent": f"lap-client/{_VERSION}"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return {"base_url": url, "headers": headers, "timeout": timeout}


class Named:
    """A base class whose methods made from call builders take their attribute's name (`Agents.create`)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attribute, value in vars(cls).items():
            if callable(value) and hasattr(value, "__wrapped__"):
                value.__name__, value.__qualname__ = attribute, f"{cls.__qualname__}.{attribute}"


def method_signature(build: Callable[..., Any]) -> inspect.Signature:
    """The signature of a method made from the call builder `build`: `self` first, returning what the call does."""
    signature = inspect.signature(build)
    self = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    answer = str(signature.return_annotation).removeprefix("Call[").removesuffix("]")
    return signature.replace(parameters=[self, *signature.parameters.values()], return_annotation=answer)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request: what to send, and `decode` for the successful answer's body."""

    method: str
    path: str
    decode: Callable[[bytes], T]
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    long: bool = False  # waits for a turn: no read timeout
    answers: frozenset[int] = frozenset()  # error statuses that are answers for `decode`, not errors

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        """Build the httpx request on `http` (its base URL, headers and timeout)."""
        timeout = httpx.Timeout(http.timeout.connect, read=None, write=http.timeout.write, pool=http.timeout.pool)
        return http.build_request(
            self.method,
            self.path,
            params=self.params or None,
            content=None if self.body is None else msgspec.json.encode(self.body),
            headers={**self.headers, **({"Content-Type": "application/json"} if self.body is not None else {})},
            timeout=timeout if self.long else http.timeout,
        )

    def result(self, response: httpx.Response) -> T:
        """Return the decoded answer, or raise the typed error of an error answer."""
        if response.status_code >= 400 and response.status_code not in self.answers:
            raise error_of(response)
        try:
            return self.decode(response.content)
        except msgspec.DecodeError as error:  # not a LAP server, or a proxy's page with a 200
            raise ClientError(f"{self.method} {self.path}: the answer is not LAP's: {error}") from error


def no_answer(error: httpx.TransportError) -> ConnectionFailed:
    """Wrap an httpx transport error (connect, read, write, timeout, protocol) in `ConnectionFailed`."""
    try:
        where = f" ({error.request.method} {error.request.url})"
    except RuntimeError:  # an error raised before a request was made
        where = ""
    return ConnectionFailed(f"no answer from the LAP server{where}: {type(error).__name__}: {error}")


_DECODERS: dict[object, Callable[[bytes], Any]] = {}


def decoder(kind: type[T]) -> Callable[[bytes], T]:
    """Decode a JSON answer as `kind` (one decoder per type, made once)."""
    decode = _DECODERS.get(kind)
    if decode is None:
        decode = _DECODERS[kind] = msgspec.json.Decoder(kind).decode
    return decode


def nothing(content: bytes) -> None:
    """Decode an empty answer (204)."""
    return None


def path(template: str, *ids: str) -> str:
    """Fill a path's `{}` slots with ids, each quoted whole (an id never becomes more path, nor less)."""
    if "" in ids:
        raise ValueError("an id or name may not be empty")
    # `.` and `..` would be read as the path's own dot segments: %2E is the same name to the server.
    return template.format(*(quote(value, safe="") if value.strip(".") else "%2E" * len(value) for value in ids))


def query(**values: object) -> dict[str, str]:
    """Query parameters: None left out, datetimes in ISO 8601, lists comma-separated."""
    params = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, datetime):
            params[name] = value.isoformat()
        elif isinstance(value, list | tuple):
            params[name] = ",".join(str(item) for item in value)
        else:
            params[name] = str(value)
    return params


class SseDecoder:
    """The server-sent events format, a line at a time (lines without their ends, as httpx's `iter_lines` gives).

    https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
    """

    def __init__(self) -> None:
        self._data: list[str] = []
        self._id: str | None = None
        self.retry: float | None = None

    def reset(self) -> None:
        """Forget a partly read event (its connection dropped); keep `retry`."""
        self._data, self._id = [], None

    def feed(self, line: str) -> tuple[str | None, str] | None:
        """Read one line; at the blank line ending an event, return its `(id, data)`."""
        if not line:
            data, event_id = self._data, self._id
            self._data, self._id = [], None
            return (event_id, "\n".join(data)) if data else None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "id" and "\x00" not in value:
            self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value) / 1000
        return None  # a comment (`:keep-alive`), `event`, or a field nobody knows


_record = msgspec.json.Decoder(EventRecord)


class Follower:
    """Where an event stream is and what to do next: the request to (re)connect with, and when to give up.

    It asks for the events after `after`, then (once it has seen one) resumes with `Last-Event-ID`, the
    last seq it yielded, so no event is lost or repeated. With `until_turn`, it is done after that turn's
    `turn_end`.
    """

    def __init__(self, session_id: str, *, after: int = 0, until_turn: str | None = None) -> None:
        self.session_id = session_id
        self.after = after
        self.until_turn = until_turn
        self.last_seq: int | None = None
        self.done = False
        self.connected = False  # once the server accepted the stream: failures before that are not retried
        self._sse = SseDecoder()
        self._failures = 0

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        """The request that opens (or reopens) the stream."""
        self._sse.reset()
        headers = {"Accept": "text/event-stream"}
        if self.last_seq is not None:
            headers["Last-Event-ID"] = str(self.last_seq)
        timeout = httpx.Timeout(http.timeout.connect, read=STREAM_READ_TIMEOUT)
        url = path("/api/sessions/{}/events", self.session_id)
        return http.build_request("GET", url, params={"after": str(self.after)}, headers=headers, timeout=timeout)

    def feed(self, line: str) -> EventRecord | None:
        """Read one line of the stream; return the event it completes, if any."""
        message = self._sse.feed(line)
        if message is None:
            return None
        record = _record.decode(message[1])
        if self.last_seq is not None and record.seq <= self.last_seq:
            return None  # already yielded (a server that resent it)
        self.last_seq = record.seq
        self._failures = 0
        if self.until_turn is not None and record.turn_id == self.until_turn and isinstance(record.event, TurnEnd):
            self.done = True
        return record

    def dropped(self, error: Exception | None) -> float:
        """The stream ended (`error` None: the server closed it): return how long to wait before reconnecting.

        Raise `ConnectionFailed` after `RECONNECT_ATTEMPTS` in a row without an event, and every `ApiError`
        but a gateway's 502, 503 or 504 (a server restarting behind a proxy). A stream that never opened
        is not retried: a wrong URL or key fails at once.
        """
        if isinstance(error, ApiError) and (error.status not in (502, 503, 504) or not self.connected):
            raise error
        if isinstance(error, httpx.TransportError) and not self.connected:
            raise no_answer(error) from error
        self._failures += 1
        if self._failures > RECONNECT_ATTEMPTS:
            message = f"the event stream of session {self.session_id} failed {RECONNECT_ATTEMPTS} times in a row"
            raise ConnectionFailed(message) from error
        if self._failures == 1:
            return 0.0
        base = self._sse.retry if self._sse.retry is not None else RECONNECT_DELAY
        return float(min(base * 2 ** (self._failures - 2), MAX_RECONNECT_DELAY))

    def started(self, turn: TurnAccepted) -> None:
        """Follow the turn `turn` from its user message (the stream helpers send, then follow)."""
        self.after = turn.user_seq - 1
        self.until_turn = turn.turn_id
