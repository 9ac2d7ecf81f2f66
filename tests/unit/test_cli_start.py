"""`lap --help` is cheap: the plugins it loads import their heavy libraries only when used (bench/cli_start.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

# Each is hundreds of modules; `lap --help` (and every plugin's import) must not load them.
HEAVY = ("litestar", "kubernetes_asyncio", "piccolo", "uvicorn", "asyncpg", "aiohttp")

# `python -m lap_core ARGS` that writes the names of the modules it imported to a file as it exits.
DRIVER = """
import atexit, pathlib, runpy, sys
out, sys.argv = pathlib.Path(sys.argv[1]), ["lap", *sys.argv[2:]]
atexit.register(lambda: out.write_text("\\n".join(sys.modules)))
runpy.run_module("lap_core", run_name="__main__")
"""


def _imported(tmp_path: Path, *args: str) -> tuple[set[str], str]:
    """The top-level packages `python -m lap_core ARGS` imports, and what it printed."""
    out = tmp_path / "modules"
    result = subprocess.run([sys.executable, "-c", DRIVER, out, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    modules = out.read_text().split()
    assert "lap_core._cli" in modules
    return {name.split(".")[0] for name in modules}, result.stdout


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["worker", "--help"]])
def test_help_imports_no_heavy_library(tmp_path: Path, args: list[str]) -> None:
    packages, _ = _imported(tmp_path, *args)
    assert sorted(packages & set(HEAVY)) == []


def test_help_still_lists_the_commands_plugins_add(tmp_path: Path) -> None:
    packages, shown = _imported(tmp_path, "--help")
    assert re.search(r"^  serve\s+Serve the REST API", shown, re.MULTILINE), shown
    assert {"lap_server", "lap_kubernetes", "lap_sql", "lap_local"} <= packages  # loaded, only cheaply
