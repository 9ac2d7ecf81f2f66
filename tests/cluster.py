"""A LAP cluster of real processes: `lap serve --no-worker` plus `lap worker`s on one PostgreSQL database.

Every process is the real `lap` command; they share a data directory and load the test fakes
from an entry point (`tests.fakes.shared`): the scripted harness, and a process backend whose
sandboxes every process finds (as they find a real backend's). Used by the two-worker API test
(plugins/lap-server/tests/test_workers_postgres.py) and the chaos suite (tests/chaos).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.fakes.litellm import free_port
from tests.fakes.shared import BACKEND, entry_point_dir, stop_all
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from lap_core import Job

KEY = "workers-master-key"
GATEWAY_KEY = "sk-cluster-gateway"
"""The real key of the cluster's model gateway (`LITELLM_API_KEY`): only the LLM proxy sends it."""
REPO = Path(__file__).resolve().parents[1]
LAP = [sys.executable, "-m", "lap_core"]


class Cluster:
    """The web process, the workers, their logs, and what the turns' commands leave behind."""

    def __init__(self, data_dir: Path, env: dict[str, str], logs: Path) -> None:
        self.data_dir = data_dir
        self.env = env
        self.logs = logs
        self.runs = data_dir / "runs"
        self.runs.mkdir(exist_ok=True)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.args: dict[str, tuple[str, ...]] = {}
        self.killed: set[str] = set()  # names whose (some) process was killed on purpose
        self.port = int(env["LAP_PORT"])
        self.base_url = f"http://127.0.0.1:{self.port}"

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start `lap -v ARGS` as `name` (again: with the arguments it had); its log is appended to `<name>.log`."""
        args = args or self.args[name]
        with (self.logs / f"{name}.log").open("ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} lap {' '.join(args)}\n".encode())
            log.flush()
            process = subprocess.Popen([*LAP, "-v", *args], env=self.env, cwd=self.data_dir, stderr=log)
        self.processes[name] = process
        self.args[name] = args
        return process

    @property
    def workers(self) -> dict[str, subprocess.Popen[bytes]]:
        return {name: p for name, p in self.processes.items() if name.startswith("worker")}

    def name_of_pid(self, pid: int) -> str | None:
        """The name of our process of that pid, if any."""
        return next((name for name, p in self.processes.items() if p.pid == pid), None)

    def worker_of(self, job: Job) -> str:
        """The name of our worker that leased `job` last (a worker's name says its pid: `host:pid:id`)."""
        assert job.leased_by is not None, job
        name = self.name_of_pid(int(job.leased_by.split(":")[1]))
        pids = {n: p.pid for n, p in self.workers.items()}
        assert name is not None, f"{job.leased_by} is none of our workers ({pids})"
        return name

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait(5)
        self.killed.add(name)

    def executions(self, tag: str) -> int:
        """How many times the command of the message tagged `tag` ran."""
        return len(list(self.runs.glob(f"{tag}.*")))

    def command(self, tag: str, then: str = "") -> str:
        """A message whose turn records its execution, says `tag`, then does `then`."""
        return f"run: mktemp {self.runs}/{tag}.XXXXXX >/dev/null; echo {tag}{'; ' + then if then else ''}"

    def log_text(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')}" for path in sorted(self.logs.iterdir()))

    def ready(self) -> bool:
        """Whether the web process answers `/readyz` with 200."""
        try:
            return httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            assert self.processes["web"].poll() is None, self.log_text()
            assert time.monotonic() < deadline, f"the web process did not get ready\n{self.log_text()}"
            time.sleep(0.05)

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every process still running; return their exit codes (None: had to be killed)."""
        codes: dict[str, int | None] = {}
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                codes[name] = None
        return codes


def cluster_env(
    data_dir: Path, database_url: str, entry_points: Path, *, llm_url: str = "http://127.0.0.1:9", **extra: str
) -> dict[str, str]:
    """The environment of every process of a cluster on `database_url` (`entry_points`: a directory of our own).

    `llm_url` is the model gateway (`LITELLM_API_BASE`); by default a dead address, for clusters
    whose turns call no model.
    """
    return lap_env(
        data_dir,
        DATABASE_URL=database_url,
        LAP_SANDBOX_BACKEND=BACKEND,
        LITELLM_API_BASE=llm_url,
        LITELLM_API_KEY=GATEWAY_KEY,
        MASTER_KEY=KEY,
        LAP_PORT=str(free_port()),
        HOME=os.environ.get("HOME", "/root"),
        PYTHONPATH=f"{REPO}{os.pathsep}{entry_point_dir(entry_points)}",
        **extra,
    )


@contextlib.contextmanager
def running_cluster(
    data_dir: Path, env: dict[str, str], logs: Path, *, workers: int = 2, check: bool = True
) -> Iterator[Cluster]:
    """Migrate, start the web process and `workers` workers, wait until it is ready; stop it all afterwards.

    Afterwards (with `check`), asserts that every process not killed on purpose stopped cleanly, and
    that no log holds a traceback.
    """
    logs.mkdir(exist_ok=True)
    cluster = Cluster(data_dir, env, logs)
    migrated = subprocess.run([*LAP, "migrate"], env=env, cwd=data_dir, capture_output=True, text=True, timeout=60)
    assert migrated.returncode == 0, migrated.stderr
    try:
        cluster.start("web", "serve", "--no-worker")
        for i in range(workers):
            cluster.start(f"worker-{'abcdefgh'[i]}", "worker")
        cluster.wait_ready()
        yield cluster
    finally:
        codes = cluster.stop()
        stop_all(data_dir)
    if not check:
        return
    clean = {name: code for name, code in codes.items() if name not in cluster.killed}
    assert clean == dict.fromkeys(clean, 0), f"a process did not stop cleanly: {codes}\n{cluster.log_text()}"
    assert "Traceback" not in cluster.log_text(), cluster.log_text()


def api_client(cluster: Cluster, **kwargs: Any) -> httpx.AsyncClient:
    """An HTTP client of the cluster's web process, with the master key."""
    return httpx.AsyncClient(
        base_url=cluster.base_url, headers={"Authorization": f"Bearer {KEY}"}, **{"timeout": 30, **kwargs}
    )


async def sse_records(stream: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Yield the records of an SSE response of `/api/sessions/{id}/events`, checking each event's `id` and name."""
    fields: dict[str, str] = {}
    async for line in stream.aiter_lines():
        if line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
            continue
        event, fields = fields, {}
        if not event.get("data"):
            continue  # a keep-alive comment
        record: dict[str, Any] = json.loads(event["data"])
        assert (event.get("id"), event.get("event")) == (str(record["seq"]), record["event"]["type"]), event
        yield record
