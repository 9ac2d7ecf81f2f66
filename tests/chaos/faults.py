"""The faults of a chaos run: where they hit, how they are injected, when their turns are going again."""

from __future__ import annotations

import functools
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import anyio

from tests.chaos.clients import SessionClient
from tests.chaos.models import in_flight
from tests.chaos.processes import Supervisor, kill_sandbox, vault_holder

if TYPE_CHECKING:
    import httpx

    from lap_sql import SqlStore
    from tests.chaos.postgres import PrivatePostgres
    from tests.cluster import Cluster
    from tests.fakes.llm_server import FakeLLM

SESSIONS = 4
PG_DOWN = 1.0
RECOVERY_DEADLINE = 60.0
"""Seconds within which every turn a fault interrupted must be going again."""
HIT_LINES = (3, 8)
"""A fault hits a turn whose current attempt has streamed this many lines (so it is mid-stream)."""


@dataclass
class Fault:
    kind: str
    at: float  # monotonic
    wall: datetime
    hit: list[tuple[SessionClient, str]]  # the clients and turns it interrupted
    connections: dict[str, int]  # session -> the client's SSE connections at the fault
    detail: str = ""
    # The model streams of other processes' turns in flight at the fault: (client, turn id, request index).
    spared: list[tuple[SessionClient, str, int]] = field(default_factory=list)


def _when(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record["at"])


REPLY = frozenset({"text_delta", "tool_call", "tool_result", "error", "turn_end"})
"""The events that make a reply (as opposed to the platform's `status` events)."""


def recovered(fault: Fault, client: SessionClient, turn_id: str) -> float | bool | None:
    """Seconds from the fault until the turn's reply went on, on the client's stream.

    That is the first reply event of the turn the client received after the fault that the fault
    did not let through: logged after the fault; for a worker fault, logged by the worker that took
    the turn over (after its `turn_resumed`); for a web fault, received on a connection opened
    after the fault; for a lost sandbox, of the attempt that started over (after `turn_restarted`).
    None: not yet. False: the turn ended without the fault touching it (a SIGTERMed worker
    finished it within its grace).
    """
    end = client.ended.get(turn_id)
    if end is not None and client.arrivals[end].at < fault.at:
        return False  # it ended before the fault
    taken_over = False
    for record, arrival in zip(client.records, client.arrivals, strict=True):
        if record["turn_id"] != turn_id or arrival.at < fault.at:
            continue
        event = record["event"]
        if event["type"] == "status":
            taken_over = taken_over or event["phase"] in ("turn_resumed", "turn_restarted")
            continue
        if event["type"] not in REPLY:
            continue
        new = _when(record) >= fault.wall
        if fault.kind == "kill_web":
            going = new and arrival.connection > fault.connections[client.session_id]
        elif fault.kind in ("kill_worker", "sigterm_worker", "kill_sandbox", "kill_vault_worker"):
            going = new and taken_over
        else:
            going = new
        if going:
            return arrival.at - fault.at
        if event["type"] == "turn_end":
            # It ended untouched: before the fault (logged before it, received after), or within a
            # SIGTERMed worker's grace. Ended otherwise, it is answered: that counts as recovered.
            return arrival.at - fault.at if new and fault.kind != "sigterm_worker" else False
    return None


def _going(fault: Fault, client: SessionClient, turn_id: str) -> bool:
    return recovered(fault, client, turn_id) is not None


class Chaos:
    """One chaos run: the cluster, its supervisor, the clients, the faults."""

    def __init__(
        self,
        kind: str,
        cluster: Cluster,
        pg: PrivatePostgres,
        store: SqlStore | None,
        api: httpx.AsyncClient,
        llm: FakeLLM,
    ) -> None:
        self.kind = kind
        self.llm = llm
        self.cluster = cluster
        self.pg = pg
        self.store = store
        self.api = api
        self.supervisor = Supervisor(cluster)
        self.clients: list[SessionClient] = []
        self.faults: list[Fault] = []
        self.random = random.Random(kind)

    def mid_stream(self) -> list[tuple[SessionClient, str]]:
        """The clients whose current turn is streaming, `HIT_LINES` lines into its current attempt, unhit so far.

        A turn is the target of one fault at most: each fault interrupts a turn running normally
        (a turn whose sandbox is lost again and again fails on purpose: `SANDBOX_RETRIES`).
        """
        hit = {turn_id for fault in self.faults for _, turn_id in fault.hit}
        hits = []
        for client in self.clients:
            current = client.current
            if current is not None and current.kind in ("stream", "model") and current.turn_id not in hit:
                if HIT_LINES[0] <= client.lines_of(current.turn_id) <= HIT_LINES[1]:
                    hits.append((client, current.turn_id))
        return hits

    def in_progress(self) -> list[tuple[SessionClient, str]]:
        return [(c, c.current.turn_id) for c in self.clients if c.current is not None]

    async def _target(self) -> tuple[SessionClient, str]:
        deadline = anyio.current_time() + 60
        while not (hits := self.mid_stream()):
            assert anyio.current_time() < deadline, "no turn got mid-stream within 60 s: the cluster is stuck"
            await anyio.sleep(0.02)
        return self.random.choice(hits)

    async def _leased(self) -> dict[str, str]:
        """Turn id -> the name of our worker leasing its job."""
        assert self.store is not None
        leased = {}
        for job in await self.store.list_jobs(status="leased", limit=1000):
            # A job may still be leased by a worker killed before (until its lease runs out).
            name = self.cluster.name_of_pid(int(str(job.leased_by).split(":")[1]))
            if name is not None:
                leased[str(job.payload["turn_id"])] = name
        return leased

    def _before_settled(self) -> bool:
        """Whether every turn an earlier fault hit has ended.

        Until then, a model stream the fault cut may be going again through the shared socket,
        served by a process that does not run its turn (no process runs it until it is resumed).
        """
        return all(client.has_ended(turn_id) for fault in self.faults for client, turn_id in fault.hit)

    async def _vault_target(self) -> tuple[str, dict[str, str], list[tuple[SessionClient, str, int]]]:
        """Wait until the worker serving the shared socket has a turn mid-stream and another worker a model call.

        Return that worker's name, which worker leases which turn, and the other workers' streams in flight.
        """
        deadline = anyio.current_time() + 60
        seen: Counter[str] = Counter()  # why each look found no moment (for the failure's message)
        while True:
            assert anyio.current_time() < deadline, (
                "no turn of the vault's worker got mid-stream, with another worker's model call in flight,"
                f" within 60 s: {dict(seen)}"
            )
            await anyio.sleep(0.05)
            holder = vault_holder(self.cluster)
            if holder not in self.cluster.workers:
                seen[f"the shared socket served by {holder}"] += 1
                continue
            if not self._before_settled():
                seen["an earlier fault's turns still running"] += 1
                continue
            hits = self.mid_stream()
            if not hits:
                seen["no turn mid-stream"] += 1
                continue
            leased = await self._leased()
            flying = in_flight(self.llm.requests(), self.clients)
            others = [(c, t, i) for c, t, i in flying if leased.get(t) not in (None, holder)]
            if not any(leased.get(t) == holder for _, t in hits):
                seen["the vault's worker has no turn mid-stream"] += 1
            elif not others:
                seen["no other worker's model call in flight"] += 1
            elif holder == vault_holder(self.cluster):
                assert holder is not None
                return holder, leased, others

    async def _inject_vault(self) -> Fault:
        worker, leased, spared = await self._vault_target()
        hit = [(c, t) for c, t in self.in_progress() if leased.get(t) == worker]
        connections = {c.session_id: c.connections for c in self.clients}
        pid = self.cluster.processes[worker].pid
        tags = [c.sent[-1].tag for c, _, _ in spared]
        detail = f"{worker} (pid {pid}, serving llm.sock); other workers' model streams in flight: {tags}"
        fault = Fault(self.kind, time.monotonic(), datetime.now(UTC), hit, connections, detail, spared)
        self.supervisor.expect[worker] = "kill"
        self.cluster.processes[worker].send_signal(signal.SIGKILL)
        self.faults.append(fault)
        return fault

    async def inject(self, number: int) -> Fault:
        if self.kind == "kill_vault_worker":
            return await self._inject_vault()
        client, turn_id = await self._target()
        connections = {c.session_id: c.connections for c in self.clients}
        hit = self.in_progress()
        detail = ""
        if self.kind in ("kill_worker", "sigterm_worker"):
            leased = await self._leased()
            if turn_id not in leased or turn_id in client.ended:
                return await self.inject(number)  # it ended meanwhile: aim again
            worker = leased[turn_id]
            hit = [(c, t) for c, t in hit if leased.get(t) == worker]
            detail = worker
        fault = Fault(self.kind, time.monotonic(), datetime.now(UTC), hit, connections, detail)
        if self.kind == "kill_worker":
            self.supervisor.expect[worker] = "kill"
            self.cluster.processes[worker].send_signal(signal.SIGKILL)
        elif self.kind == "sigterm_worker":
            self.supervisor.expect[worker] = "term"
            self.cluster.processes[worker].send_signal(signal.SIGTERM)
        elif self.kind == "kill_web":
            self.supervisor.expect["web"] = "kill"
            self.cluster.processes["web"].send_signal(signal.SIGKILL)
        elif self.kind == "kill_sandbox":
            fault.hit = [(client, turn_id)]
            fault.detail = await anyio.to_thread.run_sync(kill_sandbox, self.cluster, client.session_id)
        elif self.kind == "restart_postgres":
            mode = ("fast", "immediate", "fast")[number % 3]
            fault.detail = mode
            await anyio.to_thread.run_sync(self.pg.stop, mode)
            await anyio.sleep(PG_DOWN)
            await anyio.to_thread.run_sync(self.pg.start)
        self.faults.append(fault)
        return fault

    async def settle(self, fault: Fault) -> None:
        """Wait until every turn the fault hit is going again, and every process is back up."""
        for client, turn_id in fault.hit:
            going = functools.partial(_going, fault, client, turn_id)
            if not await client.wait_for(going, RECOVERY_DEADLINE):
                raise AssertionError(
                    f"fault {len(self.faults)} ({fault.kind} {fault.detail}): turn {turn_id} of {client.session_id}"
                    f" did not go on within {RECOVERY_DEADLINE} s; its events since: "
                    f"{[r['event'] for r in client.records if r['turn_id'] == turn_id][-6:]}"
                    f"\n{self.logs_tail()}"
                )
        deadline = anyio.current_time() + 60
        while not all(map(self.supervisor.up, self.cluster.processes)):
            assert anyio.current_time() < deadline, f"a process did not come back within 60 s\n{self.logs_tail()}"
            await anyio.sleep(0.05)

    def logs_tail(self, lines: int = 30) -> str:
        return (
            "\n".join(
                f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                for path in sorted(self.cluster.logs.iterdir())
            )
            + f"\n--- postgres\n{self.pg.log_tail(15)}"
        )

    async def run(self, faults: int) -> None:
        agent = await self.api.post("/api/agents", json={"name": "chaos", "harness": "script", "model": "m"})
        assert agent.status_code == 201, agent.text
        replies: Literal["stream", "model"] = "model" if self.kind == "kill_vault_worker" else "stream"
        for i in range(SESSIONS):
            created = await self.api.post("/api/sessions", json={"agent_id": "chaos"})
            assert created.status_code == 201, created.text
            self.clients.append(SessionClient(self.api, created.json()["id"], i, replies))
        stop = anyio.Event()
        async with anyio.create_task_group() as background:
            background.start_soon(self.supervisor.run)
            for client in self.clients:
                background.start_soon(client.follow)
            async with anyio.create_task_group() as talk:
                for client in self.clients:
                    talk.start_soon(client.converse, stop)
                for number in range(faults):
                    fault = await self.inject(number)
                    await self.settle(fault)
                    await anyio.sleep(self.random.uniform(0, 0.3))
                stop.set()
            self.supervisor.stopped = True
            background.cancel_scope.cancel()
