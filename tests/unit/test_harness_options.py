"""Harness options: declared as a msgspec struct, validated option by option with clear messages."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from lap_claude_code import ClaudeCodeHarness
from lap_codex import CodexHarness
from lap_core import Agent, Harness
from lap_opencode import OpencodeHarness


class _Options(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    steps: Annotated[int, msgspec.Meta(ge=1)] | None = None
    mode: Literal["fast", "careful"] = "fast"


class _Harness(Harness):
    Options = _Options

    def run_turn(self, sandbox: Any, turn: Any) -> Any:
        raise NotImplementedError


def test_each_bad_option_is_named_with_the_reason() -> None:
    problems = _Harness().validate_options({"steps": 0, "mode": "slow", "colour": "red"})
    assert problems == {
        "steps": "Expected `int` >= 1",
        "mode": "Invalid enum value 'slow' (one of: fast, careful)",
        "colour": "unknown option (known: mode, steps)",
    }
    assert _Harness().validate_options({"steps": 3, "mode": "careful"}) == {}


def test_options_come_back_typed_with_their_defaults() -> None:
    agent = Agent(id="a", team_id="t", name="n", harness="h", model="m", options={"steps": 2})
    assert _Harness().options(agent) == _Options(steps=2, mode="fast")


def test_the_bundled_harnesses_validate_their_options() -> None:
    assert OpencodeHarness().validate_options({"x": 1}) == {"x": "unknown option (known: none)"}
    claude = ClaudeCodeHarness()
    assert (
        claude.validate_options({"max_turns": 5, "tools": ["Bash", "Read"], "disallowed_tools": ["Bash(rm:*)"]}) == {}
    )
    bad = {"max_turns": "many", "tools": ["Bash(git:*)"], "disallowed_tools": ["--model=evil", "Bash(x"]}
    assert set(claude.validate_options(bad)) == {"max_turns", "tools", "disallowed_tools"}
    assert "unknown option" in claude.validate_options({"allowed_tools": ["Read"]})["allowed_tools"]
    assert CodexHarness().validate_options({"reasoning_effort": "high"}) == {}
    assert "reasoning_effort" in CodexHarness().validate_options({"reasoning_effort": "extreme"})


def test_options_shape_the_command_line() -> None:
    agent = Agent(
        id="a",
        team_id="t",
        name="n",
        harness="claude-code",
        model="m",
        options={"max_turns": 3, "tools": ["Bash", "Read"]},
    )
    from lap_core import Turn

    argv = ClaudeCodeHarness().argv(Turn(id="turn_1", session_id="s", text="hi", agent=agent, native_session_id="x"))
    assert argv[argv.index("--max-turns") + 1] == "3"
    assert argv[argv.index("--tools") + 1] == "Bash,Read"
    assert "--allowedTools" not in argv
    assert argv[-2:] == ["--resume", "x"]
    codex = msgspec.structs.replace(agent, harness="codex", options={"reasoning_effort": "low"})
    argv = CodexHarness().argv(Turn(id="turn_1", session_id="s", text="hi", agent=codex, native_session_id="t1"))
    assert argv[1:3] == ["exec", "resume"]
    assert 'model_reasoning_effort="low"' in argv
    assert argv[-1] == "t1"
