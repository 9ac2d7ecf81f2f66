"""`lap worker`: run queued turns (any number of workers share one PostgreSQL store)."""

from __future__ import annotations

import signal

import anyio
import click

from lap_core._cli import run
from lap_core._runtime import Lap


@click.command()
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    envvar="LAP_METRICS_PORT",
    default=None,
    help="Serve Prometheus metrics (the reconciler's decisions, the model calls metered, the process) on this port.",
)
@click.option(
    "--metrics-host",
    envvar="LAP_METRICS_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Where the metrics listen (0.0.0.0 for a scraper on another host: they are unauthenticated).",
)
def worker(metrics_port: int | None, metrics_host: str) -> None:
    """Run turns from the store's queue until SIGTERM or Ctrl-C (then hand running turns back)."""

    async def main() -> None:
        # Listening before the runtime starts: a SIGTERM while it starts (a supervisor stopping a
        # worker it just started) ends the start and the process cleanly, not by the signal's default.
        stop, started = anyio.Event(), False
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals, anyio.CancelScope() as starting:

            async def watch() -> None:
                async for _ in signals:
                    stop.set()
                    if not started:
                        starting.cancel()
                    return

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(watch)
                async with Lap() as lap:
                    started = True
                    if metrics_port is not None:
                        from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

                        from lap_core._metrics import DecisionCollector, UsageCollector

                        registry = CollectorRegistry()
                        registry.register(DecisionCollector(lap))
                        registry.register(UsageCollector(lap))
                        ProcessCollector(registry=registry)
                        start_http_server(metrics_port, addr=metrics_host, registry=registry)  # a daemon thread
                    click.secho(f"worker running (data dir {lap.data_dir}); Ctrl-C stops it", dim=True, err=True)
                    await stop.wait()
                tasks.cancel_scope.cancel()  # the runtime ended on its own: stop listening
        click.secho("worker stopped", dim=True, err=True)

    run(main)
