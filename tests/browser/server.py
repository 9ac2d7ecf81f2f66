"""A LAP server in a background thread (its own event loop), for Playwright's sync API and `bin/screenshots`.

The process sandbox backend and the scripted harness of tests/fakes (harness `script`): no LLM,
no bubblewrap. `LiveServer.api` is an httpx client with the master key, to set things up.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx
import uvicorn

from lap_core import Lap
from lap_server import ServerSettings, create_app
from tests.fakes.litellm import free_port
from tests.fakes.plugin import FakesPlugin
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from collections.abc import Iterator

MASTER_KEY = "browser-master-key"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


class LiveServer:
    """A running server: its URL and an API client with the master key."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30)

    def team_key(self, name: str) -> tuple[str, str]:
        """Create a team and a key of it; return the team's id and the key."""
        team = self.api.post("/api/teams", json={"name": name}).json()
        key = self.api.post("/api/keys", json={"name": f"{name}-key", "team_id": team["id"]}).json()
        return team["id"], key["key"]


@contextlib.contextmanager
def live_server(data_dir: Path | None = None, **env: str) -> Iterator[LiveServer]:
    """Serve LAP on a free port in a thread until the block ends."""
    port = free_port()
    started, stop = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    async def main(directory: Path) -> None:
        full_env = lap_env(
            directory,
            LAP_SANDBOX_BACKEND="process",
            LITELLM_API_BASE="http://127.0.0.1:9",
            LITELLM_API_KEY="k",
            MASTER_KEY=MASTER_KEY,
            LAP_PORT=str(port),
            **env,
        )
        async with Lap(plugins=[FakesPlugin()], env=full_env, settings={"server": ServerSettings}, migrate=True) as lap:
            app = create_app(lap, lap.settings_of("server"))
            server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", lifespan="off"))
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(server.serve)
                while not server.started:
                    await anyio.sleep(0.01)
                started.set()
                while not stop.is_set():
                    await anyio.sleep(0.05)
                server.should_exit = True

    def run() -> None:
        try:
            if data_dir is not None:
                anyio.run(main, data_dir)
                return
            with tempfile.TemporaryDirectory(prefix="lap-browser-", dir="/tmp") as directory:
                Path(directory).chmod(0o711)  # sandbox users traverse it
                anyio.run(main, Path(directory))
        except BaseException as error:  # reported to the caller below
            failure.append(error)
            started.set()

    thread = threading.Thread(target=run, name="lap-live-server", daemon=True)
    thread.start()
    started.wait(60)
    if failure:
        raise failure[0]
    server = LiveServer(f"http://127.0.0.1:{port}")
    try:
        yield server
    finally:
        server.api.close()
        stop.set()
        thread.join(30)
