"""The bubblewrap command line of a sandbox, the files and socket it needs, and how to tell its process alive.

Mount order matters to bwrap: later mounts go on top of earlier ones (so /tmp comes before
anything mounted under it).
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from lap_core import EGRESS_PROXY_URL, HARNESS_ROOT, HOME_DIR, LLM_BASE_URL, VAULT_DIR, WORKSPACE_DIR

if TYPE_CHECKING:
    from pathlib import Path

UID_INSIDE = 1000
RUN_DIR = "/run/lap"
PYTHON_DIR = "/opt/lap/python"
LLM_PORT = urlsplit(LLM_BASE_URL).port
EGRESS_PORT = urlsplit(EGRESS_PROXY_URL).port
# The parts of the host's /etc that programs need (TLS roots, library cache, time zone); never all of it.
ETC_FILES = ("ssl", "ca-certificates", "alternatives", "ld.so.cache", "nsswitch.conf", "localtime", "mime.types")
# sandboxd runs from a directory of its own code and msgspec, compiled (`.pyc`) when it was copied there;
# -I keeps the host's env out, -S the host's site-packages (and the time `site` takes), -B writes nothing.
BOOTSTRAP = f"import sys; sys.path.insert(0, {PYTHON_DIR!r}); from lap_sandboxd.__main__ import run; sys.exit(run())"


def write_etc(etc: Path) -> None:
    """Write the sandbox's own passwd, group and hosts files into `etc`."""
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text(
        f"root:x:0:0:root:/root:/usr/sbin/nologin\nagent:x:{UID_INSIDE}:{UID_INSIDE}:agent:{HOME_DIR}:/bin/bash\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    (etc / "group").write_text(f"root:x:0:\nagent:x:{UID_INSIDE}:\nnogroup:x:65534:\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    (etc / "hostname").write_text("sandbox\n")


def bwrap_argv(
    *,
    bwrap: str,
    python: str,
    workspace: Path,
    home: Path,
    run: Path,
    etc: Path,
    vault_socket: Path,
    python_lib: Path,
    harness_root: Path | None,
    info_fd: int,
    socket_fd: int,
    token_fd: int,
    ready_fd: int,
) -> list[str]:
    """Return the argv that starts sandboxd in a new sandbox; run it with `sandbox_env`.

    sandboxd serves the listening socket LAP made outside the sandbox (`socket_fd`) and reads its
    token from `token_fd`: no path inside the sandbox leads to its API, and the token is in no
    environment an agent process can read. It writes a line to `ready_fd` (a pipe) once it listens.
    """
    argv = [
        bwrap,
        "--unshare-all",
        "--new-session",
        "--uid",
        str(UID_INSIDE),
        "--gid",
        str(UID_INSIDE),
        "--hostname",
        "sandbox",
        "--info-fd",
        str(info_fd),
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for link in ("bin", "lib", "lib64", "sbin"):
        if os.path.islink(f"/{link}"):
            argv += ["--symlink", f"usr/{link}", f"/{link}"]
    argv += ["--dir", "/etc"]
    for name in ETC_FILES:
        if os.path.exists(f"/etc/{name}"):
            argv += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for name in ("passwd", "group", "hosts", "hostname"):
        argv += ["--ro-bind", str(etc / name), f"/etc/{name}"]
    argv += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--dir",
        "/var/tmp",
        "--bind",
        str(workspace),
        WORKSPACE_DIR,
        "--bind",
        str(home),
        HOME_DIR,
        "--bind",
        str(run),
        RUN_DIR,
        "--ro-bind",
        str(vault_socket.parent),
        VAULT_DIR,
        "--ro-bind",
        str(python_lib),
        PYTHON_DIR,
    ]
    if harness_root is not None:
        argv += ["--ro-bind", str(harness_root), HARNESS_ROOT]
    argv += [
        "--chdir",
        WORKSPACE_DIR,
        python,
        "-I",
        "-S",
        "-B",
        "-c",
        BOOTSTRAP,
        "--socket-fd",
        str(socket_fd),
        "--token-fd",
        str(token_fd),
        "--ready-fd",
        str(ready_fd),
        "--state",
        f"{RUN_DIR}/state",
        "--egress",
        f"127.0.0.1:{LLM_PORT}={VAULT_DIR}/{vault_socket.name}",
        "--egress",
        f"127.0.0.1:{EGRESS_PORT}={VAULT_DIR}/{vault_socket.name}",
    ]
    return argv


def sandbox_env() -> dict[str, str]:
    """Return the whole environment of a sandbox's first process (nothing of the host's leaks in)."""
    return {
        "HOME": HOME_DIR,
        "USER": "agent",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "PATH": f"{HARNESS_ROOT}/node_modules/.bin:/usr/local/bin:/usr/bin:/bin",
    }


def listening_socket(path: Path) -> socket.socket:
    """Return a unix socket listening at `path` that only this user (LAP) may connect to.

    Its directory is this user's alone (the umask is the process's: threads launching other
    sandboxes would see a changed one).
    """
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.parent.chmod(0o700)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
    except OSError:
        listener.close()
        raise
    listener.listen(64)
    return listener


def alive(pid: int) -> bool:
    """Return whether `pid` is a live bwrap process (not a zombie, not a recycled pid)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"bwrap" in cmdline.read().split(b"\0", 1)[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
