"""How a turn's attempt goes on: a pure function of what the log holds and what bring-up found.

A turn's first attempt starts the harness. A turn taken over from a worker that is gone (its
events so far in the log) either re-attaches to its process in the sandbox, replaying what the
log has, or, when the process went with its sandbox, starts over (`turn_restarted`) from the
harness's own session as it was before the turn. `plan_attempt` decides which, with nothing but
its arguments; `TurnRunner` carries the plan out (tests/unit/test_resume_plan.py has every case).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lap_core._events import SessionEvent, Status, TurnEnd, UserMessage
from lap_core._native_state import began_new_session

if TYPE_CHECKING:
    from collections.abc import Sequence

PLATFORM_PHASES = frozenset(
    "sandbox_creating sandbox_ready sandbox_resuming sandbox_deleting turn_resumed turn_restarted volume_lost"
    " repo_cloning repo_cloned repo_skipped".split()
)
"""The `status` phases LAP itself logs in a turn; a harness's own status events use other names."""


def from_harness(event: SessionEvent) -> bool:
    """Whether an event of a turn came from its harness (what a re-attached harness yields again).

    `harness_session` is one of them: a re-attached harness reports its session id again, and
    the log must hold it once (tests/unit/test_worker.py).
    """
    if isinstance(event, Status):
        return event.phase not in PLATFORM_PHASES
    return not isinstance(event, (UserMessage, TurnEnd))


def restarts_in(logged: Sequence[SessionEvent]) -> int:
    """How many times the turn started over so far (its attempt number: part of its process id)."""
    return sum(1 for e in logged if isinstance(e, Status) and e.phase == "turn_restarted")


def replay_of(logged: Sequence[SessionEvent]) -> list[SessionEvent]:
    """Return what a re-attached harness replays first: its events since the turn last started over."""
    start = max(
        (i + 1 for i, e in enumerate(logged) if isinstance(e, Status) and e.phase == "turn_restarted"), default=0
    )
    return [event for event in logged[start:] if from_harness(event)]


@dataclass(frozen=True)
class BringUp:
    """What bringing the session's sandbox up found (`SandboxProvider.get` returns it with the client).

    `created`: there was no live sandbox, a new one was made (its processes are new). `volume_lost`:
    the session had a harness session, but its workspace and the harness's home were gone.
    """

    created: bool = False
    volume_lost: bool = False


@dataclass(frozen=True)
class AttemptPlan:
    """What the attempt does before its harness runs, and with what.

    - `attempt`: the attempt's number (0, then one more for each start-over): its process id.
    - `replay`: the events a re-attached harness yields again first (skipped, not logged twice).
    - `native_session_id`: the harness's own session to go on from (None: a new one).
    - `forget_native`: the harness's session went with the volume: store None for it.
    - `tell_history`: prefix the message with the conversation so far (the harness lost it).
    - `restart`: the turn's process is gone: log `turn_restarted`, store `native_session_id`.
    - `restore_native`: put back the copy of the harness's state taken before the turn; if there
      is none, go on with a new harness session told the history instead.
    - `snapshot`: take that copy now (a first attempt that goes on from a harness session).
    """

    attempt: int = 0
    replay: list[SessionEvent] = field(default_factory=list)
    native_session_id: str | None = None
    forget_native: bool = False
    tell_history: bool = False
    restart: bool = False
    restore_native: bool = False
    snapshot: bool = False


def plan_attempt(
    logged: Sequence[SessionEvent] | None,
    bring_up: BringUp,
    *,
    process_known: bool | None,
    stored_native: str | None,
    native_before: str | None,
) -> AttemptPlan:
    """Decide how an attempt of a turn goes on.

    `logged`: the turn's events so far, None for its first attempt. `process_known`: whether the
    sandbox still has the attempt's process (asked only of a sandbox that was not just created,
    for a turn taken over). `stored_native`: the store's harness session id. `native_before`: the
    harness session id in the log before the turn (for a turn taken over).
    """
    if logged is None:
        native = None if bring_up.volume_lost else stored_native
        return AttemptPlan(
            native_session_id=native,
            forget_native=bring_up.volume_lost,
            tell_history=bring_up.volume_lost,
            snapshot=native is not None,
        )
    attempt = restarts_in(logged)
    if bring_up.volume_lost:
        native = None
    elif not bring_up.created and process_known and began_new_session(logged):
        native = None  # re-attached to an attempt that began a new session: what it was given
    else:
        native = native_before  # the store may hold what the interrupted attempt reported
    if bring_up.created or not process_known:
        # The process went with its sandbox: start over, from the harness's session as it was
        # before the turn (the lost attempt stored the message in it: its copy is put back).
        return AttemptPlan(
            attempt=attempt + 1,
            native_session_id=native,
            forget_native=bring_up.volume_lost,
            tell_history=bring_up.volume_lost,
            restart=True,
            restore_native=native is not None,
        )
    return AttemptPlan(attempt=attempt, replay=replay_of(logged), native_session_id=native)
