"""Runs probe scripts in a session's sandbox as the agent's own tool call, and reads their results back.

The fake LLM is scripted to answer the turn with one shell tool call: `python3 -c BOOT PROGRAM PARAMS`, the program
being `agent/kit.py` plus one group script, base64-encoded, so it reaches the sandbox exactly as a model's tool call
would. Codex runs it; its output comes back as the turn's `tool_result`, read from the API's answer. Secrets are
passed as `(head, length, sha256)` only: a probe finds them without the event log ever holding them.

The test talks to the sandbox through a drop box in the workspace (`.lap-loot`): it leaves things there that a
colluding agent would have (another session's stub), and reads back the stubs the agent found. The sandbox controls
that directory, so the test (root) opens it without following symlinks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.fixtures import HARNESS_CACHE

if TYPE_CHECKING:
    from tests.security.platform import Platform

AGENT = Path(__file__).with_name("agent")
BOOT = "import base64,sys;exec(compile(base64.b64decode(sys.argv[1]),'probe','exec'))"
DONE = "probe-run-done"
LOOT = ".lap-loot"
_SCRIPT_LOCK = threading.Lock()  # the fake LLM has one script: one probe turn at a time
FIGURES: list[str] = []
"""What the suite measured (memory, disk), printed at the end of the run."""


@dataclass
class ProbeRun:
    """The results of one group of probes (by name), the nonce its requests carried, and the finished turn."""

    group: str
    results: dict[str, dict[str, Any]] = field(repr=False)
    nonce: str
    turn: dict[str, Any] = field(repr=False)

    @property
    def complete(self) -> bool:
        return any(DONE in output for output in self.outputs)

    @property
    def outputs(self) -> list[str]:
        return [str(r["event"]["output"]) for r in self.turn["events"] if r["event"]["type"] == "tool_result"]

    def tail(self) -> str:
        """The turn's last events, to say why a probe has no result."""
        return json.dumps([r["event"] for r in self.turn["events"][-6:]])[:3000]

    def result(self, name: str) -> dict[str, Any]:
        """The result of probe `name`; fails the test, with the turn's tail, if the probe never reported or the
        probes could not find a secret planted for them (then no result of the run means anything)."""
        check = self.results.get("kit_self_check", {"held": True})
        assert check["held"], f"the probes cannot find secrets (group {self.group}): {check['detail']}"
        assert name in self.results, f"probe {name} did not report (group {self.group}): {self.tail()}"
        return self.results[name]

    def assert_held(self, name: str) -> None:
        result = self.result(name)
        assert result["held"], f"{name}: {result['detail']}"


def program(group: str) -> str:
    """The program a group's probes run as: the kit, then the group's script (without its `from kit import`)."""
    script = re.sub(r"^from kit import (\([^)]*\)|.*)$", "", (AGENT / f"{group}.py").read_text(), flags=re.M)
    return f"{(AGENT / 'kit.py').read_text()}\n{script}\nprint({DONE!r})\n"


def describe(known: dict[str, str]) -> list[dict[str, Any]]:
    """Secrets as a sandbox may know them: a label, the first 3 characters, the length and the SHA-256."""
    return [
        {
            "label": label,
            "head": value[:3],
            "length": len(value.encode()),
            "sha256": hashlib.sha256(value.encode()).hexdigest(),
        }
        for label, value in known.items()
        if len(value) >= 8
    ]


def _b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


def base_params(platform: Platform, key: str) -> dict[str, Any]:
    """What every probe may need to know about the platform (nothing secret)."""
    from lap_core._engine.sandboxes import sandbox_name

    session = platform.sessions[key]
    others = [s for s in platform.sessions.values() if s.key != key]
    return {
        "session_id": session.id,
        "sandbox": sandbox_name(session.id),
        "data_dir": str(platform.data_dir),
        "log_dir": str(platform.logs),
        "harness_dir": str(HARNESS_CACHE),
        "pg_data_dir": platform.pg_data_dir,
        "other_sessions": [s.id for s in others],
        "other_sandboxes": [sandbox_name(s.id) for s in others],
        "echo_host": "127.0.0.3",
        "echo_port": platform.echo.port,
        "host_socket": str(platform.recorder.path),
        "host_ports": [5432, *(s.port for s in platform.servers.values()), platform.litellm.port,
                       int(platform.fake.url.rsplit(":", 1)[1])],
    }  # fmt: skip


def _script(platform: Platform, group: str, params: dict[str, Any], text: str) -> None:
    command = f'python3 -c "{BOOT}" {_b64(program(group))} {_b64(json.dumps(params))}'
    # Codex's exec tool yields a command still running after 10 s by default; the probes may take longer.
    tool_arguments = {"yield_time_ms": 30000, "max_output_tokens": 20000}
    platform.fake.script(command=command, text=text, tool_arguments=tool_arguments)


def _parsed(run: ProbeRun) -> ProbeRun:
    """Fill in the run's results from the probes' JSON lines in its tool output."""
    for line in "\n".join(run.outputs).splitlines():
        if line.startswith('{"probe"'):
            result = json.loads(line)
            run.results[result["probe"]] = result
    return run


def run_probes(
    platform: Platform,
    key: str,
    group: str,
    params: dict[str, Any] | None = None,
    *,
    known: dict[str, str] | None = None,
) -> ProbeRun:
    """Run a group's probes in session `key`'s sandbox; `known`: the secrets they look for (default: the platform's
    own and the other sessions' stubs and markers)."""
    if known is None:
        known = platform.fixed_secrets() | platform.foreign_secrets(key)
    nonce = f"nonce-{secrets.token_hex(8)}"
    full = {**base_params(platform, key), "nonce": nonce, **(params or {}), "secrets": describe(known)}
    if platform.sessions[key].marker:
        full["canary"] = describe({"canary": platform.sessions[key].marker})[0]
    with _SCRIPT_LOCK:
        _script(platform, group, full, f"{group} probes done")
        turn = platform.turn(key, f"run the {group} probes")
    read_own_stubs(platform, key)
    return _parsed(ProbeRun(group, {}, nonce, turn))


def run_everywhere(platform: Platform, keys: list[str], group: str) -> dict[str, ProbeRun]:
    """Run a group (one that needs no per-session parameters) in several sessions at once."""
    nonce = f"nonce-{secrets.token_hex(8)}"
    params = {"nonce": nonce, "secrets": describe(platform.fixed_secrets())}
    turns: dict[str, dict[str, Any]] = {}
    failures: list[BaseException] = []

    def one(key: str) -> None:
        try:
            turns[key] = platform.turn(key, f"run the {group} probes")
        except BaseException as error:  # reported below, in the test's thread
            failures.append(error)

    with _SCRIPT_LOCK:
        _script(platform, group, params, f"{group} probes done")
        threads = [threading.Thread(target=one, args=(key,)) for key in keys]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if failures:
        raise failures[0]
    runs = {}
    for key, turn in turns.items():
        read_own_stubs(platform, key)
        runs[key] = _parsed(ProbeRun(group, {}, nonce, turn))
    return runs


def reached_model(platform: Platform, fragment: str) -> list[str]:
    """The paths of the requests the fake LLM received whose body holds `fragment`."""
    return [str(r["path"]) for r in platform.fake.requests() if fragment in json.dumps(r["body"])]


# --- the drop box, opened as the sandbox cannot trick root into --------------------------------------------------


def _open_dir(parent: int | None, path: str | Path, *, create: bool = False) -> int:
    if create:
        try:
            os.mkdir(path, 0o700, dir_fd=parent)
        except FileExistsError:
            pass
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)


def _write_private(directory: Path, names: tuple[str, ...], name: str, data: bytes) -> None:
    """Write `directory/names.../name` for the sandbox user, never following a link the sandbox made."""
    fds = [_open_dir(None, directory)]
    uid = os.fstat(fds[0]).st_uid  # the sandbox user owns its workspace and home
    try:
        for part in names:
            fds.append(_open_dir(fds[-1], part, create=True))
            os.fchown(fds[-1], uid, uid)
        try:
            os.unlink(name, dir_fd=fds[-1])
        except FileNotFoundError:
            pass
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fds[-1])
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            os.fchown(file.fileno(), uid, uid)
    finally:
        for fd in fds:
            os.close(fd)


def drop_loot(platform: Platform, key: str, name: str, value: Any) -> None:
    """Leave a JSON file in the session's drop box."""
    _write_private(platform.volume(key) / "workspace", (LOOT,), name, json.dumps(value).encode())


def write_marker(platform: Platform, key: str) -> None:
    """Give the session a secret marker file in its workspace and harness home (no other session may see it)."""
    session = platform.sessions[key]
    session.marker = f"marker-{key}-{secrets.token_hex(12)}"
    for part in ("workspace", "home"):
        _write_private(platform.volume(key) / part, (), "lap-marker.txt", session.marker.encode())


def _read_loot(platform: Platform, key: str, name: str) -> list[str]:
    """The words of a file the sandbox left in its drop box (none if it left no such regular file)."""
    try:
        workspace = _open_dir(None, platform.volume(key) / "workspace")
    except FileNotFoundError:
        return []
    try:
        loot = _open_dir(workspace, LOOT)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=loot)
        finally:
            os.close(loot)
        with os.fdopen(fd, "rb") as file:
            data = file.read(1 << 16) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
    except OSError:  # no drop box, or not a directory or file: the sandbox reported nothing
        return []
    finally:
        os.close(workspace)
    return data.decode(errors="replace").split()


def read_own_stubs(platform: Platform, key: str) -> None:
    """Learn the stub keys and secrets' stubs the session's sandboxes reported (the kit appends each new one to
    `own-stubs` and `own-secret-stubs`)."""
    session = platform.sessions[key]
    session.stubs += [stub for stub in _read_loot(platform, key, "own-stubs") if stub not in session.stubs]
    found = _read_loot(platform, key, "own-secret-stubs")
    session.secret_stubs += [stub for stub in found if stub not in session.secret_stubs]
