"""The chaos suite's users: each one talks to one session over HTTP, as a careful client would.

A client sends one message at a time and waits for its turn's `turn_end` on the session's SSE
stream before sending the next, so each turn runs with the previous one's context. It follows the
stream all the time, reconnecting with `Last-Event-ID` whenever it breaks (the web process died,
the database went away). A message whose POST got no answer may or may not be stored: the client
reads the session's history before sending it again (the API has no idempotency key).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import anyio
import httpx

from tests.cluster import sse_records

if TYPE_CHECKING:
    from collections.abc import Callable

LINES = 20
"""Lines of a `stream:` or `model:` turn (0.1 s apart): its reply is that many text deltas."""
RETRY = "retry "
"""How the text delta starts that a `model:` turn's process prints before it makes its request again."""
FILE_EVERY = 4
"""Every this many turns, the turn writes a file of its own in the workspace instead of streaming."""
TURN_DEADLINE = 90.0
"""Seconds a turn may take, faults included, before the client gives up (the test fails)."""


def is_retry(event: dict[str, Any]) -> bool:
    """Whether the event says a `model:` turn's process makes its request again (its stream broke)."""
    return event["type"] == "text_delta" and str(event["text"]).startswith(RETRY)


def last_request(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events of a turn's attempt since its process last made its model request again (all of them, if never)."""
    retries = [i for i, event in enumerate(events) if is_retry(event)]
    return events[retries[-1] + 1 :] if retries else events


@dataclass
class Arrival:
    """When a record reached the client (monotonic seconds), and on which of its SSE connections."""

    at: float
    connection: int


@dataclass
class Sent:
    """A message of the client's and its turn."""

    turn_id: str
    kind: Literal["stream", "model", "file"]
    tag: str
    text: str
    retried: int = 0  # POSTs that failed before this one was stored


@dataclass
class SessionClient:
    """One user of one session: sends messages, follows the session's stream."""

    api: httpx.AsyncClient
    session_id: str
    index: int
    replies: Literal["stream", "model"] = "stream"  # what the turns that write no file do
    records: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[Arrival] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    connections: int = 0  # SSE connections opened (1 + reconnects)
    stream_errors: list[str] = field(default_factory=list)
    _changed: anyio.Event = field(default_factory=anyio.Event)
    ended: dict[str, int] = field(default_factory=dict)  # turn id -> index of its first turn_end in `records`

    @property
    def last_seq(self) -> int:
        return int(self.records[-1]["seq"]) if self.records else 0

    @property
    def current(self) -> Sent | None:
        """The message whose turn the client waits for, if any."""
        if self.sent and self.sent[-1].turn_id not in self.ended:
            return self.sent[-1]
        return None

    def attempt_of(self, turn_id: str) -> list[dict[str, Any]]:
        """The events received so far of the turn's current attempt (after its last `turn_restarted`)."""
        events = [r["event"] for r in self.records if r["turn_id"] == turn_id]
        restarts = [i for i, e in enumerate(events) if e["type"] == "status" and e["phase"] == "turn_restarted"]
        return events[restarts[-1] + 1 :] if restarts else events

    def lines_of(self, turn_id: str) -> int:
        """How many `line i` deltas of the turn's current attempt (of its last model request) the client has."""
        return sum(
            e["type"] == "text_delta" and e["text"].startswith("line ") for e in last_request(self.attempt_of(turn_id))
        )

    def has_ended(self, turn_id: str) -> bool:
        return turn_id in self.ended

    def _add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self.arrivals.append(Arrival(time.monotonic(), self.connections))
        if record["event"]["type"] == "turn_end":
            self.ended.setdefault(record["turn_id"], len(self.records) - 1)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait until `condition()` holds (checked on each new record); return whether it did in time."""
        with anyio.move_on_after(timeout):
            while not condition():
                changed = self._changed
                with anyio.move_on_after(0.5):
                    await changed.wait()
            return True
        return False

    async def follow(self) -> None:
        """Follow the session's stream forever, resuming after the last record received (`Last-Event-ID`)."""
        while True:
            headers = {"Last-Event-ID": str(self.last_seq)} if self.records else {}
            try:
                async with self.api.stream(
                    "GET",
                    f"/api/sessions/{self.session_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(None, connect=5.0),
                ) as stream:
                    if stream.status_code != 200:
                        await stream.aread()
                        self.stream_errors.append(f"{stream.status_code} {stream.text[:200]}")
                    else:
                        self.connections += 1
                        async for record in sse_records(stream):
                            self._add(record)
                        self.stream_errors.append("the stream ended")
            except httpx.TransportError as error:
                self.stream_errors.append(f"{type(error).__name__}: {error}")
            await anyio.sleep(0.1)

    async def _stored_since(self, known: int) -> str | None:
        """After a POST that got no answer: the turn id of a message stored beyond the `known` ones, if any."""
        while True:
            try:
                history = await self.api.get(f"/api/sessions/{self.session_id}/messages", timeout=10)
                if history.status_code == 200:
                    turns = [r["turn_id"] for r in history.json() if r["event"]["type"] == "user_message"]
                    assert len(turns) <= known + 1, f"{self.session_id}: one POST stored {len(turns) - known} messages"
                    return turns[-1] if len(turns) > known else None
            except httpx.TransportError:
                pass
            await anyio.sleep(0.2)

    async def send(self, kind: Literal["stream", "model", "file"], tag: str, text: str) -> Sent:
        """Send a message until it is stored exactly once; return it."""
        known = len(self.sent)
        retried = 0
        while True:
            try:
                accepted = await self.api.post(
                    f"/api/sessions/{self.session_id}/messages", json={"text": text}, timeout=10
                )
                if accepted.status_code == 202:
                    turn_id = str(accepted.json()["turn_id"])
                    break
                assert accepted.status_code >= 500, accepted.text  # 4xx: our mistake, not a fault's
            except httpx.TransportError:
                pass
            retried += 1
            stored = await self._stored_since(known)
            if stored is not None:
                turn_id = stored
                break
            await anyio.sleep(0.2)
        sent = Sent(turn_id=turn_id, kind=kind, tag=tag, text=text, retried=retried)
        self.sent.append(sent)
        return sent

    async def converse(self, stop: anyio.Event) -> None:
        """Send messages one after the other, each after the previous turn ended, until `stop`."""
        k = 0
        while not stop.is_set():
            k += 1
            tag = f"s{self.index}t{k}"
            if k % FILE_EVERY == 0:
                write = f"mkdir -p files && echo {tag} > files/{tag} && echo {tag} >> files.log && echo {tag}"
                sent = await self.send("file", tag, f"run: {write}")
            elif self.replies == "model":
                sent = await self.send("model", tag, f"model: {tag}")
            else:
                sent = await self.send("stream", tag, f"stream: {LINES}")
            if not await self.wait_for(functools.partial(self.has_ended, sent.turn_id), TURN_DEADLINE):
                tail = [(r["seq"], r["event"]) for r in self.records[-8:]]
                raise AssertionError(
                    f"{self.session_id}: turn {sent.turn_id} ({sent.text!r}) did not end within {TURN_DEADLINE} s;"
                    f" last records received: {tail}; stream errors: {self.stream_errors[-5:]}"
                )
