"""`lap doctor`'s checks of the local backend: bubblewrap as the sandbox user, the sandbox's Python, cgroups."""

from __future__ import annotations

import os
import shutil

import anyio

from lap_core import Check
from lap_local import cgroups
from lap_local.disk import hard_limits_available


async def diagnose(bwrap_name: str, uid: int, python: str, disk_mb: int) -> list[Check]:
    """Return the checks of a host that runs sandboxes with `bwrap_name` as `uid` on `python`, `disk_mb` each."""
    checks = []
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
