"""`lap migrate`, `lap harness ...`, `lap plugins`, `lap doctor`."""

from __future__ import annotations

import os
import shutil
import sys
from typing import TYPE_CHECKING

import click
import httpx

from lap_core._cli import run
from lap_core._errors import HarnessError, LapError
from lap_core._install import harness_dir, install_harness, is_installed
from lap_core._runtime import Lap
from lap_core._sandbox import Check

if TYPE_CHECKING:
    from lap_core._config import CoreSettings


async def ensure_installed(lap: Lap, name: str) -> None:
    """Install a harness's CLI if it is missing, showing npm's progress."""
    harness = lap.harnesses.get(name)
    if harness is None:
        raise HarnessError(f"unknown harness {name!r} (installed: {', '.join(lap.harnesses) or 'none'})")
    if not is_installed(lap.harness_root, name, harness):
        click.secho(f"installing harness {name} ({', '.join(harness.npm_packages)}) …", dim=True, err=True)
        await install_harness(
            lap.harness_root, name, harness, lambda line: click.secho(f"  {line}", dim=True, err=True)
        )


@click.command()
def migrate() -> None:
    """Create or upgrade the database schema (run before starting LAP on a new database)."""

    async def main() -> None:
        async with Lap(run_turns=False, migrate=True) as lap:
            applied = lap.migrations_applied
        click.echo(f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied else "database up to date")

    run(main)


@click.group()
def harness() -> None:
    """Install and list harnesses (the agent CLIs)."""


@harness.command("install")
@click.argument("names", nargs=-1)
def install(names: tuple[str, ...]) -> None:
    """Install the pinned CLIs of NAMES (default: every registered harness)."""

    async def main() -> None:
        async with Lap(run_turns=False) as lap:
            for name in names or tuple(lap.harnesses):
                await ensure_installed(lap, name)
                click.echo(f"{name}: installed in {harness_dir(lap.harness_root, name, lap.harnesses[name])}")

    run(main)


@harness.command("list")
def list_harnesses() -> None:
    """List harnesses and whether their CLI is installed."""

    async def main() -> None:
        async with Lap(run_turns=False) as lap:
            for name, found in lap.harnesses.items():
                state = "installed" if is_installed(lap.harness_root, name, found) else "not installed"
                click.echo(f"{name:<14} {state:<14} {' '.join(found.npm_packages)}")

    run(main)


@click.command()
def plugins() -> None:
    """List the loaded plugins, the hooks they implement and what they provide."""
    try:
        lap = Lap(run_turns=False)
        rows = lap.plugins.describe()
        kinds = (
            ("backends", lap.plugins.sandbox_backends()),
            ("harnesses", lap.plugins.harnesses()),
            ("stores", lap.plugins.session_stores()),
            ("integrations", lap.plugins.integrations()),
        )
    except LapError as error:  # a plugin that does not load: what is wrong, never a traceback
        click.secho(f"error: {error.message}", fg="red", err=True)
        sys.exit(1)
    for row in rows:
        click.echo(f"{row['name']:<18} {row['version']:<10} {', '.join(row['hooks'])}")
    for kind, specs in kinds:
        click.echo(f"{kind}: {', '.join(specs) or '-'}")


def _show(check: Check) -> bool:
    mark = click.style("✓", fg="green") if check.ok else click.style("✗", fg="red")
    click.echo(f"{mark} {check.name}: {check.detail}")
    if not check.ok and check.fix:
        click.echo(f"    fix: {check.fix}")
    return check.ok


async def _gateway(settings: CoreSettings) -> Check:
    base = settings.litellm_api_base
    if not base or not settings.litellm_api_key:
        return Check(
            name="gateway",
            ok=False,
            detail="LITELLM_API_BASE / LITELLM_API_KEY not set",
            fix="export LITELLM_API_BASE=http://your-gateway:4000 LITELLM_API_KEY=sk-...",
        )
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(
                f"{base.rstrip('/')}/v1/models", headers={"Authorization": f"Bearer {settings.litellm_api_key}"}
            )
    except httpx.HTTPError as error:
        return Check(
            name="gateway",
            ok=False,
            detail=f"{base} unreachable: {type(error).__name__}",
            fix="start the LiteLLM proxy or correct LITELLM_API_BASE",
        )
    if response.status_code != 200:
        return Check(
            name="gateway",
            ok=False,
            detail=f"{base}/v1/models answered {response.status_code}",
            fix="check LITELLM_API_KEY",
        )
    models = [m.get("id") for m in response.json().get("data", [])]
    return Check(name="gateway", ok=True, detail=f"{base} serves {len(models)} model(s): {', '.join(models[:8])}")


@click.command()
def doctor() -> None:
    """Check everything LAP needs on this machine and say what is missing."""

    async def main() -> bool:
        checks = [
            Check(
                name="npm",
                ok=shutil.which("npm") is not None,
                detail=shutil.which("npm") or "not found",
                fix="apt-get install nodejs npm (needed to install harness CLIs)",
            )
        ]
        try:
            async with Lap(run_turns=False) as lap:
                checks.append(Check(name="store", ok=True, detail=f"{type(lap.store).__name__} reachable and migrated"))
                checks += await lap.backend.diagnose()
                for name, found in lap.harnesses.items():
                    installed = is_installed(lap.harness_root, name, found)
                    checks.append(
                        Check(
                            name=f"harness {name}",
                            ok=installed,
                            detail="installed" if installed else "not installed",
                            fix=f"lap harness install {name}",
                        )
                    )
                checks.append(await _gateway(lap.settings))
                checks.append(Check(name="data dir", ok=os.access(lap.data_dir, os.W_OK), detail=str(lap.data_dir)))
        except LapError as error:
            checks.append(Check(name="configuration", ok=False, detail=error.message, fix="see docs/configuration.md"))
        results = [_show(check) for check in checks]
        return all(results)

    if not run(main):
        raise SystemExit(1)


COMMANDS = (migrate, harness, plugins, doctor)
