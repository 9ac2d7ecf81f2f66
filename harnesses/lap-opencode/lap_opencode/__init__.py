"""The opencode harness for LAP: runs the pinned `opencode` CLI headless inside a session's sandbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lap_core import HarnessSpec, hookimpl
from lap_opencode.harness import OPENCODE_VERSION, OpencodeHarness

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["OPENCODE_VERSION", "OpencodeHarness", "lap_harnesses"]


@hookimpl
def lap_harnesses() -> Iterator[HarnessSpec]:
    """Register the `opencode` harness."""
    yield HarnessSpec(name="opencode", factory=OpencodeHarness, description=f"opencode {OPENCODE_VERSION} (sst)")
