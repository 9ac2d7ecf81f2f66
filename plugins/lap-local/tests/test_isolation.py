"""The local backend's isolation, on real bubblewrap sandboxes.

From inside a sandbox: no host files beyond what is mounted, no other session's workspace, no
network but the LLM proxy, and never the real `LITELLM_API_KEY`.
"""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import msgspec
import pytest

from lap_core import Lap, SandboxError, SandboxSpec, Status
from tests.fixtures import cleanup_sandboxes, lap_env, require

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from lap_core import SandboxClient

pytestmark = [pytest.mark.anyio, pytest.mark.bwrap]
REAL_KEY = "sk-real-gateway-key-never-in-a-sandbox-7f3a"


@pytest.fixture
async def lap(data_dir: Path, bwrap: None) -> AsyncIterator[Lap]:
    env = lap_env(data_dir, LITELLM_API_BASE="http://127.0.0.1:9", LITELLM_API_KEY=REAL_KEY)
    async with Lap(env=env) as running:
        try:
            yield running
        finally:
            await cleanup_sandboxes(running)


async def _sandbox(lap: Lap, name: str, volume: str | None = None) -> SandboxClient:
    spec = SandboxSpec(name=name, harness="none", volume=volume or name, labels={"test": "isolation"})
    await lap.backend.create(spec)
    await lap.backend.wait_ready(name, timeout=20)
    return await lap.backend.connect(name)


async def _sh(client: SandboxClient, script: str) -> tuple[int, str]:
    result = await client.exec(["/bin/sh", "-c", script], timeout=30)
    return result.exit_code, result.stdout + result.stderr


async def test_the_sandbox_sees_its_workspace_and_nothing_of_the_host(lap: Lap, data_dir: Path) -> None:
    async with await _sandbox(lap, "iso-a") as client:
        code, out = await _sh(client, "id -u; pwd; echo made-inside > note.txt")
        assert code == 0, out
        assert out.split() == ["1000", "/workspace"]
        assert (data_dir / "volumes" / "iso-a" / "workspace" / "note.txt").read_text() == "made-inside\n"
        for path in (
            "/root",
            "/var/lib/postgresql",
            "/work",
            str(data_dir),
            "/etc/shadow",
            "/etc/ssh",
            "/home/agent/..",
        ):
            code, out = await _sh(client, f"ls {path} 2>&1 || true; test -e {path}/lap.db && echo LEAK || true")
            assert "LEAK" not in out
        code, out = await _sh(client, "ls /; ls /home; ls /etc")
        assert set(out.split()) >= {"workspace", "usr", "agent", "passwd"}
        assert "shadow" not in out.split()
        assert "postgresql" not in out.split()


async def test_another_sessions_workspace_is_unreachable(lap: Lap) -> None:
    async with await _sandbox(lap, "iso-b") as b, await _sandbox(lap, "iso-c") as c:
        assert (await _sh(b, "echo secret-of-b > only-b.txt"))[0] == 0
        _, out = await _sh(c, "find / -xdev -name only-b.txt 2>/dev/null; ls /workspace")
        assert "only-b.txt" not in out
        _, processes = await _sh(c, "ls /proc | grep -c '^[0-9]'")
        assert int(processes.strip()) < 10  # its own few processes only: a fresh pid namespace


async def test_the_only_network_is_the_llm_proxy(lap: Lap) -> None:
    probe = """
import json, socket
def reach(port):
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port)); return True
    except OSError:
        return False
    finally:
        s.close()
print(json.dumps({"interfaces": [n for _, n in socket.if_nameindex()], "llm": reach(4000), "postgres": reach(5432)}))
"""
    async with await _sandbox(lap, "iso-d") as client:
        result = await client.exec(["python3", "-c", probe])
        seen = json.loads(result.stdout)
        assert seen == {"interfaces": ["lo"], "llm": True, "postgres": False}
        _, out = await _sh(client, "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:4000/v1/models || true")
        # The proxy answers, and refuses: LAP never hydrated this sandbox, so it has no identity.
        assert out == "403"


async def test_the_real_gateway_key_never_enters_a_sandbox(lap: Lap) -> None:
    agent = await lap.agents.create("iso", harness="opencode", model="m")
    session = await lap.sessions.create(agent.id)
    # A turn hydrates the sandbox exactly as for real (the harness's env and config files);
    # once it has, the turn itself does not matter (the gateway here is down).
    turn = await lap.sessions.send(session.id, "hello")
    with anyio.fail_after(60):
        async for record in lap.sessions.follow(session.id, until_turn=turn.id):
            if isinstance(record.event, Status) and record.event.phase == "sandbox_ready":
                await lap.sessions.abort(session.id)
    ref = (await lap.backend.list({"lap.session": session.id}))[0]
    async with await lap.backend.connect(ref.name) as client:
        code, out = await _sh(
            client,
            # The key is spelled in two halves, so this command line does not contain it whole.
            f"k1={REAL_KEY[:10]}; k2={REAL_KEY[10:]}; env; cat /proc/*/environ /proc/*/cmdline 2>/dev/null; "
            'grep -rl "$k1$k2" /workspace /home /run /tmp /opt /etc 2>/dev/null; echo done',
        )
        assert code == 0
        assert REAL_KEY not in out
        assert "LITELLM_API_KEY=lapsk." in out  # what it has instead: a stub


async def test_a_sandbox_that_cannot_start_says_why(data_dir: Path, bwrap: None) -> None:
    env = lap_env(
        data_dir, LAP_SANDBOX_PYTHON="/nonexistent/python3", LITELLM_API_BASE="http://127.0.0.1:9", LITELLM_API_KEY="k"
    )
    async with Lap(env=env) as lap:
        await lap.backend.create(SandboxSpec(name="broken", harness="none", volume="broken"))
        with pytest.raises(SandboxError, match="exited while starting") as caught:
            await lap.backend.wait_ready("broken", timeout=20)
        assert "/nonexistent/python3" in caught.value.message
        await cleanup_sandboxes(lap)


async def test_sandboxes_outlive_the_runtime_and_are_found_again(data_dir: Path, bwrap: None) -> None:
    env = lap_env(data_dir, LITELLM_API_BASE="http://127.0.0.1:9", LITELLM_API_KEY="k")
    async with Lap(env=env) as first:
        async with await _sandbox(first, "iso-e") as client:
            await client.exec(["sh", "-c", "echo kept > kept.txt"])
    async with Lap(env=env) as second:
        refs = await second.backend.list({"test": "isolation"})
        assert [(r.name, r.state) for r in refs] == [("iso-e", "ready")]
        async with await second.backend.connect("iso-e") as client:
            assert (await client.exec(["cat", "kept.txt"])).stdout == "kept\n"
        await second.backend.delete("iso-e")
        assert await second.backend.status("iso-e") is None
        with anyio.fail_after(5):
            assert await second.backend.list() == []


async def test_memory_and_pid_limits_hold_and_go_with_the_sandbox(lap: Lap) -> None:
    from lap_local import cgroups

    require(cgroups.available(), "writable cgroup v1 memory and pids controllers")
    spec = SandboxSpec(name="iso-limits", harness="none", volume="iso-limits", memory_mb=64, max_pids=32)
    await lap.backend.create(spec)
    await lap.backend.wait_ready("iso-limits", timeout=20)
    limit = cgroups.ROOT / "memory" / "lap" / "iso-limits" / "memory.limit_in_bytes"
    assert int(limit.read_text()) == 64 * 1024 * 1024
    async with await lap.backend.connect("iso-limits") as client:
        hog = await client.exec(["python3", "-c", "x = bytearray(256 * 1024 * 1024); print('survived')"])
        assert hog.exit_code == -9  # the kernel's OOM killer, inside the sandbox's cgroup
        assert "survived" not in hog.stdout
        forks = await client.exec(["sh", "-c", "for i in $(seq 64); do sleep 5 & done; wait"], timeout=30)
        assert "fork" in forks.stderr.lower() or "resource" in forks.stderr.lower()
    await lap.backend.delete("iso-limits")
    assert not limit.parent.exists()


async def test_no_agent_process_can_read_sandboxds_token_or_reach_its_api(lap: Lap, data_dir: Path) -> None:
    async with await _sandbox(lap, "iso-t") as client:
        meta = msgspec.json.decode((data_dir / "sandboxes" / "iso-t" / "meta.json").read_bytes())
        token = meta["token"]
        # Everything an agent process can read: environments, command lines, memory maps, files.
        code, out = await _sh(
            client,
            "for p in /proc/[0-9]*; do echo \"== $p $(cat $p/comm 2>/dev/null)\"; tr '\\0' '\\n' < $p/environ 2>&1;"
            " tr '\\0' ' ' < $p/cmdline 2>&1; echo; head -c 4096 $p/mem 2>&1 | head -c 100; ls -l $p/fd 2>&1; done;"
            " grep -rs . /run /tmp /home /workspace 2>/dev/null | head -1000; find / -xdev -type s 2>/dev/null",
        )
        assert code == 0
        assert token not in out
        assert "LAP_SANDBOXD_TOKEN" not in out
        # sandboxd is process 2 (bwrap's reaper is 1): its /proc files are closed to the agent.
        assert "python3" in out
        code, denied = await _sh(client, "cat /proc/2/environ; ls /proc/2/fd; echo rc=$?")
        assert "Permission denied" in denied
        # No socket of sandboxd anywhere inside: its API is out of the agent's reach.
        assert not any(line.endswith(".sock") and "lap-vault" not in line for line in out.splitlines())
    assert (data_dir / "sandboxes" / "iso-t" / "api" / "sandboxd.sock").exists()


async def test_the_host_never_follows_what_the_sandbox_puts_in_its_run_directory(lap: Lap, tmp_path: Path) -> None:
    decoy = tmp_path / "decoy.sock"
    seen: list[bytes] = []
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(decoy))
        listener.listen()
        listener.settimeout(0.2)
        decoy.chmod(0o777)
        async with await _sandbox(lap, "iso-s") as client:
            code, out = await _sh(
                client,
                f'cd /run/lap && for f in * .??* sandboxd.sock state; do rm -rf "$f"; ln -s {decoy} "$f"; done; ls -la',
            )
            assert code == 0, out
        # LAP keeps talking to this sandbox as before, over the socket it made outside it.
        async with await lap.backend.connect("iso-s") as client:
            assert (await client.exec(["echo", "still here"])).stdout == "still here\n"
        assert (await lap.backend.status("iso-s")).state == "ready"  # type: ignore[union-attr]
        try:
            conn, _ = listener.accept()
            seen.append(conn.recv(65536))
            conn.close()
        except TimeoutError:
            pass
    assert seen == []
