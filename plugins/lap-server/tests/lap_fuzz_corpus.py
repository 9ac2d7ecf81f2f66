"""The fuzz suite's own corpus of malformed requests (`test_fuzz.py` sends them, beside schemathesis's).

What schemathesis does not try: credentials of every wrong shape, SSE resume ids, integers that
are not ASCII decimals, ids with odd characters, bodies that are not JSON, not UTF-8, too deep,
too big or holding NUL, odd headers, and requests HTTP parsers refuse (sent raw on a socket).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

JSON = b"application/json"


@dataclass(frozen=True)
class Probe:
    """One request; `stream`: an event stream, read up to its headers only (it would never end)."""

    method: str
    path: str
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes | None = None
    stream: bool = False

    def encode(self) -> bytes:
        """The request as bytes on the wire (nothing checked, as a hostile client sends it)."""
        head = [f"{self.method} {self.path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
        head += [name + b": " + value for name, value in self.headers]
        if self.body is not None:
            head.append(b"Content-Length: " + str(len(self.body)).encode())
        return b"\r\n".join(head) + b"\r\n\r\n" + (self.body or b"")


@dataclass(frozen=True)
class RawProbe:
    """Bytes sent as they are on a socket: what no HTTP client would send (the server may just close)."""

    data: bytes
    stream = False

    def encode(self) -> bytes:
        """The bytes to send."""
        return self.data


@dataclass(frozen=True)
class Known:
    """What exists on the server under test, for probes aimed at real objects."""

    master_key: str
    team_key: str
    agent_id: str
    session_id: str
    key_id: str


ODD_IDS = [
    "%00", "a%00b", "%FF", "%C0%AF", "%ED%A0%80", "%EF%BF%BF", "%F0%9F%92%A9", "%C3%A9", "..", "%2e%2e",
    "a%2Fb", "%5C", "x" * 3000, "'", "%22", "%3Cscript%3E", "%24%7Bjndi:x%7D", "%20", "%0A", "%0D%0A",
    "null", "-1", "0", "~", "ses_", "%25", "%",
]  # fmt: skip
BAD_INTEGERS = [
    "", "-1", "-0", "%2B1", "1e3", "1.0", "1.5", "0x10", "%C2%B2", "%D9%A3", "9" * 30, "9" * 5000,
    str(2**63), str(2**64), "nan", "inf", "%00", "1%00", "%201", "1%20", "true", "[]", "1,2", "%FF",
]  # fmt: skip
BAD_RESUME_IDS = [
    "²".encode("latin-1"), "²".encode(), "٣".encode(), b"9" * 5000, str(2**63).encode(), str(2**62 + 1).encode(),
    b"-1", b"1e3", b"0x10", b"3 4", b"", b"\xff", b"+1", b"1.0", b"0" * 40,
]  # fmt: skip
ODD_TEXT = ["%00", "%FF", "x" * 5000, "%25", "_", "'", "%5C", "%22", "%0A", "%F0%9F%92%A9", "a%00"]


def _bad_bodies() -> list[bytes]:
    deep_options = b'{"name": "d", "harness": "script", "model": "m", "options": {"a": ' + b"[" * 80 + b"]" * 80 + b"}}"
    return [
        b"", b"{", b'{"', b"{not json", b"\xff\xfe", b'{"text": "\xff"}', b'{"name": "\xc3"}', b"\xef\xbb\xbf{}",
        '{"text": "utf-16"}'.encode("utf-16"), b"[" * 100_000, b'{"a":' * 5000, deep_options, b"1e400", b"-1e400",
        b"9" * 5000, b"null", b"true", b"[]", b'"x"', b"0", b'{"text": 1}', b'{"text": null}', b'{"text": ["x"]}',
        b'{"text": {"a": 1}}', b'{"name": 1e400}', b'{"text": 99999999999999999999999}', b'{"x": "\\u0000"}',
        b'{"text": "\\u0000"}', b'{"text": "\\ud800"}', b'{"text": "\\udc00\\ud800"}', b'{"text": "a\x00b"}',
        b'{"text": "' + b"x" * 300_000 + b'"}', b'{"text": "a", "text": "b"}', b'{"text": "a", "unknown": 1}',
        b'{"text": "a", "on_busy": "never"}', b'{"name": "' + b"n" * 1000 + b'"}', b'{"agent_id": "\\u0000"}',
        b'{"name": "ok", "harness": "script", "model": "m", "options": {"": {"": [null, 1e308, -0.0]}}}',
        b'{"\\u0000": 1}', b"{}" + b" " * 1000 + b"x", b"\x00" * 64,
    ]  # fmt: skip


def _authorizations(known: Known) -> list[bytes | None]:
    master, team = known.master_key.encode(), known.team_key.encode()
    prefix = team.split(b"_")[1]
    return [
        None, b"", b"Bearer", b"Bearer ", b"bearer x", b"Basic Zm9vOmJhcg==", b"Bearer " + b"x" * 8000,
        b"Bearer \xff\xfe", b"Bearer lapk_", b"Bearer lapk__", b"Bearer lapk_x_",
        b"Bearer lapk_" + prefix + b"_wrong", b"Bearer lapk_" + b"a" * 5000 + b"_x", b"Bearer lapk_%00_x",
        b"Bearer lapk_\xff_\xff", b"Bearer " + master + b"x",
        b"Bearer " + master[:-1], b"Bearer  " + master, master, b"Token " + master, b"Bearer lapsk.ses_x.y",
        "Bearer é".encode(), b"Bearer\t" + master, b"Bearer " + team + team,
    ]  # fmt: skip


def _requests(known: Known) -> Iterator[Probe]:
    master = [(b"authorization", b"Bearer " + known.master_key.encode())]
    team = [(b"authorization", b"Bearer " + known.team_key.encode())]
    json_master = [*master, (b"content-type", JSON)]
    session = f"/api/sessions/{known.session_id}"
    message = b'{"text": "hi"}'
    id_routes = [
        ("GET", "/api/agents/{}", None), ("PATCH", "/api/agents/{}", b'{"model": "m2"}'),
        ("DELETE", "/api/agents/{}", None), ("GET", "/api/sessions/{}", None), ("DELETE", "/api/sessions/{}", None),
        ("GET", "/api/sessions/{}/messages", None),
        ("POST", "/api/sessions/{}/messages", message), ("GET", "/api/sessions/{}/events", None),
        ("POST", "/api/sessions/{}/abort", None), ("POST", "/api/sessions/{}/restart", None),
        ("DELETE", "/api/keys/{}", None),
    ]  # fmt: skip
    for method, template, body in id_routes:
        for odd in ODD_IDS:
            path = template.format(odd)
            yield Probe(method, path, json_master if body else master, body, stream=path.endswith("/events"))
    for path in ("/api/agents?limit={}", "/api/agents?offset={}", f"{session}/messages?after={{}}"):
        for value in BAD_INTEGERS:
            yield Probe("GET", path.format(value), master)
    for value in BAD_INTEGERS:
        yield Probe("GET", f"{session}/events?after={value}", master, stream=True)
    for value in ODD_TEXT:
        yield Probe("GET", f"/api/agents?search={value}", team)
        yield Probe("GET", f"/api/sessions?agent_id={value}", master)
        yield Probe("POST", f"{session}/messages?wait={value}", json_master, message)
    for parameter in ("since", "until", "group_by", "team_id", "session_id"):
        for value in (*ODD_TEXT, "2025-02-30", "1e3", "-1", "team,,day", "day,week"):
            for caller in (master, team):
                yield Probe("GET", f"/api/usage?{parameter}={value}", caller)
    yield Probe("GET", "/api/agents?limit=1&limit=2&offset=0&offset=x", master)
    for resume in (*BAD_RESUME_IDS, b"0", b"1", b"3", b"99999", str(2**62).encode()):
        for caller in (master, team):
            yield Probe("GET", f"{session}/events", [*caller, (b"last-event-id", resume)], stream=True)
        yield Probe("GET", f"{session}/events?after=1e3", [*master, (b"last-event-id", resume)], stream=True)
    for authorization in _authorizations(known):
        headers = [(b"authorization", authorization)] if authorization is not None else []
        for method, path, body in (
            ("GET", "/api/agents", None),
            ("POST", "/api/agents", b'{"name": "x", "harness": "script", "model": "m"}'),
            ("GET", "/api/teams", None),
            ("GET", "/metrics", None),
            ("GET", f"{session}/events", None),
        ):
            yield Probe(method, path, [*headers, (b"content-type", JSON)], body, stream=path.endswith("/events"))
    body_routes = [
        "/api/agents",
        f"/api/agents/{known.agent_id}",
        "/api/sessions",
        f"{session}/messages",
        "/api/teams",
        "/api/keys",
        "/api/teams/team_default",
    ]
    for path in body_routes:
        method = "PATCH" if path.startswith(("/api/agents/", "/api/teams/")) else "POST"
        for body in _bad_bodies():
            yield Probe(method, path, json_master, body)
        for content_type in (b"text/plain", b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=x",
                             b"application/json; charset=utf-16", b"\xff", b""):  # fmt: skip
            yield Probe(method, path, [*master, (b"content-type", content_type)], message)
        yield Probe(method, path, json_master, b"x" * (2 * 1024 * 1024))  # over the body limit
        yield Probe(method, path, [*json_master, (b"content-encoding", b"gzip")], message)
    for key in (b"", b"x" * 129, b"\xff", b"a b", b"\x7f", "é".encode(), b"x" * 128, b"%00"):
        yield Probe("POST", f"{session}/messages", [*json_master, (b"idempotency-key", key)], message)
    for request_id in (b"\xff", b"x" * 10_000, b"a\tb", "é".encode(), b""):
        yield Probe("GET", "/api/agents", [*master, (b"x-request-id", request_id)])
    for accept in (b"text/event-stream", b"\xff", b"*/*;q=x", b"application/xml"):
        yield Probe("GET", f"/api/agents/{known.agent_id}", [*master, (b"accept", accept)])
    yield Probe("GET", "/api/agents", master + [(b"x-many", b"v")] * 90)
    for method in ("OPTIONS", "HEAD", "TRACE", "PUT", "CONNECT"):
        yield Probe(method, "/api/agents", master)
    yield Probe("PUT", f"{session}/messages", json_master, message)
    yield Probe("GET", "/schema/openapi.json?x=%00", [])


def _raw(known: Known) -> Iterator[RawProbe]:
    auth = b"Authorization: Bearer " + known.master_key.encode() + b"\r\n"
    events = f"/api/sessions/{known.session_id}/events".encode()
    body = json.dumps({"text": "hi"}).encode()
    post = b"POST /api/sessions/" + known.session_id.encode() + b"/messages HTTP/1.1\r\nHost: x\r\n" + auth
    for data in (
        b"GET /api/agents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x00\r\n\r\n",
        b"GET " + events + b" HTTP/1.1\r\nHost: x\r\n" + auth + b"Last-Event-ID: 1\x00\r\n\r\n",
        b"GET " + events + b" HTTP/1.1\r\nHost: x\r\n" + auth + b"Last-Event-ID: \r\n\r\n",
        post + b"Content-Length: -1\r\n\r\n" + body,
        post + b"Content-Length: 99999999999999999999\r\n\r\n" + body,
        post + b"Content-Length: 2\r\n\r\n" + body,
        post + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        post + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + body + b"\r\n0\r\n\r\n",
        post + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n" + body + b"\r\n0\r\n\r\n",
        post + b'Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{"t":\xff}',
        b"\x00\x01\x02\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"FOO /api/agents HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
        b"GET /api/agents?" + b"a=1&" * 5000 + b"b=2 HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
        b"GET /" + b"a" * 60_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/agents HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n" + auth + b"\r\n",
        b"GET /api/agents HTTP/1.1\r\nHost: x\r\n" + auth + b"X-Folded: a\r\n b\r\n\r\n",
        b"GET /api/agents HTTP/1.1\r\nHost: x\r\n" + auth + b"Bad Name: v\r\n\r\n",
        b"GET http://evil.example/api/agents HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/agents/\xff\xfe HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
        b"GET /api/agents/% HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
        b"GET /api/agents/%zz HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
        b"GET /api/agents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\xfd\r\n\r\n",
        b"GET /api/agents HTTP/1.1\r\nHost: x\r\n" + auth + b"X-Request-ID: \x80\x81\r\n\r\n",
        b"GET /api/agents HTTP/1.0\r\n" + auth + b"\r\n",
        b"GET /api/agents HTTP/1.1\r\n" + auth + b"\r\n",  # no Host
        b"GET /api/agents HTTP/1.1\r\nHost: x\r\nHost: y\r\n" + auth + b"\r\n",
        b"GET /api/agents HTTP/1.1\r\nHost: x\r\n" + auth + auth + b"\r\n",
    ):
        yield RawProbe(data)


def corpus(known: Known) -> Iterator[Probe | RawProbe]:
    """Every probe of the corpus, against the objects in `known`."""
    yield from _requests(known)
    yield from _raw(known)
