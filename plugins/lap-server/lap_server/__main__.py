"""`python -m lap_server`: serve the API on LAP_HOST:LAP_PORT (web and turns in one process)."""

from __future__ import annotations

import anyio
import uvicorn

from lap_core import Lap
from lap_server.app import ServerSettings, create_app


async def main() -> None:
    async with Lap(settings={"server": ServerSettings}) as lap:
        settings: ServerSettings = lap.settings_of("server")
        app = create_app(lap, settings)
        config = uvicorn.Config(app, host=settings.lap_host, port=settings.lap_port, log_level="warning")
        await uvicorn.Server(config).serve()


if __name__ == "__main__":
    anyio.run(main)
