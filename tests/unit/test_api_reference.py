"""docs/api.md is the public API: generated from `lap_core.__all__` and the docstrings, and current."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import lap_core
import lap_core.testing

ROOT = Path(__file__).resolve().parents[2]


def test_the_api_reference_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "api-reference"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_every_public_name_is_in_the_reference() -> None:
    reference = (ROOT / "docs" / "api.md").read_text()
    for name in (*lap_core.__all__, *lap_core.testing.__all__):
        assert f"`{name}" in reference, name


def test_the_lazy_namespace_lists_each_name_once_in_all_three_places() -> None:
    # `__all__`, the map of where each name is imported from on first use, and the imports type
    # checkers read: one list, three times.
    tree = ast.parse(Path(lap_core.__file__).read_text())
    guarded = next(node for node in tree.body if isinstance(node, ast.If))  # `if TYPE_CHECKING:`
    imported = {
        alias.name: node.module for node in guarded.body if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert set(lap_core.__all__) == set(lap_core._SOURCES) == set(imported)
    assert imported == lap_core._SOURCES
    for name in lap_core.__all__:
        assert getattr(lap_core, name) is not None
    assert dir(lap_core) == sorted(lap_core.__all__)
