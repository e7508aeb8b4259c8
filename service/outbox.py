"""The outbox: work on other systems, written with the change, done after commit.

Jobs converge rather than replay: a job says "make X match the database", so a
retry, a duplicate or a late run all end in the same state. At most one job per
key waits at a time (a partial unique index), and a key is never run by two
workers at once.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Awaitable, Callable, Sequence

from sqlalchemy import bindparam, or_, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.engine import Database, is_unavailable, upsert_insert
from service.db.models import OutboxJob, utcnow

log = logging.getLogger("forumbridge.outbox")
PENDING = text("status = 'pending'")
# A job as queued: (kind, payload, key).
Job = tuple[str, dict[str, Any], str]
LEASE = timedelta(minutes=5)
MAX_BACKOFF = 300.0
# Jobs one worker runs at once (each with its own key), and jobs it claims per transaction.
CONCURRENCY = 8
BATCH = 20
# A job that succeeded waits at most this long to be recorded with others that end meanwhile.
RECORD_WAIT_S = 0.05
# On stop, the jobs in flight get this long to end and be recorded before they are cancelled (and
# run again after their lease). A mail sent but not recorded would be sent again.
STOP_GRACE_S = 10.0
# Then, what ended before the cancel gets this long to be recorded.
LAST_RECORD_S = 2.0


@dataclass(frozen=True)
class Done:
    """A handler's result: `record` runs in the transaction that marks the job done.

    For what the job learned from the other system (a calendar object's new ETag, say): job and
    record are committed together or not at all. If the process dies in between, the job runs
    again after its lease, so a handler returning Done must converge from there as from any retry.
    """

    record: Callable[[AsyncSession], Awaitable[None]]


class RetryLater(Exception):
    """The other system is unavailable; try the job again later."""


class GiveUp(Exception):
    """The other system refused the request itself; retrying cannot help."""


async def enqueue(session: AsyncSession, kind: str, payload: dict[str, Any], key: str) -> None:
    """Add a job in the caller's transaction, unless one with the same key already waits."""
    await enqueue_many(session, [(kind, payload, key)])


async def enqueue_many(session: AsyncSession, jobs: Sequence[Job]) -> None:
    """`enqueue` for each (kind, payload, key), in one statement: a calendar given to a forum queues
    a push for each of its meetings at once, a rescheduled meeting a mail for each invitee."""
    if not jobs:
        return
    now = utcnow()
    rows = [{"id": uuid.uuid4(), "kind": kind, "payload": payload, "key": key, "status": "pending", "attempts": 0,
             "next_attempt_at": now, "created_at": now} for kind, payload, key in jobs]
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    stmt = upsert_insert(dialect)(OutboxJob).on_conflict_do_nothing(index_elements=["key"], index_where=PENDING)
    if len(rows) == 1:  # the usual case on the booking path: a plain INSERT, not the ORM's bulk path
        await session.execute(stmt.values(**rows[0]))
    else:
        await session.execute(stmt, rows)
    session.info["outbox_written"] = True


@dataclass
class Claimed:
    id: Any
    kind: str
    payload: dict[str, Any]
    key: str | None
    attempts: int
    # What the handler's `prepare` read for this job with the others of its claim (see Handler).
    prepared: Any = None


async def claim(db: Database, limit: int = 20, token: str | None = None) -> list[Claimed]:
    """Take due jobs for this worker; on PostgreSQL, rows other workers hold are skipped. The rows
    carry `token` (new if not given): if the answer to this claim's commit is lost, the caller gives
    back what it took with `release_claim(token)`."""
    now = utcnow()
    token = token or uuid.uuid4().hex
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
                job.claim = token
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


# Jobs this worker still holds (running, the attempt it claimed) marked done: one statement,
# built once; the (id, attempt) pairs go in as an expanding IN of row values.
_JOBS = OutboxJob.__table__
_HELD_BY_US = tuple_(_JOBS.c.id, _JOBS.c.attempts).in_(bindparam("held", expanding=True))
_MARK_DONE = (
    update(_JOBS)
    .where(_JOBS.c.status == "running", _HELD_BY_US)
    .values(status="done", done_at=bindparam("done_at"), last_error=None)
    .returning(_JOBS.c.id)
)


async def finish_done(db: Database, jobs: list[Claimed], records: dict[Any, Done] | None = None) -> None:
    """Record that `jobs` succeeded, with what their handlers return to record, in one transaction.

    Only jobs this worker still holds (running, the attempt it claimed) are marked, and only
    their records run: a job whose lease ran out was taken by another worker, whose outcome counts.
    """
    records = records or {}
    async with db.session(write=True) as s:
        async with s.begin():
            conn = await s.connection()
            held = set((await conn.execute(_MARK_DONE, {
                "held": [(job.id, job.attempts) for job in jobs], "done_at": utcnow()})).scalars())
            for job in jobs:
                if job.id in held and job.id in records:
                    await records[job.id].record(s)


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


def _giving_back(which: Any) -> tuple[Any, Any]:
    """The two statements that give back the running jobs `which` selects: due now, the attempt
    their claim counted taken back; one whose key got a newer pending job meanwhile is superseded
    by it instead (at most one job per key waits)."""
    supersede = (
        update(_JOBS)
        .where(_JOBS.c.status == "running", which,
               _JOBS.c.key.in_(select(_JOBS.c.key).where(_JOBS.c.status == "pending").scalar_subquery()))
        .values(status="superseded")
    )
    back = (
        update(_JOBS)
        .where(_JOBS.c.status == "running", which)
        .values(status="pending", attempts=_JOBS.c.attempts - 1, next_attempt_at=bindparam("now"), claim=None)
    )
    return supersede, back


# Jobs this worker claimed and never started (it stops), by (id, attempt); and all that one claim
# took, by its token (the answer to its commit was lost).
_HELD = _giving_back(_HELD_BY_US)
_CLAIMED = _giving_back(_JOBS.c.claim == bindparam("token"))

RELEASE_TRIES = 3


async def release(db: Database, jobs: Sequence[Claimed]) -> None:
    """Give back jobs claimed and not started: pending and due now, as if never claimed."""
    if jobs:
        await _give_back(db, _HELD, {"held": [(job.id, job.attempts) for job in jobs]})


async def release_claim(db: Database, token: str) -> None:
    """Give back whatever the claim `token` took, if its commit happened after all."""
    await _give_back(db, _CLAIMED, {"token": token})


async def _give_back(db: Database, statements: tuple[Any, Any], params: dict[str, Any]) -> None:
    supersede, back = statements
    for attempt in range(RELEASE_TRIES):
        try:
            async with db.session(write=True) as s:
                async with s.begin():
                    conn = await s.connection()
                    await conn.execute(supersede, params)
                    await conn.execute(back, {**params, "now": utcnow()})
            return
        except IntegrityError:
            # On PostgreSQL a job of the same key queued by a transaction that committed after our
            # first statement read: the next try sees it, and supersedes ours.
            if attempt == RELEASE_TRIES - 1:
                raise


async def retry_now(db: Database) -> None:
    """Make every waiting job due now (an operator's "sync now" after fixing a server)."""
    async with db.session(write=True) as s:
        async with s.begin():
            await s.execute(
                update(OutboxJob).where(OutboxJob.status == "pending", OutboxJob.next_attempt_at > utcnow())
                .values(next_attempt_at=utcnow())
            )


# A handler converges the other system; it may return Done to have something recorded with the job.
# A handler may also have `prepare(payloads) -> list`: the worker calls it once per claim with the
# payloads of that claim's jobs of its kind, and calls the handler with each job's item as a second
# argument (None where prepare gave none), so that what every job reads is read once per claim. If
# prepare fails, the jobs run without (and meet the failure themselves).
Handler = Callable[..., Awaitable["Done | None"]]


async def wind_down(task: asyncio.Task, grace_s: float) -> bool:
    """Let `task` end by itself for at most `grace_s`, then cancel it; returns once it has ended,
    True when it had to be cancelled. For the background loops, which stop between steps."""
    await asyncio.wait({task}, timeout=grace_s)
    cancelled = not task.done()
    if cancelled:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return cancelled


class _Wake(asyncio.Event):
    """The worker's wake-up call, counting how often it was made: a claim is worth a transaction
    only when jobs were written since the last claim, or when that claim left due jobs behind."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def set(self) -> None:
        self.calls += 1
        super().set()


class OutboxWorker:
    """Drains the outbox: woken after each commit that wrote jobs, and on a timer."""

    def __init__(self, db: Database, handlers: dict[str, Handler], poll_s: float = 1.0,
                 concurrency: int = CONCURRENCY, batch: int = BATCH) -> None:
        self.db = db
        self.handlers = handlers
        self.poll_s = poll_s
        self.concurrency = max(1, concurrency)
        self.batch = max(1, batch)
        self.wake = _Wake()
        self._task: asyncio.Task | None = None
        # Set by stop(): no more claims, no more starts; the jobs in flight end and are recorded.
        self._stopping = False
        self.idle = asyncio.Event()
        # Outcomes of jobs this worker holds that could not be recorded (the database was lost),
        # by job id: recorded first thing next time, so the jobs need not wait out their lease.
        self._unrecorded: dict[Any, tuple[Claimed, BaseException | None, Done | None]] = {}
        # Claims whose commit may have happened although the worker got an error instead of its
        # jobs: given back first thing next time, so the jobs need not wait out their lease.
        self._lost_claims: set[str] = set()

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="outbox-worker")

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop claiming; let the jobs in flight end and be recorded for at most `grace_s`
        (STOP_GRACE_S), then cancel what still runs. Jobs claimed and not started are given back."""
        if self._task is None:
            return
        self._stopping = True
        self.wake.set()
        if await wind_down(self._task, STOP_GRACE_S if grace_s is None else grace_s):
            log.warning("outbox worker: jobs still running after the stop's grace were cancelled; "
                        "they run again after their lease")

    async def run_once(self, budget_s: float | None = None) -> int:
        """Run every job that is due now, up to `concurrency` at a time; returns how many ran.

        With `budget_s`, no job is claimed after that many seconds: the jobs already claimed run to
        their end and the rest stay pending for the worker (an on-demand sync answers in bounded
        time however many jobs wait for a server that does not answer).

        The jobs in flight always hold distinct keys: a claim hands out at most one job per key and
        none whose key has a job running (leased), and a job stays "running" until its outcome is
        recorded. Most of a job's time is waiting on the other system, so running a few at once
        overlaps that wait with the other jobs' database work. Jobs that succeeded are recorded
        together, with what their handlers returned to record (`Done`), in one write transaction:
        when `concurrency` of them wait, when the first has waited RECORD_WAIT_S, before a claim,
        and when nothing runs any more. One transaction per few jobs, not one or more per job: on
        SQLite every write transaction waits its turn for the one writer, with the API's.
        """
        done = 0
        queue: deque[Claimed] = deque()
        running: dict[asyncio.Task[tuple[bool, Done | None]], Claimed] = {}
        # Whether a claim may find something: the first always may; later ones when the last claim
        # was full, or when jobs were written since it (a job written while one of its key ran is
        # claimable once that one ends; every commit that writes jobs wakes the worker).
        more = True
        claimed_at = self.wake.calls
        failure: BaseException | None = None
        loop = asyncio.get_running_loop()
        deadline = None if budget_s is None else loop.time() + budget_s
        await self._record_late()

        # Jobs that succeeded and are not yet recorded, with what their handlers returned to record.
        succeeded: list[Claimed] = []
        records: dict[Any, Done] = {}
        first_success = 0.0

        def took(task: asyncio.Task[tuple[bool, Done | None]], job: Claimed) -> None:
            """Note what a job that ended without an error left to record (nothing if it failed:
            its failure is recorded by `_run_job`)."""
            nonlocal first_success
            ok, result = task.result()
            if ok:
                if not succeeded:
                    first_success = loop.time()
                succeeded.append(job)
                if result is not None:
                    records[job.id] = result

        async def record() -> None:
            nonlocal failure
            if not succeeded:
                return
            try:
                await self._record_done(succeeded.copy(), records.copy())
            except Exception as exc:  # noqa: BLE001 - the database may be down: see below
                failure = failure or exc  # what was not recorded is kept in _unrecorded
            # Not reached when cancelled meanwhile: `finally` below keeps them.
            succeeded.clear()
            records.clear()

        def start_claimed() -> None:
            while failure is None and not self._stopping and queue and len(running) < self.concurrency:
                job = queue.popleft()
                running[asyncio.create_task(self._run_job(job))] = job

        async def start_more() -> None:
            nonlocal more, failure, claimed_at
            if self._stopping or deadline is not None and loop.time() >= deadline:
                more = False
                claimed_at = self.wake.calls
            elif failure is None and (more or self.wake.calls != claimed_at) and not queue \
                    and len(running) < self.concurrency:
                # What the jobs so far wrote elsewhere (an ETag) goes on record before more are
                # taken: a sync waits for a calendar's pushes in flight (running, not recorded).
                await record()
                if failure is None:
                    claimed_at = self.wake.calls
                    token = uuid.uuid4().hex
                    try:
                        taken = await claim(self.db, self.batch, token)
                    except Exception as exc:  # noqa: BLE001 - the database may be down: see below
                        failure = exc
                        taken = []
                        self._lost_claims.add(token)
                    await self._prepare(taken)
                    queue.extend(taken)
                    more = len(taken) >= self.batch
            start_claimed()

        try:
            while True:
                await start_more()
                if not running:
                    await record()
                    break
                wait = None if not succeeded else max(0.0, first_success + RECORD_WAIT_S - loop.time())
                finished, _ = await asyncio.wait(running, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    job = running.pop(task)
                    if task.exception() is not None:
                        failure = failure or task.exception()
                        continue
                    done += 1
                    took(task, job)
                # The jobs claimed already run while these are recorded.
                start_claimed()
                # Stopping: at once, as the stop's grace may run out before the wait would.
                if len(succeeded) >= self.concurrency or succeeded and (
                        self._stopping or loop.time() - first_success >= RECORD_WAIT_S):
                    await record()
        finally:
            # Left by an error or a cancel: kept, and recorded first thing next time if there is one,
            # with the jobs that ended before this loop saw them.
            for task, job in running.items():
                if task.done() and not task.cancelled() and task.exception() is None:
                    took(task, job)
            self._keep(succeeded, records)
            # Cancelled (the worker stops): the jobs in flight stop with us and run again after their lease.
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        if failure is not None:
            # Claimed but never started: given back (as a failed attempt) with the late outcomes.
            self._unrecorded.update((job.id, (job, RetryLater("not started: the database was lost"), None)) for job in queue)
            # Claiming or recording an outcome failed (the database is down): the jobs in flight have
            # ended and no more were started; the outcomes not recorded are kept and recorded when
            # the database answers again (if this process dies first, the jobs run again after
            # their lease: converging jobs may run twice).
            raise failure
        if queue:
            # Stopping: what was claimed and not started is due again now, for whichever worker.
            await release(self.db, list(queue))
        return done

    async def _record_done(self, jobs: list[Claimed], records: dict[Any, Done]) -> None:
        """Record jobs that succeeded: together; if that fails other than by losing the database
        (a record of one job refused), one by one, and a job whose record fails is retried later."""
        try:
            await finish_done(self.db, jobs, records)
            return
        except Exception as exc:  # noqa: BLE001 - sorted out below
            if is_unavailable(exc) or len(jobs) == 1 and jobs[0].id not in records:
                self._keep(jobs, records)
                raise
            if len(jobs) == 1:
                return await self._record_failed(jobs[0], exc)
        for job in jobs:
            try:
                await finish_done(self.db, [job], records)
            except Exception as exc:  # noqa: BLE001 - sorted out below
                if is_unavailable(exc):
                    self._keep(jobs[jobs.index(job):], records)
                    raise
                try:
                    await self._record_failed(job, exc)
                except Exception:
                    # The jobs after it are kept too, not only this one.
                    self._keep(jobs[jobs.index(job) + 1:], records)
                    raise

    def _keep(self, jobs: Sequence[Claimed], records: dict[Any, Done]) -> None:
        """Keep jobs that succeeded, with their records, to be recorded first thing next time."""
        self._unrecorded.update((job.id, (job, None, records.get(job.id))) for job in jobs)

    async def _record_failed(self, job: Claimed, exc: Exception) -> None:
        log.error("outbox job %s (%s): recording its outcome failed: %s", job.id, job.kind, exc)
        try:
            await finish(self.db, job, exc)
        except Exception:
            self._unrecorded[job.id] = (job, exc, None)
            raise

    async def _prepare(self, jobs: list[Claimed]) -> None:
        """Let each handler that can read what its jobs of this claim need, together."""
        by_kind: dict[str, list[Claimed]] = {}
        for job in jobs:
            by_kind.setdefault(job.kind, []).append(job)
        for kind, group in by_kind.items():
            prepare = getattr(self.handlers.get(kind), "prepare", None)
            if prepare is None:
                continue
            try:
                prepared = await prepare([job.payload for job in group])
            except Exception:  # noqa: BLE001 - each job reads for itself, and fails as it would have
                log.debug("outbox: preparing %d %s jobs failed; they read for themselves", len(group), kind,
                          exc_info=True)
                continue
            for job, item in zip(group, prepared):
                job.prepared = item

    async def _run_job(self, job: Claimed) -> tuple[bool, Done | None]:
        """Run one job; (True, what to record) when it succeeded (the caller records that), else
        its failure is recorded here."""
        handler = self.handlers.get(job.kind)
        error: BaseException | None = None
        result: Any = None
        if handler is None:
            error = GiveUp(f"no handler for job kind {job.kind!r}")
        else:
            try:
                result = await (handler(job.payload) if job.prepared is None else handler(job.payload, job.prepared))
            except (RetryLater, GiveUp) as exc:
                error = exc
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug in one job must not stop the others
                log.exception("outbox job %s (%s) failed", job.id, job.kind)
                error = exc
        if error is None:
            return True, result if isinstance(result, Done) else None
        log.warning("outbox job %s (%s) attempt %d: %s", job.id, job.kind, job.attempts, error)
        try:
            await finish(self.db, job, error)
        except Exception:
            self._unrecorded[job.id] = (job, error, None)
            raise
        return False, None

    async def _record_late(self) -> None:
        """Give back the claims whose answer was lost and record the outcomes kept while the
        database was away; raises if it still is."""
        for token in list(self._lost_claims):
            await release_claim(self.db, token)
            self._lost_claims.discard(token)
        for job_id, (job, error, record) in list(self._unrecorded.items()):
            if error is None:
                try:
                    await finish_done(self.db, [job], {job.id: record} if record is not None else None)
                except Exception as exc:  # noqa: BLE001 - a record refused: the job runs again
                    if is_unavailable(exc):
                        raise
                    await finish(self.db, job, exc)
            else:
                await finish(self.db, job, error)
            self._unrecorded.pop(job_id, None)  # run_once may run twice at once (the API's sync)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                self.idle.clear()
                await self.run_once()
            except asyncio.CancelledError:
                # Cancelled by a stop whose grace ran out: what ended meanwhile gets its try.
                await self._record_before_stopping(LAST_RECORD_S)
                raise
            except Exception:  # noqa: BLE001 - the database may be down; try again
                log.exception("outbox worker cycle failed")
            self.idle.set()
            if self._stopping:
                break
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=self.poll_s)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
        await self._record_before_stopping(None)

    async def _record_before_stopping(self, limit_s: float | None) -> None:
        """Claims and outcomes kept (the database was away, or a cancel came first: a mail accepted,
        its record not written): one more try before stopping, or their jobs run again after their
        lease. For at most `limit_s`."""
        if not self._unrecorded and not self._lost_claims:
            return
        try:
            await asyncio.wait_for(self._record_late(), limit_s)
        except Exception:  # noqa: BLE001 - still away: the lease brings the jobs back
            log.warning("outbox worker: stopping with %d outcomes not recorded and %d claims not given "
                        "back; their jobs run again after their lease", len(self._unrecorded),
                        len(self._lost_claims), exc_info=True)


