"""How a local sandbox starts: sandboxd from compiled bytecode, launched as the sandbox's user (through setpriv as
root), its readiness signalled to the process that started it and polled by any other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lap_core import Lap, SandboxSpec
from tests.fixtures import cleanup_sandboxes, lap_env

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = [pytest.mark.anyio, pytest.mark.bwrap]
SANDBOX_UID = 64000  # lap-local's default sandbox user when LAP runs as root


@pytest.fixture
async def lap(data_dir: Path, bwrap: None) -> AsyncIterator[Lap]:
    async with Lap(env=lap_env(data_dir, LITELLM_API_BASE="http://127.0.0.1:9", LITELLM_API_KEY="k")) as running:
        try:
            yield running
        finally:
            await cleanup_sandboxes(running)


async def _start(lap: Lap, name: str) -> None:
    await lap.backend.create(SandboxSpec(name=name, harness="none", volume=name))
    ref = await lap.backend.wait_ready(name, timeout=20)
    assert ref.state == "ready"


def _cache_tag() -> str:
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable  # the backend's default
    command = [python, "-I", "-S", "-c", "import sys; print(sys.implementation.cache_tag)"]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def _status(pid: int) -> dict[str, str]:
    return dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())


async def test_sandboxd_runs_from_bytecode_compiled_for_the_sandboxs_python(lap: Lap, data_dir: Path) -> None:
    await _start(lap, "start-a")
    tag = _cache_tag()
    [runtime] = (data_dir / "runtime").iterdir()
    sources = sorted((runtime / "lap_sandboxd").glob("*.py"))
    assert sources
    for source in sources:
        assert (source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc").is_file(), source


async def test_the_sandbox_runs_as_its_user_without_groups_or_capabilities(lap: Lap, data_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("as another user than root, the sandbox runs as that user")
    await _start(lap, "start-b")
    status = _status(json.loads((data_dir / "sandboxes" / "start-b" / "meta.json").read_bytes())["pid"])
    assert status["Uid"].split() == [str(SANDBOX_UID)] * 4
    assert status["Gid"].split() == [str(SANDBOX_UID)] * 4
    assert status["Groups"].split() == []
    assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == 0


async def test_a_process_that_did_not_start_the_sandbox_waits_for_it_too(lap: Lap, data_dir: Path) -> None:
    await lap.backend.create(SandboxSpec(name="start-c", harness="none", volume="start-c"))
    env = lap_env(data_dir, LITELLM_API_BASE="http://127.0.0.1:9", LITELLM_API_KEY="k")
    async with Lap(env=env) as other:
        assert (await other.backend.wait_ready("start-c", timeout=20)).state == "ready"
        async with await other.backend.connect("start-c") as client:
            assert (await client.exec(["true"])).exit_code == 0
    assert (await lap.backend.wait_ready("start-c", timeout=20)).state == "ready"


def test_a_burst_of_first_sandboxes_makes_one_runtime_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lap_local.runtime import Runtime

    compiled: list[Path] = []
    monkeypatch.setattr(Runtime, "_compile", lambda self, directory: compiled.append(directory))
    runtime = Runtime(tmp_path / "runtime", sys.executable)
    with ThreadPoolExecutor(8) as pool:
        paths = set(pool.map(lambda _: runtime.path(), range(8)))
    assert paths == {tmp_path / "runtime" / runtime.version}
    assert len(compiled) == 1
    assert [path.name for path in (tmp_path / "runtime").iterdir()] == [runtime.version]
