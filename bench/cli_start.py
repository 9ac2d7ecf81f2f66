"""Start-up cost of the `lap` command: `lap --help` against `python -c pass`, measured in one run.

Run: `.venv/bin/python bench/cli_start.py [--runs N]`. Each round starts both processes (in
alternating order, so that drift on a shared machine hits both alike) and times each from spawn
to exit. Prints p50 and p99 of each, the ratio of the p50s, and how many modules `lap --help`
imports (from `-X importtime`). `lap --help` loads every installed plugin (their `lap_cli_commands`
add `lap serve`), so this is also what a plugin's import costs every command.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

LAP = [sys.executable, "-m", "lap_core", "--help"]
BARE = [sys.executable, "-c", "pass"]


def _time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _modules(command: list[str]) -> int:
    """Modules the command imports: the lines `-X importtime` writes (one per module)."""
    result = subprocess.run([command[0], "-X", "importtime", *command[1:]], capture_output=True, text=True, check=True)
    return sum(1 for line in result.stderr.splitlines() if line.startswith("import time:") and "|" in line) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="rounds (each starts both commands once)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"lap --help": [], "python -c pass": []}
    _time(LAP)  # warm the file cache: the first start reads every module from disk
    for round_ in range(args.runs):
        pair = [("lap --help", LAP), ("python -c pass", BARE)]
        for name, command in pair if round_ % 2 else reversed(pair):
            times[name].append(_time(command))
    print(f"{args.runs} runs each, interleaved; python {sys.version.split()[0]} ({Path(sys.executable)})")
    for name, values in times.items():
        print(f"{name:<16} p50 {_p(values, 0.5) * 1000:7.1f} ms   p99 {_p(values, 0.99) * 1000:7.1f} ms")
    ratio = statistics.median(times["lap --help"]) / statistics.median(times["python -c pass"])
    print(f"ratio (p50)      {ratio:.1f}x")
    print(f"modules imported by lap --help: {_modules(LAP)} (python -c pass: {_modules(BARE)})")


if __name__ == "__main__":
    main()
