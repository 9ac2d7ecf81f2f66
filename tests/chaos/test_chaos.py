"""Chaos: turns keep going, each answered exactly once, while processes die around them.

A cluster of real processes (tests/cluster.py: `lap serve --no-worker` and two `lap worker`s) runs
on a private PostgreSQL server (tests/chaos/postgres.py), with the shared process backend: sandboxes
are processes of their own that outlive workers. A supervisor (tests/chaos/processes.py) restarts
any web or worker process that exits (as Kubernetes would); four clients (tests/chaos/clients.py) talk to their
sessions all along: `stream: 20` turns (20 text deltas, 0.1 s apart) and, every fourth turn, one
that writes a file in the workspace. In the `kill_vault_worker` run, `model:` turns take the place
of the `stream:` ones: a process in the sandbox streams a chat completion (20 deltas, 0.1 s apart)
from the fake LLM through the sandbox's forwarder (127.0.0.1:4000, each sandboxd in a network
namespace of its own) and a worker's LLM proxy, printing each delta as it comes and making a
request whose stream broke again (tests/fakes/model_turn.py). Meanwhile faults of one kind are
injected (tests/chaos/faults.py), each while a turn is mid-stream, a turn no fault hit before:

- `kill_worker`: SIGKILL the worker running that turn (another worker takes it over once its
  lease, `LAP_JOB_LEASE`=2 s, runs out, and resumes it);
- `kill_web`: SIGKILL the web process (clients reconnect with `Last-Event-ID`);
- `kill_sandbox`: SIGKILL the session's sandbox, sandboxd and every process in it (the platform
  makes a new sandbox on the same workspace; the turn starts over: `turn_restarted`);
- `restart_postgres`: stop the database server (`fast`, `immediate` i.e. crashed, `fast`, and so on),
  keep it down for `PG_DOWN` seconds, start it again;
- `sigterm_worker`: SIGTERM the worker running that turn (it hands its turns back after
  `LAP_SHUTDOWN_GRACE`, set to 0.5 s here, and exits; another worker resumes them);
- `kill_vault_worker`: SIGKILL the worker that serves the shared socket of the LLM proxy (it holds
  the flock on `llm.lock`), while it runs that turn and a model call of the other worker's turns
  is in flight. Its turns are resumed as for `kill_worker` (their model call may be made again);
  the other worker's model streams go through its own socket and must not notice (`cut`, `spared`:
  tests/chaos/models.py).

Then tests/chaos/checks.py checks every session (every message answered once, no gap or
duplicate in the log or the stream, the files intact, the context carried on, each model turn
whose process lived called the model once and streamed its answer whole) and the figures
are printed, per kind and (at the end of the run) together. The recovery time of a fault is, for
each turn it interrupted, the time from the fault to the first event of that turn on the client's
stream that shows the turn going again (logged after the fault; for a worker fault, by the worker
that took it over; for a web fault, received on a new connection).

Run: `.venv/bin/pytest -m chaos -rA` (the figures are at the end of the output; the logs and a dump of
what each client saw, chaos.json, are in each test's tmp_path). `LAP_CHAOS_FAULTS` sets the faults
per kind (default 21: 126 in all). `-m "not chaos"` leaves the suite out (about 4.5 minutes).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from lap_core._engine.sandboxes import sandbox_name
from lap_sql import SqlStore
from tests.chaos.checks import RESULTS, Figures, check_session
from tests.chaos.clients import LINES
from tests.chaos.faults import Chaos, recovered
from tests.chaos.models import ANSWER, check_model_turns, check_spared
from tests.chaos.processes import tracebacks
from tests.cluster import Cluster, api_client, cluster_env, running_cluster
from tests.fakes.model_turn import tag_of

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.chaos.postgres import PrivatePostgres
    from tests.fakes.llm_server import FakeLLM

pytestmark = [pytest.mark.anyio, pytest.mark.chaos]

FAULTS = int(os.environ.get("LAP_CHAOS_FAULTS", "21"))
LEASE = 2
GRACE = 0.5
KINDS = ["kill_worker", "kill_web", "kill_sandbox", "restart_postgres", "sigterm_worker", "kill_vault_worker"]
MODEL_DELAY = 0.1
"""Seconds between the deltas of the fake LLM's answer."""


@pytest.fixture
def chaos_cluster(
    data_dir: Path, private_postgres: PrivatePostgres, llm: FakeLLM, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Cluster, str]]:
    database = f"chaos_{request.node.callspec.params['kind']}_{os.getpid()}"
    anyio.run(private_postgres.execute, f"CREATE DATABASE {database}")
    url = private_postgres.url(database)
    llm.script(text=ANSWER, chunks=LINES, delay=MODEL_DELAY)
    env = cluster_env(
        data_dir,
        url,
        tmp_path / "entry-point",
        llm_url=llm.url,
        LAP_JOB_LEASE=str(LEASE),
        LAP_SHUTDOWN_GRACE=str(GRACE),
        LAP_RATE_LIMIT="0",
    )
    try:
        with running_cluster(data_dir, env, tmp_path / "logs", check=False) as cluster:
            yield cluster, url
    finally:
        if not private_postgres.running():
            private_postgres.start()
        anyio.run(private_postgres.execute, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def _dump(path: Path, chaos: Chaos, histories: dict[str, list[dict[str, Any]]]) -> None:
    """Write everything the run saw, for the post-mortem of a failure (beside the processes' logs)."""
    faults = [
        {
            "kind": f.kind,
            "at": f.at,
            "wall": f.wall.isoformat(),
            "detail": f.detail,
            "hit": [t for _, t in f.hit],
            "spared": [t for _, t, _ in f.spared],
        }
        for f in chaos.faults
    ]
    sessions = {
        c.session_id: {
            "sent": [s.__dict__ for s in c.sent],
            "streamed": c.records,
            "history": histories.get(c.session_id),
            "stream_errors": c.stream_errors,
        }
        for c in chaos.clients
    }
    calls = [
        {"tag": tag_of(r), **{k: r.get(k) for k in ("started", "deltas", "ended", "outcome")}}
        for r in chaos.llm.requests()
    ]
    path.write_text(json.dumps({"faults": faults, "sessions": sessions, "model_calls": calls}, indent=1))


@pytest.mark.parametrize("kind", KINDS)
async def test_chaos(
    kind: str, chaos_cluster: tuple[Cluster, str], private_postgres: PrivatePostgres, llm: FakeLLM, tmp_path: Path
) -> None:
    cluster, url = chaos_cluster
    figures = Figures(kind)
    RESULTS[kind] = figures
    started = time.monotonic()
    histories: dict[str, list[dict[str, Any]]] = {}
    async with contextlib.AsyncExitStack() as stack:
        api = await stack.enter_async_context(api_client(cluster))
        # Which worker leases which turn (only the worker faults need it; the database must be up).
        store = await stack.enter_async_context(SqlStore(url)) if kind.endswith("_worker") else None
        chaos = Chaos(kind, cluster, private_postgres, store, api, llm)
        try:
            await chaos.run(FAULTS)
        finally:
            _dump(tmp_path / "chaos.json", chaos, histories)
        figures.seconds = time.monotonic() - started
        figures.faults = len(chaos.faults)
        for fault in chaos.faults:
            for client, turn_id in fault.hit:
                took = recovered(fault, client, turn_id)
                if took is False:
                    figures.not_interrupted += 1
                elif isinstance(took, float):
                    figures.interrupted += 1
                    figures.recovery.append(took)
        for client in chaos.clients:
            history = await api.get(f"/api/sessions/{client.session_id}/messages")
            assert history.status_code == 200, history.text
            histories[client.session_id] = history.json()
    _dump(tmp_path / "chaos.json", chaos, histories)
    requests = llm.requests()
    for client in chaos.clients:
        workspace = cluster.data_dir / "shared-process-sandboxes" / sandbox_name(client.session_id) / "workspace"
        check_session(figures, client, histories[client.session_id], workspace)
        check_model_turns(figures, client, histories[client.session_id], requests)
    proven = check_spared(figures, chaos.faults, requests)

    codes = cluster.stop()
    figures.refused_starts = sum(e.expected == "refused" for e in chaos.supervisor.exits)
    for exit_ in chaos.supervisor.unexpected():
        figures.problem("unexpected_exits", f"{exit_.name} exited with {exit_.code}: {exit_.cause}")
    for name, code in codes.items():
        if code != 0:
            figures.problem("unexpected_exits", f"{name} did not stop cleanly on SIGTERM at the end: {code}")
    logs = cluster.log_text()
    exceptions, figures.library_tracebacks = tracebacks(logs)
    if exceptions:
        figures.problem("tracebacks", f"{len(exceptions)} in the logs: {', '.join(sorted(set(exceptions)))}", 0)
        figures.tracebacks = len(exceptions)
    print(f"\n{Figures.HEADER}\n{figures.row()}")
    print("\n".join(figures.problems[:50]))
    failing = {
        name: getattr(figures, name)
        for name in ("lost", "duplicated", "failed", "context", "cut", "unexpected_exits", "tracebacks")
        if getattr(figures, name)
    }
    assert figures.faults >= FAULTS
    if kind == "kill_vault_worker":
        # Each fault killed a process while another worker's model stream went through LAP.
        assert proven == figures.faults, f"{figures.faults - proven} faults with no other model stream in flight"
    if not failing:
        return
    report = f"{failing}\n" + "\n".join(figures.problems) + f"\nlogs: {cluster.logs}"
    raise AssertionError(report)
