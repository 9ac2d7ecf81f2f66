"""The engine's jobs as types: what each kind of job in the store's queue carries.

The store's queue is generic (a `Job` has a `kind` and a JSON `payload`); the engine queues three
kinds and reads them back as one of these, so a worker dispatches on a type, not on strings.
"""

from __future__ import annotations

from datetime import datetime
from typing import get_args

import msgspec

from lap_core._errors import InvalidInput
from lap_core._models import Job, new_id


class TurnJob(msgspec.Struct, frozen=True, tag="turn", omit_defaults=True):
    """Run a stored turn (queued with its user message, in one transaction).

    `traceparent` (W3C) is the span that sent the message, when tracing is on: the worker that runs
    the turn, or resumes it, continues that trace. Left out of the payload when None.
    """

    turn_id: str
    traceparent: str | None = None


class RestartJob(msgspec.Struct, frozen=True, tag="restart"):
    """Replace the session's sandbox with a fresh one: same workspace and conversation."""


class SuspendJob(msgspec.Struct, frozen=True, tag="suspend"):
    """Suspend the session's sandbox, unless anything happened since `idle_before`."""

    idle_before: datetime


EngineJob = TurnJob | RestartJob | SuspendJob
KINDS: tuple[str, ...] = tuple(str(kind.__struct_config__.tag) for kind in get_args(EngineJob))
"""The job kinds workers lease."""


def job_for(session_id: str, work: EngineJob) -> Job:
    """Return the queue's `Job` that carries `work` for a session."""
    payload = msgspec.to_builtins(work)
    kind = payload.pop("type")
    return Job(id=new_id("job"), kind=kind, session_id=session_id, payload=payload)


def work_of(job: Job) -> EngineJob:
    """Return what a leased job carries; raise `InvalidInput` for an unknown kind or a payload that does not fit."""
    try:
        work: EngineJob = msgspec.convert({**job.payload, "type": job.kind}, EngineJob)
    except msgspec.ValidationError as error:
        raise InvalidInput(f"job {job.id} of kind {job.kind!r} cannot be run: {error}") from None
    return work
