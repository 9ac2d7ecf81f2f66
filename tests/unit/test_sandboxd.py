"""sandboxd end to end: the real daemon in a subprocess, driven through `SandboxClient`: auth,
hydrate, exec, the egress forwarder, and what it needs to run (see `sandboxd_daemon`)."""

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
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest

from lap_core._sandbox_client import SandboxClient, SandboxdError
from lap_sandboxd.daemon import parse_args
from lap_sandboxd.egress import parse_egress
from lap_sandboxd.protocol import FileSpec, HydrateRequest, StartProcess
from tests.unit.sandboxd_daemon import TOKEN, WAIT, Daemon, alive, bootstrap, collect, new_id, running_daemon

if TYPE_CHECKING:
    from collections.abc import Iterator


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


async def test_a_replaced_token_is_the_only_one_that_works(lib: Path) -> None:
    # A warm sandbox starts with its pool's token and gets one of its own when it is claimed.
    with running_daemon(lib) as daemon:
        async with daemon.client() as pool, daemon.client() as old:
            await pool.wait_healthy(WAIT)
            with pytest.raises(SandboxdError) as short:
                await pool.replace_token("too-short")
            assert short.value.status == 400
            new = secrets.token_urlsafe(32)
            await pool.replace_token(new)
            assert (await pool.exec(["true"])).exit_code == 0  # the client carries the new token on
            with pytest.raises(SandboxdError) as caught:
                await old.exec(["true"])
            assert caught.value.status == 401
        async with daemon.client(token=new) as mine:
            assert (await mine.exec(["true"])).exit_code == 0


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
def echo_tcp() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


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


@pytest.mark.parametrize("kind", ["unix", "tcp"])
async def test_egress_forwarder_pipes_bytes_to_its_target(lib: Path, kind: str, request: pytest.FixtureRequest) -> None:
    # unix: a local sandbox's bind-mounted proxy socket; tcp: a pod's proxy address.
    target = request.getfixturevalue("echo_socket" if kind == "unix" else "echo_tcp")
    port = free_port()
    with running_daemon(lib, "--egress", f"127.0.0.1:{port}={target}") as daemon:
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


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("127.0.0.1:4000=/run/v/llm.sock", (("127.0.0.1", 4000), "/run/v/llm.sock")),
        ("127.0.0.1:4000=10.88.0.1:4001", (("127.0.0.1", 4000), ("10.88.0.1", 4001))),
        ("[::1]:4000=lap-vault.lap.svc:4001", (("::1", 4000), ("lap-vault.lap.svc", 4001))),
    ],
)
def test_egress_specs(spec: str, parsed: object) -> None:
    assert parse_egress(spec) == parsed


@pytest.mark.parametrize(
    "spec", ["127.0.0.1:4000", "127.0.0.1=/x", "127.0.0.1:4000=relative.sock", "127.0.0.1:4000=h:0", ":4000=/x"]
)
def test_bad_egress_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_egress(spec)


@pytest.mark.parametrize("isolated", [False, True], ids=["PYTHONPATH", "bootstrap"])
def test_sandboxd_needs_only_the_stdlib_and_msgspec(lib: Path, isolated: bool) -> None:
    code = (
        "import sys; import lap_sandboxd.server, lap_sandboxd.daemon, lap_sandboxd.__main__; "
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


def test_sandboxd_starts_without_its_api(lib: Path) -> None:
    """Every sandbox waits for sandboxd to start: its HTTP server, msgspec and the process table come with the first
    connection, not before (see lap_sandboxd.daemon)."""
    code = (
        f"import sys; sys.path.insert(0, {str(lib)!r}); import lap_sandboxd.daemon; "
        "print(sorted(m for m in ('http.server', 'msgspec', 'subprocess', 'ssl', 'lap_sandboxd.server', 'argparse', "
        "'pathlib', 're', 'typing') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_sandboxd_says_on_its_ready_fd_that_it_listens_then_serves(lib: Path) -> None:
    directory = Path(tempfile.mkdtemp(prefix="sbd-", dir="/tmp"))
    ready, ready_write = os.pipe()
    argv = [
        *bootstrap(lib),
        "--socket",
        str(directory / "sandboxd.sock"),
        "--state",
        str(directory / "state"),
        "--ready-fd",
        str(ready_write),
    ]
    env = {"PATH": "/usr/bin:/bin", "LAP_SANDBOXD_TOKEN": TOKEN}
    proc = subprocess.Popen(argv, env=env, pass_fds=(ready_write,), stdin=subprocess.DEVNULL)
    os.close(ready_write)
    try:
        with os.fdopen(ready, "rb") as said:
            assert said.readline() == b"ready\n"
            assert said.read() == b""  # closed: no process sandboxd starts inherits it
        # Listening already: the first request, which loads the API, is answered.
        with socket.socket(socket.AF_UNIX) as raw:
            raw.settimeout(WAIT)
            raw.connect(str(directory / "sandboxd.sock"))
            raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: sandboxd\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := raw.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert b'"version"' in answer
    finally:
        proc.terminate()
        proc.wait(WAIT)
        shutil.rmtree(directory, ignore_errors=True)


def test_sandboxds_command_line() -> None:
    fds = ["--socket-fd", "3", "--token-fd=4", "--ready-fd", "5"]
    egress = ["--egress", "127.0.0.1:4000=/v/llm.sock", "--egress=127.0.0.1:4001=vault:4001"]
    options = parse_args([*fds, "--state", "/run/lap/state", "--listen", "[::]:7000", *egress])
    assert (options.socket, options.socket_fd, options.token_fd, options.ready_fd) == (None, 3, 4, 5)
    assert (options.state, options.listen) == ("/run/lap/state", ("::", 7000))
    assert options.egress == [(("127.0.0.1", 4000), "/v/llm.sock"), (("127.0.0.1", 4001), ("vault", 4001))]


@pytest.mark.parametrize(
    "argv",
    [
        ["--state", "s"],
        ["--socket", "a", "--socket-fd", "3", "--state", "s"],
        ["--socket", "a"],
        ["--socket", "a", "--state"],
        ["--socket", "a", "--state", "s", "--bogus", "1"],
        ["--socket", "a", "--state", "s", "--listen", "nope"],
        ["--socket-fd", "x", "--state", "s"],
        ["--socket", "a", "--state", "s", "--egress", "nope"],
    ],
)
def test_a_wrong_command_line_is_refused_with_the_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("usage: lap_sandboxd")
