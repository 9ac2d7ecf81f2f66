"""The model calls of a chaos run: which turn made each, which were in flight at a fault, which a death cut.

`model:` turns stream a chat completion from the fake LLM through their sandbox's forwarder and a
LAP process's LLM proxy (tests/fakes/model_turn.py); the fake records every request, whom it was
for (the turn's tag in the message), when it came and how its stream ended. A process that dies
may cut the model streams of the turns it runs: those are resumed by another worker
(`turn_resumed`), or started over when their sandbox went too (`turn_restarted`), and may call the
model again. Every other turn must call the model exactly once and stream its answer whole:

- cut: a model turn neither resumed nor restarted that called the model more than once (or never),
  made its request again, or whose stream broke at the gateway; a stream of another process's turn
  that was in flight when a fault killed a process and broke;
- spared: the streams of other processes' turns that were in flight at a fault and went on whole
  (what shows a `kill_vault_worker` run tested anything).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.chaos.clients import LINES, is_retry
from tests.fakes.model_turn import tag_of

if TYPE_CHECKING:
    from tests.chaos.checks import Figures
    from tests.chaos.clients import SessionClient
    from tests.chaos.faults import Fault

IN_FLIGHT = (2, LINES - 6)
"""A model stream is well under way, and far from its end, when the gateway has sent this many deltas."""
ANSWER = "".join(f"line {i:02d}\n" for i in range(1, LINES + 1))
"""What the fake LLM answers, in `LINES` deltas of one line each (`line 01` ...): a model turn prints them."""


def calls_of(requests: list[dict[str, Any]], tag: str) -> list[int]:
    """The indexes of the requests the fake LLM got from the turn tagged `tag`."""
    return [i for i, request in enumerate(requests) if tag_of(request) == tag]


def in_flight(requests: list[dict[str, Any]], clients: list[SessionClient]) -> list[tuple[SessionClient, str, int]]:
    """The current model turns whose call streams now, `IN_FLIGHT` deltas in: (client, turn id, request index)."""
    found = []
    for client in clients:
        current = client.current
        if current is None or current.kind != "model":
            continue
        for index in calls_of(requests, current.tag):
            request = requests[index]
            if request.get("outcome") is None and IN_FLIGHT[0] <= request.get("deltas", 0) <= IN_FLIGHT[1]:
                found.append((client, current.turn_id, index))
    return found


def check_model_turns(
    figures: Figures, client: SessionClient, history: list[dict[str, Any]], requests: list[dict[str, Any]]
) -> None:
    """Check that each model turn no fault took from its process called the model once and streamed it whole."""
    for sent in client.sent:
        if sent.kind != "model":
            continue
        figures.model_turns += 1
        calls = [requests[i] for i in calls_of(requests, sent.tag)]
        figures.model_calls += len(calls)
        events = [r["event"] for r in history if r["turn_id"] == sent.turn_id]
        phases = {e["phase"] for e in events if e["type"] == "status"}
        if phases & {"turn_resumed", "turn_restarted"}:
            continue  # its process (or its sandbox) died: its model call may be made again
        retries = sum(map(is_retry, events))
        broken = [c.get("outcome") for c in calls if c.get("outcome") != "completed"]
        if len(calls) != 1 or retries or broken:
            figures.problem(
                "cut",
                f"{client.session_id} {sent.turn_id} ({sent.tag}): run by a process that lived on, yet"
                f" {len(calls)} model calls, {retries} made again, streams that did not complete: {broken}",
            )


def check_spared(figures: Figures, faults: list[Fault], requests: list[dict[str, Any]]) -> int:
    """Check that the model streams of other processes' turns, in flight at each fault, went on whole.

    Return how many faults had such a stream in flight (the ones that tested anything).
    """
    proven = 0
    for number, fault in enumerate(faults, 1):
        proven += any(requests[i]["started"] < fault.at < (requests[i].get("ended") or 0) for _, _, i in fault.spared)
        for client, turn_id, index in fault.spared:
            call = requests[index]
            where = f"fault {number} ({fault.kind} {fault.detail}): {client.session_id} {turn_id}"
            if call.get("outcome") != "completed":
                # Counted with its turn (`check_model_turns`); said here for the fault that did it.
                figures.problem("cut", f"{where}: its model stream, in flight at the fault, {call.get('outcome')}", 0)
            elif call["ended"] > fault.at:
                figures.spared += 1
    return proven
