"""End to end: the real harness CLIs in a real bwrap sandbox, through LAP's LLM proxy and a real
LiteLLM proxy, to the scripted fake LLM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

from lap_core import Error, HarnessSession, Lap, Status, TextDelta, ToolCall, ToolResult, TurnEnd, Usage, UserMessage
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from lap_core import EventRecord
    from tests.fakes.litellm import LiteLLMProxy
    from tests.fakes.llm_server import FakeLLM

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.bwrap]


async def _turn(lap: Lap, session_id: str, text: str, timeout: float = 120) -> list[EventRecord]:
    with anyio.fail_after(timeout):
        return [record async for record in lap.sessions.stream(session_id, text)]


def _of(records: list[EventRecord], kind: type) -> list[EventRecord]:
    return [r for r in records if isinstance(r.event, kind)]


async def test_a_turn_runs_opencode_in_its_sandbox(e2e_lap: Lap, llm: FakeLLM, data_dir: Path) -> None:
    llm.script(command="echo e2e-proof > proof.txt && echo wrote-the-proof", text="All done here.", chunks=3)
    agent = await e2e_lap.agents.create("oc", harness="opencode", model="fake-model")
    session = await e2e_lap.sessions.create(agent.id)
    records = await _turn(e2e_lap, session.id, "write the proof file")

    # the tool really ran, in this session's workspace
    assert (data_dir / "volumes" / session.id / "workspace" / "proof.txt").read_text() == "e2e-proof\n"
    # the events, in order, with the right types
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert records[0].event == UserMessage(text="write the proof file")
    assert [r.event.phase for r in _of(records, Status)] == ["sandbox_creating", "sandbox_ready"]  # type: ignore[union-attr]
    call, result, text = _of(records, ToolCall)[0], _of(records, ToolResult)[0], _of(records, TextDelta)[-1]
    assert call.event.name == "bash"  # type: ignore[union-attr]
    assert call.event.input["command"] == "echo e2e-proof > proof.txt && echo wrote-the-proof"  # type: ignore[union-attr]
    assert "wrote-the-proof" in result.event.output  # type: ignore[union-attr]
    assert text.event.text == "All done here."  # type: ignore[union-attr]
    assert call.seq < result.seq < text.seq
    assert _of(records, HarnessSession)[0].seq < call.seq
    assert _of(records, Usage)
    assert records[-1].event == TurnEnd(status="completed")
    assert len(_of(records, TurnEnd)) == 1
    # the upstream saw LiteLLM's own upstream key: never LAP's real key, never a stub
    keys = {request["key"] for request in llm.requests()}
    assert keys == {"sk-upstream-fake"}


def test_lap_chat_streams_a_reply_in_the_terminal(
    data_dir: Path, bwrap: None, harness_root: Path, litellm_proxy: LiteLLMProxy, llm: FakeLLM
) -> None:
    llm.script(command="echo from-the-cli", text="CLI-ANSWER")
    env = lap_env(
        data_dir,
        LITELLM_API_BASE=litellm_proxy.url,
        LITELLM_API_KEY=litellm_proxy.master_key,
        LAP_DEFAULT_MODEL="fake-model",
        HOME=os.environ.get("HOME", "/root"),
    )
    lap = [sys.executable, "-m", "lap_core"]
    try:
        result = subprocess.run([*lap, "chat", "-m", "run it"], env=env, capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stderr
        assert "⚙ bash" in result.stdout
        assert "from-the-cli" in result.stdout
        assert result.stdout.rstrip().endswith("CLI-ANSWER")
        listed = subprocess.run([*lap, "sessions", "list"], env=env, capture_output=True, text=True, check=True)
        assert "default" in listed.stdout
    finally:
        anyio.run(_cleanup, env)


@pytest.mark.parametrize(
    ("harness", "model", "tool"), [("claude-code", "claude-fake", "Bash"), ("codex", "fake-model", "shell")]
)
def test_lap_chat_works_with_every_harness(
    harness: str,
    model: str,
    tool: str,
    data_dir: Path,
    bwrap: None,
    harness_root: Path,
    litellm_proxy: LiteLLMProxy,
    llm: FakeLLM,
) -> None:
    llm.script(command="echo from-the-cli", text=f"{harness}-ANSWER")
    env = lap_env(
        data_dir,
        LITELLM_API_BASE=litellm_proxy.url,
        LITELLM_API_KEY=litellm_proxy.master_key,
        HOME=os.environ.get("HOME", "/root"),
    )
    lap = [sys.executable, "-m", "lap_core"]
    try:
        create = [*lap, "agents", "create", "--name", "agent", "--harness", harness, "--model", model]
        subprocess.run(create, env=env, capture_output=True, text=True, check=True)
        result = subprocess.run(
            [*lap, "chat", "agent", "-m", "run it", "-m", "and again"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.count(f"⚙ {tool}") == 2
        assert "from-the-cli" in result.stdout
        assert result.stdout.rstrip().endswith(f"{harness}-ANSWER")
    finally:
        anyio.run(_cleanup, env)


async def _cleanup(env: dict[str, str]) -> None:
    async with Lap(env=env, run_turns=False) as lap:
        for ref in await lap.backend.list():
            await lap.backend.delete(ref.name)


async def test_a_gateway_that_is_down_ends_the_turn_with_a_clear_error(
    data_dir: Path, bwrap: None, harness_root: Path
) -> None:
    env = lap_env(data_dir, LITELLM_API_BASE="http://127.0.0.1:9", LITELLM_API_KEY="sk-unused")
    async with Lap(env=env) as lap:
        try:
            agent = await lap.agents.create("oc", harness="opencode", model="fake-model")
            session = await lap.sessions.create(agent.id)
            # opencode retries an unreachable gateway with backoff (about 75 s) before it gives up
            failed = await _turn(lap, session.id, "hello", timeout=240)
            errors = _of(failed, Error)
            assert errors
            assert "gateway unreachable" in errors[0].event.message.lower()  # type: ignore[union-attr]
            assert failed[-1].event.status == "failed"  # type: ignore[union-attr]
            assert (await lap.sessions.get(session.id)).status == "ready"
        finally:
            for ref in await lap.backend.list():
                await lap.backend.delete(ref.name)


async def test_a_long_message_reaches_the_model_whole(e2e_lap: Lap, llm: FakeLLM) -> None:
    llm.script(command=None, text="got it")
    agent = await e2e_lap.agents.create("oc", harness="opencode", model="fake-model")
    session = await e2e_lap.sessions.create(agent.id)
    message = "long-message " + "x" * 200_000 + " end-of-message"  # beyond one argv string's 128 KiB
    records = await _turn(e2e_lap, session.id, message)
    assert records[-1].event == TurnEnd(status="completed")
    assert any(message in json.dumps(r["body"]) for r in llm.requests())


def test_the_embedding_example_runs(
    data_dir: Path, bwrap: None, harness_root: Path, litellm_proxy: LiteLLMProxy, llm: FakeLLM
) -> None:
    llm.script(command="echo embedded-tool", text="EMBEDDED-ANSWER")
    env = lap_env(data_dir, LITELLM_API_BASE=litellm_proxy.url, LITELLM_API_KEY=litellm_proxy.master_key)
    example = Path(__file__).resolve().parents[2] / "examples" / "embed.py"
    try:
        result = subprocess.run(
            [sys.executable, str(example), "fake-model", "hello"], env=env, capture_output=True, text=True, timeout=180
        )
        assert result.returncode == 0, result.stderr
        assert "[tool] bash" in result.stdout
        assert "embedded-tool" in result.stdout
        assert "EMBEDDED-ANSWER" in result.stdout
        assert "[turn completed]" in result.stdout
    finally:
        anyio.run(_cleanup, env)
