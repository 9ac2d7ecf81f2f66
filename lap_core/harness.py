"""The Harness contract: how an agent CLI runs a turn inside a sandbox.

Conformance: `lap_core.testing.HarnessConformance`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from lap_core.sandbox import HydratePayload

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from lap_core.events import SessionEvent
    from lap_core.models import Agent, Turn
    from lap_core.sandbox import SandboxClient


class LLMAccess(msgspec.Struct, frozen=True, kw_only=True):
    """How the harness reaches models from inside its sandbox: the proxy's URL and a stub key."""

    base_url: str
    api_key: str


class Harness(ABC):
    """An agent CLI (opencode, Claude Code, Codex ...) driven by LAP.

    `npm_packages` are installed (pinned) under the sandbox's `HARNESS_ROOT`.
    """

    npm_packages: ClassVar[tuple[str, ...]] = ()

    def validate_options(self, options: dict[str, Any]) -> dict[str, str]:
        """Return problems with an agent's harness options, keyed by option name (empty: valid).

        The default accepts no options at all.
        """
        return dict.fromkeys(options, "unknown option")

    def hydrate(self, agent: Agent, llm: LLMAccess) -> HydratePayload:
        """Return the env and files a fresh sandbox needs for this agent (config, credentials stubs)."""
        return HydratePayload(env={}, files=[], workdir="/workspace")

    @abstractmethod
    def run_turn(self, sandbox: SandboxClient, turn: Turn) -> AsyncIterator[SessionEvent]:
        """Run one turn and yield its events as they happen, ending with `TurnEnd`.

        Report the harness's own conversation id with `HarnessSession` so the next turn can
        resume it (it arrives as `turn.native_session_id`).
        """

    async def abort(self, sandbox: SandboxClient, turn: Turn) -> None:
        """Stop the turn's work in the sandbox (the default signals the turn's process)."""
        await sandbox.signal(turn.process_id, "TERM")
