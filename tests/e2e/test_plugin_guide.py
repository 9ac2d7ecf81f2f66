"""The test modules docs/plugins.md shows plugin authors (blocks starting `# tests/test_*.py`) are real:
run as an author runs them, with the kit's pytest plugin, in a pytest of their own."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "plugins.md"
KIT = ["--disable-plugin-autoload", "-p", "lap_core.testing.pytest_plugin", "-p", "anyio", "-p", "no:cacheprovider"]
# The conformance suites run in full in the plugins' own tests: here, enough to see them work.
SELECT = {"test_conformance.py": ["-k", "TestMyBackend or text_turn or tool_call"]}


def _blocks() -> dict[str, str]:
    """Return the test modules of the guide by file name."""
    found = re.findall(r"```python\n# tests/(test_\w+\.py)\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    return dict(found)


@pytest.fixture
def kit(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return pytester


def test_the_guide_shows_test_modules() -> None:
    assert set(_blocks()) == {"test_echo.py", "test_model.py", "test_conformance.py"}


@pytest.mark.parametrize("name", sorted(_blocks()))
def test_each_block_collects_and_its_fixtures_resolve(kit: pytest.Pytester, name: str) -> None:
    kit.makepyfile(**{name.removesuffix(".py"): _blocks()[name]})
    result = kit.runpytest_subprocess(*KIT, "--setup-plan", *SELECT.get(name, []))
    assert result.ret == 0, result.stdout.str()
    assert "fixture '" not in result.stdout.str()  # no fixture missing


@pytest.mark.e2e
@pytest.mark.bwrap
@pytest.mark.parametrize("name", sorted(_blocks()))
def test_each_block_passes(kit: pytest.Pytester, name: str, harness_root: Path, bwrap: None) -> None:
    kit.makepyfile(**{name.removesuffix(".py"): _blocks()[name]})
    result = kit.runpytest_subprocess(*KIT, *SELECT.get(name, []))
    outcomes = result.parseoutcomes()
    assert result.ret == 0, result.stdout.str()
    assert outcomes.get("passed", 0) >= 1
