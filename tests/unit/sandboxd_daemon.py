"""Running the real sandboxd for tests: a daemon in a subprocess, the way a sandbox starts it.

The daemon runs `python -I -S` on a directory holding only a copy of lap_sandboxd and msgspec,
so every test also proves that stdlib + msgspec suffice. Fixtures: `tests/unit/conftest.py`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from lap_core._sandbox_client import SandboxClient

if TYPE_CHECKING:
    from collections.abc import Iterator

    from lap_sandboxd.protocol import OutputRecord

ROOT = Path(__file__).resolve().parents[2]
TOKEN = secrets.token_urlsafe(16)
WAIT = 20  # seconds any single step may take before the test fails instead of hanging


@dataclass
class Daemon:
    directory: Path
    proc: subprocess.Popen[bytes]

    @property
    def socket(self) -> Path:
        return self.directory / "sandboxd.sock"

    def client(self, token: str = TOKEN) -> SandboxClient:
        return SandboxClient(token=token, uds=str(self.socket))


def bootstrap(lib: Path) -> list[str]:
    """The command line a sandbox starts sandboxd with (see lap_local.bwrap)."""
    code = f"import sys; sys.path.insert(0, {str(lib)!r}); from lap_sandboxd.__main__ import run; sys.exit(run())"
    return [sys.executable, "-I", "-S", "-B", "-c", code]


@contextlib.contextmanager
def running_daemon(lib: Path, *args: str, directory: Path | None = None) -> Iterator[Daemon]:
    # Unix socket paths are short (108 bytes): pytest's tmp_path can be too long.
    own = directory is None
    directory = directory or Path(tempfile.mkdtemp(prefix="sbd-", dir="/tmp"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(directory), "LAP_SANDBOXD_TOKEN": TOKEN}
    argv = [*bootstrap(lib), "--socket", str(directory / "sandboxd.sock"), "--state", str(directory / "state"), *args]
    with open(directory / "sandboxd.log", "ab") as log:
        proc = subprocess.Popen(argv, env=env, cwd=directory, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        yield Daemon(directory, proc)
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print((directory / "sandboxd.log").read_text(errors="replace"))  # shown when a test fails
        if own:
            shutil.rmtree(directory, ignore_errors=True)


def new_id() -> str:
    return f"p-{secrets.token_hex(4)}"


async def collect(client: SandboxClient, process_id: str, after: int = 0, follow: bool = True) -> list[OutputRecord]:
    with anyio.fail_after(WAIT):
        return [record async for record in client.output(process_id, after=after, follow=follow)]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
