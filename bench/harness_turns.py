"""Per harness: a session's cold start and one turn through LAP, against the same CLI run directly.

Run: `.venv/bin/python bench/harness_turns.py [--runs N] [--harness NAME ...]`. The scripted
fake LLM sits behind a real LiteLLM proxy (as in the end-to-end tests), so the model's own time
is near zero and what is left is LAP's, the sandbox's and the CLI's. Every turn runs one tool
call and a text answer. Measured, per harness:

- cold start: a new session's first turn through LAP (sandbox bring-up, hydrate, the CLI's
  first run), against the CLI's first run on the host with a fresh home;
- one turn: a later turn of the same session (warm sandbox, the CLI resuming its own session),
  against the CLI resuming its session on the host.

The direct runs use the harness's own config, environment and command line, with LiteLLM's URL
and key instead of LAP's proxy and stub. Prints medians and ranges; compare ratios within one
run (the machines are noisy).
"""

from __future__ import annotations

import argparse
import base64
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

from lap_core import HARNESS_ROOT, HOME_DIR, Agent, CliHarness, HarnessSession, Lap, LLMAccess, Status, Turn, TurnEnd
from lap_core._install import harness_dir, install_harness
from tests.fakes.litellm import LiteLLMProxy
from tests.fakes.llm_server import FakeLLM
from tests.fixtures import HARNESS_CACHE, lap_env

MODELS = {"opencode": "fake-model", "claude-code": "claude-fake", "codex": "fake-model"}
COMMAND = "echo bench > bench.txt"


def summary(name: str, samples: list[float]) -> float:
    median = statistics.median(samples)
    print(
        f"  {name:<46} median {median * 1000:8.0f} ms   min {min(samples) * 1000:8.0f}   "
        f"max {max(samples) * 1000:8.0f}   (n={len(samples)})"
    )
    return median


async def through_lap(lap: Lap, harness: str, runs: int) -> tuple[list[float], list[float], list[float]]:
    """Cold: each run a new session's first turn (and its sandbox bring-up). Warm: later turns."""
    agent = await lap.agents.create(f"bench-{harness}", harness=harness, model=MODELS[harness])
    cold, bring_up, warm = [], [], []
    for _ in range(runs):
        session = await lap.sessions.create(agent.id)
        elapsed, sandbox = await _turn(lap, session.id)
        cold.append(elapsed)
        bring_up.append(sandbox)
    for _ in range(runs):
        warm.append((await _turn(lap, session.id))[0])
    for ref in await lap.backend.list():
        await lap.backend.delete(ref.name)
    return cold, bring_up, warm


async def _turn(lap: Lap, session_id: str) -> tuple[float, float]:
    """Return the turn's wall time and the time from `sandbox_creating` to `sandbox_ready` (0 if none)."""
    start = time.perf_counter()
    phases = {}
    async for record in lap.sessions.stream(session_id, "write the bench file"):
        if isinstance(record.event, Status):
            phases[record.event.phase] = record.at
        if isinstance(record.event, TurnEnd):
            assert record.event.status == "completed", record
    elapsed = time.perf_counter() - start
    if "sandbox_ready" in phases:
        return elapsed, (phases["sandbox_ready"] - phases["sandbox_creating"]).total_seconds()
    return elapsed, 0.0


class DirectCli:
    """Runs a harness's CLI on the host as the harness would in a sandbox, straight at LiteLLM."""

    def __init__(self, name: str, harness: CliHarness, proxy: LiteLLMProxy) -> None:
        self.harness = harness
        self.root = harness_dir(HARNESS_CACHE, name, harness)
        # Not under /tmp: Codex refuses to set up its helpers there.
        self.base = Path(tempfile.mkdtemp(prefix="lap-bench-", dir="/var/tmp"))
        self.home, self.work = self.base / "home", self.base / "work"
        self.agent = Agent(id="agt_bench", team_id="t", name="bench", harness=name, model=MODELS[name])
        hydrated = harness.hydrate(self.agent, LLMAccess(base_url=proxy.url, api_key=proxy.master_key))
        for spec in hydrated.files:
            path = Path(self._local(spec.path))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(base64.b64decode(spec.content_b64))
        self.env = {key: self._local(value) for key, value in hydrated.env.items()}
        self.env |= {"HOME": str(self.home), "PATH": os.environ["PATH"]}
        self.work.mkdir()

    def _local(self, text: str) -> str:
        return text.replace(HOME_DIR, str(self.home)).replace(HARNESS_ROOT, str(self.root))

    def turn(self, native_session_id: str | None) -> tuple[float, str | None]:
        """Run one turn; return its wall time and the CLI's session id."""
        turn = Turn(
            id="turn_bench",
            session_id="ses_bench",
            text="write the bench file",
            agent=self.agent,
            native_session_id=native_session_id,
        )
        argv = [self._local(arg) for arg in self.harness.argv(turn)]
        env = self.env | self.harness.env(turn)
        start = time.perf_counter()
        result = subprocess.run(argv, input=turn.text, cwd=self.work, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        assert result.returncode == 0, result.stderr[-2000:]
        mapper = self.harness.mapper(turn)
        events = [event for line in result.stdout.splitlines() for event in mapper.map_line(line)]
        found = [event.native_session_id for event in events if isinstance(event, HarnessSession)]
        return elapsed, found[0] if found else native_session_id

    def runs(self, runs: int) -> tuple[list[float], list[float]]:
        """Cold: each run with a fresh CLI session (first run in a new home first). Warm: resumed runs."""
        cold, warm = [], []
        native = None
        for _ in range(runs):
            elapsed, native = self.turn(None)
            cold.append(elapsed)
        for _ in range(runs):
            elapsed, native = self.turn(native)
            warm.append(elapsed)
        return cold, warm

    def close(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


async def main(runs: int, names: list[str]) -> None:
    fake = FakeLLM().start()
    fake.script(command=COMMAND, text="done")
    proxy = LiteLLMProxy(fake.url).start()
    data_dir = Path(tempfile.mkdtemp(prefix="lap-bench-", dir="/tmp"))
    os.chmod(data_dir, 0o711)  # sandboxes run as another user: let them reach their mounts
    results: list[tuple[str, float, float, float, float, float]] = []
    try:
        env = lap_env(data_dir, LITELLM_API_BASE=proxy.url, LITELLM_API_KEY=proxy.master_key)
        async with Lap(env=env) as lap:
            print(f"{runs} runs each; the fake LLM behind LiteLLM; one tool call and a text answer per turn\n")
            for name in names:
                harness = lap.harnesses[name]
                assert isinstance(harness, CliHarness)
                await install_harness(HARNESS_CACHE, name, harness)
                print(f"{name} ({', '.join(harness.npm_packages)})")
                cold, bring_up, warm = await through_lap(lap, name, runs)
                direct = DirectCli(name, harness, proxy)
                try:
                    direct_cold, direct_warm = await anyio.to_thread.run_sync(direct.runs, runs)
                finally:
                    direct.close()
                results.append(
                    (
                        name,
                        summary("cold start: first turn of a new session (LAP)", cold),
                        summary("  of which sandbox bring-up (bwrap + sandboxd)", bring_up),
                        summary("cold start: the CLI's first run (direct)", direct_cold),
                        summary("one turn: a later turn (LAP, warm sandbox)", warm),
                        summary("one turn: the CLI resuming its session (direct)", direct_warm),
                    )
                )
                print()
        print(
            f"{'harness':<12} {'cold LAP':>9} {'direct':>8} {'ratio':>6}   {'turn LAP':>9} {'direct':>8} {'ratio':>6}"
        )
        for name, lap_cold, _, cli_cold, lap_warm, cli_warm in results:
            print(
                f"{name:<12} {lap_cold * 1000:7.0f}ms {cli_cold * 1000:6.0f}ms {lap_cold / cli_cold:5.2f}x"
                f"   {lap_warm * 1000:7.0f}ms {cli_warm * 1000:6.0f}ms {lap_warm / cli_warm:5.2f}x"
            )
    finally:
        proxy.stop()
        fake.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--harness", action="append", choices=sorted(MODELS), help="only this harness (repeatable)")
    arguments = parser.parse_args()
    anyio.run(main, arguments.runs, arguments.harness or sorted(MODELS))
