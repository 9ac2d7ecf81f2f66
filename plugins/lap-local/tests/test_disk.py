"""A sandbox's disk limit: everything it writes is on its volume, and its volume has a hard size."""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

import anyio
import pytest

from lap_core import Error, Lap, SandboxSpec, TurnEnd
from lap_local.disk import hard_limits_available
from tests.fakes.plugin import FakesPlugin
from tests.fixtures import cleanup_sandboxes, lap_env, require

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = [pytest.mark.anyio, pytest.mark.bwrap]
LIMIT_MB = 64


@pytest.fixture
async def lap(data_dir: Path, bwrap: None) -> AsyncIterator[Lap]:
    require(hard_limits_available(), "root, loop devices and mkfs.ext4 (hard disk limits)")
    env = lap_env(
        data_dir, LAP_SANDBOX_DISK_MB=str(LIMIT_MB), LITELLM_API_BASE="http://127.0.0.1:9", LITELLM_API_KEY="k"
    )
    async with Lap(plugins=[FakesPlugin()], env=env) as running:
        try:
            yield running
        finally:
            await cleanup_sandboxes(running)
            for volume in ("disk-a",):
                await running.backend.delete_volume(volume)


def _host_free(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


async def test_a_sandbox_cannot_write_more_than_its_limit_anywhere(lap: Lap, data_dir: Path) -> None:
    spec = SandboxSpec(name="disk-a", harness="none", volume="disk-a")
    await lap.backend.create(spec)
    await lap.backend.wait_ready("disk-a", timeout=20)
    free_before = _host_free(data_dir)
    async with await lap.backend.connect("disk-a") as client:
        workspace = await client.exec(["sh", "-c", "dd if=/dev/zero of=/workspace/big bs=1M count=200 2>&1"])
        assert workspace.exit_code != 0
        assert "No space left on device" in workspace.stdout
        # The other places it can write share the same limit: the harness home and sandboxd's run dir.
        for path in ("/home/agent/big", "/run/lap/big"):
            more = await client.exec(["sh", "-c", f"dd if=/dev/zero of={path} bs=1M count=10 2>&1"])
            assert "No space left on device" in more.stdout
        usage = await lap.backend.disk_usage("disk-a")
        assert usage is not None
        assert usage.full
        assert usage.limit <= LIMIT_MB * 1024 * 1024
        await client.exec(["rm", "-f", "/workspace/big", "/home/agent/big", "/run/lap/big"])
        await client.exec(["sh", "-c", "echo kept > /workspace/kept.txt"])
    assert free_before - _host_free(data_dir) < (LIMIT_MB + 16) * 1024 * 1024
    # The volume outlives its sandbox (its image unmounted meanwhile), with its files.
    await lap.backend.delete("disk-a")
    assert await lap.backend.disk_usage("disk-a") is None
    assert await lap.backend.volume_exists("disk-a")
    await lap.backend.create(spec)
    await lap.backend.wait_ready("disk-a", timeout=20)
    async with await lap.backend.connect("disk-a") as client:
        assert (await client.exec(["cat", "/workspace/kept.txt"])).stdout == "kept\n"
    await lap.backend.delete("disk-a")
    await lap.backend.delete_volume("disk-a")
    assert not await lap.backend.volume_exists("disk-a")
    assert not (data_dir / "volumes" / "disk-a.img").exists()


async def test_a_turn_that_fills_the_disk_says_so(lap: Lap) -> None:
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.name)
    with anyio.fail_after(60):
        records = [r async for r in lap.sessions.stream(session.id, "run: dd if=/dev/zero of=big bs=1M count=200")]
    errors = [r.event for r in records if isinstance(r.event, Error)]
    assert [e.code for e in errors] == ["disk_full"]
    assert f"{LIMIT_MB} MB" in errors[0].message or "MB limit" in errors[0].message
    assert isinstance(records[-1].event, TurnEnd)
    with anyio.fail_after(60):
        after = [r async for r in lap.sessions.stream(session.id, "run: rm big && echo freed")]
    assert not [r for r in after if isinstance(r.event, Error)]
    await lap.sessions.delete(session.id)
    assert shutil.which("mkfs.ext4")


async def test_sandboxes_launched_at_once_all_get_their_volume_whole(lap: Lap) -> None:
    # Launches run in threads: nothing in one (a umask, a loop device) may leak into another.
    names = [f"disk-p{i}" for i in range(6)]

    async def launch(name: str) -> str:
        await lap.backend.create(SandboxSpec(name=name, harness="none", volume=name))
        await lap.backend.wait_ready(name, timeout=30)
        async with await lap.backend.connect(name) as client:
            result = await client.exec(
                ["sh", "-c", f"mkdir /run/lap/x && echo {name} > /workspace/mine && cat /workspace/mine"]
            )
        return result.stdout.strip()

    seen: dict[str, str] = {}

    async def one(name: str) -> None:
        seen[name] = await launch(name)

    async with anyio.create_task_group() as tasks:
        for name in names:
            tasks.start_soon(one, name)
    assert seen == {name: name for name in names}
    for name in names:
        await lap.backend.delete(name)
        await lap.backend.delete_volume(name)
