"""`CodexHarness`: one `codex exec --json` process per turn, resumed with `codex exec resume`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, ClassVar, Literal

import msgspec

from lap_codex.events import CodexEventMapper
from lap_core import HARNESS_ROOT, HOME_DIR, WORKSPACE_DIR, CliHarness, HydratePayload, NativeState, text_file

if TYPE_CHECKING:
    from lap_core import Agent, LLMAccess, Turn

CODEX_VERSION = "0.169.0"
PROVIDER = "lap"
CODEX_HOME = f"{HOME_DIR}/.codex"


class CodexOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Agent options of the `codex` harness: `reasoning_effort` for reasoning models."""

    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None


def _toml_string(value: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, but TOML also forbids a raw DEL."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def codex_config(agent: Agent, llm: LLMAccess) -> str:
    """Return Codex's `config.toml`: one provider (LAP's LLM proxy, Responses API), offline, no prompts."""
    return f"""\
model = {_toml_string(agent.model)}
model_provider = "{PROVIDER}"
# The sandbox is the boundary: Codex runs commands directly and never stops to ask.
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[model_providers.{PROVIDER}]
name = "LAP gateway"
base_url = {_toml_string(llm.base_url + "/v1")}
env_key = "LITELLM_API_KEY"
wire_api = "responses"

[features]
# Offline, plugin sync waits on GitHub for seconds at every exit.
plugins = false

# Nothing leaves the sandbox but model calls; offline, the usage-metrics upload held every exit 5 s.
[analytics]
enabled = false

[otel]
metrics_exporter = "none"
"""


class CodexHarness(CliHarness):
    """Runs Codex headless (`codex exec --json`) inside the sandbox."""

    cli_name = "codex"
    npm_packages: ClassVar[tuple[str, ...]] = (f"@openai/codex@{CODEX_VERSION}",)
    Options = CodexOptions
    # The session's rollout (JSONL), and the databases that index it (threads, and the history
    # projected from the rollout up to a byte offset): each with its -wal and -shm.
    native_state = NativeState(
        paths=(f"{CODEX_HOME}/sessions", f"{CODEX_HOME}/state_*.sqlite*", f"{CODEX_HOME}/thread_history_*.sqlite*")
    )

    def hydrate(self, agent: Agent, llm: LLMAccess) -> HydratePayload:
        """Write Codex's config (and the agent's prompt as its global AGENTS.md) into the harness home."""
        # The prompt file is written even when empty: the harness home outlives a cleared prompt.
        files = [
            text_file(f"{CODEX_HOME}/config.toml", codex_config(agent, llm)),
            text_file(f"{CODEX_HOME}/AGENTS.md", agent.prompt),
        ]
        env = {"CODEX_HOME": CODEX_HOME, "LITELLM_API_KEY": llm.api_key}
        return HydratePayload(env=env, files=files, workdir=WORKSPACE_DIR)

    def argv(self, turn: Turn) -> list[str]:
        """Return the command line of one turn (Codex reads the message from stdin)."""
        options: CodexOptions = self.options(turn.agent)
        argv = [f"{HARNESS_ROOT}/node_modules/.bin/codex", "exec"]
        if turn.native_session_id:
            argv.append("resume")
        argv += ["--json", "--skip-git-repo-check", "-m", turn.agent.model]
        if options.reasoning_effort:
            argv += ["-c", f'model_reasoning_effort="{options.reasoning_effort}"']
        if turn.native_session_id:
            argv.append(turn.native_session_id)
        return argv

    def mapper(self, turn: Turn) -> CodexEventMapper:
        """Map `codex exec --json` lines (see `lap_codex.events`)."""
        return CodexEventMapper(turn.native_session_id, call_prefix=f"{turn.process_id}.")
