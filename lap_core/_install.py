"""Installing a harness's pinned npm packages into LAP's data directory.

Each harness gets a directory named after a hash of its package pins, so upgrading a pin
installs next to the old one and running sandboxes keep what they mounted.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from typing import TYPE_CHECKING

import anyio

from lap_core._errors import HarnessError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from lap_core._harness import Harness

MARKER = ".lap-installed"


def harness_dir(root: Path, name: str, harness: Harness) -> Path:
    """Return where `harness` is (or would be) installed under `root` (`LAP_HARNESS_DIR`)."""
    pins = "\n".join(sorted(harness.npm_packages))
    return root / name / hashlib.sha256(pins.encode()).hexdigest()[:12]


def is_installed(root: Path, name: str, harness: Harness) -> bool:
    """Return whether the harness's packages are installed (an interrupted install does not count).

    A harness without npm packages has nothing to install: it always is.
    """
    return not harness.npm_packages or (harness_dir(root, name, harness) / MARKER).is_file()


async def install_harness(
    root: Path, name: str, harness: Harness, on_output: Callable[[str], None] = lambda line: None
) -> Path:
    """Install the harness's pinned npm packages (a no-op when installed); return the directory.

    npm's output is passed line by line to `on_output` (progress for long downloads).
    """
    target = harness_dir(root, name, harness)
    if (target / MARKER).is_file() or not harness.npm_packages:
        target.mkdir(parents=True, exist_ok=True)
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise HarnessError("npm is not installed; it is needed to install harness CLIs (apt-get install npm)")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "package.json").write_text('{"name": "lap-harness", "private": true}\n')
    argv = [
        npm,
        "install",
        "--no-audit",
        "--no-fund",
        "--no-update-notifier",
        "--loglevel=http",
        "--prefix",
        str(staging),
        *harness.npm_packages,
    ]
    on_output(f"$ npm install {' '.join(harness.npm_packages)}")
    async with await anyio.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process:
        assert process.stdout is not None
        buffer = b""
        async for chunk in process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                on_output(line.decode(errors="replace").rstrip())
        code = await process.wait()
    if code != 0:
        raise HarnessError(f"npm install of {', '.join(harness.npm_packages)} failed with exit code {code}")
    (staging / MARKER).write_text("\n".join(harness.npm_packages) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target
