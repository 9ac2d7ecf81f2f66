"""Sandbox start on the local backend: create -> sandboxd ready, 1-, 20- and 50-way, CPU and memory per sandbox.

Run (as root, or a user bubblewrap works for): `.venv/bin/python bench/sandbox_start.py [--ways 1,20,50]
[--rounds N]`. Uses the real `LocalBackend` of a `Lap` in a throwaway data directory (its runtime copy made
by one warm-up sandbox first, so the figures are those of every later create). Each round creates N
sandboxes at once (`create` then `wait_ready`, timed per sandbox from the call of `create`), then deletes
them; 1-way runs `--rounds` x 10 times, the others `--rounds` times.

Prints, per N: p50/p90/p99/max of create -> ready; the CPU per sandbox until ready; then, once all N are
ready, the time of each one's first answer (a health check from a new client: sandboxd loads its API with
the first connection); the ratio of the N-way p50 to the 1-way p50. CPU per sandbox is (this process's CPU
time over the round, all threads, + the delta of RUSAGE_CHILDREN, i.e. the waited-for launchers, + for each
sandbox the run time of every live process of its tree, from /proc/PID/task/*/schedstat, and what their
reaped children used, read once it is ready) / N: LAP's share (launching, waiting) included. Then the RSS
(VmRSS, and PSS from smaps_rollup) of an idle sandboxd and the sum over its sandbox's whole process tree
(bwrap's two processes and sandboxd).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

import anyio
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import data_dir, line, rss_kib
from lap_core import Lap, SandboxBackend, SandboxSpec
from tests.fixtures import lap_env

_TICK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """`pid` and its live descendants."""
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                queue += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
    return pids


def _cpu_seconds(pid: int) -> float:
    """CPU time of a live process: its threads' run time (ns, from schedstat) + its reaped children's (0: gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        threads = sum(int(task.read_text().split()[0]) for task in Path(f"/proc/{pid}/task").glob("*/schedstat"))
    except OSError:
        return 0.0
    return threads / 1e9 + sum(int(value) for value in fields[13:15]) / _TICK


def _bwrap_pid(root: Path, name: str) -> int:
    return int(json.loads((root / "sandboxes" / name / "meta.json").read_bytes())["pid"])


def _self_cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


async def _round(
    backend: SandboxBackend, root: Path, ways: int, tag: str
) -> tuple[list[float], list[float], float, float]:
    """Create `ways` sandboxes at once; return each one's create -> ready time and ready -> first answer time
    (sandboxd's health, from a new client, as a session's first call), the CPU per sandbox until ready, and the
    share of it spent by the sandbox's own processes (bwrap, sandboxd)."""
    names = [f"bench-{tag}-{index}" for index in range(ways)]
    times: list[float] = []
    answers: list[float] = []
    sandbox_cpu = 0.0
    done = anyio.Event()
    ready = 0

    async def one(name: str) -> None:
        nonlocal sandbox_cpu, ready
        start = time.perf_counter()
        await backend.create(SandboxSpec(name=name, harness="none", volume=name))
        await backend.wait_ready(name, timeout=120)
        times.append(time.perf_counter() - start)
        sandbox_cpu += sum(_cpu_seconds(pid) for pid in _tree(_bwrap_pid(root, name)))
        ready += 1
        if ready == ways:
            done.set()
        await done.wait()  # the first answers after every sandbox is ready: the CPU above stays until ready
        start = time.perf_counter()
        async with await backend.connect(name) as client:
            await client.health()
        answers.append(time.perf_counter() - start)

    cpu_before = _self_cpu()
    async with anyio.create_task_group() as group:
        for name in names:
            group.start_soon(one, name)
        await done.wait()
        cpu = _self_cpu() - cpu_before + sandbox_cpu
    async with anyio.create_task_group() as group:
        for name in names:
            group.start_soon(backend.delete, name)
    return times, answers, cpu / ways, sandbox_cpu / ways


def _memory(root: Path, name: str) -> str:
    pids = _tree(_bwrap_pid(root, name))
    sandboxd = next(pid for pid in pids if Path(f"/proc/{pid}/comm").read_text().startswith("python"))
    pss = _smaps_pss
    total_rss = sum(rss_kib(pid) for pid in pids)
    return (
        f"idle sandboxd: RSS {rss_kib(sandboxd) / 1024:.1f} MiB, PSS {pss(sandboxd) / 1024:.1f} MiB; "
        f"whole sandbox ({len(pids)} processes): RSS {total_rss / 1024:.1f} MiB, "
        f"PSS {sum(pss(pid) for pid in pids) / 1024:.1f} MiB"
    )


def _smaps_pss(pid: int) -> int:
    for row in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if row.startswith("Pss:"):
            return int(row.split()[1])
    return 0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ways", default="1,20,50", help="comma-separated concurrency levels")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per level (1-way: 10x this)")
    parser.add_argument(
        "--disk-mb",
        help="LAP_SANDBOX_DISK_MB (default: the backend's; as root a new volume then gets an ext4 image: mkfs + mount)",
    )
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    ways = [int(value) for value in args.ways.split(",")]
    with data_dir() as root:
        disk = {"LAP_SANDBOX_DISK_MB": args.disk_mb} if args.disk_mb is not None else {}
        env = lap_env(root, LITELLM_API_BASE="http://127.0.0.1:9", LITELLM_API_KEY="k", **disk)
        async with Lap(env=env) as lap:
            backend = lap.backend
            await _round(backend, root, 1, "warmup")  # copies sandboxd's runtime once
            p50s: dict[int, float] = {}
            limit = getattr(getattr(backend, "volumes", None), "limit_mb", None)  # lap-local's
            print(
                f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, uid {os.geteuid()}, volume limit {limit} MB"
            )
            for n in ways:
                samples: list[float] = []
                firsts: list[float] = []
                cpus: list[float] = []
                inside: list[float] = []
                for round_ in range(args.rounds * (10 if n == 1 else 1)):
                    times, answers, cpu, sandbox_cpu = await _round(backend, root, n, f"{n}-{round_}")
                    samples += times
                    firsts += answers
                    cpus.append(cpu)
                    inside.append(sandbox_cpu)
                p50s[n] = sorted(samples)[len(samples) // 2]
                print(line(f"create -> ready, {n}-way", samples))
                print(line("  CPU per sandbox until ready", cpus))
                print(line("    of which bwrap + sandboxd", inside))
                print(line("  then the first answer", firsts))
            for n in ways:
                if n != ways[0]:
                    print(f"ratio p50 {n}-way / {ways[0]}-way: {p50s[n] / p50s[ways[0]]:.1f}x")
            name = "bench-idle"
            await backend.create(SandboxSpec(name=name, harness="none", volume=name))
            await backend.wait_ready(name, timeout=60)
            await anyio.sleep(1)
            print(_memory(root, name))
            await backend.delete(name)


if __name__ == "__main__":
    anyio.run(main)
