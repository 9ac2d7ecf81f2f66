"""The Kubernetes backend's sandbox image (`tests/k8s/cluster/build-sandbox-image.sh`), checked without Kubernetes.

The codex image is built (a no-op when cached), its docker-archive unpacked (skopeo to `dir:`, then the
layers in order with tar), and programs run inside it with bubblewrap as the sandbox user (uid 1000),
with the environment, working directory and command of the image's own config, as a pod would.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.fixtures import require

if TYPE_CHECKING:
    from collections.abc import Iterator

SCRIPT = Path(__file__).parent / "cluster" / "build-sandbox-image.sh"
CACHE = Path(os.environ.get("LAP_K8S_CACHE", "/var/cache/lap-k8s")) / "images"
CODEX_VERSION = "0.169.0"
UID = 1000


@dataclass
class Image:
    ref: str
    tar: Path
    rootfs: Path
    config: dict[str, Any]  # the OCI/Docker image config's `config` part: Env, Cmd, User, WorkingDir

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config["Env"])

    def bwrap(self, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
        """Return the command that runs `argv` in the rootfs as uid 1000 (a user namespace mapping 1000 to 1000)."""
        setenv = [arg for key, value in {**self.env, **(env or {})}.items() for arg in ("--setenv", key, value)]
        return [
            *("setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups"),
            *("bwrap", "--unshare-all", "--unshare-user", "--uid", str(UID), "--gid", str(UID), "--die-with-parent"),
            *("--bind", str(self.rootfs), "/", "--proc", "/proc", "--dev", "/dev", "--clearenv", *setenv),
            *("--chdir", self.config["WorkingDir"], "--", *argv),
        ]

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.bwrap(list(argv)), capture_output=True, text=True, timeout=120, env={}, check=False)


def build(harness: str, **env: str) -> tuple[str, str]:
    """Run the build script; return the image reference it printed last and its stderr."""
    result = subprocess.run(
        [str(SCRIPT), harness], capture_output=True, text=True, timeout=900, env={**os.environ, **env}, check=False
    )
    assert result.returncode == 0, f"{SCRIPT.name} {harness} failed:\n{result.stderr}"
    return result.stdout.splitlines()[-1], result.stderr


@pytest.fixture(scope="module")
def codex() -> Iterator[Image]:
    missing = [tool for tool in ("umoci", "skopeo") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not installed: run tests/k8s/cluster/install-deps.sh (as root)")
    require(os.geteuid() == 0, "root (the image build sets file owners; the checks switch to uid 1000)")
    require(shutil.which("bwrap") is not None and shutil.which("setpriv") is not None, "bubblewrap and setpriv")
    ref, _ = build("codex")
    name, tag = ref.removeprefix("localhost/").split(":")
    tar = CACHE / f"{name}-{tag}.tar"
    with tempfile.TemporaryDirectory(prefix="lap-sandbox-image-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # uid 1000 must reach the rootfs
        subprocess.run(["skopeo", "copy", "-q", f"docker-archive:{tar}", f"dir:{root / 'blobs'}"], check=True)
        manifest = json.loads((root / "blobs" / "manifest.json").read_text())

        def blob(digest: str) -> Path:
            return root / "blobs" / digest.removeprefix("sha256:")

        rootfs = root / "rootfs"
        rootfs.mkdir()
        for layer in manifest["layers"]:  # additive layers only: nothing to whiteout
            subprocess.run(["tar", "-xpf", str(blob(layer["digest"])), "-C", str(rootfs)], check=True)
        config = json.loads(blob(manifest["config"]["digest"]).read_text())["config"]
        yield Image(ref=ref, tar=tar, rootfs=rootfs, config=config)


def test_the_build_is_cached_and_named_by_its_content(codex: Image) -> None:
    started = time.monotonic()
    ref, stderr = build("codex", FORCE="")
    assert ref == codex.ref
    assert f"cached: {codex.tar}" in stderr
    assert time.monotonic() - started < 30
    assert codex.ref.startswith("localhost/lap-sandbox-codex:")


def test_the_image_config_is_the_sandbox_environment(codex: Image) -> None:
    assert codex.config["User"] == f"{UID}:{UID}"
    assert codex.config["WorkingDir"] == "/workspace"
    assert codex.env["PATH"] == "/opt/lap/harness/node_modules/.bin:/usr/local/bin:/usr/bin:/bin"
    assert codex.env["HOME"] == "/home/agent"
    assert codex.env["LANG"] == "C.UTF-8"
    assert codex.env["PYTHONPATH"] == "/opt/lap/python"
    assert codex.config["Cmd"][:4] == ["python3", "-B", "-m", "lap_sandboxd"]


def test_users_and_directories(codex: Image) -> None:
    passwd = (codex.rootfs / "etc/passwd").read_text()
    assert f"agent:x:{UID}:{UID}:agent:/home/agent:/bin/bash" in passwd
    assert passwd.startswith("root:x:0:0:")
    assert "nobody:x:65534:" in passwd
    assert f"agent:x:{UID}:" in (codex.rootfs / "etc/group").read_text()
    for directory in ("workspace", "home/agent", "run/lap"):
        assert (codex.rootfs / directory).stat().st_uid == UID, directory
    assert (codex.rootfs / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (codex.rootfs / "etc/ssl/certs/ca-certificates.crt").stat().st_size > 100_000


def test_sandboxd_imports_on_the_image_python(codex: Image) -> None:
    result = codex.run("python3", "-c", "import lap_sandboxd.server, msgspec, ssl, sqlite3; print(msgspec.__version__)")
    assert result.returncode == 0, result.stderr


def test_the_harness_cli_runs(codex: Image) -> None:
    result = codex.run("/opt/lap/harness/node_modules/.bin/codex", "--version")
    assert result.returncode == 0, result.stderr
    assert CODEX_VERSION in result.stdout


def test_node_bash_and_the_usual_commands(codex: Image) -> None:
    # npm shims start with `#!/usr/bin/env node`; Intl needs node's ICU data.
    script = (
        "set -e; id -u; /usr/bin/env node -e 'console.log(new Intl.NumberFormat(\"de-DE\").format(1234.5))'; "
        "echo hello > /workspace/probe; cat /workspace/probe; ls /opt/lap/harness >/dev/null; "
        "touch /home/agent/probe /tmp/probe; ! touch /opt/probe 2>/dev/null; echo $HOME $USER"
    )
    result = codex.run("bash", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n") == [str(UID), "1.234,5", "hello", "/home/agent agent", ""]


def test_sandboxd_serves_with_the_image_command(codex: Image) -> None:
    """The image's Cmd starts sandboxd; an /exec through it runs the harness CLI on the image's PATH."""
    token = secrets.token_hex(16)
    socket_path = codex.rootfs / "run/lap/sandboxd.sock"
    argv = codex.bwrap(codex.config["Cmd"], env={"LAP_SANDBOXD_TOKEN": token})
    with subprocess.Popen(argv, env={}, stderr=subprocess.PIPE, text=True) as daemon:
        try:
            deadline = time.monotonic() + 30
            while not socket_path.exists():
                assert daemon.poll() is None, daemon.communicate()[1]
                assert time.monotonic() < deadline, "sandboxd did not create its socket"
                time.sleep(0.05)
            status, health = _request(socket_path, "GET", "/healthz")
            assert status == 200, health
            body = json.dumps({"argv": ["codex", "--version"]})
            status, result = _request(socket_path, "POST", "/exec", body, token)
            assert status == 200, result
            assert result["exit_code"] == 0, result
            assert CODEX_VERSION in result["stdout"]
        finally:
            daemon.terminate()
            daemon.communicate(timeout=30)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("sandboxd", timeout=60)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(self._path))


def _request(path: Path, method: str, url: str, body: str | None = None, token: str = "") -> tuple[int, Any]:
    connection = _UnixConnection(path)
    try:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"} if token else {}
        connection.request(method, url, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()
