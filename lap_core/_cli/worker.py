"""`lap worker`: run queued turns (any number of workers share one PostgreSQL store)."""

from __future__ import annotations

import signal

import anyio
import click

from lap_core._cli import run
from lap_core._runtime import Lap


@click.command()
def worker() -> None:
    """Run turns from the store's queue until SIGTERM or Ctrl-C."""

    async def main() -> None:
        async with Lap() as lap:
            click.secho(f"worker running (data dir {lap.data_dir}); Ctrl-C stops it", dim=True, err=True)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
        click.secho("worker stopped", dim=True, err=True)

    run(main)
