"""sandboxd's long-running processes: output on disk with seqs, followed live, started once per
id, signalled with everything they started, and remembered across a daemon restart."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import tempfile
from pathlib import Path

import anyio
import msgspec
import pytest

from lap_core._sandbox_client import SandboxClient, SandboxdError
from lap_sandboxd.protocol import OutputRecord, StartProcess
from tests.unit.sandboxd_daemon import WAIT, Daemon, alive, collect, new_id, running_daemon

pytestmark = pytest.mark.anyio


async def test_process_output_is_recorded_in_order(daemon: Daemon, client: SandboxClient) -> None:
    script = "for i in 1 2 3 4 5; do echo line $i; done; echo problem >&2; printf 'no newline'; exit 3"
    pid = new_id()
    info = await client.start_process(StartProcess(id=pid, argv=["sh", "-c", script]))
    assert info.id == pid
    assert info.pid > 0
    records = await collect(client, pid)
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    stdout = [r.data for r in records if r.stream == "stdout"]
    assert stdout == ["line 1", "line 2", "line 3", "line 4", "line 5", "no newline"]
    assert [r.data for r in records if r.stream == "stderr"] == ["problem"]
    assert (records[-1].stream, records[-1].data) == ("exit", "3")
    info = await client.process(pid)
    assert (info.state, info.exit_code, info.last_seq) == ("exited", 3, len(records))
    directory = daemon.directory / "state" / "processes" / pid
    lines = (directory / "output.ndjson").read_bytes().splitlines()
    assert [msgspec.json.decode(line, type=OutputRecord) for line in lines] == records
    assert b'"exited"' in (directory / "info.json").read_bytes()


async def test_output_after_k_returns_exactly_the_later_records(client: SandboxClient) -> None:
    pid = new_id()
    await client.start_process(StartProcess(id=pid, argv=["seq", "1", "6"]))
    records = await collect(client, pid)
    assert len(records) == 7
    for after in range(len(records) + 2):
        assert await collect(client, pid, after=after, follow=False) == records[after:]
        assert await collect(client, pid, after=after, follow=True) == records[after:]


async def test_follow_streams_lines_while_the_process_runs(daemon: Daemon, client: SandboxClient) -> None:
    go = daemon.directory / f"go-{secrets.token_hex(4)}"
    script = f"echo ready; while [ ! -e {go} ]; do sleep 0.05; done; echo done"
    pid = new_id()
    await client.start_process(StartProcess(id=pid, argv=["sh", "-c", script]))
    seen: list[str] = []
    with anyio.fail_after(WAIT):
        async with contextlib.aclosing(client.output(pid)) as stream:
            async for record in stream:
                seen.append(record.data)
                if record.data == "ready":
                    # The process is still waiting for us: this line arrived live.
                    assert (await client.process(pid)).state == "running"
                    go.touch()
    assert seen == ["ready", "done", "0"]


async def test_starting_the_same_id_twice_runs_it_once(daemon: Daemon, client: SandboxClient) -> None:
    marker = daemon.directory / f"marker-{secrets.token_hex(4)}"
    req = StartProcess(id=new_id(), argv=["sh", "-c", f"echo run >> {marker}; sleep 0.2"])
    infos = []

    async def start() -> None:
        infos.append(await client.start_process(req))

    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(start)
    await collect(client, req.id)
    infos.append(await client.start_process(req))
    assert len({info.pid for info in infos}) == 1
    assert infos[-1].state == "exited"
    assert marker.read_text() == "run\n"


async def test_signal_kill_ends_a_sleeping_process(client: SandboxClient) -> None:
    pid = new_id()
    await client.start_process(StartProcess(id=pid, argv=["sleep", "60"]))
    await client.signal(pid, "KILL")
    records = await collect(client, pid)
    assert [(r.stream, r.data) for r in records] == [("exit", str(-signal.SIGKILL))]
    assert (await client.process(pid)).exit_code == -signal.SIGKILL
    for call in (client.signal("unknown", "TERM"), client.process("unknown"), collect(client, "unknown")):
        with pytest.raises(SandboxdError) as caught:
            await call
        assert caught.value.status == 404


async def test_a_signal_reaches_children_in_sessions_of_their_own(client: SandboxClient) -> None:
    # Agent CLIs run tools in new sessions: a process-group signal alone would leave them running.
    pid = new_id()
    await client.start_process(StartProcess(id=pid, argv=["sh", "-c", "setsid sleep 300 & echo $!; wait"]))
    records = client.output(pid)
    first = await records.__anext__()
    detached = int(first.data)
    group = os.getpgid((await client.process(pid)).pid)
    with anyio.fail_after(5):
        while os.getpgid(detached) == group:  # `setsid` has not made its session yet
            await anyio.sleep(0.01)
    await client.signal(pid, "TERM")
    async for _ in records:
        pass
    with anyio.fail_after(5):
        while alive(detached):
            await anyio.sleep(0.05)


async def test_sigterm_stops_the_processes_and_a_restart_remembers_them(lib: Path) -> None:
    directory = Path(tempfile.mkdtemp(prefix="sbd-", dir="/tmp"))
    pid = new_id()
    try:
        with running_daemon(lib, directory=directory) as daemon:
            async with daemon.client() as client:
                await client.wait_healthy(WAIT)
                await client.start_process(StartProcess(id=pid, argv=["sh", "-c", "echo up; exec sleep 60"]))
                with anyio.fail_after(WAIT):
                    async with contextlib.aclosing(client.output(pid)) as stream:
                        assert (await anext(stream)).data == "up"
                daemon.proc.send_signal(signal.SIGTERM)
                assert await anyio.to_thread.run_sync(daemon.proc.wait, WAIT) == 0
            assert not daemon.socket.exists()
        with running_daemon(lib, directory=directory) as daemon:
            async with daemon.client() as client:
                await client.wait_healthy(WAIT)
                info = await client.process(pid)
                assert (info.state, info.exit_code) == ("exited", -signal.SIGTERM)
                records = await collect(client, pid)
                assert [(r.stream, r.data) for r in records] == [("stdout", "up"), ("exit", str(-signal.SIGTERM))]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def test_a_follower_sees_a_stopping_sandbox_cut_off_not_an_exit(lib: Path) -> None:
    # The pod of a sandbox is going (SIGTERM): the processes sandboxd stops did not end by themselves,
    # so a follower must see the sandbox lost (and start the work over), never a failed process.
    pid = new_id()
    with running_daemon(lib) as daemon:
        async with daemon.client() as client:
            await client.wait_healthy(WAIT)
            await client.start_process(StartProcess(id=pid, argv=["sh", "-c", "echo up; exec sleep 60"]))
            seen = []

            async def follow() -> None:
                async with contextlib.aclosing(client.output(pid)) as stream:
                    async for record in stream:
                        seen.append(record.stream)
                        if record.data == "up":
                            daemon.proc.send_signal(signal.SIGTERM)

            with anyio.fail_after(WAIT), pytest.raises(SandboxdError):
                await follow()
            assert seen == ["stdout"]
        assert await anyio.to_thread.run_sync(daemon.proc.wait, WAIT) == 0


async def test_health_counts_the_processes_running_under_the_daemon(client: SandboxClient) -> None:
    with anyio.fail_after(10):
        while (await client.health()).processes:  # the module's daemon: earlier tests' processes ending
            await anyio.sleep(0.05)
    pid = new_id()
    # A process that leaves a child behind in the background: both are the sandbox's work.
    await client.start_process(StartProcess(id=pid, argv=["sh", "-c", "sleep 30 & sleep 30"]))
    with anyio.fail_after(10):
        while (await client.health()).processes < 3:  # sh, and its two sleeps
            await anyio.sleep(0.05)
    await client.signal(pid, "KILL")  # the whole process group
    with anyio.fail_after(10):
        while (await client.health()).processes:
            await anyio.sleep(0.05)
