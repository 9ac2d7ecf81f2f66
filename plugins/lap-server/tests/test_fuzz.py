"""The fuzz suite (issue 12, finding 8): over 1,000 malformed requests, not one answer >= 500.

The real `lap serve`, on SQLite and on PostgreSQL, gets our own corpus (`lap_fuzz_corpus`:
credentials, SSE resume ids, query integers, odd ids, bodies, headers, raw requests HTTP parsers
refuse) and schemathesis's positive and negative cases of every operation of its OpenAPI schema.
Every answer's status is counted; the suite prints the figures, then asserts no 5xx, no
unanswered request (but raw ones, which the server may just close), no failure in the server's
log, and that it still serves. Every 5xx it finds is a bug to fix at its root.
"""

from __future__ import annotations

import re
import secrets
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from lap_fuzz_corpus import Known, Probe, RawProbe, corpus
from schemathesis.generation import GenerationMode

from tests.server.process import ServeProcess, serve_process

if TYPE_CHECKING:
    from pathlib import Path

SCHEMATHESIS_EXAMPLES = 15
"""Cases per operation and mode (positive, negative): about 600 requests over the 20 operations."""
_STATUS = re.compile(rb"HTTP/1\.[01] ([0-9]{3}) ")


@dataclass
class Tally:
    """Requests sent, by source and status class, and every one answered >= 500 or not at all."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def add(self, source: str, status: int | None, what: str, raw: bool = False) -> None:
        kind = "no answer" if status is None else f"{status // 100}xx"
        self.counts[source, kind] += 1
        if (status is None and not raw) or (status is not None and status >= 500):
            self.failures.append(f"{kind}: {what}")

    def report(self, database: str) -> str:
        total = sum(self.counts.values())
        lines = [f"fuzz on {database}: {total} requests"]
        for source in sorted({source for source, _ in self.counts}):
            row = {kind: n for (where, kind), n in sorted(self.counts.items()) if where == source}
            lines.append(f"  {source:<20} {sum(row.values()):>5}  " + "  ".join(f"{k} {n}" for k, n in row.items()))
        by_class = Counter[str]()
        for (_, kind), n in self.counts.items():
            by_class[kind] += n
        lines.append(f"  {'all':<20} {total:>5}  " + "  ".join(f"{k} {n}" for k, n in sorted(by_class.items())))
        return "\n".join(lines)


def _send(port: int, probe: Probe | RawProbe) -> tuple[int | None, bytes]:
    """Send a probe on a fresh connection; return its answer's status (None: none came) and head.

    Only the status line and headers are read. A raw probe may leave the server waiting for more
    (a chunk of 2**64 bytes): its answer is waited for 3 seconds.
    """
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=3 if isinstance(probe, RawProbe) else 20) as connection:
        try:
            connection.sendall(probe.encode())
        except OSError:
            pass  # the server answered (413, 400) and closed before reading it all
        while b"\r\n\r\n" not in answer:
            try:
                chunk = connection.recv(65536)
            except OSError:  # a timeout, or reset after an early answer
                break
            if not chunk:
                break
            answer += chunk
    match = _STATUS.match(answer)
    return (int(match[1]) if match else None), answer[:300]


def _known(server: ServeProcess) -> Known:
    headers = {"Authorization": f"Bearer {server.master_key}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as api:
        agent = api.post("/api/agents", json={"name": "fuzz", "harness": "script", "model": "m"}).json()
        session = api.post("/api/sessions", json={"agent_id": agent["id"]}).json()
        key = api.post("/api/keys", json={"name": "fuzz"}).json()
    return Known(server.master_key, key["key"], agent["id"], session["id"], key["id"])


def _schemathesis(server: ServeProcess, tally: Tally) -> None:
    # The event stream never ends: the corpus covers it (headers only).
    schema = schemathesis.openapi.from_url(f"{server.base_url}/schema/openapi.json").exclude(path_regex=r"/events$")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {server.master_key}"
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _cases(operation.as_strategy(generation_mode=mode), mode, session, tally)


def _cases(strategy: Any, mode: GenerationMode, session: requests.Session, tally: Tally) -> None:
    source = f"schemathesis ({mode.value[:3]})"

    @given(case=strategy)
    @settings(
        max_examples=SCHEMATHESIS_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        phases=[Phase.explicit, Phase.generate],  # nothing to shrink: failures are collected
    )
    def call(case: schemathesis.Case[Any]) -> None:
        response = case.call(session=session, timeout=20)
        tally.add(source, response.status_code, f"{case.as_curl_command()} -> {response.text[:300]}")

    try:
        call()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise  # only an operation without inputs has no negative cases


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    if request.param == "postgres":
        return request.param, {"DATABASE_URL": request.getfixturevalue("pg_database")}
    return request.param, {}


def test_malformed_requests_never_get_a_5xx(
    data_dir: Path, tmp_path: Path, database: tuple[str, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    name, env = database
    tally = Tally()
    with serve_process(data_dir, tmp_path, master_key=f"fuzz-{secrets.token_urlsafe(16)}", env=env) as server:
        port = int(server.base_url.rpartition(":")[2])
        known = _known(server)
        for probe in corpus(known):
            status, answer = _send(port, probe)
            raw = isinstance(probe, RawProbe)
            what = repr(probe.encode()[:200]) + f" -> {answer!r}"
            tally.add("corpus (raw)" if raw else "corpus", status, what, raw=raw)
        _schemathesis(server, tally)
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {known.master_key}"}) as api:
            still = [api.get(path).status_code for path in ("/healthz", "/readyz", f"/api/sessions/{known.session_id}")]
    with capsys.disabled():
        print("\n" + tally.report(name))
    assert tally.failures == []
    assert still == [200, 200, 200]
    assert sum(tally.counts.values()) >= 1000
    log = server.output()
    assert "request.failed" not in log, log
    assert "Traceback" not in log, log
