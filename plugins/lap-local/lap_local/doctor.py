"""`lap doctor`'s checks of the local backend: bubblewrap as the sandbox user, the sandbox's Python, cgroups."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import anyio

from lap_core import Check
from lap_local import cgroups
from lap_local.disk import hard_limits_available


def unreachable(path: Path, uid: int) -> str | None:
    """Say why the sandbox user `uid` (no groups but its own) cannot reach `path`, with the fix; None if it can.

    bwrap opens its mounts' sources as that user: each directory on the way must let it search
    (`x`). `path` itself need not: LAP opens it (0711) where it owns it.
    """
    if os.geteuid() != 0 or uid == 0:
        return None  # sandboxes run as this user, who made the path
    current = Path("/")
    for part in path.resolve().parts[1:]:
        try:
            info = current.stat()
        except OSError:
            return None  # not there yet: LAP makes it
        bit = 0o100 if info.st_uid == uid else 0o010 if info.st_gid == uid else 0o001
        if not info.st_mode & bit:
            return (
                f"the sandbox user (uid {uid}) cannot reach {path}: {current} does not let it through"
                f" (mode {stat.filemode(info.st_mode)}); fix: `chmod o+x {current}`, or put it under a"
                " directory others can traverse (a `mktemp -d` directory is 0700)"
            )
        current = current / part
    return None


async def diagnose(bwrap_name: str, uid: int, python: str, disk_mb: int, data_dir: Path) -> list[Check]:
    """Return the checks of a host that runs sandboxes with `bwrap_name` as `uid` on `python`, `disk_mb` each."""
    problem = unreachable(data_dir, uid)
    checks = [
        Check(
            name="data directory",
            ok=problem is None,
            detail=problem or f"{data_dir}: the sandbox user (uid {uid}) reaches it",
            fix="" if problem is None else problem.rpartition("fix: ")[2],
        )
    ]
    bwrap = shutil.which(bwrap_name)
    if bwrap is None:
        checks.append(
            Check(
                name="bwrap",
                ok=False,
                detail=f"{bwrap_name} not found",
                fix="apt-get install bubblewrap",
            )
        )
    else:
        as_user = {"user": uid, "group": uid, "extra_groups": []} if os.geteuid() == 0 else {}
        probe = [
            bwrap,
            "--unshare-all",
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--symlink",
            "usr/lib",
            "/lib",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "/usr/bin/true",
        ]
        result = await anyio.run_process(probe, check=False, **as_user)  # type: ignore[arg-type]
        checks.append(
            Check(
                name="bwrap",
                ok=result.returncode == 0,
                detail=f"{bwrap} runs sandboxes as uid {uid}"
                if result.returncode == 0
                else result.stderr.decode(errors="replace").strip(),
                fix="enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)",
            )
        )
    python_ok = os.access(python, os.X_OK)
    checks.append(
        Check(
            name="sandbox python",
            ok=python_ok,
            detail=python,
            fix="apt-get install python3, or set LAP_SANDBOX_PYTHON",
        )
    )
    checks.append(
        Check(
            name="cgroup limits",
            ok=True,
            detail="memory and pids limits (cgroup v1)"
            if cgroups.available()
            else "not available here: sandboxes run without memory/pids limits",
        )
    )
    limited = hard_limits_available()
    checks.append(
        Check(
            name="disk limits",
            ok=limited or not disk_mb,
            detail=f"{disk_mb} MB per sandbox (a loop-mounted ext4 image per volume)"
            if limited and disk_mb
            else "none: a sandbox can fill the disk that holds LAP's data"
            if disk_mb
            else "none (LAP_SANDBOX_DISK_MB=0)",
            fix="run LAP as root on a host with loop devices (modprobe loop), or set LAP_SANDBOX_DISK_MB=0",
        )
    )
    return checks
