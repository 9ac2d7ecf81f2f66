"""sandboxd's log: lines on stderr (the platform keeps them with the sandbox)."""

from __future__ import annotations

import sys

__all__ = ["log"]


def log(message: str) -> None:
    """Write one line to sandboxd's log (stderr)."""
    print(f"lap_sandboxd: {message}", file=sys.stderr, flush=True)
