"""SSE fan-out: many concurrent subscribers of one web process, its memory per stream and delivery latency.

Run: `.venv/bin/python bench/sse_fanout.py [--subscribers 1000] [--sessions 1] [--turns 10]
[--interval 1.0] [--source api|store] [--store postgres|sqlite]`.

The server (web and worker in one process, on the `process` sandbox backend and the scripted fake
harness of tests/fakes/, no LLM) runs in a subprocess (this script with `--serve`), so its RSS is
read from /proc/<pid>/status. Subscribers are raw asyncio sockets in this process (one
connection each: GET /api/sessions/{id}/events with the MASTER_KEY bearer), spread round-robin
over `--sessions` sessions. Figures:

- server VmRSS before the subscribers connect (after a warm-up), once all are connected (and idle
  2.5 s), and after the events: RSS per stream = (connected - before) / subscribers (target <= 50 KiB);
- server CPU while the subscribers sit idle (followers re-read the log every FOLLOW_POLL seconds);
- server CPU for the events, minus the same events sent first with no subscribers (the fan-out's cost);
- delivery latency of every event at every subscriber, from the event's append (its record's `at`,
  stamped by the store just before the appending transaction; same host clock) to its receipt.

Events: `--source api` (default) POSTs `--turns` messages per session, one every `--interval`
seconds (open loop); the server's worker runs each scripted turn, appending 5 events one at a time
(user_message, harness_session, 2 text_deltas, turn_end). `--source store` appends 5 text_deltas
per tick straight to the store from this process (as another process on the same database would):
on PostgreSQL the server hears of them by LISTEN/NOTIFY, on SQLite only by polling.

The store defaults to a throwaway PostgreSQL database (127.0.0.1:5432), the production shape.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from contextlib import AsyncExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx
import msgspec
import structlog
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import data_dir, line, pg_database, rss_kib

from lap_core import Lap, TextDelta
from lap_server import ServerSettings, create_app
from tests.fakes.litellm import free_port
from tests.fakes.plugin import FakesPlugin
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from collections.abc import Iterator

KEY = "bench-master-key"
EVENTS_PER_TICK = 5
CONNECT_CONCURRENCY = 64
SETTLE_SECONDS = 2.5
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the server (a subprocess) -------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn without its re-raising of SIGTERM, so the Lap closes (and stops its sandboxes)."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve() -> None:
    """Serve the API on LAP_PORT until SIGTERM (the same shape as `lap serve`, plus the fakes plugin)."""
    async with Lap(plugins=[FakesPlugin()], settings={"server": ServerSettings}, migrate=True) as lap:
        settings: ServerSettings = lap.settings_of("server")
        config = uvicorn.Config(
            create_app(lap, settings),
            port=settings.lap_port,
            log_level="warning",
            lifespan="off",
            backlog=4096,
            timeout_graceful_shutdown=5,
        )
        server = _Server(config)

        async def stop_on_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    server.should_exit = True

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(stop_on_signals)
            await server.serve()
            tasks.cancel_scope.cancel()


# --- subscribers (this process) ------------------------------------------------------------------


class _Event(msgspec.Struct):
    type: str


class _Record(msgspec.Struct):
    seq: int
    at: datetime
    event: _Event


_decode = msgspec.json.Decoder(_Record).decode


class Subscriber:
    """One SSE connection; records (receipt - append) for every event it gets."""

    def __init__(self, session_id: str, after: int) -> None:
        self.session_id = session_id
        self.after = after
        self.last_seq = after
        self.latencies: list[float] = []
        self.connected = asyncio.Event()
        self.error: str | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def run(self, port: int, gate: asyncio.Semaphore) -> None:
        try:
            async with gate:
                reader, self._writer = await asyncio.open_connection("127.0.0.1", port)
                request = (
                    f"GET /api/sessions/{self.session_id}/events?after={self.after} HTTP/1.1\r\n"
                    f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {KEY}\r\nAccept: text/event-stream\r\n\r\n"
                )
                self._writer.write(request.encode())
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head.decode(errors="replace").splitlines()[0])
                chunked = b"transfer-encoding: chunked" in head.lower()
                self.connected.set()
            await self._read(reader, chunked)
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as error:
            self.error = f"{type(error).__name__}: {error}"
            self.connected.set()

    async def _read(self, reader: asyncio.StreamReader, chunked: bool) -> None:
        body = b""  # the SSE text, de-chunked
        raw = b""  # bytes read, not yet de-chunked
        while data := await reader.read(65536):
            now = time.time()
            if chunked:
                raw += data
                while (end := raw.find(b"\r\n")) >= 0:
                    size = int(raw[:end].split(b";")[0], 16)
                    if len(raw) < end + 2 + size + 2:
                        break
                    body += raw[end + 2 : end + 2 + size]
                    raw = raw[end + 2 + size + 2 :]
            else:
                body += data
            *messages, body = body.split(b"\r\n\r\n")
            for message in messages:
                for row in message.split(b"\r\n"):
                    if row.startswith(b"data: "):
                        record = _decode(row[6:])
                        self.latencies.append(now - record.at.timestamp())
                        self.last_seq = record.seq

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


# --- the benchmark -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))


async def wait_until(predicate: object, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


async def drive_api(api: httpx.AsyncClient, sessions: list[str], turns: int, interval: float) -> None:
    """POST `turns` messages per session, one tick every `interval` s (open loop); return after the last turn."""
    posts = []
    start = time.monotonic()
    for tick in range(turns):
        await asyncio.sleep(max(0.0, start + tick * interval - time.monotonic()))
        last = tick == turns - 1
        for session_id in sessions:
            url = f"/api/sessions/{session_id}/messages" + ("?wait=true" if last else "")
            posts.append(asyncio.create_task(api.post(url, json={"text": f"tick {tick}"})))
    for response in await asyncio.gather(*posts):
        assert response.status_code in (200, 202), response.text


async def drive_store(url: str, sessions: list[str], turns: int, interval: float) -> None:
    """Append EVENTS_PER_TICK events per session and tick straight to the store, one transaction each."""
    from lap_sql import SqlStore

    async with SqlStore(url) as store:
        start = time.monotonic()
        for tick in range(turns):
            await asyncio.sleep(max(0.0, start + tick * interval - time.monotonic()))
            for session_id in sessions:
                for index in range(EVENTS_PER_TICK):
                    await store.append_events(session_id, [TextDelta(text=f"tick {tick}.{index}")])


async def drive(args: argparse.Namespace, api: httpx.AsyncClient, database: str, sessions: list[str]) -> None:
    if args.source == "api":
        await drive_api(api, sessions, args.turns, args.interval)
    else:
        await drive_store(database, sessions, args.turns, args.interval)


async def last_seq(api: httpx.AsyncClient, session_id: str) -> int:
    history = (await api.get(f"/api/sessions/{session_id}/messages")).json()
    return int(history[-1]["seq"]) if history else 0


async def run(args: argparse.Namespace, path: Path) -> None:
    raise_fd_limit(args.subscribers + 256)
    port = free_port()
    async with AsyncExitStack() as stack:
        postgres = args.store == "postgres"
        database = await stack.enter_async_context(pg_database()) if postgres else f"sqlite:///{path}/lap.db"
        env = lap_env(
            path,
            LAP_SANDBOX_BACKEND="process",
            LITELLM_API_BASE="http://127.0.0.1:9",
            LITELLM_API_KEY="k",
            MASTER_KEY=KEY,
            LAP_PORT=str(port),
            LAP_RATE_LIMIT="0",  # 1,000 streams of one key are far above the default per-key limit
            HOME=os.environ.get("HOME", "/root"),
            DATABASE_URL=database,
        )
        server = subprocess.Popen([sys.executable, __file__, "--serve"], env=env)  # noqa: ASYNC220 - returns at once

        def stop_server() -> None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

        stack.callback(stop_server)
        headers = {"Authorization": f"Bearer {KEY}"}
        api = await stack.enter_async_context(
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120)
        )

        async def healthy() -> bool:
            try:
                return (await api.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        deadline = time.monotonic() + 60
        while not await healthy():
            assert server.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not come up"
            await asyncio.sleep(0.1)

        assert (await api.post("/api/agents", json={"name": "bench", "harness": "script", "model": "n"})).is_success
        sessions = [
            (await api.post("/api/sessions", json={"agent_id": "bench"})).json()["id"] for _ in range(args.sessions)
        ]
        for session_id in sessions:  # starts each session's sandbox
            done = await api.post(f"/api/sessions/{session_id}/messages?wait=true", json={"text": "warm up"})
            assert done.status_code == 200, done.text

        # Warm the SSE path (imports, caches) with a few subscribers, so the baseline is fair.
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        warm = [Subscriber(sessions[0], await last_seq(api, sessions[0])) for _ in range(16)]
        warm_tasks = [asyncio.create_task(s.run(port, gate)) for s in warm]
        await asyncio.gather(*(s.connected.wait() for s in warm))
        await api.post(f"/api/sessions/{sessions[0]}/messages?wait=true", json={"text": "warm up the streams"})
        target = await last_seq(api, sessions[0])
        await wait_until(lambda: all(s.last_seq >= target for s in warm), 30)
        for s in warm:
            s.close()
        await asyncio.gather(*warm_tasks)
        # The same events with no subscribers: what the turns alone cost the server (subtracted below).
        cpu_start, drive_start = cpu_seconds(server.pid), time.monotonic()
        await drive(args, api, database, sessions)
        drive_alone = time.monotonic() - drive_start
        cpu_alone = cpu_seconds(server.pid) - cpu_start
        await asyncio.sleep(1.0)
        rss_before = rss_kib(server.pid)

        starts = {session_id: await last_seq(api, session_id) for session_id in sessions}
        subscribers = [Subscriber(sessions[i % len(sessions)], 0) for i in range(args.subscribers)]
        for s in subscribers:
            s.after = s.last_seq = starts[s.session_id]
        began = time.monotonic()
        tasks = [asyncio.create_task(s.run(port, gate)) for s in subscribers]
        await asyncio.gather(*(s.connected.wait() for s in subscribers))
        connect_seconds = time.monotonic() - began
        errors = [s.error for s in subscribers if s.error]
        assert not errors, f"{len(errors)} subscribers failed, e.g. {errors[0]}"
        await asyncio.sleep(SETTLE_SECONDS)
        cpu_idle_start, idle_start = cpu_seconds(server.pid), time.monotonic()
        rss_connected = rss_kib(server.pid)
        await asyncio.sleep(SETTLE_SECONDS)
        idle_cpu = (cpu_seconds(server.pid) - cpu_idle_start) / (time.monotonic() - idle_start)

        cpu_start, drive_start = cpu_seconds(server.pid), time.monotonic()
        await drive(args, api, database, sessions)
        drive_seconds = time.monotonic() - drive_start
        ends = {session_id: await last_seq(api, session_id) for session_id in sessions}
        caught_up = await wait_until(lambda: all(s.last_seq >= ends[s.session_id] for s in subscribers), 120)
        deliver_seconds = time.monotonic() - drive_start
        cpu_events = cpu_seconds(server.pid) - cpu_start
        rss_after, rss_peak = rss_kib(server.pid), rss_kib(server.pid, "VmHWM")
        for s in subscribers:
            s.close()
        await asyncio.gather(*tasks)

    appended = sum(ends[sid] - starts[sid] for sid in sessions)
    expected = sum(ends[s.session_id] - starts[s.session_id] for s in subscribers)
    latencies = [x for s in subscribers for x in s.latencies]
    store = "PostgreSQL" if args.store == "postgres" else "SQLite"
    per_stream = (rss_connected - rss_before) / args.subscribers
    print(
        f"{args.subscribers} SSE subscribers on {args.sessions} session(s), one server process; store {store};"
        f" events from {args.source}: {args.turns} ticks x {EVENTS_PER_TICK} events per session every"
        f" {args.interval} s\n"
    )
    print(f"connect: all {args.subscribers} streams open (200 + headers) in {connect_seconds:.2f} s")
    print(f"server VmRSS before subscribers     {rss_before / 1024:8.1f} MiB")
    print(f"server VmRSS all connected (idle)   {rss_connected / 1024:8.1f} MiB")
    print(f"server VmRSS after the events       {rss_after / 1024:8.1f} MiB   (VmHWM {rss_peak / 1024:.1f} MiB)")
    verdict = "met" if per_stream <= 50 else "NOT met"
    print(f"RSS per stream                      {per_stream:8.1f} KiB   (target <= 50 KiB: {verdict})")
    print(f"server CPU with all streams idle    {idle_cpu * 100:8.1f} % of a core")
    print(
        f"\nevents appended {appended} in {drive_seconds:.2f} s (open loop; {drive_alone:.2f} s with no subscribers);"
        f" deliveries {len(latencies)} of {expected} expected"
        f" ({'all caught up' if caught_up else 'NOT all caught up within 120 s'})"
        f" {deliver_seconds:.2f} s after the first tick"
    )
    fanout_cpu = cpu_events - cpu_alone
    print(
        f"server CPU for the events           {cpu_events:8.2f} s  (the same events, no subscribers: {cpu_alone:.2f} s;"
        f" fan-out costs {fanout_cpu:.2f} s = {fanout_cpu / max(1, len(latencies)) * 1e6:.0f} us per delivery)"
    )
    print(line("delivery latency (append -> receipt)", latencies))


def main() -> None:
    if sys.argv[1:] == ["--serve"]:
        raise_fd_limit(65536)
        logging.getLogger("httpx").setLevel(logging.WARNING)
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        anyio.run(serve)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1000, help="concurrent SSE streams (default 1000)")
    parser.add_argument("--sessions", type=int, default=1, help="sessions the streams are spread over (default 1)")
    parser.add_argument("--turns", type=int, default=10, help="ticks of 5 events per session (default 10)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between ticks (default 1.0)")
    parser.add_argument("--source", choices=("api", "store"), default="api", help="who appends the events")
    parser.add_argument("--store", choices=("postgres", "sqlite"), default="postgres", help="default postgres")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with data_dir() as path:
        asyncio.run(run(args, path))


if __name__ == "__main__":
    main()
