"""`lap serve`: the API on LAP_HOST:LAP_PORT, with a worker in the same process unless --no-worker."""

from __future__ import annotations

import contextlib
import signal
from typing import TYPE_CHECKING

import anyio
import click
import uvicorn

from lap_core import Lap, LapError
from lap_server.app import ServerSettings, create_app

if TYPE_CHECKING:
    from collections.abc import Iterator


class _Server(uvicorn.Server):
    """uvicorn, minus its re-raising of SIGTERM after shutdown: LAP must close its store and proxy."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(*, worker: bool) -> None:
    """Serve until SIGTERM or Ctrl-C; with `worker=False` turns wait for `lap worker` processes."""
    server: _Server | None = None
    # Listening before LAP starts: a SIGTERM while it starts ends the start cleanly, not by the
    # signal's default (LAP must close its store and proxy either way).
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals, anyio.CancelScope() as starting:

        async def watch() -> None:
            async for received in signals:
                if server is None:
                    starting.cancel()
                    return
                server.force_exit = server.should_exit and received == signal.SIGINT  # a second Ctrl-C
                server.should_exit = True

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watch)
            async with Lap(settings={"server": ServerSettings}, run_turns=worker) as lap:
                settings: ServerSettings = lap.settings_of("server")
                config = uvicorn.Config(
                    create_app(lap, settings),
                    host=settings.lap_host,
                    port=settings.lap_port,
                    log_level="warning",
                    log_config=None,  # uvicorn's records go through LAP's logging (secrets masked)
                    access_log=False,  # `lap.http` logs every request
                    lifespan="off",
                )
                where = f"http://{settings.lap_host}:{settings.lap_port}"
                click.secho(f"LAP serving on {where} (OpenAPI at /schema)", err=True)
                server = _Server(config)
                await server.serve()
            tasks.cancel_scope.cancel()
    click.secho("LAP stopped", err=True)


@click.command("serve")
@click.option("--no-worker", is_flag=True, help="Do not run turns here (run `lap worker` processes instead).")
def serve_command(no_worker: bool) -> None:
    """Serve the REST API and live event streams (web and worker in one process by default)."""
    try:
        anyio.run(lambda: serve(worker=not no_worker))
    except* LapError as group:
        for error in group.exceptions:
            click.secho(f"error: {error.message}", fg="red", err=True)
        raise SystemExit(1) from None
