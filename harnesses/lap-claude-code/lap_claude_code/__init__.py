"""The Claude Code harness for LAP: runs the pinned `claude` CLI headless inside a session's sandbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lap_claude_code.harness import CLAUDE_CODE_VERSION, ClaudeCodeHarness, ClaudeCodeOptions
from lap_core import HarnessSpec, hookimpl

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["CLAUDE_CODE_VERSION", "ClaudeCodeHarness", "ClaudeCodeOptions", "lap_harnesses"]


@hookimpl
def lap_harnesses() -> Iterator[HarnessSpec]:
    """Register the `claude-code` harness."""
    yield HarnessSpec(
        name="claude-code", factory=ClaudeCodeHarness, description=f"Claude Code {CLAUDE_CODE_VERSION} (Anthropic)"
    )
