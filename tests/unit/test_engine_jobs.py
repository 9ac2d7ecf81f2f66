"""The engine's jobs are typed: each kind round-trips through the store's generic `Job`, and a job
whose payload does not fit its kind is refused with a message (a worker fails it, never crashes)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lap_core import InvalidInput, Job
from lap_core._engine.jobs import KINDS, RestartJob, SuspendJob, TurnJob, job_for, work_of


@pytest.mark.parametrize(
    "work", [TurnJob(turn_id="turn_1"), RestartJob(), SuspendJob(idle_before=datetime(2026, 12, 8, 1, 2, tzinfo=UTC))]
)
def test_each_kind_round_trips(work: TurnJob | RestartJob | SuspendJob) -> None:
    job = job_for("ses_1", work)
    assert job.kind in KINDS
    assert job.session_id == "ses_1"
    assert "type" not in job.payload  # the kind is the job's own column
    assert work_of(job) == work


def test_the_payloads_stored_before_the_types_still_read() -> None:
    # What the engine queued before (and a store may still hold): plain dicts, an ISO time.
    assert work_of(Job(id="j", kind="turn", session_id="s", payload={"turn_id": "t"})) == TurnJob(turn_id="t")
    suspend = Job(id="j", kind="suspend", session_id="s", payload={"idle_before": "2026-12-08T01:02:00+00:00"})
    assert work_of(suspend) == SuspendJob(idle_before=datetime(2026, 12, 8, 1, 2, tzinfo=UTC))
    assert KINDS == ("turn", "restart", "suspend")


@pytest.mark.parametrize(
    ("kind", "payload"),
    [("turn", {}), ("turn", {"turn_id": 3}), ("suspend", {"idle_before": "yesterday"}), ("reboot", {})],
)
def test_a_job_that_does_not_fit_its_kind_is_refused(kind: str, payload: dict[str, object]) -> None:
    with pytest.raises(InvalidInput, match=f"of kind '{kind}' cannot be run"):
        work_of(Job(id="job_x", kind=kind, session_id="s", payload=payload))
