"""`lap sessions ...`"""

from __future__ import annotations

import click

from lap_core._cli import run
from lap_core._cli.render import EventPrinter
from lap_core._runtime import Lap


@click.group()
def sessions() -> None:
    """List, show and delete sessions."""


@sessions.command("list")
@click.option("--agent", default=None, help="Only this agent's sessions (name or id).")
def list_(agent: str | None) -> None:
    """List sessions, newest first."""

    async def main() -> None:
        async with Lap(run_turns=False) as lap:
            found = await lap.sessions.list(agent=agent)
            names = {a.id: a.name for a in await lap.agents.list()}
        if not found:
            click.echo("no sessions yet: lap chat AGENT")
        for session in found:
            when = session.updated_at.strftime("%Y-%m-%d %H:%M")
            click.echo(f"{session.id:<28} {names.get(session.agent_id, '?'):<20} {session.status:<9} {when}")

    run(main)


@sessions.command("show")
@click.argument("session_id")
def show(session_id: str) -> None:
    """Show a session and its conversation."""

    async def main() -> None:
        async with Lap(run_turns=False) as lap:
            session = await lap.sessions.get(session_id)
            agent = await lap.agents.get(session.agent_id)
            history = await lap.sessions.history(session_id)
        click.echo(f"session {session.id} of agent {agent.name}: {session.status} {session.status_detail}".rstrip())
        click.echo(f"sandbox {session.sandbox_name or '-'}, harness session {session.native_session_id or '-'}\n")
        printer = EventPrinter(show_user=True)
        for record in history:
            printer.print(record)

    run(main)


@sessions.command("delete")
@click.argument("session_id")
def delete(session_id: str) -> None:
    """Delete a session with its sandbox, workspace and history."""

    async def main() -> None:
        async with Lap(run_turns=False) as lap:
            await lap.sessions.delete(session_id)
        click.echo(f"deleted session {session_id}")

    run(main)


@sessions.command("restart")
@click.argument("session_id")
def restart(session_id: str) -> None:
    """Queue a fresh sandbox for a session (same workspace and conversation); a worker brings it up."""

    async def main() -> None:
        async with Lap(run_turns=False) as lap:
            job = await lap.sessions.restart(session_id)
        click.echo(f"restart of session {session_id} queued (job {job.id}); `lap sessions show` follows it")

    run(main)
