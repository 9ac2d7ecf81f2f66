"""The conformance suite of the job queue of `SessionStore`: subclass `JobQueueConformance`.

Like `StoreConformance`, override its `store` fixture to yield an open, migrated, empty store::

    class TestMyStoreJobs(JobQueueConformance):
        @pytest.fixture
        async def store(self, tmp_path):
            async with MyStore(f"mine://{tmp_path}") as store:
                await store.migrate()
                yield store

A few tests wait for real leases to expire (leases of 0.2 s), so the suite takes a few seconds.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import pytest

from lap_core import _events as ev
from lap_core._errors import Conflict, InvalidInput, NotFound
from lap_core._models import Agent, Job, Session, Team, TurnRecord, new_id, utcnow
from lap_core.testing._base import StoreSuite

if TYPE_CHECKING:
    from lap_core._store import SessionStore

__all__ = ["JobQueueConformance"]

SHORT_LEASE = 0.2
"""Seconds of the leases the tests let expire."""
LONG_LEASE = 60.0
"""Seconds of the leases the tests never let expire."""


async def _new_session(store: SessionStore) -> Session:
    team = await store.create_team(Team(id=new_id("team"), name=new_id("name")))
    agent = await store.create_agent(Agent(id=new_id("agt"), team_id=team.id, name="coder", harness="h", model="m"))
    return await store.create_session(Session(id=new_id("ses"), team_id=team.id, agent_id=agent.id))


async def _queue(store: SessionStore, session_id: str, kind: str = "turn", **payload: Any) -> Job:
    """Start a turn of the session with a job; return the job as stored."""
    turn = TurnRecord(id=new_id("turn"), session_id=session_id)
    job = Job(id=new_id("job"), kind=kind, session_id=session_id, payload={"turn_id": turn.id, **payload})
    await store.start_turn(turn, ev.UserMessage(text="go"), job=job)
    return await store.get_job(job.id)


async def _queue_in_new_sessions(store: SessionStore, count: int, kind: str = "turn") -> list[Job]:
    return [await _queue(store, (await _new_session(store)).id, kind) for _ in range(count)]


async def _lease(store: SessionStore, worker_id: str, lease_seconds: float = LONG_LEASE, **kwargs: Any) -> Job | None:
    return await store.lease_job(worker_id, lease_seconds=lease_seconds, **kwargs)


async def _leased_id(store: SessionStore, worker_id: str, lease_seconds: float = LONG_LEASE, **kwargs: Any) -> str:
    job = await _lease(store, worker_id, lease_seconds, **kwargs)
    assert job is not None, f"{worker_id} leased nothing"
    return job.id


def _lease_length(job: Job) -> float:
    """Seconds from the job's last change to the end of its lease: both on the store's clock."""
    assert job.lease_expires_at is not None
    return (job.lease_expires_at - job.updated_at).total_seconds()


class JobQueueConformance(StoreSuite):
    """Tests the job queue of `SessionStore`; subclass it and provide the `store` fixture."""

    # queueing
    async def test_start_turn_queues_the_job_with_the_turn_and_message(self, store: SessionStore) -> None:
        session = await _new_session(store)
        turn = TurnRecord(id=new_id("turn"), session_id=session.id)
        payload = {"turn_id": turn.id, "nested": [1, 2.5, None, True, {"k": "ünï ✓"}]}
        stale: dict[str, Any] = {"status": "failed", "attempts": 7, "leased_by": "w0", "error": "stale"}
        job = Job(id=new_id("job"), kind="turn", session_id=session.id, payload=payload, **stale)
        stored, record = await store.start_turn(turn, ev.UserMessage(text="hi"), job=job)
        got = await store.get_job(job.id)
        fresh = {"status": "queued", "attempts": 0, "leased_by": None, "error": ""}
        assert got == msgspec.structs.replace(job, **fresh, created_at=got.created_at, updated_at=got.updated_at)
        assert got.lease_expires_at is None
        assert got.created_at.utcoffset() == timedelta(0)
        assert await store.list_jobs(session_id=session.id) == [got]
        assert await store.get_turn(turn.id) == stored
        assert [r.seq for r in await store.read_events(session.id)] == [record.seq]

    async def test_a_failed_start_turn_queues_no_job(self, store: SessionStore) -> None:
        session, other = await _new_session(store), await _new_session(store)
        lost = TurnRecord(id=new_id("turn"), session_id="ses_missing")
        job = Job(id=new_id("job"), kind="turn", session_id="ses_missing")
        with pytest.raises(NotFound):
            await store.start_turn(lost, ev.UserMessage(text="x"), job=job)
        with pytest.raises(NotFound):
            await store.get_job(job.id)
        first = await _queue(store, session.id)
        taken = TurnRecord(id=new_id("turn"), session_id=session.id)
        with pytest.raises(Conflict):  # the job's id is taken: the turn and its message go too
            await store.start_turn(
                taken, ev.UserMessage(text="x"), job=Job(id=first.id, kind="turn", session_id=session.id)
            )
        with pytest.raises(NotFound):
            await store.get_turn(taken.id)
        assert (await store.get_session(session.id)).last_seq == 1
        assert len(await store.read_events(session.id)) == 1
        with pytest.raises(InvalidInput):  # the job must be of the turn's session
            await store.start_turn(
                taken, ev.UserMessage(text="x"), job=Job(id=new_id("job"), kind="turn", session_id=other.id)
            )
        assert await store.list_jobs() == [first]

    async def test_queue_job_queues_after_the_sessions_turns(self, store: SessionStore) -> None:
        session = await _new_session(store)
        turn = await _queue(store, session.id)
        stale: dict[str, Any] = {"status": "done", "attempts": 3, "leased_by": "w0"}
        restart = await store.queue_job(
            Job(id=new_id("job"), kind="restart", session_id=session.id, payload={"why": "stuck"}, **stale)
        )
        assert (restart.status, restart.attempts, restart.leased_by, restart.kind) == ("queued", 0, None, "restart")
        assert restart.payload == {"why": "stuck"}
        assert await store.get_job(restart.id) == restart
        later = await _queue(store, session.id)
        assert await store.list_jobs(session_id=session.id) == [turn, restart, later]
        assert await _leased_id(store, "w1") == turn.id
        assert await _lease(store, "w2") is None  # the restart waits for the turn before it
        assert await store.finish_job(turn.id, "w1", status="done")
        assert await _leased_id(store, "w2") == restart.id
        unbound = await store.queue_job(Job(id=new_id("job"), kind="sweep"))
        assert unbound.session_id is None
        with pytest.raises(NotFound):
            await store.queue_job(Job(id=new_id("job"), kind="restart", session_id="ses_missing"))
        with pytest.raises(Conflict):
            await store.queue_job(Job(id=restart.id, kind="restart", session_id=session.id))
        assert [j.id for j in await store.list_jobs()] == [turn.id, restart.id, later.id, unbound.id]

    async def test_get_job_not_found(self, store: SessionStore) -> None:
        with pytest.raises(NotFound):
            await store.get_job("job_missing")

    async def test_list_jobs_filtered_oldest_first(self, store: SessionStore) -> None:
        session, other = await _new_session(store), await _new_session(store)
        first = await _queue(store, session.id)
        second = await _queue(store, other.id)
        third = await _queue(store, session.id)
        assert await store.list_jobs() == [first, second, third]
        assert await store.list_jobs(limit=2) == [first, second]
        assert await store.list_jobs(limit=0) == []
        assert await store.list_jobs(session_id=session.id) == [first, third]
        assert await store.list_jobs(session_id="ses_missing") == []
        assert await store.list_jobs(status="queued", session_id=other.id) == [second]
        assert await store.list_jobs(status="leased") == []
        with pytest.raises(InvalidInput):
            await store.list_jobs(status="sleeping")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput):
            await store.list_jobs(limit=-1)

    # leasing
    async def test_lease_takes_the_oldest_job_first(self, store: SessionStore) -> None:
        jobs = await _queue_in_new_sessions(store, 3)
        leased = [await _lease(store, "w1", 30) for _ in jobs]
        assert [job.id if job else None for job in leased] == [job.id for job in jobs]
        assert await _lease(store, "w1") is None
        for job, queued in zip(leased, jobs, strict=True):
            assert job is not None
            assert (job.status, job.leased_by, job.attempts) == ("leased", "w1", 1)
            unleased = {"status": "queued", "leased_by": None, "attempts": 0, "lease_expires_at": None}
            assert msgspec.structs.replace(job, **unleased, updated_at=queued.updated_at) == queued
            assert 29 < _lease_length(job) < 31
            assert await store.get_job(job.id) == job
        assert await store.list_jobs(status="queued") == []

    async def test_lease_by_kind(self, store: SessionStore) -> None:
        [turn] = await _queue_in_new_sessions(store, 1)
        [index] = await _queue_in_new_sessions(store, 1, "index")
        [turn2] = await _queue_in_new_sessions(store, 1)
        assert await _lease(store, "w1", kinds=[]) is None
        assert await _lease(store, "w1", kinds=["nothing"]) is None
        assert await _leased_id(store, "w1", kinds=["index"]) == index.id
        assert await _lease(store, "w1", kinds=("index",)) is None
        assert await _leased_id(store, "w1", kinds=["other", "turn"]) == turn.id
        assert await _leased_id(store, "w1") == turn2.id

    async def test_lease_rejects_a_bad_length(self, store: SessionStore) -> None:
        await _queue_in_new_sessions(store, 1)
        for seconds in (0, -1, float("nan"), float("inf"), 86401):
            with pytest.raises(InvalidInput):
                await store.lease_job("w1", lease_seconds=seconds)
        assert await store.list_jobs(status="leased") == []

    async def test_jobs_of_one_session_are_leased_in_order_one_at_a_time(self, store: SessionStore) -> None:
        session, other = await _new_session(store), await _new_session(store)
        first, second = await _queue(store, session.id), await _queue(store, session.id)
        elsewhere = await _queue(store, other.id)
        assert await _leased_id(store, "w1") == first.id
        assert await _leased_id(store, "w2") == elsewhere.id  # not `second`: `first` holds its session
        assert await _lease(store, "w3") is None
        assert await store.finish_job(elsewhere.id, "w2", status="done")
        assert await _lease(store, "w3") is None
        assert await store.finish_job(first.id, "w1", status="failed", error="boom")  # an end, as `done` is
        assert await _leased_id(store, "w3") == second.id
        third = await _queue(store, session.id)
        assert await _lease(store, "w4") is None  # `second` is leased, `third` waits
        assert await store.release_job(second.id, "w3")
        assert await _leased_id(store, "w4") == second.id  # released, still ahead of `third`
        assert await store.finish_job(second.id, "w4", status="done")
        assert await _leased_id(store, "w4") == third.id

    async def test_an_expired_older_job_is_taken_over_before_the_next(self, store: SessionStore) -> None:
        session = await _new_session(store)
        first, _second = await _queue(store, session.id), await _queue(store, session.id)
        assert await _leased_id(store, "w1", SHORT_LEASE) == first.id
        await anyio.sleep(SHORT_LEASE + 0.1)
        assert await _leased_id(store, "w2") == first.id

    # leases
    async def test_an_expired_lease_is_taken_over(self, store: SessionStore) -> None:
        [job] = await _queue_in_new_sessions(store, 1)
        assert await _leased_id(store, "w1", SHORT_LEASE) == job.id
        await anyio.sleep(SHORT_LEASE + 0.1)
        taken = await _lease(store, "w2")
        assert taken is not None
        assert (taken.id, taken.status, taken.leased_by, taken.attempts) == (job.id, "leased", "w2", 2)
        assert not await store.heartbeat_job(job.id, "w1", lease_seconds=LONG_LEASE)
        assert not await store.finish_job(job.id, "w1", status="done")
        assert not await store.release_job(job.id, "w1")
        assert await store.get_job(job.id) == taken
        assert await store.finish_job(job.id, "w2", status="done")
        assert (await store.get_job(job.id)).status == "done"

    async def test_heartbeat_extends_the_lease(self, store: SessionStore) -> None:
        [job] = await _queue_in_new_sessions(store, 1)
        assert await _leased_id(store, "w1", SHORT_LEASE) == job.id
        before = await store.get_job(job.id)
        assert await store.heartbeat_job(job.id, "w1", lease_seconds=30)
        extended = await store.get_job(job.id)
        assert 29 < _lease_length(extended) < 31
        assert before.lease_expires_at is not None
        assert extended.lease_expires_at is not None
        assert extended.lease_expires_at > before.lease_expires_at
        assert msgspec.structs.replace(extended, lease_expires_at=None, updated_at=before.updated_at) == (
            msgspec.structs.replace(before, lease_expires_at=None)
        )
        await anyio.sleep(SHORT_LEASE + 0.1)
        assert await _lease(store, "w2") is None  # the heartbeat kept it
        assert not await store.heartbeat_job(job.id, "w2", lease_seconds=30)
        assert not await store.heartbeat_job("job_missing", "w1", lease_seconds=30)
        assert await store.get_job(job.id) == extended
        with pytest.raises(InvalidInput):
            await store.heartbeat_job(job.id, "w1", lease_seconds=0)

    async def test_an_expired_lease_is_the_workers_until_taken_over(self, store: SessionStore) -> None:
        [first], [second] = await _queue_in_new_sessions(store, 1, "a"), await _queue_in_new_sessions(store, 1, "b")
        assert await _leased_id(store, "w1", SHORT_LEASE, kinds=["a"]) == first.id
        assert await _leased_id(store, "w1", SHORT_LEASE, kinds=["b"]) == second.id
        await anyio.sleep(SHORT_LEASE + 0.1)
        assert await store.heartbeat_job(first.id, "w1", lease_seconds=LONG_LEASE)
        assert await store.finish_job(second.id, "w1", status="done")
        assert await _lease(store, "w2") is None

    async def test_heartbeat_of_a_queued_job_fails(self, store: SessionStore) -> None:
        [job] = await _queue_in_new_sessions(store, 1)
        assert not await store.heartbeat_job(job.id, "w1", lease_seconds=30)
        assert not await store.finish_job(job.id, "w1", status="done")
        assert not await store.release_job(job.id, "w1")
        assert await store.get_job(job.id) == job

    async def test_release_queues_the_job_again(self, store: SessionStore) -> None:
        [job] = await _queue_in_new_sessions(store, 1)
        assert await _leased_id(store, "w1") == job.id
        assert await store.release_job(job.id, "w1")
        released = await store.get_job(job.id)
        assert (released.status, released.leased_by, released.lease_expires_at, released.attempts) == (
            "queued",
            None,
            None,
            1,
        )
        assert not await store.release_job(job.id, "w1")
        again = await _lease(store, "w2")
        assert again is not None
        assert (again.id, again.leased_by, again.attempts) == (job.id, "w2", 2)

    async def test_finish_done_and_failed(self, store: SessionStore) -> None:
        done, failed = await _queue_in_new_sessions(store, 2)
        assert await _leased_id(store, "w1") == done.id
        assert await _leased_id(store, "w1") == failed.id
        with pytest.raises(InvalidInput):
            await store.finish_job(done.id, "w1", status="queued")  # type: ignore[arg-type]
        assert await store.finish_job(done.id, "w1", status="done")
        assert await store.finish_job(failed.id, "w1", status="failed", error="the sandbox is gone")
        ended = await store.get_job(done.id), await store.get_job(failed.id)
        got = [(job.status, job.error, job.leased_by, job.lease_expires_at, job.attempts) for job in ended]
        assert got == [("done", "", "w1", None, 1), ("failed", "the sandbox is gone", "w1", None, 1)]
        assert not await store.finish_job(done.id, "w1", status="failed")
        assert not await store.heartbeat_job(done.id, "w1", lease_seconds=30)
        assert not await store.release_job(failed.id, "w1")
        assert await _lease(store, "w2") is None  # ended jobs are never leased again
        assert await store.list_jobs(status="done") == [ended[0]]
        assert await store.list_jobs(status="failed") == [ended[1]]

    async def test_concurrent_leases_give_each_job_to_one_worker(self, store: SessionStore) -> None:
        jobs = await _queue_in_new_sessions(store, 20)
        leased: list[tuple[str, Job]] = []

        async def work(worker_id: str) -> None:
            while (job := await _lease(store, worker_id)) is not None:
                leased.append((worker_id, job))

        async with anyio.create_task_group() as tasks:
            for index in range(10):
                tasks.start_soon(work, f"w{index}")
        assert len(leased) == len(jobs)  # each job leased once
        assert sorted(job.id for _, job in leased) == sorted(job.id for job in jobs)
        assert all(job.leased_by == worker_id and job.attempts == 1 for worker_id, job in leased)
        stored = {job.id: (job.status, job.leased_by) for job in await store.list_jobs()}
        assert stored == {job.id: ("leased", worker_id) for worker_id, job in leased}

    # sessions
    async def test_prune_deletes_old_finished_jobs_only(self, store: SessionStore) -> None:
        done, failed, open_ = await _queue_in_new_sessions(store, 3)
        for job, status in ((done, "done"), (failed, "failed")):
            assert await _leased_id(store, f"w-{status}") == job.id
            assert await store.finish_job(job.id, f"w-{status}", status=status)  # type: ignore[arg-type]
        assert await store.prune_jobs(utcnow() - timedelta(hours=1)) == 0  # finished just now: kept
        assert await store.prune_jobs(utcnow() + timedelta(seconds=1)) == 2
        assert [j.id for j in await store.list_jobs()] == [open_.id]  # a queued job is never pruned
        assert await store.prune_jobs(utcnow() + timedelta(seconds=1)) == 0

    async def test_delete_session_deletes_its_jobs(self, store: SessionStore) -> None:
        session, kept = await _new_session(store), await _new_session(store)
        leased, queued = await _queue(store, session.id), await _queue(store, session.id)
        other = await _queue(store, kept.id)
        assert await _leased_id(store, "w1") == leased.id
        await store.delete_session(session.id)
        for job in (leased, queued):
            with pytest.raises(NotFound):
                await store.get_job(job.id)
        assert await store.list_jobs(session_id=session.id) == []
        assert not await store.heartbeat_job(leased.id, "w1", lease_seconds=30)
        assert not await store.finish_job(leased.id, "w1", status="done")
        assert await store.list_jobs() == [other]
