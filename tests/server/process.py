"""`serve_process`: the real `lap serve` in a subprocess, for the tests that need one (logs, fuzzing)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from tests.cluster import LAP, REPO
from tests.fakes.litellm import free_port
from tests.fakes.shared import BACKEND, stop_all
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path


@dataclass
class ServeProcess:
    """A running `lap serve` subprocess: its URL, master key, and where its output goes."""

    base_url: str
    master_key: str
    stdout: Path
    stderr: Path
    process: subprocess.Popen[bytes]

    def output(self) -> str:
        """Everything it wrote so far, stdout then stderr."""
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


def _entry_points(directory: Path, plugins: Mapping[str, str]) -> Path:
    """A distribution declaring the shared fakes (and `plugins`, name: module:object) as `lap` entry points."""
    dist = directory / "lap_server_test_plugins-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lap-server-test-plugins\nVersion: 0\n")
    lines = [f"{name} = {target}" for name, target in {"fakes": "tests.fakes.shared:plugin", **plugins}.items()]
    (dist / "entry_points.txt").write_text("[lap]\n" + "\n".join(lines) + "\n")
    return directory


@contextlib.contextmanager
def serve_process(
    data_dir: Path,
    run_dir: Path,
    *,
    master_key: str,
    plugins: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    asgi: bool = False,
) -> Iterator[ServeProcess]:
    """Run `lap serve` as an operator does, on the shared process backend and scripted harness.

    With `asgi`, run uvicorn on the ASGI factory (`lap_server:app_factory`) instead.

    `plugins` are more entry points (`module:object`, importable from the repository); with a `DATABASE_URL`, the
    database is migrated first. Stopped with SIGTERM afterwards, its sandboxes with it.
    """
    port = free_port()
    defaults = {
        "LITELLM_API_BASE": "http://127.0.0.1:9",
        "LITELLM_API_KEY": "k",
        "LAP_SANDBOX_BACKEND": BACKEND,
        "LAP_RATE_LIMIT": "0",
        "HOME": os.environ.get("HOME", "/root"),
    }
    python_path = [str(REPO), str(_entry_points(run_dir / "entry-points", plugins or {}))]
    full_env = lap_env(
        data_dir,
        **defaults | dict(env or {}),
        MASTER_KEY=master_key,
        LAP_PORT=str(port),
        PYTHONPATH=os.pathsep.join(python_path),
    )
    if env and "DATABASE_URL" in env:
        migrated = subprocess.run([*LAP, "migrate"], env=full_env, capture_output=True, text=True, timeout=60)
        assert migrated.returncode == 0, migrated.stderr
    stdout, stderr = run_dir / "stdout.log", run_dir / "stderr.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        uvicorn = [sys.executable, "-m", "uvicorn", "lap_server:app_factory", "--factory", "--port", str(port)]
        command = uvicorn if asgi else [*LAP, "serve"]
        process = subprocess.Popen(command, env=full_env, cwd=data_dir, stdout=out, stderr=err)
    server = ServeProcess(f"http://127.0.0.1:{port}", master_key, stdout, stderr, process)
    try:
        deadline = time.monotonic() + 30
        while not _healthy(server):
            assert process.poll() is None, server.output()
            assert time.monotonic() < deadline, f"lap serve did not answer\n{server.output()}"
            time.sleep(0.1)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        stop_all(data_dir)


def _healthy(server: ServeProcess) -> bool:
    try:
        return httpx.get(f"{server.base_url}/healthz").status_code == 200
    except httpx.TransportError:
        return False
