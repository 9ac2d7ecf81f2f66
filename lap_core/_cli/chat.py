"""`lap chat`: talk to an agent in the terminal, its replies streaming as they are produced."""

from __future__ import annotations

import signal
import sys
import threading
from typing import TYPE_CHECKING

import anyio
import click

from lap_core._cli import run
from lap_core._cli.admin import ensure_installed
from lap_core._cli.render import EventPrinter
from lap_core._errors import NotFound
from lap_core._events import TurnEnd, UserMessage
from lap_core._runtime import Lap

if TYPE_CHECKING:
    from lap_core._models import Agent

DEFAULT_AGENT = "default"


async def _agent(lap: Lap, name: str | None) -> Agent:
    if name is not None:
        return await lap.agents.get(name)
    try:
        return await lap.agents.get(DEFAULT_AGENT)
    except NotFound:
        click.secho(f"creating agent {DEFAULT_AGENT!r} (opencode, model {lap.settings.lap_default_model})", dim=True)
        return await lap.agents.create(DEFAULT_AGENT, harness="opencode", model=lap.settings.lap_default_model)


class LineReader:
    """Reads lines in a daemon thread, so Ctrl-C at the prompt never waits on a blocked `input()`."""

    def __init__(self, prompt: str) -> None:
        self._prompt = prompt
        self._wanted = threading.Semaphore(0)
        self._send, self._receive = anyio.create_memory_object_stream[str | None](1)
        self._token = anyio.lowlevel.current_token()
        threading.Thread(target=self._read_lines, name="lap-chat-input", daemon=True).start()

    def _read_lines(self) -> None:
        while True:
            self._wanted.acquire()
            try:
                line: str | None = input(self._prompt)
            except EOFError:
                line = None
            anyio.from_thread.run(self._send.send, line, token=self._token)
            if line is None:
                return

    async def read(self) -> str | None:
        """Return the next line, or None at the end of the input."""
        self._wanted.release()
        return await self._receive.receive()

    def close(self) -> None:
        """Release the stream (the thread ends with the process)."""
        self._send.close()
        self._receive.close()


async def _turn(lap: Lap, session_id: str, text: str, printer: EventPrinter) -> TurnEnd | None:
    """Stream one turn and return its end; Ctrl-C aborts the turn (not the chat)."""
    end = None
    async with anyio.create_task_group() as tasks:

        async def abort_on_interrupt() -> None:
            with anyio.open_signal_receiver(signal.SIGINT) as signals:
                async for _ in signals:
                    click.secho("\n(aborting the turn …)", fg="yellow", err=True)
                    await lap.sessions.abort(session_id)

        tasks.start_soon(abort_on_interrupt)
        async for record in lap.sessions.stream(session_id, text):
            if not isinstance(record.event, UserMessage):
                printer.print(record)
            if isinstance(record.event, TurnEnd):
                end = record.event
        tasks.cancel_scope.cancel()
    return end


@click.command()
@click.argument("agent", required=False)
@click.option("--session", "session_id", default=None, help="Continue this session instead of starting one.")
@click.option(
    "-m", "--message", "messages", multiple=True, help="Send this message, print the reply, exit (repeatable)."
)
def chat(agent: str | None, session_id: str | None, messages: tuple[str, ...]) -> None:
    """Chat with AGENT (by default the agent named 'default', created on first use).

    Reads messages from the terminal (or from standard input, one per line, when it is not one).
    Ctrl-C aborts the running turn; Ctrl-D or /exit leaves. The session, its sandbox and its
    workspace remain: continue it later with --session. Not at a terminal (-m, or piped input), a
    turn that does not complete stops the chat with exit code 1.
    """

    async def main() -> bool:
        async with Lap() as lap:
            found = await _agent(lap, agent)
            await ensure_installed(lap, found.harness)
            session = await lap.sessions.get(session_id) if session_id else await lap.sessions.create(found.id)
            interactive = not messages and sys.stdin.isatty()
            if interactive:
                click.secho(
                    f"session {session.id} with {found.name} ({found.harness}, {found.model}). "
                    "Ctrl-C aborts a turn, Ctrl-D or /exit leaves.",
                    dim=True,
                )
            queue: list[str | None] = [*messages, None]
            reader = None if messages else LineReader("you> " if interactive else "")
            printer = EventPrinter()
            try:
                while (text := queue.pop(0) if reader is None else await reader.read()) is not None:
                    if text.strip() in ("/exit", "/quit"):
                        break
                    if not text.strip():
                        continue
                    end = await _turn(lap, session.id, text, printer)
                    if not interactive and (end is None or end.status != "completed"):
                        # A script must see it: the error event was printed above, on stderr.
                        click.secho(f"error: the turn {end.status if end else 'failed'}", fg="red", err=True)
                        return False
            finally:
                if reader is not None:
                    reader.close()
                if interactive:
                    click.secho(f"\nbye. continue with: lap chat {found.name} --session {session.id}", dim=True)
        return True

    if not run(main):
        raise SystemExit(1)
