"""Durable delivery to an integration across real worker processes: kill -9 one mid-delivery, and every
event still arrives, in order per session, with the same key each time it arrives again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from lap_core import Agent, Session, Team, TextDelta, new_id
from lap_sql import SqlStore
from tests.fakes.recording_integration import NAME, read
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[2]
SESSIONS = 3
EVENTS = 40
"""Events appended to each session before the first worker dies, and as many again after."""


class Workers:
    """`python -m tests.fakes.recording_integration` processes (LAP workers with the recorder)."""

    def __init__(self, data_dir: Path, database_url: str) -> None:
        self.data_dir = data_dir
        self.recorded = data_dir / "deliveries.jsonl"
        self.env = {
            **lap_env(
                data_dir,
                LAP_SANDBOX_BACKEND="process",
                LITELLM_API_BASE="http://127.0.0.1:9",
                LITELLM_API_KEY="k",
                LAP_JOB_LEASE="1",  # the integration's lease too: a dead worker's is taken over within a second
                RECORDER_FILE=str(self.recorded),
                RECORDER_DELAY="0.02",  # a worker is inside a delivery most of the time: killed mid-delivery
                DATABASE_URL=database_url,
            ),
            "PYTHONPATH": str(REPO),
        }
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        with (self.data_dir / "workers.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.fakes.recording_integration"],
                env=self.env,
                cwd=self.data_dir,
                stdout=log,
                stderr=log,
            )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def log(self) -> str:
        path = self.data_dir / "workers.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{data_dir / 'lap.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.fixture
def workers(data_dir: Path, database_url: str) -> Iterator[Workers]:
    running = Workers(data_dir, database_url)
    yield running
    running.stop()


async def _until(workers: Workers, check: Any, what: str) -> None:
    with anyio.move_on_after(60):
        while not check():
            assert all(p.poll() in (None, -signal.SIGKILL) for p in workers.processes), workers.log()
            await anyio.sleep(0.05)
        return
    pytest.fail(f"timed out waiting for {what}\n{workers.log()}")


async def test_every_event_survives_a_worker_killed_mid_delivery(database_url: str, workers: Workers) -> None:
    async with SqlStore(database_url) as store:
        await store.migrate()
        team = await store.create_team(Team(id=new_id("team"), name="t"))
        agent = await store.create_agent(Agent(id=new_id("agt"), team_id=team.id, name="a", harness="h", model="m"))
        sessions = [
            await store.create_session(Session(id=new_id("ses"), team_id=team.id, agent_id=agent.id))
            for _ in range(SESSIONS)
        ]

        async def append(count: int) -> None:
            for session in sessions:
                await store.append_events(session.id, [TextDelta(text=str(i)) for i in range(count)])

        await append(EVENTS)
        first = workers.start()
        await _until(workers, lambda: len(read(workers.recorded)) >= EVENTS, "the first worker's deliveries")
        os.kill(first.pid, signal.SIGKILL)  # mid-delivery: it sleeps in each one
        first.wait(5)
        delivered_by_first = len(read(workers.recorded))
        second, third = workers.start(), workers.start()
        await append(EVENTS)
        expected = {(session.id, seq) for session in sessions for seq in range(1, 2 * EVENTS + 1)}
        await _until(
            workers,
            lambda: {(d["session_id"], d["seq"]) for d in read(workers.recorded)} >= expected,
            "every event",
        )

    deliveries = read(workers.recorded)
    assert delivered_by_first < SESSIONS * EVENTS, "the first worker was not killed mid-delivery"
    # Every event at least once, each with its one key: a repeated delivery is recognisable.
    assert {(d["session_id"], d["seq"]) for d in deliveries} == expected
    assert all(d["key"] == f"{NAME}:{d['session_id']}:{d['seq']}" for d in deliveries)
    # In log order per session: each process goes on from the cursor with no gap and never goes back.
    by_session: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for delivery in deliveries:
        by_session[delivery["session_id"]].append(delivery)
    for run in by_session.values():
        highest = 0
        for previous, delivery in zip([None, *run], run, strict=False):
            if previous is not None and previous["pid"] == delivery["pid"]:
                assert delivery["seq"] in (previous["seq"], previous["seq"] + 1), run  # a retry, or the next one
            assert delivery["seq"] <= highest + 1, f"a gap before {delivery}"
            highest = max(highest, delivery["seq"])
    # One worker at a time: after the first died, only one of the two others delivered.
    after = {d["pid"] for d in deliveries[delivered_by_first:]}
    assert len(after) == 1
    assert after <= {second.pid, third.pid}
    repeated = len(deliveries) - len(expected)
    print(f"{len(deliveries)} deliveries of {len(expected)} events: {repeated} repeated after the kill")
