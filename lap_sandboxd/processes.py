"""Processes inside the sandbox: one-shot execs and long-running processes with recorded output.

A long-running process lives under `<state>/processes/<id>/`: `output.ndjson` holds its
`OutputRecord`s (one JSON object a line, flushed one by one) and `info.json` its `ProcessInfo`.
Readers follow the file, woken by the process's `Condition`, so a client that reconnects gets
everything after the last seq it saw.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from typing import IO, TYPE_CHECKING

import msgspec

from lap_sandboxd.protocol import (
    ExecRequest,
    ExecResult,
    OutputRecord,
    ProcessInfo,
    ProcessState,
    SignalName,
    StartProcess,
    Stream,
)

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Generator
    from pathlib import Path

__all__ = ["ManagedProcess", "ProcessTable", "SandboxStopping", "count_descendants", "run_exec"]

_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_SIGNALS: dict[SignalName, signal.Signals] = {"TERM": signal.SIGTERM, "INT": signal.SIGINT, "KILL": signal.SIGKILL}
# How long output may trail the process's exit (a child that keeps the pipe open holds it up).
_DRAIN_SECONDS = 5.0
# How often a follower that waits for output checks that its client is still there.
_FOLLOW_CHECK_SECONDS = 5.0
LOST_EXIT_CODE = -1
"""The exit code recorded for a process that was running when a previous sandboxd died."""

_encode = msgspec.json.Encoder().encode
_decode_record = msgspec.json.Decoder(OutputRecord).decode


def _killpg(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def descendants(pid: int) -> list[int]:
    """Return the live processes that descend from `pid` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it exited meanwhile
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, pending = [], list(children.get(pid, []))
    while pending:
        found.append(pending.pop())
        pending += children.get(found[-1], [])
    return found


def count_descendants(pid: int) -> int:
    """Return how many live processes descend from `pid`."""
    return len(descendants(pid))


def _signal_tree(pid: int, signum: int) -> None:
    """Signal the process's group and every process it started, also those in groups of their own
    (an agent CLI often runs its tools in new sessions, out of reach of a group signal)."""
    tree = descendants(pid)  # before the signal: children of a dead parent are re-parented
    _killpg(pid, signum)
    for child in tree:
        try:
            if os.getpgid(child) != pid:  # the group signal reached the others (once is enough)
                os.kill(child, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _write_json(path: Path, value: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(_encode(value))
    tmp.replace(path)


def _spawn(argv: list[str], env: dict[str, str], cwd: str | None, stdin: str | None) -> subprocess.Popen[bytes]:
    """Start a process in its own process group (so a signal reaches all it starts), output piped."""
    import subprocess  # here, not at start: every sandbox waits for its sandboxd to start

    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def run_exec(req: ExecRequest, env: dict[str, str], cwd: str | None) -> ExecResult:
    """Run a command to completion in its own process group; on timeout kill the whole group."""
    import subprocess  # not at start (see _spawn)

    proc = _spawn(req.argv, env, cwd, req.stdin)
    stdin = req.stdin.encode() if req.stdin is not None else None
    timed_out = False
    try:
        out, err = proc.communicate(stdin, timeout=req.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _signal_tree(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=_DRAIN_SECONDS)
        except subprocess.TimeoutExpired:
            # Something outside the group still holds the pipes: give up on the rest of the output.
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            out, err = b"", b""
            proc.wait()
    return ExecResult(
        exit_code=proc.returncode,
        stdout=out.decode(errors="replace"),
        stderr=err.decode(errors="replace"),
        timed_out=timed_out,
    )


class SandboxStopping(Exception):
    """Raised to a follower of a process that sandboxd is stopping: its output ends without an exit.

    The exit that follows is sandboxd's doing (its pod is going, say), not the process's own end, so
    a client must see the sandbox lost (and start the work over elsewhere), not a failed process.
    """


class ManagedProcess:
    """A long-running process and its output file; all state changes happen under `cond`."""

    def __init__(self, directory: Path, pid: int, *, last_seq: int = 0, exit_code: int | None = None) -> None:
        self.id = directory.name
        self.directory = directory
        self.pid = pid
        self.cond = threading.Condition()
        self.last_seq = last_seq
        self.exit_code = exit_code
        self.stopping = False
        self._file: IO[bytes] | None = None if exit_code is not None else open(self.output_path, "ab")

    @property
    def output_path(self) -> Path:
        """The NDJSON file of the process's output records."""
        return self.directory / "output.ndjson"

    def info(self) -> ProcessInfo:
        """Return the process's current state."""
        with self.cond:
            state: ProcessState = "running" if self.exit_code is None else "exited"
            return ProcessInfo(id=self.id, pid=self.pid, state=state, exit_code=self.exit_code, last_seq=self.last_seq)

    def append(self, stream: Stream, data: str) -> None:
        """Record one line (or, for `exit`, the exit code); records after the exit are dropped."""
        with self.cond:
            if self._file is None:
                return
            record = OutputRecord(seq=self.last_seq + 1, stream=stream, data=data, ts=time.time())
            try:
                self._file.write(_encode(record) + b"\n")
                self._file.flush()
                self.last_seq = record.seq
            except OSError as error:
                print(f"lap_sandboxd: cannot record output of {self.id}: {error}", file=sys.stderr, flush=True)
            if stream == "exit":
                self.exit_code = int(data)
                self._file.close()
                self._file = None
                # Before anyone is told: whoever sees the exit finds info.json saying so too.
                info = ProcessInfo(
                    id=self.id, pid=self.pid, state="exited", exit_code=self.exit_code, last_seq=self.last_seq
                )
                _write_json(self.directory / "info.json", info)
            self.cond.notify_all()

    def read_output(self, after: int, *, follow: bool, gone: Callable[[], bool]) -> Generator[bytes, None, None]:
        """Yield batches of NDJSON lines of the records with seq > `after`.

        With `follow`, keep yielding new records until the exit record, or until `gone()` says
        the client left.
        """
        seen = 0
        pending = b""
        with open(self.output_path, "rb") as file:
            while True:
                with self.cond:
                    # Taken before reading: once the process has ended, the file is complete.
                    finished = self.exit_code is not None
                *lines, pending = (pending + file.read()).split(b"\n")
                with self.cond:
                    # Checked after the read: what was read may hold the exit that stopping caused.
                    if self.stopping:
                        raise SandboxStopping(self.id)
                batch: list[bytes] = []
                ended = False
                for line in lines:
                    record = _decode_record(line)
                    seen = record.seq
                    ended = ended or record.stream == "exit"
                    if record.seq > after:
                        batch.append(line + b"\n")
                if batch:
                    yield b"".join(batch)
                if ended or finished or not follow:
                    return
                with self.cond:
                    while self.last_seq <= seen and self.exit_code is None and not self.stopping:
                        if not self.cond.wait(_FOLLOW_CHECK_SECONDS) and gone():
                            return


class ProcessTable:
    """The processes of this sandbox, by id; starting an id that exists returns the existing one."""

    def __init__(self, state_dir: Path) -> None:
        self._root = state_dir / "processes"
        self._root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._procs: dict[str, ManagedProcess] = {}
        self._popens: dict[str, subprocess.Popen[bytes]] = {}
        for directory in sorted(self._root.iterdir()):
            loaded = self._load(directory)
            if loaded is not None:
                self._procs[loaded.id] = loaded

    @staticmethod
    def _load(directory: Path) -> ManagedProcess | None:
        """Load a process recorded by an earlier sandboxd; if it never ended, record it as lost."""
        try:
            info = msgspec.json.decode((directory / "info.json").read_bytes(), type=ProcessInfo)
            data = (directory / "output.ndjson").read_bytes()
        except (OSError, msgspec.DecodeError):
            return None
        if not data.endswith(b"\n"):
            # A record cut off by a crash: drop it so the file stays valid NDJSON.
            data = data[: data.rfind(b"\n") + 1]
            (directory / "output.ndjson").write_bytes(data)
        last = _decode_record(data.splitlines()[-1]) if data else None
        if last is not None and last.stream == "exit":
            return ManagedProcess(directory, info.pid, last_seq=last.seq, exit_code=int(last.data))
        proc = ManagedProcess(directory, info.pid, last_seq=last.seq if last else 0)
        proc.append("stderr", "lap_sandboxd restarted while this process ran; the rest of its output is lost")
        proc.append("exit", str(LOST_EXIT_CODE))
        return proc

    def get(self, process_id: str) -> ManagedProcess | None:
        """Return the process of that id, or None."""
        with self._lock:
            return self._procs.get(process_id)

    def start(self, req: StartProcess, env: dict[str, str], cwd: str | None) -> ProcessInfo:
        """Start the process unless one of that id exists.

        Raises:
            ValueError: the id is not a valid process id.
            OSError: the process could not be started (e.g. argv[0] not found).
        """
        if not _ID.fullmatch(req.id) or req.id in (".", ".."):
            raise ValueError(f"invalid process id {req.id!r}")
        with self._lock:
            existing = self._procs.get(req.id)
            if existing is not None:
                return existing.info()
            directory = self._root / req.id
            import shutil  # not at start (see _spawn)

            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            try:
                popen = _spawn(req.argv, env, cwd, req.stdin)
            except BaseException:
                shutil.rmtree(directory, ignore_errors=True)
                raise
            proc = ManagedProcess(directory, popen.pid)
            _write_json(directory / "info.json", proc.info())
            self._procs[req.id] = proc
            self._popens[req.id] = popen
        self._watch(proc, popen, req.stdin)
        return proc.info()

    def _watch(self, proc: ManagedProcess, popen: subprocess.Popen[bytes], stdin: str | None) -> None:
        if popen.stdin is not None:
            threading.Thread(target=_feed, args=(popen.stdin, stdin or ""), daemon=True).start()
        readers = [
            threading.Thread(target=_pump, args=(proc, "stdout", popen.stdout), daemon=True),
            threading.Thread(target=_pump, args=(proc, "stderr", popen.stderr), daemon=True),
        ]
        for reader in readers:
            reader.start()

        def wait() -> None:
            code = popen.wait()
            deadline = time.monotonic() + _DRAIN_SECONDS
            for reader in readers:
                reader.join(max(0.0, deadline - time.monotonic()))
            proc.append("exit", str(code))
            with self._lock:
                self._popens.pop(proc.id, None)

        threading.Thread(target=wait, name=f"wait-{proc.id}", daemon=True).start()

    def signal(self, process_id: str, name: SignalName) -> ProcessInfo | None:
        """Signal the process and all it started (a no-op once it has exited); None if the id is unknown."""
        proc = self.get(process_id)
        if proc is None:
            return None
        with self._lock:
            running = process_id in self._popens
        if running:
            _signal_tree(proc.pid, _SIGNALS[name])
        return proc.info()

    def terminate_all(self, grace: float) -> None:
        """TERM every running process group, KILL what is left after `grace` seconds, record the exits."""
        import subprocess  # not at start (see _spawn)

        with self._lock:
            running = [(self._procs[pid], popen) for pid, popen in self._popens.items()]
        for proc, _ in running:
            with proc.cond:
                proc.stopping = True  # before the signals: followers never see these exits
                proc.cond.notify_all()
        for _, popen in running:
            _signal_tree(popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, popen in running:
            try:
                popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_tree(popen.pid, signal.SIGKILL)
        # Let the waiters write the exit records, so a restarted sandboxd finds complete outputs.
        deadline = time.monotonic() + _DRAIN_SECONDS
        for proc, _ in running:
            with proc.cond:
                while proc.exit_code is None and time.monotonic() < deadline:
                    proc.cond.wait(max(0.0, deadline - time.monotonic()))


def _feed(pipe: IO[bytes], text: str) -> None:
    try:
        with pipe:
            pipe.write(text.encode())
    except BrokenPipeError:
        pass  # the process stopped reading; that is its business


def _pump(proc: ManagedProcess, stream: Stream, pipe: IO[bytes] | None) -> None:
    if pipe is None:
        return
    with pipe:
        for line in pipe:
            proc.append(stream, line.removesuffix(b"\n").decode(errors="replace"))
