"""`ClaudeCodeHarness`: one headless `claude -p` process per turn, resumed with `--resume`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar

import msgspec

from lap_claude_code.events import ClaudeEventMapper
from lap_core import HARNESS_ROOT, HOME_DIR, WORKSPACE_DIR, CliHarness, HydratePayload, NativeState, text_file

if TYPE_CHECKING:
    from lap_core import Agent, LLMAccess, Turn

# 2.1.197 is the newest release that declares Node 20 support (later ones want Node >= 22).
CLAUDE_CODE_VERSION = "2.1.197"
MEMORY_PATH = f"{HOME_DIR}/.claude/CLAUDE.md"

ToolNames = tuple[Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")], ...]
ToolRules = tuple[Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z][A-Za-z0-9_.*-]*(\([^()]*\))?$")], ...]


class ClaudeCodeOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Agent options of the `claude-code` harness.

    `max_turns` caps the model round trips of one LAP turn (`--max-turns`). `tools` limits the
    built-in tools the agent has at all (`--tools`, names such as `Bash` or `Read`; empty: all);
    `disallowed_tools` denies tool rules such as `WebFetch` or `Bash(rm:*)`. (Claude Code's
    `--allowedTools` restricts nothing when permission prompts are skipped, as they are here.)
    """

    max_turns: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    tools: ToolNames = ()
    disallowed_tools: ToolRules = ()


class ClaudeCodeHarness(CliHarness):
    """Runs Claude Code headless (`claude -p --output-format stream-json`) inside the sandbox."""

    cli_name = "claude"
    npm_packages: ClassVar[tuple[str, ...]] = (f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}",)
    Options = ClaudeCodeOptions
    # One JSONL file per session, under a directory named after the working directory.
    native_state = NativeState(paths=(f"{HOME_DIR}/.claude/projects",))

    def hydrate(self, agent: Agent, llm: LLMAccess) -> HydratePayload:
        """Point Claude Code at LAP's LLM proxy (Anthropic Messages route) with the stub key."""
        # Written even when empty: the harness home outlives a cleared prompt.
        files = [text_file(MEMORY_PATH, agent.prompt)]
        env = {
            "ANTHROPIC_BASE_URL": llm.base_url,
            "ANTHROPIC_API_KEY": llm.api_key,
            # The sandbox has no internet: no update checks, telemetry or error reports.
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            # The sandbox is the boundary: skipping permission prompts is allowed even as root.
            "IS_SANDBOX": "1",
        }
        return HydratePayload(env=env, files=files, workdir=WORKSPACE_DIR)

    def argv(self, turn: Turn) -> list[str]:
        """Return the command line of one turn (the message itself is sent on stdin)."""
        options: ClaudeCodeOptions = self.options(turn.agent)
        argv = [
            f"{HARNESS_ROOT}/node_modules/.bin/claude",
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--include-partial-messages",
            "--model",
            turn.agent.model,
            "--dangerously-skip-permissions",
        ]
        if options.max_turns is not None:
            argv += ["--max-turns", str(options.max_turns)]
        if options.tools:
            argv += ["--tools", ",".join(options.tools)]
        if options.disallowed_tools:
            argv += ["--disallowedTools", ",".join(options.disallowed_tools)]
        if turn.native_session_id:
            argv += ["--resume", turn.native_session_id]
        return argv

    def env(self, turn: Turn) -> dict[str, str]:
        """Make Claude Code's background calls (titles, summaries) use the agent's model too:
        the gateway may serve no other."""
        model = turn.agent.model
        return {"ANTHROPIC_SMALL_FAST_MODEL": model, "ANTHROPIC_DEFAULT_HAIKU_MODEL": model}

    def mapper(self, turn: Turn) -> ClaudeEventMapper:
        """Map `stream-json` lines (see `lap_claude_code.events`)."""
        return ClaudeEventMapper(turn.native_session_id)
