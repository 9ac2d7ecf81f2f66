"""`plan_attempt`, every case: how a turn's attempt goes on, from its log and what bring-up found."""

from __future__ import annotations

from typing import Any

import pytest

from lap_core import HarnessSession, SessionEvent, Status, TextDelta, ToolCall
from lap_core._engine.resume import AttemptPlan, BringUp, plan_attempt
from lap_core._native_state import REPLAYED

KEPT, NEW, LOST = BringUp(), BringUp(created=True), BringUp(created=True, volume_lost=True)
SESSION = HarnessSession(native_session_id="n2")  # what the interrupted attempt reported
WORK: list[SessionEvent] = [SESSION, ToolCall(call_id="c1", name="sh", input={}), TextDelta(text="half")]
RESTARTED = Status(phase="turn_restarted", detail="the sandbox was lost")
REPLAYED_RESTART = Status(phase="turn_restarted", detail=f"the sandbox was lost; {REPLAYED}")
VOLUME_LOST = Status(phase="volume_lost", detail="gone")
CLONE = [Status(phase="sandbox_creating", detail="s"), Status(phase="repo_cloning", detail="r")]
HARNESS_STATUS = Status(phase="thinking", detail="")  # a harness's own status event

CASES: dict[str, tuple[list[SessionEvent] | None, BringUp, bool | None, str | None, str | None, AttemptPlan]] = {
    # name: (logged, bring_up, process_known, stored_native, native_before, plan)
    "first turn, new sandbox": (None, NEW, None, None, None, AttemptPlan()),
    "first attempt on a kept sandbox goes on from the harness session, copied first": (
        None, KEPT, None, "n1", None, AttemptPlan(native_session_id="n1", snapshot=True)
    ),
    "first attempt on a new sandbox, volume kept": (
        None, NEW, None, "n1", None, AttemptPlan(native_session_id="n1", snapshot=True)
    ),
    "first attempt, volume lost: a new harness session told the story": (
        None, LOST, None, "n1", None, AttemptPlan(forget_native=True, tell_history=True)
    ),
    "taken over, process alive: re-attach and skip the replay": (
        [*CLONE, *WORK], KEPT, True, "n2", "n1", AttemptPlan(native_session_id="n1", replay=WORK)
    ),
    "taken over, a harness status is replayed too, the platform's are not": (
        [HARNESS_STATUS, RESTARTED, HARNESS_STATUS, *WORK], KEPT, True, "n2", "n1",
        AttemptPlan(attempt=1, native_session_id="n1", replay=[HARNESS_STATUS, *WORK]),
    ),
    "taken over, sandboxd restarted (process unknown): start over, state restored": (
        WORK, KEPT, False, "n2", "n1",
        AttemptPlan(attempt=1, native_session_id="n1", restart=True, restore_native=True),
    ),
    "taken over, sandbox lost: start over in the new one": (
        WORK, NEW, None, "n2", "n1", AttemptPlan(attempt=1, native_session_id="n1", restart=True, restore_native=True)
    ),
    "taken over, sandbox lost, no harness session before the turn: nothing to restore": (
        WORK, NEW, None, "n2", None, AttemptPlan(attempt=1, restart=True)
    ),
    "taken over, volume lost: start over told the story": (
        WORK, LOST, None, "n2", "n1", AttemptPlan(attempt=1, forget_native=True, tell_history=True, restart=True)
    ),
    "lost again after a start-over: the third attempt": (
        [*WORK, RESTARTED, *WORK], NEW, None, "n2", "n1",
        AttemptPlan(attempt=2, native_session_id="n1", restart=True, restore_native=True),
    ),
    "re-attached after a start-over that replayed: the attempt was given no session": (
        [*WORK, REPLAYED_RESTART, *WORK], KEPT, True, "n2", "n1", AttemptPlan(attempt=1, replay=WORK)
    ),
    "re-attached after a volume loss: the attempt was given no session": (
        [VOLUME_LOST, *WORK], KEPT, True, "n2", "n1", AttemptPlan(replay=WORK)
    ),
    "started over after a start-over that replayed: from the session before the turn": (
        [*WORK, REPLAYED_RESTART, *WORK], NEW, None, "n2", "n1",
        AttemptPlan(attempt=2, native_session_id="n1", restart=True, restore_native=True),
    ),
    "taken over before the harness said anything": (
        [*CLONE], KEPT, True, None, None, AttemptPlan()
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_plan_attempt(case: str) -> None:
    logged, bring_up, known, stored, before, expected = CASES[case]
    assert plan_attempt(logged, bring_up, process_known=known, stored_native=stored, native_before=before) == expected


def test_the_plan_never_replays_on_a_start_over_nor_restores_without_a_session() -> None:
    for case in CASES.values():
        plan: Any = plan_attempt(case[0], case[1], process_known=case[2], stored_native=case[3], native_before=case[4])
        assert not (plan.restart and plan.replay)
        assert not plan.restore_native or plan.native_session_id is not None
        assert not plan.tell_history or plan.native_session_id is None  # never both a session and the story
        assert not (plan.snapshot and plan.restart)
