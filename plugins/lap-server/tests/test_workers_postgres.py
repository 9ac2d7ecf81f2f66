"""The production shape over real processes: `lap serve --no-worker` plus two `lap worker`s on one PostgreSQL database.

The cluster (tests/cluster.py) runs the real `lap` command in every process, on a fresh
database and data directory, with the test fakes loaded from an entry point. Each turn
runs `run: CMD`, and every CMD makes a file of its own under `runs/`: the files of a message
count how many times its turn really ran.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from lap_sql import SqlStore
from tests.cluster import Cluster, api_client, cluster_env, running_cluster, sse_records

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import httpx

    from lap_core import Job

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

LEASE = 3  # seconds: a dead worker's job is taken over this soon
WORKER_CONCURRENCY = 8
"""`Worker`'s default concurrency (`lap worker` has no setting for it): jobs one worker runs at once."""


@pytest.fixture
def cluster(data_dir: Path, pg_database: str, tmp_path: Path) -> Iterator[Cluster]:
    env = cluster_env(data_dir, pg_database, tmp_path / "entry-point", LAP_JOB_LEASE=str(LEASE))
    with running_cluster(data_dir, env, tmp_path / "logs") as cluster:
        yield cluster


async def _sessions(api: httpx.AsyncClient, count: int) -> list[str]:
    agent = await api.post("/api/agents", json={"name": "pg-agent", "harness": "script", "model": "m"})
    assert agent.status_code == 201, agent.text
    ids = []
    for _ in range(count):
        created = await api.post("/api/sessions", json={"agent_id": "pg-agent"})
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    return ids


async def _send(api: httpx.AsyncClient, session: str, text: str) -> str:
    accepted = await api.post(f"/api/sessions/{session}/messages", json={"text": text})
    assert accepted.status_code == 202, accepted.text
    turn_id: str = accepted.json()["turn_id"]
    return turn_id


async def _follow(api: httpx.AsyncClient, session: str, turns: int) -> list[dict[str, Any]]:
    """Follow the session's SSE stream from the start until `turns` turns have ended; return its records."""
    records: list[dict[str, Any]] = []
    async with api.stream("GET", f"/api/sessions/{session}/events", timeout=None) as stream:
        assert stream.status_code == 200
        async for record in sse_records(stream):
            records.append(record)
            if sum(r["event"]["type"] == "turn_end" for r in records) == turns:
                return records
    raise AssertionError(f"the event stream of {session} ended early: {records}")


async def _history(api: httpx.AsyncClient, session: str) -> list[dict[str, Any]]:
    history = await api.get(f"/api/sessions/{session}/messages")
    assert history.status_code == 200, history.text
    records: list[dict[str, Any]] = history.json()
    return records


async def _jobs(url: str) -> list[Job]:
    async with SqlStore(url) as store:
        return await store.list_jobs(limit=1000)


def _of_turn(records: list[dict[str, Any]], turn_id: str) -> list[dict[str, Any]]:
    """The turn's events, minus the sandbox's `status` events (only the first turn of a session has them)."""
    return [r["event"] for r in records if r["turn_id"] == turn_id and r["event"]["type"] != "status"]


def _ran_once(events: list[dict[str, Any]], tag: str, native: str) -> None:
    """Assert that the turn's events are one complete run of `Cluster.command(tag)`: each reply exactly once."""
    types = [e["type"] for e in events]
    assert types == ["user_message", "harness_session", "tool_call", "tool_result", "text_delta", "turn_end"], events
    assert events[1]["native_session_id"] == native  # the turn before it had ended, wherever it ran
    assert events[3]["output"].strip().splitlines()[0] == tag
    assert events[-1]["status"] == "completed", events


def _timeline(histories: dict[str, list[dict[str, Any]]], turns: dict[str, str], worker: dict[str, str]) -> str:
    """When each of the turns' events happened (for failure messages)."""
    start = min(datetime.fromisoformat(r["at"]) for records in histories.values() for r in records)
    lines = []
    for session, turn_id in turns.items():
        events = [r for r in histories[session] if r["turn_id"] == turn_id]
        at = [f"{r['event']['type']}@{(datetime.fromisoformat(r['at']) - start).total_seconds():.2f}" for r in events]
        lines.append(f"{session} {turn_id} on {worker.get(turn_id)}: {' '.join(at)}")
    return "\n".join(lines)


def _assert_one_log(records: list[dict[str, Any]], turn_ids: list[str]) -> None:
    """Assert seqs 1..n, and that turns replied one after the other in the order they were sent."""
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    replying = [r["turn_id"] for r in records if r["event"]["type"] != "user_message"]
    assert [t for i, t in enumerate(replying) if i == 0 or replying[i - 1] != t] == turn_ids, replying
    ends = [r["turn_id"] for r in records if r["event"]["type"] == "turn_end"]
    assert ends == turn_ids  # one `turn_end` per turn, in order
    for turn_id in turn_ids:
        sent = next(r["seq"] for r in records if r["turn_id"] == turn_id)
        assert records[sent - 1]["event"]["type"] == "user_message"  # a turn's first event is its message


async def test_two_workers_share_the_queue_and_run_every_turn_once_in_order(cluster: Cluster, pg_database: str) -> None:
    sessions, messages = WORKER_CONCURRENCY + 2, 4
    # Each session's first turn waits until the first turns of all sessions run at once: more than
    # one worker may run, so both must have leased some (deterministic, however jobs are leased).
    barrier = cluster.data_dir / "barrier"
    barrier.mkdir()
    wait = (  # no process but `sleep` per check (shell built-ins): the turns must not starve the workers
        f"touch {barrier}/$$; n=0; set -- {barrier}/*; while [ $# -lt {sessions} ] && [ $n -lt 300 ];"
        f" do sleep 0.1; n=$((n + 1)); set -- {barrier}/*; done; echo $#"
    )
    started = time.monotonic()
    async with api_client(cluster) as api:
        ids = await _sessions(api, sessions)
        turns: dict[str, list[str]] = {}

        async def send_all(i: int, session: str) -> None:
            texts = [cluster.command(f"s{i}m{j}", wait if j == 0 else "") for j in range(messages)]
            turns[session] = [await _send(api, session, text) for text in texts]

        followed: dict[str, list[dict[str, Any]]] = {}

        async def follow(session: str) -> None:
            followed[session] = await _follow(api, session, messages)

        with anyio.fail_after(45):
            async with anyio.create_task_group() as tasks:
                for i, session in enumerate(ids):
                    tasks.start_soon(send_all, i, session)
                    tasks.start_soon(follow, session)
        histories = {session: await _history(api, session) for session in ids}
    elapsed = time.monotonic() - started

    jobs = await _jobs(pg_database)
    worker = {str(job.payload["turn_id"]): cluster.worker_of(job) for job in jobs}
    for i, session in enumerate(ids):
        records = histories[session]
        assert followed[session] == records  # the live stream (fed by the workers' NOTIFYs) is the log
        _assert_one_log(records, turns[session])
        for j, turn_id in enumerate(turns[session]):
            events = _of_turn(records, turn_id)
            _ran_once(events, f"s{i}m{j}", native=f"native-{j + 1}")
            assert cluster.executions(f"s{i}m{j}") == 1
        first = _of_turn(records, turns[session][0])[3]["output"].strip().splitlines()
        assert first[-1] == str(sessions), (
            f"first turns running at once: {first[-1]}, not {sessions}\n"
            f"{_timeline(histories, {s: t[0] for s, t in turns.items()}, worker)}\n{cluster.log_text()}"
        )

    assert sorted(worker) == sorted(t for ts in turns.values() for t in ts)
    assert {(job.status, job.attempts) for job in jobs} == {("done", 1)}  # no job was leased twice
    by_worker = Counter(worker.values())
    assert set(by_worker) == {"worker-a", "worker-b"}, by_worker
    print(f"{len(jobs)} turns in {elapsed:.1f} s, by worker: {dict(by_worker)}")


async def test_a_killed_workers_turn_is_resumed_by_another_and_ends_once(cluster: Cluster, pg_database: str) -> None:
    async with api_client(cluster) as api:
        victim_session, other = await _sessions(api, 2)
        hang = cluster.command("v0", f"sleep {LEASE * 3}; echo v0")  # outlasts the kill and the lease
        victim_turns = [await _send(api, victim_session, text) for text in (hang, *map(cluster.command, ("v1", "v2")))]
        deadline = time.monotonic() + 20
        while not cluster.executions("v0"):
            assert time.monotonic() < deadline, f"the first turn did not start\n{cluster.log_text()}"
            await anyio.sleep(0.05)
        (leased,) = [job for job in await _jobs(pg_database) if job.payload["turn_id"] == victim_turns[0]]
        assert leased.status == "leased"
        victim = cluster.worker_of(leased)
        (survivor,) = set(cluster.workers) - {victim}
        cluster.kill(victim)  # mid-turn: SIGKILL, no chance to end its turn or release its lease
        killed_at = time.monotonic()

        # The survivor serves other sessions meanwhile: jobs are not stuck behind the dead lease.
        for j in range(2):
            done = await api.post(
                f"/api/sessions/{other}/messages?wait=true", json={"text": cluster.command(f"o{j}")}, timeout=20
            )
            assert done.status_code == 200, done.text
            assert done.json()["status"] == "completed", done.json()
        assert time.monotonic() - killed_at < 15, "the other session waited for the dead worker's lease"

        with anyio.fail_after(60):  # the lease runs out first
            records = await _follow(api, victim_session, len(victim_turns))
        taken_over_after = time.monotonic() - killed_at
        assert records == await _history(api, victim_session)
        other_records = await _history(api, other)

    _assert_one_log(records, victim_turns)
    resumed = _of_turn(records, victim_turns[0])
    # The survivor re-attached to its process (still running in the sandbox, never started again)
    # and logged only what the dead worker had not: each event once, one turn_end.
    assert [e["type"] for e in resumed] == [
        "user_message",
        "harness_session",
        "tool_call",
        "tool_result",
        "text_delta",
        "turn_end",
    ], resumed
    assert resumed[3]["output"].endswith("v0")
    assert resumed[5]["status"] == "completed"
    phases = [
        r["event"]["phase"] for r in records if r["turn_id"] == victim_turns[0] and r["event"]["type"] == "status"
    ]
    assert phases[-1] == "turn_resumed"
    assert cluster.executions("v0") == 1
    # The turns queued behind it ran on the survivor, in order, once each.
    for j in (1, 2):
        _ran_once(_of_turn(records, victim_turns[j]), f"v{j}", native=f"native-{j + 1}")
        assert cluster.executions(f"v{j}") == 1
    other_turns = [r["turn_id"] for r in other_records if r["event"]["type"] == "user_message"]
    _assert_one_log(other_records, other_turns)
    for j, turn_id in enumerate(other_turns):
        _ran_once(_of_turn(other_records, turn_id), f"o{j}", native=f"native-{j + 1}")
        assert cluster.executions(f"o{j}") == 1

    jobs = {str(job.payload["turn_id"]): job for job in await _jobs(pg_database)}
    taken = jobs[victim_turns[0]]
    assert (taken.status, taken.attempts, cluster.worker_of(taken)) == ("done", 2, survivor), taken
    for turn_id in [*victim_turns[1:], *other_turns]:
        job = jobs[turn_id]
        assert (job.status, job.attempts, cluster.worker_of(job)) == ("done", 1, survivor), job
    assert cluster.processes[survivor].poll() is None
    print(f"taken over {taken_over_after:.1f} s after the kill")
