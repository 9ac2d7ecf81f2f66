"""The durable job queue of `SqlStore`: queueing, leasing, heartbeats and the ends of jobs.

Leasing is one `UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING *`. On PostgreSQL the
subquery locks its row `FOR UPDATE SKIP LOCKED`: concurrent leasers skip each other's candidates
instead of waiting, and a row whose lease changed under them is re-checked (and dropped) before it
is taken. On SQLite the statement runs in the store's write transaction, and SQLite has one writer.

The clock. Lease expiry compares times written by different workers, so every job timestamp of a
database comes from one clock: on PostgreSQL the server's (`statement_timestamp()`), as workers on
several hosts share it and skew between their clocks would let a fast one take live leases over;
on SQLite the store's UTC clock, which is the database's (a SQLite file is used from one host), and
which writes timestamps in the one text format piccolo gives all of them, so they compare as text.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

import msgspec

from lap_core import InvalidInput, JobStatus, utcnow
from lap_sql import _notify, _rows
from lap_sql._db import not_found

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lap_core import Job
    from lap_sql._database import Database
    from lap_sql._schema import Tables

MAX_LEASE_SECONDS = 86400.0
"""The longest lease: a lease is kept alive by heartbeats, not by its length."""


class Sql(NamedTuple):
    """A fragment of SQL with piccolo's `{}` placeholders, and their values."""

    text: str
    args: tuple[Any, ...] = ()


_NAME = re.compile(r"\{(\w+)\}")


def compile_sql(template: str, **values: Any) -> tuple[str, list[Any]]:
    """Replace each `{name}` of `template` with its value: a `Sql` inline, anything else as a parameter."""
    args: list[Any] = []

    def place(match: re.Match[str]) -> str:
        value = values[match[1]]
        if isinstance(value, Sql):
            args.extend(value.args)
            return value.text
        args.append(value)
        return "{}"

    return _NAME.sub(place, template), args


class Clock(NamedTuple):
    """The one clock of a database's job timestamps (see the module docstring)."""

    postgres: bool
    at: datetime
    """SQLite: the store's now, one instant for the whole statement."""

    @property
    def now(self) -> Sql:
        """The current time."""
        return Sql("statement_timestamp()") if self.postgres else Sql("{}", (self.at,))

    def after(self, seconds: float) -> Sql:
        """The current time plus `seconds`."""
        if self.postgres:
            return Sql("(statement_timestamp() + make_interval(secs => {}))", (seconds,))
        return Sql("{}", (self.at + timedelta(seconds=seconds),))


_INSERT = """INSERT INTO jobs (id, kind, session_id, payload, status, attempts, error, created_at, updated_at)
VALUES ({id}, {kind}, {session_id}, {payload}, 'queued', 0, '', {now}, {now})"""

# The oldest eligible job: open (queued, or leased with an expired lease), of one of the kinds,
# with no older open job of its session and no other job of its session holding a live lease.
_LEASE = """UPDATE jobs
SET status = 'leased', leased_by = {worker}, lease_expires_at = {expires}, attempts = attempts + 1, updated_at = {now}
WHERE id = (
    SELECT candidate.id FROM jobs AS candidate
    WHERE candidate.status IN ('queued', 'leased')
        AND (candidate.status = 'queued' OR candidate.lease_expires_at <= {now}){kinds}
        AND NOT EXISTS (
            SELECT 1 FROM jobs AS other
            WHERE other.session_id = candidate.session_id
                AND other.id <> candidate.id
                AND other.status IN ('queued', 'leased')
                AND (other.position < candidate.position OR other.lease_expires_at > {now})
        )
    ORDER BY candidate.position
    LIMIT 1{lock}
)
RETURNING *"""

_HELD = "WHERE id = {job} AND status = 'leased' AND leased_by = {worker} RETURNING id"
_HEARTBEAT = "UPDATE jobs SET lease_expires_at = {expires}, updated_at = {now} " + _HELD
_FINISH = "UPDATE jobs SET status = {status}, error = {error}, lease_expires_at = NULL, updated_at = {now} " + _HELD
_RELEASE = "UPDATE jobs SET status = 'queued', leased_by = NULL, lease_expires_at = NULL, updated_at = {now} " + _HELD


def check_lease(lease_seconds: float) -> float:
    """Return `lease_seconds` as a float; raise `InvalidInput` unless 0 < it <= `MAX_LEASE_SECONDS`."""
    if not (math.isfinite(lease_seconds) and 0 < lease_seconds <= MAX_LEASE_SECONDS):
        raise InvalidInput(f"lease_seconds must be above 0 and at most {MAX_LEASE_SECONDS:g} (got {lease_seconds})")
    return float(lease_seconds)


class JobQueue:
    """The job-queue methods of `SqlStore` (a mixin over the store's `Database` and `Tables`)."""

    _db: Database
    _t: Tables

    def _clock(self) -> Clock:
        return Clock(postgres=self._db.dialect == "postgres", at=utcnow())

    async def _run(self, template: str, **values: Any) -> list[dict[str, Any]]:
        """Run a statement of `template` (see `compile_sql`) in the current transaction, if any."""
        sql, args = compile_sql(template, **values)
        rows: list[dict[str, Any]] = await self._t.jobs.raw(sql, *args)
        return rows

    async def _queue_job(self, job: Job) -> None:
        """Insert `job` as a new queued job, in the caller's transaction."""
        payload = msgspec.json.encode(job.payload).decode()
        clock = self._clock()
        await self._run(_INSERT, id=job.id, kind=job.kind, session_id=job.session_id, payload=payload, now=clock.now)

    async def lease_job(
        self, worker_id: str, *, lease_seconds: float, kinds: Sequence[str] | None = None
    ) -> Job | None:
        """Lease the oldest eligible job to `worker_id` (see `SessionStore.lease_job`), or return None."""
        seconds = check_lease(lease_seconds)
        if isinstance(kinds, str):
            raise InvalidInput(f"kinds is a sequence of job kinds, not one string (got {kinds!r})")
        if kinds is not None and not kinds:
            return None
        clock = self._clock()
        by_kind = Sql("", ())
        if kinds is not None:
            by_kind = Sql(f" AND candidate.kind IN ({', '.join('{}' for _ in kinds)})", tuple(kinds))
        lock = Sql(" FOR UPDATE OF candidate SKIP LOCKED" if clock.postgres else "")
        async with self._db.write():
            rows = await self._run(
                _LEASE, worker=worker_id, expires=clock.after(seconds), now=clock.now, kinds=by_kind, lock=lock
            )
        return _rows.job(rows[0]) if rows else None

    async def heartbeat_job(self, job_id: str, worker_id: str, *, lease_seconds: float) -> bool:
        """Extend `worker_id`'s lease of the job; False if it does not hold it any more."""
        seconds = check_lease(lease_seconds)
        clock = self._clock()
        async with self._db.write():
            rows = await self._run(
                _HEARTBEAT, job=job_id, worker=worker_id, expires=clock.after(seconds), now=clock.now
            )
        return bool(rows)

    async def finish_job(
        self, job_id: str, worker_id: str, *, status: Literal["done", "failed"], error: str = ""
    ) -> bool:
        """End `worker_id`'s lease of the job with `status`; False if it does not hold it any more."""
        if status not in ("done", "failed"):
            raise InvalidInput(f"a job finishes `done` or `failed`, not {status!r}")
        async with self._db.write():
            rows = await self._run(
                _FINISH, job=job_id, worker=worker_id, status=status, error=error, now=self._clock().now
            )
            await self._jobs_changed(rows)
        return bool(rows)

    async def _jobs_changed(self, rows: list[Any]) -> None:
        # The session's next job is eligible now: wake the workers of other processes (at commit).
        if rows and self._db.dialect == "postgres":
            await _notify.notify(self._t.jobs, "jobs", "")

    async def release_job(self, job_id: str, worker_id: str) -> bool:
        """Queue the job again, unleased; False if `worker_id` does not hold it any more."""
        async with self._db.write():
            rows = await self._run(_RELEASE, job=job_id, worker=worker_id, now=self._clock().now)
            await self._jobs_changed(rows)
        return bool(rows)

    async def get_job(self, job_id: str) -> Job:
        """Return a job; raise `NotFound`."""
        t = self._t.jobs
        async with self._db.read():
            row = await t.select().where(t.id == job_id).first()
        if row is None:
            raise not_found("job", job_id)
        return _rows.job(row)

    async def prune_jobs(self, finished_before: datetime) -> int:
        """Delete the finished jobs last changed before `finished_before`; return how many."""
        t = self._t.jobs
        async with self._db.write():
            rows = await (
                t.delete()
                .where(t.status.is_in(["done", "failed"]), t.updated_at < _rows.utc(finished_before))
                .returning(t.id)
            )
        return len(rows)

    async def list_jobs(
        self, *, session_id: str | None = None, status: JobStatus | None = None, limit: int = 100
    ) -> list[Job]:
        """Return jobs in queue order (oldest first), optionally of one session and in one status."""
        if status is not None and status not in get_args(JobStatus):
            raise InvalidInput(f"unknown job status {status!r} (expected one of {', '.join(get_args(JobStatus))})")
        if limit < 0:
            raise InvalidInput(f"limit must not be negative (got {limit})")
        if limit == 0:
            return []
        t = self._t.jobs
        where: list[Any] = []
        if session_id is not None:
            where.append(t.session_id == session_id)
        if status is not None:
            where.append(t.status == status)
        query = t.select().order_by(t.position).limit(limit)
        async with self._db.read():
            rows = await (query.where(*where) if where else query)
        return [_rows.job(row) for row in rows]
