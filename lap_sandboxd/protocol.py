"""The wire types of sandboxd's HTTP API, shared by the daemon and the platform's `SandboxClient`.

Every body is JSON. Routes (all but `GET /healthz` need `Authorization: Bearer <token>`):

    GET  /healthz                        -> Health
    POST /hydrate        HydrateRequest  -> {"ok": true}
    PUT  /token          NewToken        -> {"ok": true}
    POST /exec           ExecRequest     -> ExecResult
    POST /processes      StartProcess    -> ProcessInfo   (idempotent by id)
    GET  /processes/{id}                 -> ProcessInfo
    GET  /processes/{id}/output?after=N&follow=0|1 -> NDJSON stream of OutputRecord (chunked)
    POST /processes/{id}/signal Signal   -> ProcessInfo

Errors are `ErrorBody` with a 4xx/5xx status. This module imports only msgspec and the stdlib:
it runs inside the sandbox.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = [
    "VERSION",
    "EgressRoute",
    "ErrorBody",
    "ExecRequest",
    "ExecResult",
    "FileSpec",
    "Health",
    "HydrateRequest",
    "NewToken",
    "OutputRecord",
    "ProcessInfo",
    "ProcessState",
    "Signal",
    "SignalName",
    "StartProcess",
    "Stream",
]

VERSION = "1"
"""The protocol's version, reported by `/healthz`; bumped on incompatible wire changes."""

ProcessState = Literal["running", "exited"]
Stream = Literal["stdout", "stderr", "exit"]
SignalName = Literal["TERM", "INT", "KILL"]


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of `GET /healthz`: protocol version, daemon pid, start time (epoch seconds), and
    how many processes run under the daemon now (the agent's work: a sandbox with any is not idle)."""

    version: str
    pid: int
    started_at: float
    processes: int = 0


class FileSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A file to write: `path` is absolute or relative to the hydrate's workdir; content in base64."""

    path: str
    content_b64: str
    mode: int = 0o644


class EgressRoute(msgspec.Struct, frozen=True, kw_only=True):
    """Where the forwarder on one loopback port sends connections, and how it introduces the sandbox.

    `targets` (unix socket paths or `HOST:PORT`) are tried in order, before the target given on
    sandboxd's command line. `identity` (and the `service` wanted, if any) is sent as the first line
    of every forwarded connection (see `lap_sandboxd.egress`); it is kept in sandboxd's memory only.
    """

    targets: list[Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]] = msgspec.field(default_factory=list)
    identity: Annotated[str, msgspec.Meta(pattern=r"^[!-~]{0,512}$")] = ""
    service: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9-]{0,32}$")] = ""


class HydrateRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Env merged into every later exec/process (their own env wins), files to write, default cwd.

    `egress` updates the forwarders sandboxd runs, keyed by their listening address (`HOST:PORT`);
    routes for addresses it does not forward are ignored.
    """

    workdir: str
    env: dict[str, str] = msgspec.field(default_factory=dict)
    files: list[FileSpec] = msgspec.field(default_factory=list)
    egress: dict[str, EgressRoute] = msgspec.field(default_factory=dict)


class ExecRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A command run to completion; `timeout` (seconds) kills its whole process group."""

    argv: list[str]
    env: dict[str, str] = msgspec.field(default_factory=dict)
    cwd: str | None = None
    stdin: str | None = None
    timeout: float = 60.0


class ExecResult(msgspec.Struct, frozen=True, kw_only=True):
    """How an exec ended; a negative `exit_code` is the signal that killed it (e.g. -9 on timeout)."""

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False


class StartProcess(msgspec.Struct, frozen=True, kw_only=True):
    """A long-running process, identified by `id` (`[A-Za-z0-9._-]`, at most 128 characters)."""

    id: str
    argv: list[str]
    env: dict[str, str] = msgspec.field(default_factory=dict)
    cwd: str | None = None
    stdin: str | None = None


class ProcessInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A process's state; `last_seq` is the seq of its newest output record (0 before any)."""

    id: str
    pid: int
    state: ProcessState
    exit_code: int | None = None
    last_seq: int = 0


class OutputRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One line of a process's output (without its newline), or its end.

    Records of a process are numbered from 1. The last one has `stream="exit"` and the exit
    code as text in `data` (negative: killed by that signal).
    """

    seq: int
    stream: Stream
    data: str
    ts: float


class Signal(msgspec.Struct, frozen=True, kw_only=True):
    """A signal for a process's whole process group."""

    signal: SignalName


class NewToken(msgspec.Struct, frozen=True, kw_only=True):
    """The token that replaces sandboxd's current one (a warm sandbox gets its own when it is claimed)."""

    token: Annotated[str, msgspec.Meta(min_length=32, max_length=512)]


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """The body of every error response."""

    error: str
