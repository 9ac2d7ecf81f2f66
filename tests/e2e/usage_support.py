"""What the usage tests compare: what the fake LLM reported, per session, against what LAP recorded."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

Sums = tuple[int, int, int, int]
"""calls, input tokens, output tokens, cached tokens."""


def tag(session_id: str) -> str:
    """A word to put in a session's messages, by which the fake's requests are told apart."""
    return f"usage-tag-{session_id}"


def reported(requests: list[dict[str, Any]], sessions: Mapping[str, str]) -> dict[str, Sums]:
    """Sum the usage the fake reported per session (`sessions`: session id -> its team; requests by their tag)."""
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for request in requests:
        if "usage" not in request:
            continue  # its reply never went out whole
        body = json.dumps(request["body"])
        owners = [session for session in sessions if tag(session) in body]
        assert len(owners) == 1, f"a request of no single session: {body[:2000]}"
        usage, total = request["usage"], sums[owners[0]]
        for index, value in enumerate((1, usage["input"], usage["output"], usage["cached"])):
            total[index] += value
    return {session: (total[0], total[1], total[2], total[3]) for session, total in sums.items()}


def per_team(by_session: Mapping[str, Sums], sessions: Mapping[str, str]) -> dict[str, Sums]:
    """Add up sessions' sums by their team."""
    teams: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for session, sums in by_session.items():
        teams[sessions[session]] = [a + b for a, b in zip(teams[sessions[session]], sums, strict=True)]
    return {team: (total[0], total[1], total[2], total[3]) for team, total in teams.items()}


def sums_of(totals: Any) -> Sums:
    """The sums of a `UsageTotals` (or its JSON)."""
    if isinstance(totals, dict):
        return totals["calls"], totals["input_tokens"], totals["output_tokens"], totals["cached_tokens"]
    return totals.calls, totals.input_tokens, totals.output_tokens, totals.cached_tokens
