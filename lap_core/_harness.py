"""The Harness contract: how an agent CLI runs a turn inside a sandbox.

Most harnesses run one CLI process per turn and translate its output lines: subclass
`CliHarness`. Conformance: `lap_core.testing.HarnessConformance`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, get_args, get_origin

import msgspec
import structlog

from lap_core._events import Error, TurnEnd
from lap_core._sandbox import HOME_DIR, WORKSPACE_DIR, HydratePayload, SandboxdError, StartProcess

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from lap_core._events import SessionEvent
    from lap_core._models import Agent, Turn
    from lap_core._sandbox import SandboxClient

log = structlog.get_logger("lap")

STDERR_TAIL = 20
"""How many of a failed CLI's last stderr lines its error message quotes."""


class LLMAccess(msgspec.Struct, frozen=True, kw_only=True):
    """How the harness reaches models from inside its sandbox: the proxy's URL and a stub key."""

    base_url: str
    api_key: str


class NoOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A harness without options."""


class NativeState(msgspec.Struct, frozen=True, kw_only=True):
    """Where in the sandbox a harness keeps its own conversation (what `native_session_id` resumes).

    Before a turn that resumes a native session, LAP copies these paths to `snapshot_dir`,
    inside the sandbox; when the sandbox is lost mid-turn, the turn starts over in a new one
    from that copy, so the interrupted attempt's half-turn (the user's message, tool calls) is
    not in the conversation twice. Without a copy (or a declaration) the start-over begins a
    new native session told the conversation so far from LAP's log.

    `paths`: files or directories, absolute or relative to the hydrated workdir; the last
    component may be a shell glob (`state_*.sqlite*`: a database with its `-wal` and `-shm`).
    Keep them to the conversation: every turn copies them. `snapshot_dir` must be on the
    persistent volume and outside `paths`.
    """

    paths: tuple[str, ...]
    snapshot_dir: str = f"{HOME_DIR}/.lap/native-state"


class Harness(ABC):
    """An agent CLI (opencode, Claude Code, Codex ...) driven by LAP.

    `npm_packages` are installed (pinned) under the sandbox's `HARNESS_ROOT`. `Options` is the
    msgspec struct of the agent options the harness accepts (`Agent.options`), validated when an
    agent is created or changed and read back with `options(agent)`. `native_state` says where
    the harness keeps its own conversation (see `NativeState`); None: LAP cannot restore it.
    """

    npm_packages: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type[msgspec.Struct]] = NoOptions
    native_state: ClassVar[NativeState | None] = None

    def validate_options(self, options: dict[str, Any]) -> dict[str, str]:
        """Return problems with an agent's harness options, keyed by option name (empty: valid)."""
        fields = {field.encode_name: field for field in msgspec.structs.fields(self.Options)}
        problems: dict[str, str] = {}
        for key, value in options.items():
            if key not in fields:
                problems[key] = f"unknown option (known: {', '.join(sorted(fields)) or 'none'})"
                continue
            try:
                msgspec.convert(value, fields[key].type)
            except msgspec.ValidationError as error:
                problem = str(error).replace(" - at `$`", "")
                choices = _literal_choices(fields[key].type)
                problems[key] = f"{problem} (one of: {', '.join(map(str, choices))})" if choices else problem
        return problems

    def options(self, agent: Agent) -> Any:
        """Return the agent's options as an `Options` struct (defaults filled in)."""
        return msgspec.convert(agent.options, self.Options)

    def hydrate(self, agent: Agent, llm: LLMAccess) -> HydratePayload:
        """Return the env and files a sandbox needs for this agent (config, credentials stubs).

        Called before every turn, not only for a fresh sandbox: files are written again and the env
        set again (cheap, and a restarted sandboxd is whole again), so return the same payload for
        the same agent, and never write over what the harness itself keeps in its home.
        """
        return HydratePayload(env={}, files=[], workdir=WORKSPACE_DIR)

    @abstractmethod
    def run_turn(self, sandbox: SandboxClient, turn: Turn) -> AsyncIterator[SessionEvent]:
        """Run one turn and yield its events as they happen, ending with `TurnEnd`.

        Report the harness's own conversation id with `HarnessSession` so the next turn can
        resume it (it arrives as `turn.native_session_id`).
        """

    async def abort(self, sandbox: SandboxClient, turn: Turn) -> None:
        """Stop the turn's work in the sandbox (the default signals the turn's process)."""
        await sandbox.signal(turn.process_id, "TERM")


def json_object(line: str) -> dict[str, Any] | None:
    """Return the JSON object on one output line, or None (blank, not JSON, or not an object)."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _literal_choices(annotation: Any) -> list[Any]:
    """The values a `Literal[...]` (maybe inside a union such as `Literal[...] | None`) allows."""
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return [choice for arg in get_args(annotation) for choice in _literal_choices(arg)]


class LineMapper(Protocol):
    """Turns a CLI's stdout lines into events; may keep state across the lines of one turn."""

    def map_line(self, line: str) -> list[SessionEvent]:
        """Return the events of one stdout line (none for lines that mean nothing)."""
        ...


class CliHarness(Harness):
    """A harness that runs one CLI process per turn and maps its stdout lines to events.

    Subclasses give `argv(turn)` (the message is sent on stdin), `mapper(turn)` and maybe `env(turn)`. The process
    is the sandbox process `turn.process_id`, so a worker taking the turn over re-attaches to it.
    The turn fails if the mapper reported an `Error` or the process exited non-zero (then the
    error quotes the last stderr lines).
    """

    cli_name: ClassVar[str] = "the harness CLI"

    @abstractmethod
    def argv(self, turn: Turn) -> list[str]:
        """Return the command line of one turn."""

    @abstractmethod
    def mapper(self, turn: Turn) -> LineMapper:
        """Return a fresh mapper for one turn's output."""

    def _map(self, mapper: LineMapper, line: str) -> list[SessionEvent]:
        """Map one line; a line the mapper cannot read is skipped (the same way on every replay)."""
        try:
            return mapper.map_line(line)
        except Exception as error:
            log.warning("harness.line_skipped", harness=self.cli_name, error=repr(error), line=line[:500])
            return []

    def env(self, turn: Turn) -> dict[str, str]:
        """Return environment variables for this turn's process (on top of the sandbox's)."""
        return {}

    async def run_turn(self, sandbox: SandboxClient, turn: Turn) -> AsyncIterator[SessionEvent]:
        """Start the turn's process (idempotent by its id) and map its output as it arrives."""
        # The message goes in on stdin: no argv length limit, and it never shows in a process list.
        process = StartProcess(
            id=turn.process_id, argv=self.argv(turn), env=self.env(turn), cwd=WORKSPACE_DIR, stdin=turn.text
        )
        await sandbox.start_process(process)
        mapper = self.mapper(turn)
        stderr: list[str] = []
        failed = exited = False
        async for record in sandbox.output(turn.process_id):
            if record.stream == "stdout":
                for event in self._map(mapper, record.data):
                    failed = failed or isinstance(event, Error)
                    yield event
            elif record.stream == "stderr":
                stderr = [*stderr[-STDERR_TAIL + 1 :], record.data]
            elif record.stream == "exit":
                exited = True
                code = int(record.data)
                if code != 0 and not failed:
                    tail = " | ".join(line for line in stderr if line.strip())[-2000:]
                    yield Error(code="harness_error", message=f"{self.cli_name} exited with code {code}: {tail}")
                    failed = True
        if not exited:  # the stream was cut: LAP re-attaches to the process
            raise SandboxdError(0, f"output of {turn.process_id} ended before the process did")
        yield TurnEnd(
            status="failed" if failed else "completed", reason=f"{self.cli_name} reported an error" if failed else ""
        )
