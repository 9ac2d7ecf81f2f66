"""sandboxd end to end: the real daemon in a subprocess, driven through `SandboxClient`.

The daemon runs the way a sandbox runs it: `python -I -S` on a directory holding only a copy of
lap_sandboxd and msgspec, so every test also proves that stdlib + msgspec suffice.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import socketserver
import stat
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx
import msgspec
import pytest

from lap_core._sandbox_client import SandboxClient, SandboxdError
from lap_sandboxd.protocol import FileSpec, HydrateRequest, OutputRecord, StartProcess

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

ROOT = Path(__file__).resolve().parents[2]
TOKEN = secrets.token_urlsafe(16)
WAIT = 20  # seconds any single step may take before the test fails instead of hanging


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Daemon:
    directory: Path
    proc: subprocess.Popen[bytes]

    @property
    def socket(self) -> Path:
        return self.directory / "sandboxd.sock"

    def client(self, token: str = TOKEN) -> SandboxClient:
        return SandboxClient(token=token, uds=str(self.socket))


def bootstrap(lib: Path) -> list[str]:
    """The command line a sandbox starts sandboxd with (see lap_local.bwrap)."""
    code = (
        f"import sys; sys.path.insert(0, {str(lib)!r}); "
        "import runpy; runpy.run_module('lap_sandboxd', run_name='__main__')"
    )
    return [sys.executable, "-I", "-S", "-B", "-c", code]


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a copy of lap_sandboxd and (a link to) msgspec, and nothing else."""
    lib = tmp_path_factory.mktemp("lib")
    shutil.copytree(ROOT / "lap_sandboxd", lib / "lap_sandboxd", ignore=shutil.ignore_patterns("__pycache__"))
    (lib / "msgspec").symlink_to(Path(msgspec.__file__).parent)
    return lib


@contextlib.contextmanager
def running_daemon(lib: Path, *args: str, directory: Path | None = None) -> Iterator[Daemon]:
    # Unix socket paths are short (108 bytes): pytest's tmp_path can be too long.
    own = directory is None
    directory = directory or Path(tempfile.mkdtemp(prefix="sbd-", dir="/tmp"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(directory), "LAP_SANDBOXD_TOKEN": TOKEN}
    argv = [*bootstrap(lib), "--socket", str(directory / "sandboxd.sock"), "--state", str(directory / "state"), *args]
    with open(directory / "sandboxd.log", "ab") as log:
        proc = subprocess.Popen(argv, env=env, cwd=directory, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        yield Daemon(directory, proc)
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print((directory / "sandboxd.log").read_text(errors="replace"))  # shown when a test fails
        if own:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(lib: Path) -> Iterator[Daemon]:
    with running_daemon(lib) as daemon:
        yield daemon


@pytest.fixture
async def client(daemon: Daemon, anyio_backend: str) -> AsyncIterator[SandboxClient]:
    async with daemon.client() as client:
        await client.wait_healthy(WAIT)
        yield client


def new_id() -> str:
    return f"p-{secrets.token_hex(4)}"


async def collect(client: SandboxClient, process_id: str, after: int = 0, follow: bool = True) -> list[OutputRecord]:
    with anyio.fail_after(WAIT):
        return [record async for record in client.output(process_id, after=after, follow=follow)]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


pytestmark = pytest.mark.anyio


async def test_healthz_is_open_and_everything_else_needs_the_token(daemon: Daemon, client: SandboxClient) -> None:
    health = await client.health()
    assert health.pid == daemon.proc.pid
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600
    async with daemon.client(token="wrong") as wrong:
        assert (await wrong.health()).pid == daemon.proc.pid
        for call in (wrong.exec(["true"]), wrong.process("nope")):
            with pytest.raises(SandboxdError) as caught:
                await call
            assert caught.value.status == 401
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(daemon.socket))) as raw:
        response = await raw.post("http://sandboxd/exec", json={"argv": ["true"]})
        assert response.status_code == 401
        assert "error" in response.json()
        headers = {"Authorization": f"Bearer {TOKEN}"}
        response = await raw.get("http://sandboxd/nowhere", headers=headers)
        assert (response.status_code, list(response.json())) == (404, ["error"])
        response = await raw.post("http://sandboxd/exec", content=b"{not json", headers=headers)
        assert (response.status_code, list(response.json())) == (400, ["error"])


async def test_hydrate_then_exec_sees_env_and_files(daemon: Daemon, client: SandboxClient) -> None:
    workdir = daemon.directory / "workspace"
    absolute = daemon.directory / "elsewhere" / "abs.txt"
    req = HydrateRequest(
        env={"GREETING": "hello", "OVERRIDE": "hydrated"},
        files=[
            FileSpec(path="sub/rel.txt", content_b64="cmVsYXRpdmU=", mode=0o600),  # "relative"
            FileSpec(path=str(absolute), content_b64="YWJzb2x1dGU="),  # "absolute"
        ],
        workdir=str(workdir),
    )
    await client.hydrate(req)
    await client.hydrate(req)  # idempotent
    assert stat.S_IMODE((workdir / "sub" / "rel.txt").stat().st_mode) == 0o600
    result = await client.exec(
        ["sh", "-c", f'echo "$GREETING $OVERRIDE"; cat sub/rel.txt {absolute}; echo; pwd'], env={"OVERRIDE": "mine"}
    )
    assert (result.exit_code, result.timed_out, result.stderr) == (0, False, "")
    assert result.stdout.splitlines() == ["hello mine", "relativeabsolute", str(workdir)]
    echoed = await client.exec(["cat"], stdin="from stdin")
    assert echoed.stdout == "from stdin"
    failed = await client.exec(["sh", "-c", "echo oops >&2; exit 7"])
    assert (failed.exit_code, failed.stderr) == (7, "oops\n")
    with pytest.raises(SandboxdError) as caught:
        await client.exec(["/no/such/program"])
    assert caught.value.status == 400


async def test_exec_timeout_kills_the_process_group(client: SandboxClient) -> None:
    start = anyio.current_time()
    result = await client.exec(["sh", "-c", "sleep 30 & echo $!; wait"], timeout=0.5)
    assert result.timed_out
    assert result.exit_code == -signal.SIGKILL
    assert anyio.current_time() - start < 10
    grandchild = int(result.stdout.strip())
    for _ in range(WAIT * 20):
        if not alive(grandchild):
            break
        await anyio.sleep(0.05)
    else:
        pytest.fail(f"the timed-out command's child {grandchild} is still alive")


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
    assert os.getpgid(detached) != os.getpgid((await client.process(pid)).pid)
    await client.signal(pid, "TERM")
    async for _ in records:
        pass
    with anyio.fail_after(5):
        while _running(detached):
            await anyio.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_children_never_see_the_token(client: SandboxClient) -> None:
    result = await client.exec(["env"])
    assert "PATH=" in result.stdout
    assert "LAP_SANDBOXD_TOKEN" not in result.stdout
    assert TOKEN not in result.stdout
    pid = new_id()
    await client.start_process(StartProcess(id=pid, argv=["env"]))
    lines = [r.data for r in await collect(client, pid)]
    assert any(line.startswith("PATH=") for line in lines)
    assert not any("LAP_SANDBOXD_TOKEN" in line or TOKEN in line for line in lines)


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_socket() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="echo-", dir="/tmp"))
    path = directory / "echo.sock"
    server = socketserver.ThreadingUnixStreamServer(str(path), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        shutil.rmtree(directory, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_egress_forwarder_pipes_bytes_to_a_unix_socket(lib: Path, echo_socket: Path) -> None:
    port = free_port()
    with running_daemon(lib, "--egress", f"127.0.0.1:{port}={echo_socket}") as daemon:
        async with daemon.client() as client:
            await client.wait_healthy(WAIT)

        async def round_trip(payload: bytes) -> None:
            with anyio.fail_after(WAIT):
                async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                    await stream.send(payload)
                    await stream.send_eof()
                    received = b""
                    with contextlib.suppress(anyio.EndOfStream):
                        while True:
                            received += await stream.receive()
            assert received == payload

        async with anyio.create_task_group() as group:
            group.start_soon(round_trip, b"hello through the forwarder")
            group.start_soon(round_trip, secrets.token_bytes(1_000_000))


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


@pytest.mark.parametrize("isolated", [False, True], ids=["PYTHONPATH", "bootstrap"])
def test_sandboxd_needs_only_the_stdlib_and_msgspec(lib: Path, isolated: bool) -> None:
    code = (
        "import sys; import lap_sandboxd.server, lap_sandboxd.__main__; "
        "print(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)))"
    )
    if isolated:
        # -I ignores PYTHONPATH: the sandbox's bootstrap puts the directory on sys.path itself.
        argv, env = [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(lib)!r}); {code}"], {}
    else:
        # -S keeps site-packages (where lap_core lives) out; PYTHONPATH holds only the copy.
        argv, env = [sys.executable, "-S", "-c", code], {"PYTHONPATH": str(lib)}
    out = subprocess.run(argv, env=env, cwd=lib, check=True, capture_output=True, text=True).stdout
    assert "lap_core" not in out
    assert out.strip() == "['__main__', 'lap_sandboxd', 'msgspec']"


async def test_health_counts_the_processes_running_under_the_daemon(client: SandboxClient) -> None:
    assert (await client.health()).processes == 0
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
