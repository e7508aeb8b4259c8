"""The outbox records what a job learned (its `Done`) in the transaction that marks it done."""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from service import outbox
from service.db import models as m
from service.db.engine import create_database
from service.outbox import Done, OutboxWorker, claim, enqueue, enqueue_many, release


async def _jobs(db: Any, count: int) -> None:
    async with db.session(write=True) as s:
        async with s.begin():
            for i in range(count):
                await enqueue(s, "note", {"i": i}, f"note:{i}")


async def test_each_job_is_done_together_with_its_record_and_a_refused_record_retries_only_its_job(database_url: str) -> None:
    db = create_database(database_url)
    forum_id = uuid.uuid4()
    try:
        async with db.session(write=True) as s:
            async with s.begin():
                s.add(m.Forum(id=forum_id, name="Forum", kind="officials"))
        await _jobs(db, 6)
        calls: list[int] = []

        async def note(payload: dict[str, Any]) -> Done:
            i = payload["i"]
            calls.append(i)

            async def record(session: AsyncSession) -> None:
                if i == 3 and calls.count(3) == 1:
                    raise IntegrityError("INSERT", {}, Exception("refused the first time"))
                await session.execute(update(m.Forum).where(m.Forum.id == forum_id).values(name=m.Forum.name + f" {i}"))

            return Done(record)

        worker = OutboxWorker(db, {"note": note}, concurrency=3, batch=4)
        assert await worker.run_once() == 6
        async with db.session(write=False) as s:
            rows = {r.payload["i"]: (r.status, r.attempts) for r in await s.scalars(select(m.OutboxJob))}
            name = await s.scalar(select(m.Forum.name).where(m.Forum.id == forum_id))
        # Job 3's record was refused: the job waits for another try, the others are done with theirs.
        assert {i: st for i, (st, _) in rows.items()} == {0: "done", 1: "done", 2: "done", 3: "pending", 4: "done", 5: "done"}
        assert sorted(int(w) for w in name.split()[1:]) == [0, 1, 2, 4, 5]
        # Its next try records it.
        async with db.session(write=True) as s:
            async with s.begin():
                await s.execute(text("UPDATE outbox_jobs SET next_attempt_at = created_at WHERE status = 'pending'"))
        assert await worker.run_once() == 1
        async with db.session(write=False) as s:
            statuses = set(await s.scalars(select(m.OutboxJob.status)))
            name = await s.scalar(select(m.Forum.name).where(m.Forum.id == forum_id))
        assert statuses == {"done"} and sorted(int(w) for w in name.split()[1:]) == [0, 1, 2, 3, 4, 5]
    finally:
        await db.dispose()


async def test_a_job_whose_lease_another_worker_took_is_neither_marked_nor_recorded(database_url: str) -> None:
    db = create_database(database_url)
    try:
        await _jobs(db, 1)
        recorded: list[int] = []

        async def note(payload: dict[str, Any]) -> Done:
            # Meanwhile the lease ran out and another worker claimed the job (a later attempt).
            async with db.session(write=True) as s:
                async with s.begin():
                    await s.execute(text("UPDATE outbox_jobs SET attempts = attempts + 1"))

            async def record(session: AsyncSession) -> None:
                recorded.append(payload["i"])

            return Done(record)

        assert await OutboxWorker(db, {"note": note}).run_once() == 1
        async with db.session(write=False) as s:
            job = await s.scalar(select(m.OutboxJob))
        assert job.status == "running" and recorded == []
    finally:
        await db.dispose()


async def test_a_budget_stops_claiming_and_leaves_the_rest_pending_for_the_next_run(database_url: str) -> None:
    """The on-demand sync's bound: past the budget no job is claimed, the claimed ones still run,
    and nothing is lost or run twice."""
    db = create_database(database_url)
    try:
        await _jobs(db, 12)
        calls: list[int] = []

        async def note(payload: dict[str, Any]) -> None:
            calls.append(payload["i"])
            await asyncio.sleep(0.05)

        worker = OutboxWorker(db, {"note": note}, concurrency=2, batch=4)
        first = await worker.run_once(budget_s=0.01)
        # The first claim is made at once (4 jobs); by the time they end the budget is spent.
        assert first == 4 and len(calls) == 4
        async with db.session(write=False) as s:
            statuses = [st for st in await s.scalars(select(m.OutboxJob.status))]
        assert statuses.count("done") == 4 and statuses.count("pending") == 8
        assert await worker.run_once() == 8
        assert sorted(calls) == list(range(12))
    finally:
        await db.dispose()


async def test_many_jobs_in_one_statement_keep_one_pending_job_per_key(database_url: str) -> None:
    """`enqueue_many` (a calendar given to a forum with its meetings): a key already waiting, or given
    twice in the same call, still has one pending job."""
    db = create_database(database_url)
    try:
        await _jobs(db, 2)  # note:0 and note:1 wait already
        async with db.session(write=True) as s:
            async with s.begin():
                await enqueue_many(s, [("note", {"i": i % 4}, f"note:{i % 4}") for i in range(8)])
        async with db.session(write=False) as s:
            keys = list(await s.scalars(select(m.OutboxJob.key).where(m.OutboxJob.status == "pending")))
        assert sorted(keys) == ["note:0", "note:1", "note:2", "note:3"]
    finally:
        await db.dispose()


async def _rows(db: Any) -> dict[str, list[tuple[str, int]]]:
    """Each key's jobs as (status, attempts), oldest first."""
    async with db.session(write=False) as s:
        rows = (await s.execute(select(m.OutboxJob.key, m.OutboxJob.status, m.OutboxJob.attempts,
                                       m.OutboxJob.next_attempt_at).order_by(m.OutboxJob.created_at))).all()
    out: dict[str, list[tuple[str, int]]] = {}
    for key, status, attempts, due in rows:
        if status == "pending":
            # Given back means due now, not held for a lease.
            assert due.replace(tzinfo=None) <= m.utcnow().replace(tzinfo=None), (key, due)
        out.setdefault(key, []).append((status, attempts))
    return out


async def _stop_while_a_job_runs(worker: OutboxWorker, started: asyncio.Event, gate: asyncio.Event) -> None:
    """Start `worker`, stop it once a job has `started`, and let that job end (`gate`) while the
    stop waits for it."""
    worker.start()
    await started.wait()
    stopping = asyncio.create_task(worker.stop(grace_s=30))
    await asyncio.sleep(0.2)
    assert not stopping.done(), "stop() must wait for the job in flight"
    gate.set()
    await stopping


async def test_a_stopping_worker_lets_its_job_in_flight_end_and_gives_back_those_it_did_not_start(database_url: str) -> None:
    """A restart must neither send a mail twice (sent, then cancelled before it was recorded) nor hold
    claimed jobs for their five-minute lease."""
    db = create_database(database_url)
    try:
        await _jobs(db, 3)
        started, gate = asyncio.Event(), asyncio.Event()
        calls: list[int] = []

        async def note(payload: dict[str, Any]) -> None:
            calls.append(payload["i"])
            started.set()
            await gate.wait()

        await _stop_while_a_job_runs(OutboxWorker(db, {"note": note}, concurrency=1, batch=3), started, gate)
        [first] = calls
        rows = await _rows(db)
        assert rows.pop(f"note:{first}") == [("done", 1)]
        # The two claimed with it and never started: pending, due now, their claim not counted.
        assert rows == {key: [("pending", 0)] for key in rows} and len(rows) == 2
        # Another worker runs them at once.
        assert await OutboxWorker(db, {"note": note}).run_once() == 2
        assert sorted(calls) == [0, 1, 2]
    finally:
        await db.dispose()


async def test_a_job_given_back_on_stop_whose_key_was_queued_again_meanwhile_is_superseded(database_url: str) -> None:
    db = create_database(database_url)
    try:
        await _jobs(db, 2)
        started, gate = asyncio.Event(), asyncio.Event()
        calls: list[int] = []

        async def note(payload: dict[str, Any]) -> None:
            calls.append(payload["i"])
            # While this runs, the other job's subject changes again: a new job for its key waits.
            other = 1 - payload["i"]
            async with db.session(write=True) as s:
                async with s.begin():
                    await enqueue(s, "note", {"i": other, "again": True}, f"note:{other}")
            started.set()
            await gate.wait()

        await _stop_while_a_job_runs(OutboxWorker(db, {"note": note}, concurrency=1, batch=2), started, gate)
        [first] = calls
        rows = await _rows(db)
        assert rows[f"note:{first}"] == [("done", 1)]
        # At most one job per key waits: the newer one, which will do the work.
        assert rows[f"note:{1 - first}"] == [("superseded", 1), ("pending", 0)]
    finally:
        await db.dispose()


async def test_a_job_that_outlasts_the_stops_grace_is_cancelled_and_waits_out_its_lease(database_url: str) -> None:
    db = create_database(database_url)
    try:
        await _jobs(db, 1)
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def note(payload: dict[str, Any]) -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        worker = OutboxWorker(db, {"note": note})
        worker.start()
        await started.wait()
        await worker.stop(grace_s=0.2)
        assert cancelled.is_set()
        # Its outcome is unknown (the other system may have done it): it runs again after the lease.
        assert await _rows(db) == {"note:0": [("running", 1)]}
    finally:
        await db.dispose()


async def test_a_job_given_back_while_another_transaction_queues_its_key_is_superseded_not_lost(database_url: str) -> None:
    """On PostgreSQL the new job's transaction may commit after the release read the table: the
    release tries again instead of failing with every claimed job left on its lease."""
    db = create_database(database_url)
    other = create_database(database_url)
    try:
        await _jobs(db, 1)
        [job] = await claim(db, 1)
        async with other.session(write=True) as s:
            async with s.begin():
                await enqueue(s, "note", {"i": 0, "again": True}, "note:0")
                releasing = asyncio.create_task(release(db, [job]))
                await asyncio.sleep(0.3)  # the release reads and waits on the new row's key
        await releasing
        assert (await _rows(db))["note:0"] == [("superseded", 1), ("pending", 0)]
    finally:
        await other.dispose()
        await db.dispose()


async def test_an_outcome_kept_while_the_database_was_away_is_recorded_on_stop(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mail accepted whose record failed (the database blinked) must not be sent again because
    the service stopped before its next cycle."""
    db = create_database(database_url)
    try:
        await _jobs(db, 1)
        real = outbox.finish_done
        blinks = [OperationalError("UPDATE outbox_jobs", {}, ConnectionResetError("connection reset"))]

        async def finish_done(*args: Any, **kw: Any) -> None:
            if blinks:
                raise blinks.pop()
            await real(*args, **kw)

        monkeypatch.setattr(outbox, "finish_done", finish_done)
        sent: list[int] = []

        async def note(payload: dict[str, Any]) -> None:
            sent.append(payload["i"])

        worker = OutboxWorker(db, {"note": note}, poll_s=3600)
        worker.start()
        while not (sent and worker.idle.is_set()):
            await asyncio.sleep(0.01)
        assert not blinks and await _rows(db) == {"note:0": [("running", 1)]}
        await worker.stop(grace_s=30)
        assert await _rows(db) == {"note:0": [("done", 1)]} and sent == [0]
    finally:
        await db.dispose()


async def test_jobs_of_a_claim_whose_commit_was_answered_with_an_error_are_given_back_at_once(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection goes while the claim commits: the rows are running, the worker got an error
    instead of its jobs. They must not wait out their five-minute lease."""
    db = create_database(database_url)
    try:
        await _jobs(db, 3)
        real = outbox.claim
        cuts = [OperationalError("COMMIT", {}, ConnectionResetError("connection reset"))]

        async def claim(*args: Any, **kw: Any) -> list[Any]:
            taken = await real(*args, **kw)
            if cuts:
                raise cuts.pop()
            return taken

        monkeypatch.setattr(outbox, "claim", claim)
        sent: list[int] = []

        async def note(payload: dict[str, Any]) -> None:
            sent.append(payload["i"])

        worker = OutboxWorker(db, {"note": note})
        with pytest.raises(OperationalError):
            await worker.run_once()
        assert sent == [] and await _rows(db) == {f"note:{i}": [("running", 1)] for i in range(3)}
        # The next cycle gives the claim back and runs its jobs, each once.
        assert await worker.run_once() == 3
        assert sorted(sent) == [0, 1, 2]
        assert await _rows(db) == {f"note:{i}": [("done", 1)] for i in range(3)}
    finally:
        await db.dispose()


class _Preparing:
    """A handler whose jobs read what they need once per claim, as the calendar push does."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.claims: list[list[int]] = []
        self.ran: dict[int, Any] = {}

    async def prepare(self, payloads: list[dict[str, Any]]) -> list[Any]:
        self.claims.append(sorted(p["i"] for p in payloads))
        if self.fail:
            raise OperationalError("SELECT", {}, Exception("the read failed"))
        return [f"read for {p['i']}" if p["i"] % 3 else None for p in payloads]

    async def __call__(self, payload: dict[str, Any], prepared: Any = None) -> None:
        self.ran[payload["i"]] = prepared


async def test_a_handler_that_prepares_reads_once_per_claim_and_each_job_gets_its_own_part(database_url: str) -> None:
    db = create_database(database_url)
    try:
        await _jobs(db, 10)
        handler = _Preparing()
        worker = OutboxWorker(db, {"note": handler, "other": handler}, concurrency=2, batch=4)
        assert await worker.run_once() == 10
        # One call per claim (4, 4, 2 jobs), with that claim's payloads; every job once in all.
        assert [len(c) for c in handler.claims] == [4, 4, 2]
        assert sorted(i for c in handler.claims for i in c) == list(range(10))
        # Each job was called with what prepare gave for it; without it where prepare gave None.
        assert handler.ran == {i: (f"read for {i}" if i % 3 else None) for i in range(10)}
    finally:
        await db.dispose()


async def test_jobs_whose_prepare_failed_still_run_and_read_for_themselves(database_url: str) -> None:
    db = create_database(database_url)
    try:
        await _jobs(db, 5)
        handler = _Preparing(fail=True)
        worker = OutboxWorker(db, {"note": handler}, concurrency=2, batch=5)
        assert await worker.run_once() == 5
        assert handler.claims == [[0, 1, 2, 3, 4]] and handler.ran == {i: None for i in range(5)}
        async with db.session(write=False) as s:
            assert set(await s.scalars(select(m.OutboxJob.status))) == {"done"}
    finally:
        await db.dispose()



async def _statuses(db: Any) -> dict[int, str]:
    async with db.session(write=False) as s:
        return {r.payload["i"]: r.status for r in await s.scalars(select(m.OutboxJob))}


async def test_jobs_that_end_one_after_another_are_recorded_together(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    db = create_database(database_url)
    try:
        await _jobs(db, 8)
        gates = [asyncio.Event() for _ in range(8)]
        transactions: list[int] = []
        real = outbox.finish_done

        async def counted(db_: Any, jobs: list[Any], records: Any = None) -> None:
            transactions.append(len(jobs))
            await real(db_, jobs, records)

        monkeypatch.setattr(outbox, "finish_done", counted)
        monkeypatch.setattr(outbox, "RECORD_WAIT_S", 60.0)  # only the count decides here

        async def note(payload: dict[str, Any]) -> None:
            await gates[payload["i"]].wait()

        # A batch larger than the jobs: the first claim takes all, and no second one (which
        # records first what has ended) comes between.
        worker = OutboxWorker(db, {"note": note}, concurrency=8, batch=9)
        run = asyncio.create_task(worker.run_once())
        # The jobs end one by one, a few milliseconds apart: time enough to record each alone.
        for gate in gates:
            await asyncio.sleep(0.005)
            gate.set()
        assert await run == 8
        # One transaction for the eight (one per job before), once `concurrency` of them waited.
        assert transactions == [8]
        assert set((await _statuses(db)).values()) == {"done"}
    finally:
        await db.dispose()


async def test_a_job_that_ended_is_recorded_while_a_slow_one_still_runs(database_url: str) -> None:
    db = create_database(database_url)
    try:
        await _jobs(db, 2)
        slow = asyncio.Event()

        async def note(payload: dict[str, Any]) -> None:
            if payload["i"] == 1:
                await slow.wait()

        worker = OutboxWorker(db, {"note": note}, concurrency=8, batch=8)
        run = asyncio.create_task(worker.run_once())
        try:
            for _ in range(500):
                if (await _statuses(db))[0] == "done":
                    break
                await asyncio.sleep(0.02)
            # Recorded within its wait, not held back until the slow one ends.
            assert await _statuses(db) == {0: "done", 1: "running"}
        finally:
            slow.set()
        assert await run == 2 and await _statuses(db) == {0: "done", 1: "done"}
    finally:
        await db.dispose()


async def test_a_job_that_ended_just_before_a_stop_cancelled_the_worker_is_still_recorded(database_url: str) -> None:
    db = create_database(database_url)
    try:
        await _jobs(db, 2)
        ended = asyncio.Event()

        async def note(payload: dict[str, Any]) -> None:
            if payload["i"] == 1:
                await asyncio.Event().wait()  # outlasts any grace
            ended.set()

        worker = OutboxWorker(db, {"note": note}, concurrency=8, batch=8)
        worker.start()
        await asyncio.wait_for(ended.wait(), 10)
        await asyncio.sleep(0.005)  # the worker has seen it end, and waits to record it with others
        await worker.stop(grace_s=0)  # no grace: the worker is cancelled at once
        # The job that ended is done (a mail sent is not sent again); the one cut off waits out its lease.
        assert await _statuses(db) == {0: "done", 1: "running"}
    finally:
        await db.dispose()
