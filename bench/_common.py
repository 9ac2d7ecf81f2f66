"""Helpers shared by the benchmarks: percentiles, a throwaway data directory and PostgreSQL database, RSS."""

from __future__ import annotations

import math
import secrets
import shutil
import statistics
import sys
import tempfile
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures import PG_ADMIN

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence


def percentile(samples: Sequence[float], q: float) -> float:
    """Return the q-th percentile (nearest rank) of samples."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def line(name: str, samples: Sequence[float], *, scale: float = 1000.0, unit: str = "ms", width: int = 40) -> str:
    """Format p50 / p90 / p99 / max of samples (seconds, shown in ms by default)."""
    if not samples:
        return f"{name:<{width}} (no samples)"
    p50, p90, p99 = (percentile(samples, q) * scale for q in (50, 90, 99))
    return (
        f"{name:<{width}} p50 {p50:8.2f} {unit}   p90 {p90:8.2f}   p99 {p99:8.2f}   max {max(samples) * scale:8.2f}"
        f"   mean {statistics.fmean(samples) * scale:8.2f}   (n={len(samples)})"
    )


@contextmanager
def data_dir() -> Iterator[Path]:
    """A fresh LAP data directory under /tmp, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="lap-bench-", dir="/tmp"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _pg_admin(sql: str) -> None:
    connection = await asyncpg.connect(f"{PG_ADMIN}/postgres", timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    """The URL of a fresh PostgreSQL database (as tests/fixtures.py makes them), dropped afterwards."""
    name = f"lap_bench_{secrets.token_hex(4)}"
    await _pg_admin(f"CREATE DATABASE {name}")
    try:
        yield f"{PG_ADMIN}/{name}"
    finally:
        await _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Return a process's resident set size (or another /proc/<pid>/status field) in KiB."""
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith(f"{field}:"):
            return int(row.split()[1])
    raise LookupError(field)
