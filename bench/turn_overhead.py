"""Figures for [1/5]: cold sandbox start, opencode boot, and one turn through LAP vs. opencode run directly.

Run: `.venv/bin/python bench/turn_overhead.py [--runs N]`. Uses the scripted fake LLM behind a
real LiteLLM proxy (as the end-to-end tests do), so the model's own time is near zero and what
is left is LAP's, the sandbox's and opencode's. Prints medians and ranges; compare ratios within
one run (the machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lap_core import Agent, Lap, LLMAccess, SandboxSpec, StartProcess, TurnEnd
from lap_core._install import harness_dir, install_harness
from lap_opencode import OpencodeHarness
from lap_opencode.harness import opencode_config
from tests.fakes.litellm import LiteLLMProxy
from tests.fakes.llm_server import FakeLLM
from tests.fixtures import HARNESS_CACHE, lap_env

COMMAND = "echo bench > bench.txt"


def summary(name: str, samples: list[float]) -> float:
    median = statistics.median(samples)
    print(
        f"{name:<44} median {median * 1000:8.1f} ms   min {min(samples) * 1000:8.1f}   max {max(samples) * 1000:8.1f}"
        f"   (n={len(samples)})"
    )
    return median


async def cold_starts(lap: Lap, runs: int) -> list[float]:
    samples = []
    for i in range(runs):
        start = time.perf_counter()
        await lap.backend.create(SandboxSpec(name=f"bench-{i}", harness="none", volume=f"bench-{i}"))
        await lap.backend.wait_ready(f"bench-{i}", timeout=30)
        samples.append(time.perf_counter() - start)
        await lap.backend.delete(f"bench-{i}")
    return samples


async def opencode_boots(lap: Lap, root: Path, runs: int) -> list[float]:
    """Time from starting `opencode --version` in a warm sandbox to its exit (the CLI's own start-up)."""
    await lap.backend.create(
        SandboxSpec(name="bench-boot", harness="opencode", volume="bench-boot", harness_root=str(root))
    )
    await lap.backend.wait_ready("bench-boot", timeout=30)
    samples = []
    async with await lap.backend.connect("bench-boot") as client:
        for i in range(runs):
            start = time.perf_counter()
            await client.start_process(
                StartProcess(id=f"boot-{i}", argv=["/opt/lap/harness/node_modules/.bin/opencode", "--version"])
            )
            async for record in client.output(f"boot-{i}"):
                if record.stream == "exit":
                    assert record.data == "0", record
            samples.append(time.perf_counter() - start)
    await lap.backend.delete("bench-boot")
    return samples


async def lap_turns(lap: Lap, runs: int) -> list[float]:
    agent = await lap.agents.create("bench", harness="opencode", model="fake-model")
    session = await lap.sessions.create(agent.id)
    async for _ in lap.sessions.stream(session.id, "warm up: create the sandbox"):
        pass
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        async for record in lap.sessions.stream(session.id, "write the bench file"):
            if isinstance(record.event, TurnEnd):
                assert record.event.status == "completed", record
        samples.append(time.perf_counter() - start)
    return samples


def direct_turns(root: Path, proxy: LiteLLMProxy, runs: int) -> list[float]:
    """The same turn with the same opencode and config, run on the host straight at LiteLLM."""
    home = Path(tempfile.mkdtemp(prefix="lap-bench-home-"))
    work = Path(tempfile.mkdtemp(prefix="lap-bench-work-"))
    agent = Agent(id="agt_bench", team_id="t", name="bench", harness="opencode", model="fake-model")
    config = opencode_config(agent, LLMAccess(base_url=proxy.url, api_key=""))
    (home / ".config" / "opencode").mkdir(parents=True)
    (home / ".config" / "opencode" / "opencode.json").write_text(json.dumps(config))
    # The same environment opencode gets in a sandbox, but the real key and LiteLLM's own URL.
    hydrated = OpencodeHarness().hydrate(agent, LLMAccess(base_url=proxy.url, api_key=proxy.master_key)).env
    env = {**hydrated, "HOME": str(home), "PATH": os.environ["PATH"]}
    argv = [str(root / "node_modules/.bin/opencode"), "run", "--format", "json", "--model", "lap/fake-model"]
    subprocess.run([*argv, "--", "warm up"], cwd=work, env=env, capture_output=True, check=True, timeout=120)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            [*argv, "--", "write the bench file"], cwd=work, env=env, capture_output=True, check=True, timeout=120
        )
        samples.append(time.perf_counter() - start)
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return samples


async def main(runs: int) -> None:
    fake = FakeLLM().start()
    fake.script(command=COMMAND, text="done")
    proxy = LiteLLMProxy(fake.url).start()
    data_dir = Path(tempfile.mkdtemp(prefix="lap-bench-", dir="/tmp"))
    os.chmod(data_dir, 0o711)  # sandboxes run as another user: let them reach their mounts
    try:
        await install_harness(HARNESS_CACHE, "opencode", OpencodeHarness())
        root = harness_dir(HARNESS_CACHE, "opencode", OpencodeHarness())
        env = lap_env(data_dir, LITELLM_API_BASE=proxy.url, LITELLM_API_KEY=proxy.master_key)
        async with Lap(env=env) as lap:
            print(f"cold sandbox start, boot and turns: {runs} runs each (fake LLM behind LiteLLM)\n")
            summary("cold sandbox start (bwrap + sandboxd ready)", await cold_starts(lap, runs))
            summary("opencode --version in a warm sandbox", await opencode_boots(lap, root, runs))
            through_lap = summary("one turn through LAP (warm sandbox)", await lap_turns(lap, runs))
            for ref in await lap.backend.list():
                await lap.backend.delete(ref.name)
        direct = summary(
            "the same turn: opencode run on the host", await anyio.to_thread.run_sync(direct_turns, root, proxy, runs)
        )
        print(f"\nLAP / direct: {through_lap / direct:.2f}x  (difference {(through_lap - direct) * 1000:+.0f} ms)")
    finally:
        proxy.stop()
        fake.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    anyio.run(main, parser.parse_args().runs)
