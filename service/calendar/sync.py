"""The pull side: read what changed in each calendar and apply the pull rules."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from datetime import timedelta
from typing import AsyncIterator

from sqlalchemy import select, text

from connectors.calendar import CalendarConnector, CalendarError, CalendarUnavailable
from schemas import api
from service.calendar._parse import RECUR_AFTER
from service.calendar.ical import parse_event
from service.calendar.plan import PUSH, push_key
from service.calendar.pull import PullRules, Seen
from service.db import models as m
from service.db.engine import Database
from service.outbox import STOP_GRACE_S, wind_down
from service.timeutil import now
from service.usecases.base import Actor, UnitOfWork

log = logging.getLogger("forumbridge.calendar")
# A recurring event's busy blocks reach two years past the sync that read it (`series_until`, kept
# while the series goes on beyond). A series read to less than this ahead is read again, at most
# once per `REREAD_EVERY_S` per calendar on the interval, on every on-demand sync.
REREAD_MARGIN = RECUR_AFTER - timedelta(days=30)
REREAD_EVERY_S = 6 * 3600.0
# Calendars read at once: the reading is network waiting, and a server that does not answer then
# holds one of these, not the whole sync.
PULL_CONCURRENCY = 4


class CalendarSync:
    """Syncs every calendar a forum or room uses; one replica at a time per calendar."""

    def __init__(self, db: Database, connector: CalendarConnector, rules: PullRules, default_zone: str = "Europe/Stockholm") -> None:
        self.db = db
        self.connector = connector
        self.rules = rules
        self.default_zone = default_zone
        self._local_locks: dict[str, asyncio.Lock] = {}
        self._reread_at: dict[uuid.UUID, float] = {}  # when each room calendar's series were last read again

    async def sync_all(self, reread: bool = False, within_s: float | None = None) -> api.SyncResult:
        """Pull every calendar in use, `PULL_CONCURRENCY` at a time; `reread` reads every long
        recurring series again now (an operator's sync), not only when its calendar's turn has come.

        `within_s` bounds the reading from the calendar servers: a calendar not read by then is
        left as it was (its token, its objects), its error recorded, and the next sync reads it.
        Only the reading is cut short, never the transaction that applies what was read."""
        async with self.db.session(write=False) as s:
            used = set(await s.scalars(select(m.Forum.calendar_url).where(m.Forum.calendar_url.is_not(None))))
            used |= set(await s.scalars(select(m.Room.calendar_url).where(m.Room.calendar_url.is_not(None))))
            cals = [(c.id, c.url) for c in await s.scalars(select(m.Calendar).where(m.Calendar.url.in_(used)))] if used else []
        result = api.SyncResult(calendars=len(cals), changed=0, deleted=0, errors=[], jobs_run=0)
        deadline = asyncio.get_running_loop().time() + within_s if within_s is not None else None
        gate = asyncio.Semaphore(PULL_CONCURRENCY)

        async def pull(cal_id: uuid.UUID, url: str) -> None:
            async with gate:
                try:
                    changed, deleted = await self.sync_one(cal_id, reread, deadline)
                    result.changed += changed
                    result.deleted += deleted
                except CalendarError as exc:
                    result.errors.append(f"{url}: {type(exc).__name__}: {exc}")

        # Every pull runs to its end before anything is raised: none is left running unobserved.
        failures = [outcome for outcome in await asyncio.gather(
            *(pull(cal_id, url) for cal_id, url in cals), return_exceptions=True) if isinstance(outcome, BaseException)]
        for failure in failures[1:]:
            log.error("calendar sync failed", exc_info=failure)
        if failures:
            raise failures[0]
        return result

    async def sync_one(self, calendar_id: uuid.UUID, reread: bool = False,
                       deadline: float | None = None) -> tuple[int, int]:
        """Pull one calendar; returns (objects changed, objects deleted). Raises CalendarError after
        recording it, also when the server has not answered by `deadline` (the loop's clock); a
        calendar not reached by then (its turn, or another sync of it, came too late) raises
        without a record, since its server was not asked."""
        async with self._exclusive(calendar_id, deadline) as mine:
            if not mine:
                return 0, 0  # another replica syncs it right now
            async with self.db.session(write=False) as s:
                found = (await s.execute(select(m.Calendar.url, m.Calendar.sync_token, m.Calendar.purpose)
                                         .where(m.Calendar.id == calendar_id))).first()
                if found is None:
                    return 0, 0
                url, token, purpose = found
                series = await self._series_to_reread(s, calendar_id, reread) if purpose == "room" else None
                # href and ETag only: every object of the calendar is listed here, each sync.
                known = dict((await s.execute(select(m.CalendarObject.href, m.CalendarObject.etag)
                                              .where(m.CalendarObject.calendar_id == calendar_id))).all())
                known.update((await s.execute(
                    select(m.RoomBooking.external_href, m.RoomBooking.external_etag)
                    .where(m.RoomBooking.calendar_id == calendar_id, m.RoomBooking.external_href.is_not(None)))).all())
            _in_time(deadline, url)
            try:
                async with asyncio.timeout_at(deadline):
                    changes = await self.connector.changes(url, token, known)
                    listed = {obj.href for obj in changes.changed} | set(changes.deleted)
                    again = [h for h in series or () if h not in listed]
                    reread_objects = await self.connector.multiget(url, again) if again else []
            except (TimeoutError, CalendarError) as exc:
                error = exc if isinstance(exc, CalendarError) else CalendarUnavailable(
                    "no answer before the sync's time was up; the next sync reads it", url=url)
                await self._record_error(calendar_id, error)
                raise error from None
            seen = [Seen(obj.href, obj.etag, parse_event(obj.data, self.default_zone))
                    for obj in [*changes.changed, *reread_objects]]
            # One transaction for the whole change set, moves included (each in a savepoint): either
            # all of it is recorded with the new token, or none of it and the next sync sees it again.
            async with UnitOfWork(self.db, Actor(f"calendar:{url}", frozenset({"secretariat"})), write=True) as uow:
                cal = await uow.session.get(m.Calendar, calendar_id)
                if cal is None:
                    return 0, 0
                outcomes, held = await self.rules.pulled(uow, cal, seen, changes.deleted,
                                                         await self._pushes_in_flight(uow, url))
                if not held:
                    cal.sync_token = changes.sync_token
                cal.last_sync_at = now()
                cal.last_error = None
                await uow.commit()
            if series is not None:
                self._reread_at[calendar_id] = time.monotonic()  # checked, and what it found is on record
            for outcome in outcomes:
                self.rules.meetings.on_booking(outcome)
            return len(changes.changed), len(changes.deleted)

    async def _series_to_reread(self, s, calendar_id: uuid.UUID, now_anyway: bool) -> list[str] | None:  # noqa: ANN001
        """The hrefs of recurring events in a room calendar whose blocks end short of the horizon;
        None when this calendar was checked less than `REREAD_EVERY_S` ago (and `now_anyway` is not set)."""
        last = self._reread_at.get(calendar_id)
        if not now_anyway and last is not None and time.monotonic() - last < REREAD_EVERY_S:
            return None
        rows = await s.execute(
            select(m.RoomBooking.external_href).distinct().where(
                m.RoomBooking.calendar_id == calendar_id, m.RoomBooking.external_href.is_not(None),
                m.RoomBooking.series_until.is_not(None), m.RoomBooking.series_until < now() + REREAD_MARGIN))
        return [href for (href,) in rows]

    @staticmethod
    async def _pushes_in_flight(uow: UnitOfWork, url: str) -> set[uuid.UUID]:
        """The meetings whose push to `url` a worker holds now (claimed, outcome not yet recorded)."""
        prefix = push_key(url, "")
        keys = await uow.session.scalars(select(m.OutboxJob.key).where(
            m.OutboxJob.status == "running", m.OutboxJob.kind == PUSH, m.OutboxJob.key.startswith(prefix, autoescape=True)))
        return {uuid.UUID(key[len(prefix):]) for key in keys}

    async def _record_error(self, calendar_id: uuid.UUID, exc: Exception) -> None:
        async with UnitOfWork(self.db, Actor("calendar-sync"), write=True) as uow:
            cal = await uow.session.get(m.Calendar, calendar_id)
            if cal is not None:
                cal.last_error = f"{type(exc).__name__}: {exc}"[:2000]
                await uow.commit()

    @contextlib.asynccontextmanager
    async def _exclusive(self, calendar_id: uuid.UUID, deadline: float | None = None) -> AsyncIterator[bool]:
        """In this process an asyncio lock, waited for until `deadline` at most; across PostgreSQL
        replicas an advisory lock too (False: another replica has it)."""
        lock = self._local_locks.setdefault(str(calendar_id), asyncio.Lock())
        try:
            async with asyncio.timeout_at(deadline):
                await lock.acquire()
        except TimeoutError:
            raise CalendarUnavailable("not read: another sync of it still ran when the sync's time was up") from None
        try:
            if self.db.dialect != "postgresql":
                yield True
                return
            key = int.from_bytes(hashlib.sha256(f"calendar-sync:{calendar_id}".encode()).digest()[:8], "big", signed=True)
            async with self.db.writer.connect() as conn:
                got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar()
                await conn.commit()
                try:
                    yield bool(got)
                finally:
                    if got:
                        await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                        await conn.commit()
        finally:
            lock.release()


def _in_time(deadline: float | None, url: str) -> None:
    """Raise when the sync's time is up before this calendar's server was asked."""
    if deadline is not None and asyncio.get_running_loop().time() >= deadline:
        raise CalendarUnavailable("not read: its turn came after the sync's time was up", url=url)


class SyncLoop:
    """Pulls every calendar on an interval; started and stopped with the app."""

    def __init__(self, sync: CalendarSync, interval_s: float, stop_grace_s: float = STOP_GRACE_S) -> None:
        self.sync = sync
        self.interval_s = interval_s
        self.stop_grace_s = stop_grace_s
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._syncing = False

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="calendar-sync")

    async def stop(self) -> None:
        """Stop between rounds; a round under way gets `stop_grace_s` to end (its changes are
        applied in transactions of their own) before it is cancelled."""
        if self._task is None:
            return
        self._stopping = True
        await wind_down(self._task, self.stop_grace_s if self._syncing else 0)

    async def _run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.interval_s)
            self._syncing = True
            try:
                result = await self.sync.sync_all()
                for error in result.errors:
                    log.warning("calendar sync: %s", error)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("calendar sync round failed")
            finally:
                self._syncing = False
