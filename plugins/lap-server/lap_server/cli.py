"""`lap serve`: the API on LAP_HOST:LAP_PORT (or --host/--port), with a worker in the same process unless --no-worker.

Cheap to import (every `lap` command lists `serve`): uvicorn and Litestar are imported when it runs.
"""

from __future__ import annotations

import contextlib
import signal
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from collections.abc import Iterator

CONFIG_HINT = "every variable, its default and meaning: docs/configuration.md (and .env.example)"


async def serve(*, worker: bool, host: str | None = None, port: int | None = None) -> None:
    """Serve until SIGTERM or Ctrl-C; with `worker=False` turns wait for `lap worker` processes.

    `host` and `port` override `LAP_HOST` and `LAP_PORT`. The app is `ServerApp`, as under any ASGI
    server; this runs its lifespan itself, so that a SIGTERM while LAP starts ends the start at once.
    """
    import anyio
    import uvicorn

    from lap_server.app import ServerApp

    class _Server(uvicorn.Server):
        """uvicorn, minus its re-raising of SIGTERM after shutdown: LAP must close its store and proxy."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    app = ServerApp(worker=worker)
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
            async with app.running() as settings:
                host, port = host or settings.lap_host, port or settings.lap_port
                config = uvicorn.Config(
                    app,
                    host=host,
                    port=port,
                    log_level="warning",
                    log_config=None,  # uvicorn's records go through LAP's logging (secrets masked)
                    access_log=False,  # `lap.http` logs every request
                    lifespan="off",  # `app.running()` is its lifespan
                )
                click.secho(f"LAP serving on http://{host}:{port} (OpenAPI at /schema)", err=True)
                server = _Server(config)
                await server.serve()
            tasks.cancel_scope.cancel()
    click.secho("LAP stopped", err=True)


@click.command("serve")
@click.option("--no-worker", is_flag=True, help="Do not run turns here (run `lap worker` processes instead).")
@click.option("--host", default=None, help="The address to listen on.  [default: LAP_HOST, else 127.0.0.1]")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="The port.  [default: LAP_PORT, else 3000]")
def serve_command(no_worker: bool, host: str | None, port: int | None) -> None:
    """Serve the REST API and live event streams (web and worker in one process by default)."""
    import anyio

    from lap_core import ConfigError, LapError

    try:
        anyio.run(lambda: serve(worker=not no_worker, host=host, port=port))
    except* LapError as group:
        for error in group.exceptions:
            assert isinstance(error, LapError)
            click.secho(f"error: {error.message}", fg="red", err=True)
            if isinstance(error, ConfigError):
                click.secho(CONFIG_HINT, err=True)
        raise SystemExit(1) from None
