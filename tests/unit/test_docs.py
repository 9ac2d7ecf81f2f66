"""The docs keep up with the code: every hook and every setting is documented (README, docs/configuration.md,
.env.example)."""

from __future__ import annotations

import inspect
import itertools
import re
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import msgspec
import pytest

from lap_core import _hookspecs as hookspecs
from lap_core._cli import main as cli
from lap_core._config import CoreSettings, aliases_of
from lap_core._plugins import PluginSettings
from lap_kubernetes import KubernetesSettings
from lap_local import LocalSettings
from lap_server import ServerSettings

if TYPE_CHECKING:
    from collections.abc import Iterator

    import click

ROOT = Path(__file__).resolve().parents[2]
HOOKS = [name for name, value in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("lap_")]


def test_there_are_hooks_to_document() -> None:
    assert {"lap_sandbox_backends", "lap_harnesses", "lap_session_stores", "lap_integrations", "lap_addhooks"} <= set(
        HOOKS
    )


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_in_the_plugin_guide(hook: str) -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text()
    assert f"### `{hook}(" in guide
    assert (getattr(hookspecs, hook).__doc__ or "").strip(), f"{hook} has no docstring"


@pytest.mark.parametrize(
    "variable",
    [f.encode_name for t in (CoreSettings, LocalSettings, ServerSettings) for f in msgspec.structs.fields(t)],
)
def test_every_setting_is_in_the_readme(variable: str) -> None:
    assert f"`{variable}`" in (ROOT / "README.md").read_text()


# docs/configuration.md and .env.example against the code, both ways: every variable LAP reads is
# documented with its default (and its second name), and nothing documented is not read.
SETTINGS = (CoreSettings, PluginSettings, ServerSettings, LocalSettings, KubernetesSettings)
PASSTHROUGH = "CONTAINER_ENV_*"


class Variable(NamedTuple):
    default: object
    alias: str | None


def _walk(command: click.Command) -> Iterator[click.Parameter]:
    yield from command.params
    for sub in getattr(command, "commands", {}).values():
        yield from _walk(sub)


def _variables() -> dict[str, Variable]:
    found = {PASSTHROUGH: Variable(None, None)}
    for struct in SETTINGS:
        aliases = aliases_of(struct)
        for field in msgspec.structs.fields(struct):
            default = None if field.default is msgspec.NODEFAULT else field.default
            found[field.encode_name] = Variable(default, aliases.get(field.name))
    for param in _walk(cli):
        if isinstance(param.envvar, str):  # an option's default from the environment
            found[param.envvar] = Variable(param.default, None)
    return found


def _shown(default: object) -> str | None:
    """The default as the docs write it, or None when it is computed or unset (nothing to compare)."""
    if not isinstance(default, str | int | float) or isinstance(default, bool) or default == "":
        return None  # None, a flag's, click's UNSET
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def _documented() -> dict[str, tuple[list[str], str, str]]:
    """The rows of docs/configuration.md's settings tables: name -> (second names, default, meaning)."""
    rows: dict[str, tuple[list[str], str, str]] = {}
    in_settings = False
    for line in (ROOT / "docs" / "configuration.md").read_text().splitlines():
        if line.startswith("| variable | default | meaning |"):
            in_settings = True
        elif not line.startswith("|"):
            in_settings = False
        elif in_settings and line.startswith("| `"):
            name_cell, default, meaning = (cell.strip() for cell in line.strip("|").split(" | "))
            names = re.findall(r"`([^`]+)`", name_cell)
            assert names[0] not in rows, f"{names[0]} is documented twice"
            rows[names[0]] = (names[1:], default, meaning)
    return rows


def _examples() -> dict[str, tuple[str, str]]:
    """The variables of .env.example: name -> (value, the comment line above it)."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    found: dict[str, tuple[str, str]] = {}
    for above, line in itertools.pairwise(lines):
        if match := re.fullmatch(r"# ([A-Za-z_][A-Za-z0-9_]*)=(.*)", line):
            name = PASSTHROUGH if match[1].startswith("CONTAINER_ENV_") else match[1]
            assert name not in found, f"{name} is in .env.example twice"
            found[name] = (match[2], above)
    return found


def test_configuration_md_documents_every_variable_and_nothing_else() -> None:
    variables, rows = _variables(), _documented()
    assert sorted(set(variables) - set(rows)) == [], "missing from docs/configuration.md"
    assert sorted(set(rows) - set(variables)) == [], "in docs/configuration.md but read by nothing"
    for name, (aliases, default, meaning) in rows.items():
        variable = variables[name]
        assert aliases == ([variable.alias] if variable.alias else []), f"{name}: second names {aliases}"
        shown = _shown(variable.default)
        assert shown is None or f"`{shown}`" in default, f"{name}: the default is {shown}, documented {default}"
        assert meaning, f"{name} has no meaning"


def test_env_example_lists_every_variable_with_its_default() -> None:
    variables, examples = _variables(), _examples()
    assert sorted(set(variables) - set(examples)) == [], "missing from .env.example"
    assert sorted(set(examples) - set(variables)) == [], "in .env.example but read by nothing"
    for name, (value, comment) in examples.items():
        variable = variables[name]
        if name != PASSTHROUGH:
            assert value == (_shown(variable.default) or ""), f"{name}={value}, but its default is {variable.default}"
        assert comment.startswith("# "), f"{name} has no line of meaning"
        assert not re.fullmatch(r"# [A-Za-z_][A-Za-z0-9_]*=.*", comment), f"{name} has no line of meaning"
        if variable.alias:
            assert f"or {variable.alias}" in comment, f"{name}: its second name {variable.alias} is not mentioned"


def test_the_readme_points_to_the_whole_configuration() -> None:
    assert "docs/configuration.md" in (ROOT / "README.md").read_text()
