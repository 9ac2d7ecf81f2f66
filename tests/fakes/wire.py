"""What the fake LLM answers, in each provider's wire format: the kit's (`lap_core.testing`), for LAP's tests."""

from lap_core.testing._wire import (
    SHELL_TOOLS,
    USAGE,
    Counts,
    Reply,
    carries_usage,
    complete,
    decide,
    stream,
    usage_block,
    varied_usage,
)

__all__ = [
    "SHELL_TOOLS",
    "USAGE",
    "Counts",
    "Reply",
    "carries_usage",
    "complete",
    "decide",
    "stream",
    "usage_block",
    "varied_usage",
]
