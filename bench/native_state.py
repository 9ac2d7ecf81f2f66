"""What the copy of a harness's native state costs a turn, as a session's history grows.

Run: `.venv/bin/python bench/native_state.py [--turns 50] [--samples 15] [--harness NAME ...]`.

Per harness, one session on the local (bubblewrap) backend with the real CLI, the scripted fake
LLM behind a real LiteLLM proxy (as in the end-to-end tests). Turns alternate between a tool call
and a text answer (messages of ~200 characters, answers of ~400). After turns 1, 10, 25, 50 ...
it prints the size of the declared native state (`Harness.native_state`) and the time of

- the copy taken before every turn that resumes a native session (`snapshot_native_state`: one
  `sh` exec in the sandbox), which is what the fix adds to a warm turn;
- putting it back (`restore_native_state`), paid only by a turn that starts over;
- an exec of `true`, the floor of any exec (sandboxd round trip and a process start).

The copy runs on the sandbox's files as the engine's does, tagged with a turn id of its own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lap_core import Lap, TurnEnd
from lap_core._install import install_harness
from lap_core._native_state import restore_native_state, snapshot_native_state
from tests.fakes.litellm import LiteLLMProxy
from tests.fakes.llm_server import FakeLLM
from tests.fixtures import HARNESS_CACHE, lap_env

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from lap_core import Harness, SandboxClient

MODELS = {"opencode": "fake-model", "claude-code": "claude-fake", "codex": "fake-model"}
CHECKPOINTS = (1, 10, 25, 50, 100)


async def _timed(samples: int, call: Callable[[], Awaitable[object]]) -> float:
    """Return the median seconds of `samples` calls."""
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def _size(sandbox: SandboxClient, harness: Harness) -> tuple[int, int]:
    """Return the bytes and files of the harness's declared native state in the sandbox."""
    assert harness.native_state is not None
    script = 'IFS=""; for p in "$@"; do for f in $p; do [ -e "$f" ] && find "$f" -type f; done; done | xargs -r du -cb'
    result = await sandbox.exec(["sh", "-c", script, "sh", *harness.native_state.paths])
    lines = result.stdout.splitlines()
    return (int(lines[-1].split()[0]), len(lines) - 1) if lines else (0, 0)


async def bench(lap: Lap, fake: FakeLLM, name: str, turns: int, samples: int) -> None:
    harness = lap.harnesses[name]
    agent = await lap.agents.create(f"bench-{name}", harness=name, model=MODELS[name])
    session = await lap.sessions.create(agent.id)
    print(f"{name} ({', '.join(harness.npm_packages)}); native state: {harness.native_state}")
    print(f"  {'turns':>5} {'bytes':>10} {'files':>5}   {'copy':>8} {'put back':>9} {'exec true':>10} {'turn':>8}")
    turn_times: list[float] = []
    for n in range(1, turns + 1):
        fake.script(command=f"echo turn {n} > turn.txt" if n % 2 else None, text=f"answer {n}: " + "a" * 400)
        start = time.perf_counter()
        async for record in lap.sessions.stream(session.id, f"message {n}: " + "m" * 200):
            if isinstance(record.event, TurnEnd):
                assert record.event.status == "completed", record.event
        turn_times.append(time.perf_counter() - start)
        if n not in CHECKPOINTS and n != turns:
            continue
        name_of_sandbox = (await lap.sessions.get(session.id)).sandbox_name
        assert name_of_sandbox is not None
        async with await lap.backend.connect(name_of_sandbox) as sandbox:
            size, files = await _size(sandbox, harness)
            copy = await _timed(samples, lambda: snapshot_native_state(sandbox, harness, "turn_bench"))
            back = await _timed(samples, lambda: restore_native_state(sandbox, harness, "turn_bench"))
            floor = await _timed(samples, lambda: sandbox.exec(["true"]))
        turn = statistics.median(turn_times[-10:])
        print(
            f"  {n:>5} {size:>10} {files:>5}   {copy * 1000:6.1f}ms {back * 1000:7.1f}ms"
            f" {floor * 1000:8.1f}ms {turn * 1000:6.0f}ms"
        )
    for ref in await lap.backend.list({"lap.session": session.id}):
        await lap.backend.delete(ref.name)


async def main(turns: int, samples: int, names: list[str]) -> None:
    fake = FakeLLM().start()
    proxy = LiteLLMProxy(fake.url).start()
    data_dir = Path(tempfile.mkdtemp(prefix="lap-bench-", dir="/tmp"))
    os.chmod(data_dir, 0o711)  # sandboxes run as another user: let them reach their mounts
    try:
        env = lap_env(data_dir, LITELLM_API_BASE=proxy.url, LITELLM_API_KEY=proxy.master_key)
        async with Lap(env=env) as lap:
            print(f"medians of {samples} samples; 'turn' is the median wall time of the last 10 turns\n")
            for name in names:
                await install_harness(HARNESS_CACHE, name, lap.harnesses[name])
                await bench(lap, fake, name, turns, samples)
                print()
    finally:
        proxy.stop()
        fake.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--harness", action="append", choices=sorted(MODELS), help="only this harness (repeatable)")
    arguments = parser.parse_args()
    anyio.run(main, arguments.turns, arguments.samples, arguments.harness or sorted(MODELS))
