"""The server is an ordinary ASGI app (`lap_server:app_factory` under uvicorn), and `lap serve` takes --host/--port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import httpx

from tests.fakes.litellm import free_port
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from pathlib import Path

KEY = "asgi-test-master-key"


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    return lap_env(
        data_dir,
        MASTER_KEY=KEY,
        LITELLM_API_BASE="http://127.0.0.1:9",
        LITELLM_API_KEY="k",
        HOME=os.environ.get("HOME", "/root"),
        **extra,
    )


def _wait_healthy(process: subprocess.Popen[str], base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the server did not answer")


def _own_sockets(data_dir: Path, pid: int) -> list[Path]:
    """The LLM proxy's socket of process `pid` (there while its `Lap` runs, removed when it closes)."""
    return sorted((data_dir / "run" / "vault").glob(f"{pid}-*.sock"))


def test_uvicorn_runs_the_app_factory_whose_lifespan_owns_the_lap(data_dir: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "lap_server:app_factory", "--factory", "--port", str(port)]
    server = subprocess.Popen(command, env=_env(data_dir), stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(server, base)
        assert _own_sockets(data_dir, server.pid), "the Lap runs turns (its LLM proxy listens)"
        with httpx.Client(base_url=base, timeout=10) as api:
            assert api.get("/api/agents").status_code == 401
            created = api.post(
                "/api/agents",
                json={"name": "a", "harness": "opencode", "model": "m"},
                headers={"Authorization": f"Bearer {KEY}"},
            )
            assert created.status_code == 201, created.text
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    # uvicorn says so once the app's lifespan has ended, that is once its `Lap` is closed.
    assert "Application shutdown complete." in stderr
    assert "Traceback" not in stderr
    assert _own_sockets(data_dir, server.pid) == []


def test_a_configuration_error_fails_the_asgi_startup_with_its_message(data_dir: Path) -> None:
    env = {k: v for k, v in _env(data_dir).items() if k != "MASTER_KEY"}
    command = [sys.executable, "-m", "uvicorn", "lap_server:app_factory", "--factory", "--port", str(free_port())]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "MASTER_KEY" in result.stderr
    assert "docs/configuration.md" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_host_and_port_override_the_environment(data_dir: Path) -> None:
    port = free_port()
    # LAP_HOST is an address no interface has: serving there would fail, so --host is what is used.
    env = _env(data_dir, LAP_HOST="192.0.2.1", LAP_PORT=str(free_port()))
    command = [sys.executable, "-m", "lap_core", "serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait_healthy(server, f"http://127.0.0.1:{port}")
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    assert server.returncode == 0, stderr
    assert f"LAP serving on http://127.0.0.1:{port}" in stderr


def test_serve_rejects_a_port_out_of_range() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lap_core", "serve", "--port", "70000"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "--port" in result.stderr
