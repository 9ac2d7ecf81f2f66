"""`lap secrets ...`: secrets of the local store's default team (the value from stdin or a prompt, never argv)."""

from __future__ import annotations

import sys

import click

from lap_core._cli import run
from lap_core._errors import InvalidInput, NotFound
from lap_core._runtime import Lap


def _read_value() -> str:
    """Return the value: all of stdin when it is piped (one final newline dropped), else a hidden prompt."""
    if not sys.stdin.isatty():
        return sys.stdin.read().removesuffix("\n")
    return str(click.prompt("value", hide_input=True, confirmation_prompt=True, err=True))


@click.group()
def secrets() -> None:
    """Create, list and delete secrets: agents see a stub, requests to the secret's hosts get the value."""


@secrets.command("create")
@click.argument("name")
@click.option("--host", "hosts", multiple=True, required=True, help="A host (or *.suffix) it may go to; repeatable.")
@click.option("--agent", default=None, help="Only this agent's sandboxes get it (default: every agent's).")
def create(name: str, hosts: tuple[str, ...], agent: str | None) -> None:
    """Create secret NAME (an environment variable name); its value is read from stdin or asked for."""
    value = _read_value()

    async def main() -> None:
        async with Lap(run_turns=False) as lap:
            secret = await lap.secrets.create(name, value, hosts=hosts, agent_id=agent)
        scope = f"agent {agent}" if agent else "every agent"
        click.echo(f"created secret {secret.name} ({secret.id}) for {scope}: sent only to {', '.join(secret.hosts)}")

    run(main)


@secrets.command("list")
@click.option("--agent", default=None, help="The secrets this agent's sandboxes get.")
def list_(agent: str | None) -> None:
    """List secrets (never their values)."""

    async def main() -> None:
        async with Lap(run_turns=False) as lap:
            found = await lap.secrets.list(agent_id=agent)
        if not found:
            click.echo("no secrets yet: echo VALUE | lap secrets create NAME --host HOST")
        for secret in found:
            scope = secret.agent_id or "(team)"
            click.echo(f"{secret.name:<24} {scope:<26} {','.join(secret.hosts):<32} {secret.id}")

    run(main)


@secrets.command("delete")
@click.argument("secret")
@click.option("--agent", default=None, help="With a NAME: the agent's own secret of that name.")
def delete(secret: str, agent: str | None) -> None:
    """Delete SECRET, by id or by name (the team-wide one, or the agent's own with --agent)."""

    async def main() -> None:
        async with Lap(run_turns=False) as lap:
            owner = (await lap.agents.get(agent)).id if agent else None
            every = await lap.secrets.list()
            matches = [s for s in every if s.id == secret or (s.name == secret and s.agent_id == owner)]
            if not matches:
                raise NotFound(f"secret {secret!r} not found")
            if len(matches) > 1:  # an id that is also a name
                raise InvalidInput(f"{secret!r} names more than one secret: give its id")
            await lap.secrets.delete(matches[0].id)
        click.echo(f"deleted secret {matches[0].name} ({matches[0].id})")

    run(main)
