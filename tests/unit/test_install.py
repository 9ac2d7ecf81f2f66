"""Which harnesses count as installed (`lap harness install`, `lap harness list`, `lap doctor`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from lap_core._install import MARKER, harness_dir, install_harness, is_installed
from tests.fakes.script_harness import ScriptHarness

if TYPE_CHECKING:
    from pathlib import Path


class NpmHarness(ScriptHarness):
    npm_packages = ("some-cli@1.0.0",)


def test_a_harness_without_npm_packages_is_installed(tmp_path: Path) -> None:
    assert is_installed(tmp_path, "script", ScriptHarness())


@pytest.mark.anyio
async def test_installing_a_harness_without_npm_packages_needs_no_npm(tmp_path: Path, anyio_backend: str) -> None:
    target = await install_harness(tmp_path, "script", ScriptHarness())
    assert target == harness_dir(tmp_path, "script", ScriptHarness())
    assert is_installed(tmp_path, "script", ScriptHarness())


def test_a_harness_with_npm_packages_is_installed_once_its_marker_is_written(tmp_path: Path) -> None:
    harness = NpmHarness()
    assert not is_installed(tmp_path, "npm", harness)
    target = harness_dir(tmp_path, "npm", harness)
    target.mkdir(parents=True)
    assert not is_installed(tmp_path, "npm", harness)  # an interrupted install
    (target / MARKER).write_text("some-cli@1.0.0\n")
    assert is_installed(tmp_path, "npm", harness)
