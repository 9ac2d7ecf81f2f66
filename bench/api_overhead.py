"""Platform overhead per turn: the same scripted turn through the HTTP API versus straight through the engine.

Run: `.venv/bin/python bench/api_overhead.py [--runs N] [--postgres]`. One `Lap` (the `process`
sandbox backend and the scripted fake harness of tests/fakes/, so no LLM and no bubblewrap)
serves a real uvicorn server in this process, as plugins/lap-server/tests/conftest.py does. Each
run sends the same message (the reply is five events: user_message, harness_session, two
text_deltas, turn_end), alternately

(a) through the API: POST /api/sessions/{id}/messages (202), then GET its `events_url` (SSE),
    timed to the response's first byte (headers), the first event and the `turn_end` event;
(b) in-process: `lap.sessions.stream(...)`, timed to the first record and the `turn_end`.

a and b alternate (in both orders) so drift cancels; each pair's difference is reported too.
The store is the embedded SQLite file, or with `--postgres` a throwaway database on the
PostgreSQL at 127.0.0.1:5432. The HTTP client (httpx) runs in the same process and event loop, so
its own cost is part of (a). Target: p50 of (a) - (b) at `turn_end` <= 5 ms.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import httpx
import msgspec
import structlog
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import data_dir, line, pg_database

from lap_core import Lap, TurnEnd
from lap_server import ServerSettings, create_app
from tests.fakes.litellm import free_port
from tests.fakes.plugin import FakesPlugin
from tests.fixtures import lap_env

KEY = "bench-master-key"
TEXT = "benchmark turn: echo this back"
EVENTS_PER_TURN = 5


class Timings(msgspec.Struct):
    """Seconds from the start of one turn; `posted` only for (a)."""

    first_byte: float
    first_event: float
    turn_end: float
    posted: float = 0.0
    events: int = 0


async def api_turn(client: httpx.AsyncClient, session_id: str) -> Timings:
    """Send through the API and follow the SSE stream to `turn_end`."""
    start = time.perf_counter()
    accepted = await client.post(f"/api/sessions/{session_id}/messages", json={"text": TEXT})
    posted = time.perf_counter() - start
    assert accepted.status_code == 202, accepted.text
    url = accepted.json()["events_url"]
    first_event = 0.0
    events = 0
    async with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
        first_byte = time.perf_counter() - start
        assert response.status_code == 200, await response.aread()
        name, data = "", ""
        async for row in response.aiter_lines():
            if row.startswith("event:"):
                name = row.partition(":")[2].strip()
            elif row.startswith("data:"):
                data = row.partition(":")[2].strip()
            elif not row and data:
                events += 1
                if not first_event:
                    first_event = time.perf_counter() - start
                if name == "turn_end":
                    turn_end = time.perf_counter() - start
                    assert msgspec.json.decode(data)["event"]["status"] == "completed", data
                    break
                name, data = "", ""
    return Timings(first_byte=first_byte, first_event=first_event, turn_end=turn_end, posted=posted, events=events)


async def engine_turn(lap: Lap, session_id: str) -> Timings:
    """The same turn through `lap.sessions.stream`."""
    start = time.perf_counter()
    first = 0.0
    events = 0
    async for record in lap.sessions.stream(session_id, TEXT):
        events += 1
        if not first:
            first = time.perf_counter() - start
        if isinstance(record.event, TurnEnd):
            assert record.event.status == "completed", record
            end = time.perf_counter() - start
    return Timings(first_byte=first, first_event=first, turn_end=end, events=events)


async def run(args: argparse.Namespace, path: Path) -> None:
    port = free_port()
    async with AsyncExitStack() as stack:
        extra = {"DATABASE_URL": await stack.enter_async_context(pg_database())} if args.postgres else {}
        env = lap_env(
            path,
            LAP_SANDBOX_BACKEND="process",
            LITELLM_API_BASE="http://127.0.0.1:9",
            LITELLM_API_KEY="k",
            MASTER_KEY=KEY,
            LAP_PORT=str(port),
            LAP_RATE_LIMIT="0",  # measure the platform, not the limiter's 429s (600 requests a minute by default)
            **extra,
        )
        lap = await stack.enter_async_context(
            Lap(plugins=[FakesPlugin()], env=env, settings={"server": ServerSettings}, migrate=True)
        )
        app = create_app(lap, lap.settings_of("server"))
        server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", lifespan="off"))
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.serve)
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
                await anyio.sleep(0.01)
            headers = {"Authorization": f"Bearer {KEY}"}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
                agent = await lap.agents.create("bench", harness="script", model="none")
                via_api = (await lap.sessions.create(agent.id)).id
                in_process = (await lap.sessions.create(agent.id)).id
                for _ in range(args.warmup):  # the first turn of each session starts its sandbox
                    await api_turn(client, via_api)
                    await engine_turn(lap, in_process)
                a: list[Timings] = []
                b: list[Timings] = []
                floor: list[float] = []
                for i in range(args.runs):
                    if i % 2:
                        b.append(await engine_turn(lap, in_process))
                        a.append(await api_turn(client, via_api))
                    else:
                        a.append(await api_turn(client, via_api))
                        b.append(await engine_turn(lap, in_process))
                    start = time.perf_counter()
                    assert (await client.get(f"/api/sessions/{via_api}")).status_code == 200
                    floor.append(time.perf_counter() - start)
            server.should_exit = True
    assert all(t.events == EVENTS_PER_TURN for t in a + b), {t.events for t in a + b}
    store = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"one scripted turn ({EVENTS_PER_TURN} events), {args.runs} runs each of (a) HTTP API + SSE and (b) in-process"
        f" stream, alternating; store {store}\n"
    )
    print(line("HTTP floor: GET /api/sessions/{id}", floor, width=46))
    print(line("(a) API: POST /messages answered (202)", [t.posted for t in a], width=46))
    print(line("(a) API: SSE first byte (headers)", [t.first_byte for t in a], width=46))
    print(line("(a) API: first event", [t.first_event for t in a], width=46))
    print(line("(a) API: turn_end", [t.turn_end for t in a], width=46))
    print(line("(b) in-process: first event", [t.first_event for t in b], width=46))
    print(line("(b) in-process: turn_end", [t.turn_end for t in b], width=46))
    print()
    first = [x.first_event - y.first_event for x, y in zip(a, b, strict=True)]
    end = [x.turn_end - y.turn_end for x, y in zip(a, b, strict=True)]
    print(line("(a) - (b), pairwise: first event", first, width=46))
    print(line("(a) - (b), pairwise: turn_end", end, width=46))
    median_a = statistics.median(t.turn_end for t in a)
    median_b = statistics.median(t.turn_end for t in b)
    overhead = (median_a - median_b) * 1000
    verdict = "met" if statistics.median(end) * 1000 <= 5 else "NOT met"
    print(
        f"\nturn_end medians: API {median_a * 1000:.2f} ms / in-process {median_b * 1000:.2f} ms"
        f" = {median_a / median_b:.2f}x ({overhead:+.2f} ms); target p50 difference <= 5 ms: {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="turns of each kind (default 200)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed turns of each kind first (default 5)")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL database, not SQLite")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # an import turns on INFO logging of every request
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with data_dir() as path:
        anyio.run(run, args, path)


if __name__ == "__main__":
    main()
