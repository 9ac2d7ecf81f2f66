"""`lap serve --no-worker` as an operator runs it: it serves, queues turns for workers, and stops on SIGTERM."""

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


def test_serve_without_a_worker_queues_turns_and_stops_cleanly(data_dir: Path) -> None:
    port = free_port()
    env = lap_env(data_dir, MASTER_KEY="serve-test-key", LAP_PORT=str(port), HOME=os.environ.get("HOME", "/root"))
    server = subprocess.Popen(
        [sys.executable, "-m", "lap_core", "serve", "--no-worker"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        headers = {"Authorization": "Bearer serve-test-key"}
        with httpx.Client(base_url=base, headers=headers, timeout=10) as api:
            agent = api.post("/api/agents", json={"name": "a", "harness": "opencode", "model": "m"})
            assert agent.status_code == 201, agent.text
            session = api.post("/api/sessions", json={"agent_id": "a"}).json()
            accepted = api.post(f"/api/sessions/{session['id']}/messages", json={"text": "hi"})
            assert accepted.status_code == 202
            history = api.get(f"/api/sessions/{session['id']}/messages").json()
            assert [e["event"]["type"] for e in history] == ["user_message"]  # queued: no worker here
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=15)
    assert server.returncode == 0, stderr
    assert "Traceback" not in stderr
