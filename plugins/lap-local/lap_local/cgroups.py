"""cgroup v1 memory and pids limits for sandboxes, where this host lets us set them.

Each sandbox gets `<controller>/lap/<name>`; the launcher joins them before it execs bwrap,
so every process of the sandbox is counted from its first instruction.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import structlog

log = structlog.get_logger("lap.local")
ROOT = Path("/sys/fs/cgroup")


def available() -> bool:
    """Return whether cgroup v1 memory and pids controllers can be written here."""
    return all(os.access(ROOT / controller, os.W_OK) for controller in ("memory", "pids"))


def create(name: str, *, memory_mb: int | None, max_pids: int | None, owner: int) -> list[Path]:
    """Create the sandbox's cgroups with limits; return their `cgroup.procs` files (owned by `owner`)."""
    procs: list[Path] = []
    for controller, limit_file, value in (
        ("memory", "memory.limit_in_bytes", None if memory_mb is None else memory_mb * 1024 * 1024),
        ("pids", "pids.max", max_pids),
    ):
        if value is None:
            continue
        group = ROOT / controller / "lap" / name
        group.mkdir(parents=True, exist_ok=True)
        (group / limit_file).write_text(str(value))
        # The launcher runs as the sandbox's user: let it move itself in.
        os.chown(group / "cgroup.procs", owner, -1)
        procs.append(group / "cgroup.procs")
    return procs


def busy(name: str) -> bool:
    """Return whether any process is still in the sandbox's cgroups."""
    for controller in ("memory", "pids"):
        try:
            if (ROOT / controller / "lap" / name / "cgroup.procs").read_text().strip():
                return True
        except FileNotFoundError:
            continue
    return False


def remove(name: str) -> None:
    """Remove the sandbox's cgroups (once their processes are gone)."""
    for controller in ("memory", "pids"):
        group = ROOT / controller / "lap" / name
        if group.exists():
            try:
                group.rmdir()
            except OSError as error:
                log.warning("cgroup.remove_failed", group=str(group), error=str(error))
                shutil.rmtree(group, ignore_errors=True)
