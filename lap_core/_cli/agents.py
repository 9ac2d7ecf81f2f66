"""`lap agents ...`"""

from __future__ import annotations

import json
from typing import get_args

import click

from lap_core._cli import run
from lap_core._egress_policy import PRESETS, EgressPolicy
from lap_core._errors import InvalidInput
from lap_core._models import BusyPolicy
from lap_core._runtime import Lap


def _options(pairs: tuple[str, ...]) -> dict[str, object]:
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--option takes KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


@click.group()
def agents() -> None:
    """Create, list, show and delete agents."""


@agents.command("create")
@click.option("--name", required=True, help="Unique within the team: letters, digits, '-', '_', '.'.")
@click.option("--harness", required=True, help="The agent CLI to run (see `lap plugins`).")
@click.option("--model", required=True, help="A model name your LiteLLM gateway serves.")
@click.option("--prompt", default="", help="Instructions given to the agent in every session.")
@click.option("--option", "option_pairs", multiple=True, metavar="KEY=VALUE", help="A harness option (repeatable).")
@click.option(
    "--on-busy",
    type=click.Choice(get_args(BusyPolicy)),
    default="enqueue",
    show_default=True,
    help="What a message to a busy session does: wait its turn, be refused, or abort the running turn.",
)
@click.option(
    "--allow", multiple=True, metavar="RULE", help="A host its sandboxes may reach (repeatable; see docs/egress.md)."
)
@click.option(
    "--deny", multiple=True, metavar="RULE", help="A host they may not reach, whatever --allow says (repeatable)."
)
@click.option("--preset", multiple=True, type=click.Choice(sorted(PRESETS)), help="A named set of --allow rules.")
@click.option("--repo", "repo_url", help="A git repository (https) cloned into each new session's workspace.")
@click.option("--branch", help="The branch of --repo to check out.")
def create(
    name: str,
    harness: str,
    model: str,
    prompt: str,
    option_pairs: tuple[str, ...],
    on_busy: BusyPolicy,
    allow: tuple[str, ...],
    deny: tuple[str, ...],
    preset: tuple[str, ...],
    repo_url: str | None,
    branch: str | None,
) -> None:
    """Create an agent."""
    egress = EgressPolicy(allow=list(allow), deny=list(deny), presets=list(preset)) if allow or deny or preset else None

    async def main() -> None:
        async with Lap(run_turns=False) as lap:
            agent = await lap.agents.create(
                name,
                harness=harness,
                model=model,
                prompt=prompt,
                options=_options(option_pairs),
                on_busy=on_busy,
                egress=egress,
                repo_url=repo_url,
                branch=branch,
            )
        click.echo(f"created agent {agent.name} ({agent.id}): {agent.harness}, model {agent.model}")

    run(main)


@agents.command("list")
def list_() -> None:
    """List agents."""

    async def main() -> None:
        async with Lap(run_turns=False) as lap:
            found = await lap.agents.list()
        if not found:
            click.echo("no agents yet: lap agents create --name NAME --harness opencode --model MODEL")
        for agent in found:
            click.echo(f"{agent.name:<24} {agent.harness:<12} {agent.model:<28} {agent.id}")

    run(main)


@agents.command("show")
@click.argument("agent")
def show(agent: str) -> None:
    """Show an agent (by name or id)."""

    async def main() -> None:
        async with Lap(run_turns=False) as lap:
            found = await lap.agents.get(agent)
        keys = ("id", "name", "harness", "model", "prompt", "options", "on_busy", "repo_url", "branch")
        for key in (*keys, "created_at", "updated_at"):
            click.echo(f"{key + ':':<12} {getattr(found, key)}")
        egress = found.egress
        rules = f"allow {egress.allow_rules()}, deny {egress.deny}" if egress else "nowhere but the LLM"
        click.echo(f"{'egress:':<12} {rules}")

    run(main)


@agents.command("delete")
@click.argument("agent")
def delete(agent: str) -> None:
    """Delete an agent (it must have no sessions left)."""

    async def main() -> None:
        async with Lap(run_turns=False) as lap:
            await lap.agents.delete(agent)
        click.echo(f"deleted agent {agent}")

    run(main)
