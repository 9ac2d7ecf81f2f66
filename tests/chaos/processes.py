"""The chaos suite's hands on the cluster's processes: a supervisor that restarts them, sandbox kills, log reading."""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import msgspec

from lap_core._engine.sandboxes import sandbox_name

if TYPE_CHECKING:
    from tests.cluster import Cluster


@dataclass
class Exit:
    name: str
    code: int
    expected: str | None  # "kill", "term" (the fault's), "refused" (would not start: the database was down)
    at: float
    cause: str  # the exceptions of its last traceback, or its last log line


@dataclass
class Supervisor:
    """Restarts any web or worker process that exits, as Kubernetes would; tells expected exits from others."""

    cluster: Cluster
    expect: dict[str, str] = field(default_factory=dict)  # name -> "kill" | "term", set by the fault
    exits: list[Exit] = field(default_factory=list)
    stopped: bool = False

    def unexpected(self) -> list[Exit]:
        expected = (("kill", -signal.SIGKILL), ("term", 0), ("refused", 1))
        return [e for e in self.exits if (e.expected, e.code) not in expected]

    def _log(self, name: str) -> str:
        """The log of the current (or last) process of `name`, since it started."""
        return (self.cluster.logs / f"{name}.log").read_text(errors="replace").rpartition("\n=== ")[2]

    async def run(self) -> None:
        while not self.stopped:
            for name, process in list(self.cluster.processes.items()):
                code = process.poll()
                if code is None:
                    continue
                log = self._log(name)
                chains, _ = tracebacks(log)
                cause = chains[-1] if chains else (log.strip().splitlines() or [""])[-1]
                expected = self.expect.pop(name, None)
                if expected is None and not self._serving(name, log) and "error: cannot reach the database" in log:
                    expected = "refused"  # as a pod whose database is down: restarted until it is back
                self.exits.append(Exit(name, code, expected, time.monotonic(), cause))
                self.cluster.start(name)
            await anyio.sleep(0.05)

    @staticmethod
    def _serving(name: str, log: str) -> bool:
        return ("worker running" if name.startswith("worker") else "LAP serving") in log

    def up(self, name: str) -> bool:
        """Whether the current process of `name` says it is serving (its log since its last start)."""
        return self.cluster.processes[name].poll() is None and self._serving(name, self._log(name))


def _descendants(pid: int) -> list[int]:
    """The pids of every process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _gone(pid: int) -> bool:
    """Whether `pid` has exited (a zombie counts: it runs no more)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def kill_sandbox(cluster: Cluster, session_id: str) -> str:
    """SIGKILL the session's sandbox: sandboxd's process group, then every process it started (each in its own group).

    sandboxd dies first, as when a sandbox is lost: were a process of the turn to die first,
    sandboxd would record its exit, and the turn would see its process end, not its sandbox.
    """
    record = msgspec.json.decode(
        (cluster.data_dir / "shared-process-sandboxes" / sandbox_name(session_id) / "sandbox.json").read_bytes()
    )
    pid = int(record["pid"])
    children = _descendants(pid)
    group = os.getpgid(pid)
    os.killpg(group, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while not _gone(pid):
        assert time.monotonic() < deadline, f"sandboxd {pid} survived SIGKILL"
        time.sleep(0.001)
    groups = set()
    for child in children:
        try:
            groups.add(os.getpgid(child))
        except ProcessLookupError:
            continue
    for child_group in groups - {group}:
        try:
            os.killpg(child_group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return f"sandboxd {pid} (group {group}), then groups {sorted(groups - {group})}"


def vault_holder(cluster: Cluster) -> str | None:
    """The name of our process that serves the shared LLM proxy socket (holds the flock on its `llm.lock`), if any.

    Read from /proc/locks: a flock's line gives its holder's pid and the lock file's device and inode.
    """
    try:
        lock = os.stat(cluster.data_dir / "run" / "vault" / "llm.lock")
    except FileNotFoundError:
        return None
    device = f"{os.major(lock.st_dev):02x}:{os.minor(lock.st_dev):02x}:{lock.st_ino}"
    with open("/proc/locks") as locks:
        for line in locks:
            fields = line.split()
            # "1: FLOCK  ADVISORY  WRITE 4242 00:2d:1234 0 EOF" (waiters have a "->" before FLOCK)
            if fields[1:3] == ["FLOCK", "ADVISORY"] and fields[5] == device:
                return cluster.name_of_pid(int(fields[4]))
    return None


LIBRARY_NOISE = "Failed to restore the pool connection floor; retrying"
"""asyncpg's own warning, with a traceback, while the database is down (not LAP's)."""


EXCEPTION = re.compile(r"^[\s|]*([\w.]+(?:Error|Exception|Group)):")
CHAINED = ("The above exception was the direct cause", "During handling of the above exception")


def tracebacks(logs: str) -> tuple[list[str], int]:
    """The tracebacks in the logs: LAP's (each as its chain of exceptions), and how many asyncpg pool warnings had one.

    A traceback chained to the one before it ("the direct cause", "during handling", or inside an
    exception group) is part of it.
    """
    lines = logs.splitlines()
    starts = [
        i
        for i, line in enumerate(lines)
        if "Traceback (most recent call last)" in line
        and not line.lstrip().startswith("|")
        and not any(marker in text for text in lines[max(0, i - 3) : i] for marker in CHAINED)
    ]
    ours: list[str] = []
    noise = 0
    for n, start in enumerate(starts):
        if start and LIBRARY_NOISE in lines[start - 1]:
            noise += 1
            continue
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        chain = [m.group(1).rpartition(".")[2] for text in lines[start:end] if (m := EXCEPTION.match(text))]
        ours.append(">".join(dict.fromkeys(chain)) or "?")
    return ours, noise
