"""Event log throughput on PostgreSQL: appends, and their fan-out to followers in another process.

Run: `.venv/bin/python bench/event_throughput.py [--sessions 8] [--seconds 8] [--batches 1,16,64]
[--followers 1]`.

Per batch size, on fresh sessions of a throwaway database (127.0.0.1:5432):

- appenders, in this process: one task per session calling `store.append_events(session, events)`
  with `batch` text_deltas a call, as fast as they can for `--seconds` (the store is the `SqlStore`
  a `Lap` opens for a `postgresql://` DATABASE_URL, with its pool of 10);
- followers, in a subprocess (this script with `--follow`): a `Lap` of its own on the same
  database (its own pool and LISTEN connection), following every session with `--followers`
  `lap.sessions.follow(...)` each; they hear of appends through LISTEN/NOTIFY (one NOTIFY per
  appending transaction) and re-read the log.

Figures: appended events/s (and the latency of one `append_events` call), delivered events/s
(deliveries to all followers, from the first append to the last receipt), and the delivery lag of
every event (receipt minus the record's `at`, which the store stamps just before the appending
transaction; same host clock). Target: >= 20,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import data_dir, line, percentile, pg_database

from lap_core import DEFAULT_TEAM_ID, Agent, Lap, Session, Team, TextDelta, new_id
from lap_sql import SqlStore
from tests.fakes.plugin import FakesPlugin
from tests.fixtures import lap_env

FOLLOW_TIMEOUT = 120.0
CORES = os.cpu_count() or 1


def machine_busy(since: tuple[int, int] | None = None) -> Any:
    """Return (busy, total) jiffies of all CPUs; with `since`, the busy fraction from then to now."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    now = (sum(values) - idle, sum(values))
    if since is None:
        return now
    return (now[0] - since[0]) / max(1, now[1] - since[1])


# --- followers (a subprocess) --------------------------------------------------------------------


async def follow(url: str, sessions: list[str], per_session: int) -> None:
    """Follow the sessions until told their final seqs on stdin and caught up; print figures as JSON."""
    lags: list[float] = []
    last: dict[tuple[str, int], int] = {}
    last_at = 0.0
    with data_dir() as path:
        env = lap_env(path, LAP_SANDBOX_BACKEND="process", DATABASE_URL=url)
        async with Lap(plugins=[FakesPlugin()], env=env, run_turns=False) as lap:

            async def one(session_id: str, index: int) -> None:
                nonlocal last_at
                async for record in lap.sessions.follow(session_id):
                    now = last_at = time.time()
                    lags.append(now - record.at.timestamp())
                    last[session_id, index] = record.seq

            async with anyio.create_task_group() as tasks:
                for session_id in sessions:
                    for index in range(per_session):
                        last[session_id, index] = 0
                        tasks.start_soon(one, session_id, index)
                await anyio.sleep(1.0)  # the LISTEN connection is up and every follower waits
                print("ready", flush=True)
                cpu_start = time.process_time()
                ends = json.loads(await anyio.to_thread.run_sync(sys.stdin.readline))
                deadline = time.monotonic() + FOLLOW_TIMEOUT
                while any(seq < ends[session_id] for (session_id, _), seq in last.items()):
                    if time.monotonic() > deadline:
                        break
                    await anyio.sleep(0.01)
                cpu = time.process_time() - cpu_start
                tasks.cancel_scope.cancel()
    summary = {
        "cpu": cpu,
        "delivered": len(lags),
        "last_at": last_at,
        "lag": {q: percentile(lags, q) for q in (50, 90, 99, 100)} if lags else {},
        "behind": sum(1 for (session_id, _), seq in last.items() if seq < ends[session_id]),
    }
    print(json.dumps(summary), flush=True)


# --- appenders and the benchmark -----------------------------------------------------------------


async def append_for(store: SqlStore, session_id: str, batch: int, until: float, calls: list[float]) -> int:
    """Append `batch` events a call until the monotonic clock reaches `until`; return the events appended."""
    appended = 0
    events = [TextDelta(text=f"event {i} of a batch: some text of a typical delta") for i in range(batch)]
    while time.monotonic() < until:
        start = time.perf_counter()
        await store.append_events(session_id, events)
        calls.append(time.perf_counter() - start)
        appended += batch
    return appended


async def phase(store: SqlStore, url: str, agent: Agent, batch: int, args: argparse.Namespace) -> None:
    sessions = []
    for _ in range(args.sessions):
        session = Session(id=new_id("ses"), team_id=DEFAULT_TEAM_ID, agent_id=agent.id)
        sessions.append((await store.create_session(session)).id)
    follower = subprocess.Popen(  # noqa: ASYNC220 - returns at once
        [sys.executable, __file__, "--follow", url, str(args.followers), *sessions],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        assert follower.stdin is not None
        ready = await anyio.to_thread.run_sync(follower.stdout.readline)
        assert ready.strip() == "ready", ready
        calls: list[float] = []
        busy_start, cpu_start = machine_busy(), time.process_time()
        started_wall, started = time.time(), time.monotonic()
        until = started + args.seconds
        counts = await asyncio.gather(*(append_for(store, s, batch, until, calls) for s in sessions))
        elapsed = time.monotonic() - started
        cpu = time.process_time() - cpu_start
        follower.stdin.write(json.dumps({s: (await store.get_session(s)).last_seq for s in sessions}) + "\n")
        follower.stdin.flush()
        result = json.loads(await anyio.to_thread.run_sync(follower.stdout.readline))
        busy = machine_busy(busy_start)
    finally:
        if follower.poll() is None:
            follower.wait(timeout=30)
    appended = sum(counts)
    delivered = result["delivered"]
    expected = appended * args.followers
    span = result["last_at"] - started_wall
    lag = result["lag"]
    behind = f"; {result['behind']} followers NOT caught up" if result["behind"] else ""
    print(f"batch {batch:>3}, {args.sessions} sessions in parallel, {args.followers} follower(s) each")
    print(
        f"  appended  {appended:>9,} events in {elapsed:6.2f} s = {appended / elapsed:>9,.0f} events/s"
        f"   ({len(calls):,} append_events calls = {len(calls) / elapsed:,.0f} transactions/s)"
    )
    print(line("  append_events call", calls, width=28))
    print(
        f"  delivered {delivered:>9,} events in {span:6.2f} s = {delivered / span:>9,.0f} events/s"
        f"   (of {expected:,} expected{behind}; first append to last receipt)"
    )
    follower_cpu = result["cpu"] / max(1, delivered) * 1e6
    print(
        f"  CPU per event: appenders {cpu / appended * 1e6:.0f} us, followers {follower_cpu:.0f} us;"
        f" the machine's {CORES} cores {busy * 100:.0f} % busy (PostgreSQL included)"
    )
    if lag:
        print(
            f"  {'delivery lag':<26} p50 {lag['50'] * 1000:8.2f} ms   p90 {lag['90'] * 1000:8.2f}"
            f"   p99 {lag['99'] * 1000:8.2f}   max {lag['100'] * 1000:8.2f}"
        )
    print()


async def run(args: argparse.Namespace) -> None:
    async with pg_database() as url, SqlStore(url) as store:
        await store.migrate()
        await store.create_team(Team(id=DEFAULT_TEAM_ID, name="default"))
        agent = await store.create_agent(
            Agent(id=new_id("agt"), team_id=DEFAULT_TEAM_ID, name="bench", harness="script", model="none")
        )
        print(f"event log throughput on PostgreSQL, {args.seconds:g} s of appends per batch size\n")
        for batch in args.batches:
            await phase(store, url, agent, batch, args)
        print("target: >= 20,000 events/s")


def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if sys.argv[1:2] == ["--follow"]:
        url, per_session, *sessions = sys.argv[2:]
        anyio.run(follow, url, sessions, int(per_session))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=8, help="sessions appended to in parallel (default 8)")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of appends per batch size (default 8)")
    parser.add_argument(
        "--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64], help="default 1,16,64"
    )
    parser.add_argument("--followers", type=int, default=1, help="followers per session (default 1)")
    anyio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
