"""A data directory the sandbox user cannot reach (under a `mktemp -d`, 0700) is named, with its fix,
by `lap doctor`, at startup and by the sandbox's creation, never left to a bwrap error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lap_core import Lap, SandboxError, SandboxSpec
from lap_local.doctor import unreachable
from tests.fixtures import cleanup_sandboxes, lap_env, require

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.bwrap


@pytest.fixture
def private_parent() -> Iterator[Path]:
    require(os.geteuid() == 0, "root (sandboxes run as another user only under root)")
    parent = Path(tempfile.mkdtemp(prefix="lap-private-"))  # 0700, as mktemp -d makes it
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


def test_the_blocking_directory_is_named(private_parent: Path) -> None:
    data = private_parent / "data"
    problem = unreachable(data, 1000)
    assert problem is not None
    assert f"chmod o+x {private_parent}" in problem
    assert unreachable(data, 0) is None  # root reaches everything
    private_parent.chmod(0o711)
    assert unreachable(data, 1000) is None
    private_parent.chmod(0o710)
    os.chown(private_parent, 0, 1000)  # the sandbox user's group may search it
    assert unreachable(data, 1000) is None


@pytest.mark.anyio
async def test_creating_a_sandbox_says_why_it_cannot(private_parent: Path) -> None:
    data = private_parent / "data"
    data.mkdir()
    env = lap_env(data, LITELLM_API_BASE="http://127.0.0.1:9", LITELLM_API_KEY="k")
    async with Lap(env=env) as lap:
        try:
            with pytest.raises(SandboxError, match=f"chmod o\\+x {private_parent}"):
                await lap.backend.create(SandboxSpec(name="private", harness="none", volume="private"))
        finally:
            await cleanup_sandboxes(lap)


def test_doctor_and_startup_say_so(private_parent: Path) -> None:
    data = private_parent / "data"
    data.mkdir()
    env = lap_env(data, LITELLM_API_BASE="http://127.0.0.1:9", LITELLM_API_KEY="k")
    result = subprocess.run(
        [sys.executable, "-m", "lap_core", "-v", "doctor"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "data directory" in result.stdout
    assert f"chmod o+x {private_parent}" in result.stdout + result.stderr
    assert "sandbox.data_dir_unreachable" in result.stderr  # the start-up's warning
