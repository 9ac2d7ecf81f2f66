"""A harness for engine tests whose behaviour is scripted by the user's message.

- `run: CMD` runs CMD in the sandbox as a process (tool call + result), then answers `ran`.
- `fail` raises inside the harness; `hang` starts a process that sleeps until aborted.
- `stream: N` starts a process that appends a line to `streams.log` in the workspace, then prints
  `line 1` … `line N`, 0.1 s apart; each line is a text delta as it comes (a worker can re-attach).
  `stream: N after S` waits S seconds before the first line.
- `model: TAG` likewise starts a process (logged in `streams.log`) that streams a chat completion
  from the sandbox's LLM proxy, its message naming TAG (tests/fakes/model_turn.py); each line it
  prints (a delta of the answer, or `retry N: WHY` when a broken request is made again) is a text delta.
- `recall` answers with the conversation its native session holds, one text delta a message.
- anything else is echoed back as two text deltas.
Every turn reports the native session id `native-<n>` where n counts the turns it has seen,
so tests can check that the engine hands the previous id to the next turn. `stream` and `recall`
turns store their message in the native session (`native/conversation.log`, emptied when a turn
starts a new one) from their process, as a harness CLI does.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lap_core import (
    Harness,
    HarnessSession,
    HydratePayload,
    NativeState,
    StartProcess,
    TextDelta,
    ToolCall,
    ToolResult,
    TurnEnd,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from lap_core import Agent, LLMAccess, SandboxClient, SessionEvent, Turn

MODEL_TURN = Path(__file__).with_name("model_turn.py")


class ScriptHarness(Harness):
    """See the module docstring."""

    # Relative to the workdir, like everything of the fake backends' sandboxes.
    native_state = NativeState(paths=("native",), snapshot_dir=".lap-native-state")

    def __init__(self) -> None:
        self.seen_native_ids: list[str | None] = []

    def hydrate(self, agent: Agent, llm: LLMAccess) -> HydratePayload:
        # The fake backends run sandboxd in the sandbox's workspace directory, on the host's
        # filesystem: "/workspace" would be the host's.
        env = {"LLM_BASE_URL": llm.base_url, "LLM_API_KEY": llm.api_key, "LLM_MODEL": agent.model}
        return HydratePayload(workdir=".", env=env)

    async def run_turn(self, sandbox: SandboxClient, turn: Turn) -> AsyncIterator[SessionEvent]:
        self.seen_native_ids.append(turn.native_session_id)
        count = 1 if turn.native_session_id is None else int(turn.native_session_id.split("-")[1]) + 1
        yield HarnessSession(native_session_id=f"native-{count}")
        if turn.text == "fail":
            raise RuntimeError("the harness broke")
        if turn.text == "hang":
            await sandbox.start_process(StartProcess(id=turn.process_id, argv=["sleep", "600"]))
            async for _ in sandbox.output(turn.process_id):
                pass
            yield TurnEnd(status="failed", reason="the sleeper exited on its own")
            return
        # `stream` and `recall` also work after the conversation so far (a replay to a new session).
        message = turn.text.rpartition("\n\n---\n\n")[2]
        if message.startswith("stream: "):
            count, _, wait = message.removeprefix("stream: ").partition(" after ")
            script = (
                f"echo {turn.id} >> streams.log; sleep {float(wait or 0)}; "
                f'for i in $(seq {int(count)}); do echo "line $i"; sleep 0.1; done'
            )
            async for event in self._lines(sandbox, turn, script):
                yield event
            return
        if message.startswith("model: "):
            script = shlex.join(["exec", sys.executable, str(MODEL_TURN), message.removeprefix("model: ")])
            async for event in self._lines(sandbox, turn, f"echo {turn.id} >> streams.log; {script}"):
                yield event
            return
        if message == "recall":
            async for event in self._lines(sandbox, turn, "cat native/conversation.log"):
                yield event
            return
        if turn.text.startswith("run: "):
            command = turn.text.removeprefix("run: ")
            yield ToolCall(call_id="c1", name="sh", input={"command": command})
            await sandbox.start_process(StartProcess(id=turn.process_id, argv=["sh", "-c", command]))
            lines = [r.data async for r in sandbox.output(turn.process_id) if r.stream == "stdout"]
            yield ToolResult(call_id="c1", output="\n".join(lines))
            yield TextDelta(text="ran")
        else:
            yield TextDelta(text="you said: ")
            yield TextDelta(text=turn.text)
        yield TurnEnd()

    async def _lines(self, sandbox: SandboxClient, turn: Turn, script: str) -> AsyncIterator[SessionEvent]:
        """Run `script` as the turn's process, after it stores the message; each stdout line is a text delta."""
        store = ">>" if turn.native_session_id else ">"  # a turn without a native session starts a new one
        remember = f'mkdir -p native && printf "%s\\n" "$1" {store} native/conversation.log; '
        argv = ["sh", "-c", remember + script, "sh", turn.text]
        await sandbox.start_process(StartProcess(id=turn.process_id, argv=argv))
        async for record in sandbox.output(turn.process_id):
            if record.stream == "stdout":
                yield TextDelta(text=f"{record.data}\n")
        yield TurnEnd()
