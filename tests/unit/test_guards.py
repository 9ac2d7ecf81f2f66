"""Guards on the code's boundaries (design.md, "Layout"): they fail when a boundary is crossed."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import lap_core

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = [*ROOT.glob("clients/*/lap_*")]
PRODUCT = [
    ROOT / "lap_core",
    ROOT / "lap_sandboxd",
    *ROOT.glob("plugins/*/lap_*"),
    *ROOT.glob("harnesses/*/lap_*"),
    *CLIENTS,
]
# The clients are held to the public core as plugins are.
PLUGINS = [*ROOT.glob("plugins/*/lap_*"), *ROOT.glob("harnesses/*/lap_*"), *CLIENTS]
# A plugin's tests are held to what a third party has too: `lap_core` and `lap_core.testing`.
PLUGIN_TESTS = [*ROOT.glob("plugins/*/tests"), *ROOT.glob("harnesses/*/tests"), ROOT / "examples"]
MAX_LINES = 400


def _modules(*roots: Path) -> list[Path]:
    return sorted(path for root in roots for path in root.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_guards_see_the_code() -> None:
    assert len(PLUGINS) >= 3
    assert CLIENTS
    assert len(_modules(*PRODUCT)) > 30


def _private(name: str) -> bool:
    """Whether an imported name is beyond the public core: `lap_core.<anything but testing>` or a `_` part."""
    parts = name.split(".")
    if parts[0] != "lap_core" or len(parts) == 1:
        return False
    return any(part.startswith("_") for part in parts) or (parts[1] != "testing" and parts[1] not in lap_core.__all__)


@pytest.mark.parametrize("path", _modules(*PLUGINS, *PLUGIN_TESTS), ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_use_only_the_public_core(path: Path) -> None:
    private = sorted(name for name in _imports(path) if _private(name))
    assert not private, f"{path.relative_to(ROOT)} imports beyond `lap_core` and `lap_core.testing`: {private}"


def test_the_import_guard_sees_a_private_import() -> None:
    assert _private("lap_core._cli")
    assert _private("lap_core._vault.StubKeys")
    assert _private("lap_core.sandbox")
    assert _private("lap_core.testing._base")
    assert not _private("lap_core.Lap")
    assert not _private("lap_core.testing.BackendConformance")
    assert not _private("lap_core")
    assert not _private("lap_corex._y")


@pytest.mark.parametrize("path", _modules(ROOT / "lap_sandboxd"), ids=lambda p: p.name)
def test_sandboxd_never_imports_the_core(path: Path) -> None:
    assert not {name for name in _imports(path) if name.split(".")[0] == "lap_core"}


def test_importing_the_core_loads_no_heavy_dependency() -> None:
    code = "import sys, lap_core; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    for heavy in ("litestar", "piccolo", "kubernetes_asyncio", "asyncpg", "aiosqlite", "litellm"):
        assert f"'{heavy}'" not in loaded, f"import lap_core loaded {heavy}"


@pytest.mark.parametrize(
    "path",
    _modules(*PRODUCT, ROOT / "tests", ROOT / "bench", *ROOT.glob("clients/*/tests")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (max {MAX_LINES}): split it"


def test_public_names_are_sorted_and_exist() -> None:
    # Sorted as ruff's RUF022 keeps them: CONSTANTS, then Classes, then functions.
    def kind(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert lap_core.__all__ == sorted(lap_core.__all__, key=kind)
    missing = [name for name in lap_core.__all__ if not hasattr(lap_core, name)]
    assert not missing


def test_every_public_name_has_a_docstring() -> None:
    undocumented = [
        name
        for name in lap_core.__all__
        if (inspect.isclass(getattr(lap_core, name)) or inspect.isfunction(getattr(lap_core, name)))
        and not (getattr(lap_core, name).__doc__ or "").strip()
    ]
    assert not undocumented, f"public names without a docstring: {undocumented}"


def test_only_public_names_live_in_public_modules() -> None:
    # Everything else in the core is private: a module of `lap_core` is `_name`, or `testing`.
    public = sorted(path.name for path in (ROOT / "lap_core").iterdir() if not path.name.startswith(("_", ".")))
    assert public == ["py.typed", "testing"]
