"""The outbox: work on other systems, written with the change, done after commit.

Jobs converge rather than replay: a job says "make X match the database", so a
retry, a duplicate or a late run all end in the same state. At most one job per
key waits at a time (a partial unique index), and a key is never run by two
workers at once.
"""
from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Awaitable, Callable

from sqlalchemy import or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.engine import Database
from service.db.models import OutboxJob, utcnow

log = logging.getLogger("forumbridge.outbox")
PENDING = text("status = 'pending'")
LEASE = timedelta(minutes=5)
MAX_BACKOFF = 300.0
# Jobs one worker runs at once (each with its own key), and jobs it claims per transaction.
CONCURRENCY = 8
BATCH = 20


class RetryLater(Exception):
    """The other system is unavailable; try the job again later."""


class GiveUp(Exception):
    """The other system refused the request itself; retrying cannot help."""


async def enqueue(session: AsyncSession, kind: str, payload: dict[str, Any], key: str) -> None:
    """Add a job in the caller's transaction, unless one with the same key already waits."""
    now = utcnow()
    values = {"kind": kind, "payload": payload, "key": key, "status": "pending", "attempts": 0,
              "next_attempt_at": now, "created_at": now}
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(OutboxJob).values(id=uuid.uuid4(), **values).on_conflict_do_nothing(index_elements=["key"], index_where=PENDING)
    await session.execute(stmt)
    session.info["outbox_written"] = True


@dataclass
class Claimed:
    id: Any
    kind: str
    payload: dict[str, Any]
    key: str | None
    attempts: int


async def claim(db: Database, limit: int = 20) -> list[Claimed]:
    """Take due jobs for this worker; on PostgreSQL, rows other workers hold are skipped."""
    now = utcnow()
    async with db.session(write=True) as s:
        async with s.begin():
            busy_keys = select(OutboxJob.key).where(
                OutboxJob.status == "running", OutboxJob.next_attempt_at > now, OutboxJob.key.is_not(None)
            )
            stmt = (
                select(OutboxJob)
                .where(
                    OutboxJob.status.in_(("pending", "running")),
                    OutboxJob.next_attempt_at <= now,
                    or_(OutboxJob.key.is_(None), OutboxJob.key.not_in(busy_keys)),
                )
                .order_by(OutboxJob.next_attempt_at, OutboxJob.created_at)
                .limit(limit)
            )
            if db.dialect == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            taken, keys = [], set()
            for job in (await s.scalars(stmt)).all():
                if job.key is not None and job.key in keys:
                    continue
                keys.add(job.key)
                job.status = "running"
                job.attempts += 1
                # A lease: if this worker dies, the job is due again after it.
                job.next_attempt_at = now + LEASE
                taken.append(Claimed(job.id, job.kind, dict(job.payload), job.key, job.attempts))
    return taken


def backoff(attempts: int) -> float:
    """Seconds before the next try: doubling from 1 s, capped at 5 minutes, with jitter."""
    return min(MAX_BACKOFF, 2 ** min(attempts - 1, 16)) * random.uniform(0.8, 1.2)


async def finish(db: Database, job: Claimed, error: BaseException | None) -> None:
    """Record a job's outcome: done, again later, or failed for good."""
    try:
        await _finish(db, job, error, superseded=False)
    except IntegrityError:
        # A newer job for the same key was queued while we decided: it will do the work.
        await _finish(db, job, error, superseded=True)


async def finish_done(db: Database, jobs: list[Claimed]) -> None:
    """Record that `jobs` succeeded, in one transaction."""
    async with db.session(write=True) as s:
        async with s.begin():
            await s.execute(
                update(OutboxJob).where(OutboxJob.id.in_([job.id for job in jobs]))
                .values(status="done", done_at=utcnow(), last_error=None)
                .execution_options(synchronize_session=False)
            )


async def _finish(db: Database, job: Claimed, error: BaseException | None, superseded: bool) -> None:
    async with db.session(write=True) as s:
        async with s.begin():
            row = await s.get(OutboxJob, job.id)
            if row is None or row.status != "running" or row.attempts != job.attempts:
                return  # our lease ran out and another worker took the job: its outcome counts
            if error is None:
                row.status, row.done_at, row.last_error = "done", utcnow(), None
                return
            row.last_error = f"{type(error).__name__}: {error}"[:2000]
            if isinstance(error, GiveUp):
                row.status = "failed"
                return
            waiting = superseded or await s.scalar(
                select(OutboxJob.id).where(OutboxJob.key == row.key, OutboxJob.status == "pending", OutboxJob.id != row.id)
            )
            if waiting:
                row.status = "superseded"
                return
            row.status = "pending"
            row.next_attempt_at = utcnow() + timedelta(seconds=backoff(row.attempts))


async def retry_now(db: Database) -> None:
    """Make every waiting job due now (an operator's "sync now" after fixing a server)."""
    async with db.session(write=True) as s:
        async with s.begin():
            await s.execute(
                update(OutboxJob).where(OutboxJob.status == "pending", OutboxJob.next_attempt_at > utcnow())
                .values(next_attempt_at=utcnow())
            )


Handler = Callable[[dict[str, Any]], Awaitable[None]]


class OutboxWorker:
    """Drains the outbox: woken after each commit that wrote jobs, and on a timer."""

    def __init__(self, db: Database, handlers: dict[str, Handler], poll_s: float = 1.0,
                 concurrency: int = CONCURRENCY, batch: int = BATCH) -> None:
        self.db = db
        self.handlers = handlers
        self.poll_s = poll_s
        self.concurrency = max(1, concurrency)
        self.batch = max(1, batch)
        self.wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.idle = asyncio.Event()
        # Outcomes of jobs this worker holds that could not be recorded (the database was lost),
        # by job id: recorded first thing next time, so the jobs need not wait out their lease.
        self._unrecorded: dict[Any, tuple[Claimed, BaseException | None]] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-worker")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def run_once(self) -> int:
        """Run every job that is due now, up to `concurrency` at a time; returns how many ran.

        The jobs in flight always hold distinct keys: a claim hands out at most one job per key and
        none whose key has a job running (leased), and a job stays "running" until its outcome is
        recorded. Most of a job's time is waiting on the other system, so running a few at once
        overlaps that wait with the other jobs' database work. Jobs that succeeded are recorded
        together, in one transaction per wake-up of this loop.
        """
        done = 0
        queue: deque[Claimed] = deque()
        running: dict[asyncio.Task[bool], Claimed] = {}
        more = True  # whether a claim may find something (set again whenever a job ends)
        failure: BaseException | None = None
        await self._record_late()

        async def start_more() -> None:
            nonlocal more, failure
            if failure is None and more and not queue and len(running) < self.concurrency:
                try:
                    queue.extend(await claim(self.db, self.batch))
                except Exception as exc:  # noqa: BLE001 - the database may be down: see below
                    failure = exc
                more = bool(queue)
            while failure is None and queue and len(running) < self.concurrency:
                job = queue.popleft()
                running[asyncio.create_task(self._run_job(job))] = job

        try:
            while True:
                await start_more()
                if not running:
                    break
                finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                succeeded = []
                for task in finished:
                    job = running.pop(task)
                    if task.exception() is not None:
                        failure = failure or task.exception()
                        continue
                    done += 1
                    if task.result():
                        succeeded.append(job)
                more = True
                await start_more()  # the next jobs run while these are recorded
                if succeeded:
                    try:
                        await finish_done(self.db, succeeded)
                    except Exception as exc:  # noqa: BLE001 - the database may be down: see below
                        failure = failure or exc
                        self._unrecorded.update((job.id, (job, None)) for job in succeeded)
        finally:
            # Cancelled (the worker stops): the jobs in flight stop with us and run again after their lease.
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        if failure is not None:
            # Claimed but never started: given back (as a failed attempt) with the late outcomes.
            self._unrecorded.update((job.id, (job, RetryLater("not started: the database was lost"))) for job in queue)
            # Claiming or recording an outcome failed (the database is down): the jobs in flight have
            # ended and no more were started; the outcomes not recorded are kept and recorded when
            # the database answers again (if this process dies first, the jobs run again after
            # their lease: converging jobs may run twice).
            raise failure
        return done

    async def _run_job(self, job: Claimed) -> bool:
        """Run one job; True when it succeeded (the caller records that), else its failure is recorded here."""
        handler = self.handlers.get(job.kind)
        error: BaseException | None = None
        if handler is None:
            error = GiveUp(f"no handler for job kind {job.kind!r}")
        else:
            try:
                await handler(job.payload)
            except (RetryLater, GiveUp) as exc:
                error = exc
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug in one job must not stop the others
                log.exception("outbox job %s (%s) failed", job.id, job.kind)
                error = exc
        if error is None:
            return True
        log.warning("outbox job %s (%s) attempt %d: %s", job.id, job.kind, job.attempts, error)
        try:
            await finish(self.db, job, error)
        except Exception:
            self._unrecorded[job.id] = (job, error)
            raise
        return False

    async def _record_late(self) -> None:
        """Record the outcomes kept while the database was away; raises if it still is."""
        for job_id, (job, error) in list(self._unrecorded.items()):
            await finish(self.db, job, error)
            self._unrecorded.pop(job_id, None)  # run_once may run twice at once (the API's sync)

    async def _run(self) -> None:
        while True:
            try:
                self.idle.clear()
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the database may be down; try again
                log.exception("outbox worker cycle failed")
            self.idle.set()
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=self.poll_s)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()


