"""A real LiteLLM proxy (the `litellm` CLI from `litellm[proxy]`), offline, in front of the fake LLM."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

MASTER_KEY = "sk-litellm-master-test"
PRICES = {"fake-model": (1e-06, 2e-06), "claude-fake": (3e-06, 1.5e-05)}
"""USD per input and per output token of each model, so that LiteLLM reports what calls cost."""
CONFIG = """\
model_list:
  - model_name: fake-model
    litellm_params: {{model: openai/fake-model, api_base: "{upstream}/v1", api_key: sk-upstream-fake,
      input_cost_per_token: 1e-06, output_cost_per_token: 2e-06}}
  - model_name: claude-fake
    litellm_params: {{model: anthropic/claude-fake, api_base: "{upstream}", api_key: sk-upstream-ant,
      input_cost_per_token: 3e-06, output_cost_per_token: 1.5e-05}}
general_settings:
  master_key: {master_key}
litellm_settings:
  telemetry: false
  drop_params: true
  num_retries: 0
"""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LiteLLMProxy:
    """Starts `litellm --config ...` on a free port; `url` and `master_key` once started."""

    def __init__(self, upstream_url: str, master_key: str = MASTER_KEY) -> None:
        self.master_key = master_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = Path(tempfile.mkdtemp(prefix="lap-litellm-"))
        (self._dir / "config.yaml").write_text(CONFIG.format(upstream=upstream_url, master_key=master_key))
        self.log = self._dir / "litellm.log"
        self._process: subprocess.Popen[bytes] | None = None

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def start(self, timeout: float = 90) -> LiteLLMProxy:
        executable = Path(sys.executable).with_name("litellm")
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "NO_PROXY": "*"}
        with open(self.log, "wb") as log:
            self._process = subprocess.Popen(
                [
                    str(executable),
                    "--config",
                    str(self._dir / "config.yaml"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self._dir,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"litellm exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health/liveliness", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"litellm was not ready within {timeout} s:\n{tail}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)
