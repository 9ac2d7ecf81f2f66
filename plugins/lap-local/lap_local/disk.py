"""Volumes on this host, each with a hard disk limit where the host allows it.

A volume is `volumes/<volume>/` with the session's `workspace/` and `home/` and the running
sandbox's `run/` (sandboxd's process output): everything a sandbox can write, so one limit
covers it all. With `LAP_SANDBOX_DISK_MB` and LAP running as root, that directory is the mount
point of an ext4 image of that size (`volumes/<volume>.img`, sparse: it takes only what is
written), loop-mounted `nosuid,nodev`: a full disk is the sandbox's `ENOSPC`, never the host's.
The image is mounted while a sandbox uses it and unmounted when the sandbox goes (loop devices
are a host-wide resource). Without root (or without loop devices) there is no hard limit: `lap
doctor` says so. A volume made before limits were set stays a plain directory, without one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import TYPE_CHECKING

import structlog

from lap_core import DiskUsage, SandboxError

if TYPE_CHECKING:
    from pathlib import Path

log = structlog.get_logger("lap.local")

PARTS = ("workspace", "home", "run")


def hard_limits_available() -> bool:
    """Whether this host can give volumes a hard size: root, loop devices, mkfs.ext4 and mount."""
    return (
        os.geteuid() == 0
        and os.path.exists("/dev/loop-control")
        and shutil.which("mkfs.ext4") is not None
        and shutil.which("mount") is not None
    )


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        raise SandboxError(f"{' '.join(argv[:2])} failed: {(result.stderr or result.stdout).strip()[-500:]}")


class Volumes:
    """The volumes under `root` (`volumes/`), owned by the sandbox user `uid`, limited to `limit_mb`."""

    def __init__(self, root: Path, *, uid: int, limit_mb: int | None) -> None:
        self.root = root
        self.uid = uid
        self.limit_mb = limit_mb if limit_mb and hard_limits_available() else None

    def path(self, volume: str) -> Path:
        """Return a volume's directory (raising `SandboxError` for a name that is not one)."""
        if not volume or "/" in volume or volume.startswith("."):
            raise SandboxError(f"invalid volume name {volume!r}")
        return self.root / volume

    def _image(self, volume: str) -> Path:
        return self.root / f"{volume}.img"

    def exists(self, volume: str) -> bool:
        """Whether the volume is there (its directory, or its image while unmounted)."""
        return self.path(volume).is_dir() or self._image(volume).is_file()

    def prepare(self, volume: str) -> Path:
        """Make the volume ready for a sandbox (made, mounted, its parts there); return its directory."""
        directory, image = self.path(volume), self._image(volume)
        new = not directory.exists() and not image.exists()
        directory.mkdir(parents=True, exist_ok=True)
        if self.limit_mb and (new or image.exists()) and not os.path.ismount(directory):
            if not image.exists():
                with open(image, "wb") as file:
                    file.truncate(self.limit_mb * 1024 * 1024)
                owner = f"root_owner={self.uid}:{self.uid},lazy_itable_init=1,lazy_journal_init=1"
                _run("mkfs.ext4", "-q", "-F", "-m", "0", "-E", owner, str(image))
            _run("mount", "-o", "loop,nosuid,nodev,noatime", str(image), str(directory))
        for part in PARTS:
            path = directory / part
            path.mkdir(exist_ok=True)
            if os.geteuid() == 0:
                os.lchown(path, self.uid, self.uid)
        return directory

    def release(self, volume: str) -> None:
        """Unmount the volume's image (its sandbox is gone); a plain directory stays as it is."""
        directory = self.path(volume)
        if os.path.ismount(directory):
            try:
                _run("umount", str(directory))
            except SandboxError as error:
                # Still busy (a process of the sandbox not reaped yet): detach it, the kernel finishes later.
                log.warning("volume.busy", volume=volume, error=error.message)
                _run("umount", "-l", str(directory))

    def delete(self, volume: str) -> None:
        """Delete the volume for good."""
        self.release(volume)
        shutil.rmtree(self.path(volume), ignore_errors=True)
        self._image(volume).unlink(missing_ok=True)

    def usage(self, volume: str) -> DiskUsage | None:
        """Return how full a limited volume is (None: no limit, or not mounted now)."""
        directory = self.path(volume)
        if not os.path.ismount(directory):
            return None
        stat = os.statvfs(directory)
        total = stat.f_blocks * stat.f_frsize
        return DiskUsage(used=total - stat.f_bavail * stat.f_frsize, limit=total)
