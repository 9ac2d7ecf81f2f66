"""The Codex harness for LAP: runs the pinned `codex` CLI headless inside a session's sandbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lap_codex.harness import CODEX_VERSION, CodexHarness, CodexOptions
from lap_core import HarnessSpec, hookimpl

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["CODEX_VERSION", "CodexHarness", "CodexOptions", "lap_harnesses"]


@hookimpl
def lap_harnesses() -> Iterator[HarnessSpec]:
    """Register the `codex` harness."""
    yield HarnessSpec(name="codex", factory=CodexHarness, description=f"Codex CLI {CODEX_VERSION} (OpenAI)")
