"""`OpencodeHarness`: one `opencode run` process per turn, resumed with `--session`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar

from lap_core import HARNESS_ROOT, HOME_DIR, WORKSPACE_DIR, CliHarness, HydratePayload, NativeState, text_file
from lap_opencode.events import OpencodeEventMapper

if TYPE_CHECKING:
    from lap_core import Agent, LLMAccess, Turn

OPENCODE_VERSION = "1.18.33"
PROVIDER = "lap"
CONFIG_PATH = f"{HOME_DIR}/.config/opencode/opencode.json"


def opencode_config(agent: Agent, llm: LLMAccess) -> dict[str, Any]:
    """Return opencode's config: one provider (LAP's LLM proxy) serving the agent's model, offline."""
    return {
        "$schema": "https://opencode.ai/config.json",
        "autoupdate": False,
        "share": "disabled",
        "provider": {
            PROVIDER: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "LAP gateway",
                # opencode substitutes {env:...}: the file holds no key, the sandbox env holds a stub.
                "options": {"baseURL": f"{llm.base_url}/v1", "apiKey": "{env:LITELLM_API_KEY}"},
                "models": {agent.model: {"name": agent.model, "tool_call": True}},
            }
        },
        "model": f"{PROVIDER}/{agent.model}",
        "small_model": f"{PROVIDER}/{agent.model}",
        # The sandbox is the boundary; inside it a headless agent must never stop to ask.
        "permission": {"bash": "allow", "edit": "allow", "webfetch": "allow"},
    }


class OpencodeHarness(CliHarness):
    """Runs opencode headless (`opencode run --format json`) inside the sandbox."""

    cli_name = "opencode"
    npm_packages: ClassVar[tuple[str, ...]] = (f"opencode-ai@{OPENCODE_VERSION}",)
    # Sessions, messages and parts live in one SQLite database (with its -wal and -shm).
    native_state = NativeState(paths=(f"{HOME_DIR}/.local/share/opencode/opencode.db*",))

    def hydrate(self, agent: Agent, llm: LLMAccess) -> HydratePayload:
        """Write opencode's config (and the agent's prompt as global AGENTS.md) into the harness home."""
        # The prompt file is written even when empty: the harness home outlives a cleared prompt.
        files = [
            text_file(CONFIG_PATH, json.dumps(opencode_config(agent, llm), indent=2)),
            text_file(f"{HOME_DIR}/.config/opencode/AGENTS.md", agent.prompt),
        ]
        env = {
            "LITELLM_API_BASE": llm.base_url,
            "LITELLM_API_KEY": llm.api_key,
            # The sandbox has no internet: skip what opencode would fetch or download at start.
            "OPENCODE_DISABLE_AUTOUPDATE": "1",
            "OPENCODE_DISABLE_MODELS_FETCH": "1",
            "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
            "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
            "OPENCODE_DISABLE_SHARE": "1",
        }
        return HydratePayload(env=env, files=files, workdir=WORKSPACE_DIR)

    def argv(self, turn: Turn) -> list[str]:
        """Return the command line of one turn (the message itself is sent on stdin)."""
        argv = [
            f"{HARNESS_ROOT}/node_modules/.bin/opencode",
            "run",
            "--format",
            "json",
            "--model",
            f"{PROVIDER}/{turn.agent.model}",
        ]
        if turn.native_session_id:
            argv += ["--session", turn.native_session_id]
        return argv

    def mapper(self, turn: Turn) -> OpencodeEventMapper:
        """Map `opencode run --format json` lines (see `lap_opencode.events`)."""
        return OpencodeEventMapper(turn.native_session_id)
