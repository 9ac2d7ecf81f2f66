"""The `lap` command line."""

from __future__ import annotations

import contextlib
import signal
import sys


def _terminated_while_starting(signum: int, frame: object) -> None:
    raise SystemExit(0)  # nothing has started yet, so nothing is left half-done


# Before the imports below (most of a command's start): a supervisor that stops a `lap worker` it
# has just started sees it exit cleanly, not die by the signal. `run` hands SIGTERM back.
with contextlib.suppress(ValueError):  # imported outside the main thread: not the `lap` command
    signal.signal(signal.SIGTERM, _terminated_while_starting)

import logging  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

import anyio  # noqa: E402
import click  # noqa: E402

from lap_core._errors import ConfigError, LapError  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


CONFIG_HINT = "every variable, its default and meaning: docs/configuration.md (and .env.example)"


def show_error(error: LapError) -> None:
    """Print a LAP error as the `lap` command does (a configuration error also says where settings are documented)."""
    click.secho(f"error: {error.message}", fg="red", err=True)
    if isinstance(error, ConfigError):
        click.secho(CONFIG_HINT, err=True)


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    """Run an async command; turn LAP's errors into a message and exit code 1 (never a traceback).

    SIGTERM has its default meaning again while it runs; servers catch it themselves.
    """
    if signal.getsignal(signal.SIGTERM) is _terminated_while_starting:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        return anyio.run(main)
    except* LapError as group:
        for error in group.exceptions:
            assert isinstance(error, LapError)
            show_error(error)
        sys.exit(1)
    except* KeyboardInterrupt:
        sys.exit(130)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    envvar="LAP_LOG_LEVEL",
    default="warning",
    show_default=True,
    help="The least severe log lines shown (servers: info logs every request); -v lowers it.",
)
@click.option("--log-json", is_flag=True, envvar="LAP_LOG_JSON", help="Log JSON lines (for production).")
def main(verbose: int, log_level: str, log_json: bool) -> None:
    """LAP: run AI coding agents in isolated sandboxes."""
    from lap_core._logging import configure_logging  # when a command runs: `lap --help` logs nothing

    level = logging.getLevelNamesMapping()[log_level.upper()]
    configure_logging(level=max(logging.DEBUG, level - 10 * verbose), json=log_json)


def _register() -> None:
    from lap_core._cli import admin, agents, chat, secrets, sessions, usage, worker
    from lap_core._config import read_environment
    from lap_core._plugins import PluginRegistry

    commands = (*admin.COMMANDS, agents.agents, secrets.secrets, sessions.sessions, chat.chat, usage.usage)
    for command in (*commands, worker.worker):
        main.add_command(command)
    try:
        for command in PluginRegistry(env=read_environment()).cli_commands():
            main.add_command(command)
    except LapError as error:  # a broken plugin must not take `lap doctor` and `lap plugins` down with it
        click.secho(f"warning: {error.message}", fg="yellow", err=True)


_register()
