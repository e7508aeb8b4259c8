"""The calendar push job: make one calendar's copy of one meeting match the database."""
from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.calendar import (
    CalendarAuthError,
    CalendarConnector,
    CalendarPreconditionFailed,
    CalendarRejected,
    CalendarUidConflict,
    CalendarUnavailable,
    RemoteObject,
)
from service.calendar.ical import parse_event, render_shared
from service.calendar.pull import PullRules, Seen
from service.calendar.snapshot import EventRows, shows
from service.db import models as m
from service.db.engine import Database, upsert_insert
from service.outbox import Done, GiveUp, RetryLater
from service.settings import Settings
from service.usecases.base import Actor, UnitOfWork

log = logging.getLogger("forumbridge.calendar")
ATTEMPTS = 3


@functools.cache
def _upsert_object(dialect: str) -> Any:
    """The upsert `_record` runs once per pushed object, built once per dialect (Core, bound by name)."""
    table = m.CalendarObject.__table__
    meetings = m.Meeting.__table__
    stmt = upsert_insert(dialect)(table).values(
        id=bindparam("id"), calendar_id=bindparam("calendar_id"),
        meeting_id=select(meetings.c.id).where(meetings.c.id == bindparam("meeting_id")).scalar_subquery(),
        uid=bindparam("uid"), href=bindparam("href"), etag=bindparam("etag"), sequence=bindparam("sequence"),
        partstats=bindparam("partstats", type_=table.c.partstats.type),
    )
    return stmt.on_conflict_do_update(
        index_elements=["calendar_id", "uid"],
        set_={"href": stmt.excluded.href, "etag": stmt.excluded.etag, "sequence": stmt.excluded.sequence,
              "partstats": stmt.excluded.partstats},
    )


# A claim's reads, built once (a push runs them for every claim of jobs): the meetings (their
# sessions and conference come with them, `lazy` in the model);
_MEETINGS = select(m.Meeting).where(m.Meeting.id.in_(bindparam("ids", expanding=True)))
# the calendars with our objects in them (href and ETag; none recorded: a row with NULLs), as plain
# columns;
_FOUND = (
    select(m.Calendar.url, m.Calendar.id, m.CalendarObject.uid, m.CalendarObject.href, m.CalendarObject.etag)
    .where(m.Calendar.url.in_(bindparam("urls", expanding=True)))
    .outerjoin(m.CalendarObject, and_(m.CalendarObject.calendar_id == m.Calendar.id,
                                      m.CalendarObject.uid.in_(bindparam("uids", expanding=True))))
)
# and the calendars of the meetings' forums.
_FORUM_URLS = select(m.Forum.id, m.Forum.calendar_url).where(m.Forum.id.in_(bindparam("ids", expanding=True)))


@dataclass(frozen=True)
class Plan:
    """What one attempt of a push job acts on, as the database has it: the calendar (None: no longer
    registered, nothing to do), the object's UID, our record of it (href, ETag; None: none), the
    object's text (None: it should not be in that calendar), the SEQUENCE that text carries and the
    attendees' PARTSTATs in it (by lower-case address)."""

    calendar_id: uuid.UUID | None
    uid: str
    known: tuple[str, str | None] | None
    data: bytes | None
    sequence: int
    partstats: dict[str, str] | None = None


class CalendarPusher:
    """Handler of `calendar.push` jobs: create, update (If-Match) or remove the object."""

    def __init__(self, db: Database, connector: CalendarConnector, settings: Settings, rules: PullRules) -> None:
        self.db = db
        self.connector = connector
        self.settings = settings
        self.rules = rules

    async def prepare(self, payloads: Sequence[dict[str, Any]]) -> list[Plan | None]:
        """The plans of a claim's jobs, read together (the outbox calls this once per claim): a
        constant number of statements, where reading job by job cost four each. A job claimed is
        "running", so a change committed after the claim queues a job of its own that runs after
        this one: a plan read now is as good as one read when the job starts. None for a payload
        that names no meeting (the job fails on it as it would have)."""
        targets: list[tuple[uuid.UUID, str] | None] = []
        for payload in payloads:
            try:
                targets.append((uuid.UUID(payload["meeting_id"]), str(payload["calendar_url"])))
            except (KeyError, TypeError, ValueError):
                targets.append(None)
        plans = await self.plans([t for t in targets if t is not None])
        return [plans[t] if t is not None else None for t in targets]

    async def plans(self, targets: Sequence[tuple[uuid.UUID, str]]) -> dict[tuple[uuid.UUID, str], Plan]:
        """The plan of each (meeting, calendar URL): six statements for any number of them (the
        meetings, their sessions, our objects in the calendars, the forums' calendars, the rooms, the
        people)."""
        if not targets:
            return {}
        ids = list({meeting_id for meeting_id, _ in targets})
        async with self.db.session(write=False) as s:
            meetings = {mt.id: mt for mt in (await s.scalars(_MEETINGS, {"ids": ids})).unique()}
            uids = {mid: meetings[mid].uid if mid in meetings else f"{mid}@forumbridge" for mid in ids}
            calendars: dict[str, uuid.UUID] = {}
            recorded: dict[tuple[uuid.UUID, str], tuple[str, str | None]] = {}
            for url, calendar_id, uid, href, etag in await s.execute(_FOUND, {
                    "urls": list({url for _, url in targets}), "uids": list(set(uids.values()))}):
                calendars[url] = calendar_id
                if uid is not None:
                    recorded[(calendar_id, uid)] = (href, etag)
            forum_ids = list({mt.forum_id for mt in meetings.values()})
            forum_urls = dict((await s.execute(_FORUM_URLS, {"ids": forum_ids})).all()) if forum_ids else {}
            rows = await EventRows.read(s, meetings.values())
            rendered: dict[uuid.UUID, tuple[bytes, dict[str, str]]] = {}
            plans = {}
            for meeting_id, url in targets:
                meeting, uid, calendar_id = meetings.get(meeting_id), uids[meeting_id], calendars.get(url)
                data, partstats = None, None
                if meeting is not None and calendar_id is not None and shows(
                        meeting, url, forum_urls.get(meeting.forum_id), rows.room_calendars(meeting)):
                    # The same text in every calendar: rendered once per meeting.
                    if meeting_id not in rendered:
                        event = rows.event(meeting, self.settings)
                        rendered[meeting_id] = render_shared(event), {
                            a.email.strip().lower(): a.partstat.upper() for a in event.attendees}
                    data, partstats = rendered[meeting_id]
                plans[(meeting_id, url)] = Plan(calendar_id, uid, recorded.get((calendar_id, uid)), data,
                                                meeting.sequence if meeting else 0, partstats)
        return plans

    async def __call__(self, payload: dict[str, Any], prepared: Plan | None = None) -> Done | None:
        """Converge one object; what the server answered (href, ETag) is recorded by the outbox in
        the transaction that marks the job done. A crash between the server's answer and that
        commit leaves the job to run again: its create then finds the object (412) and adopts it,
        its update finds a changed ETag and reconciles, its delete finds nothing (404).

        `prepared`: the plan `prepare` read for this job with the others of its claim; its first
        attempt acts on it, any further one reads afresh."""
        meeting_id, url = uuid.UUID(payload["meeting_id"]), payload["calendar_url"]
        try:
            for _ in range(ATTEMPTS):
                plan = prepared or (await self.plans([(meeting_id, url)]))[(meeting_id, url)]
                prepared = None
                converged, record = await self._converge(meeting_id, url, plan)
                if converged:
                    return record
            raise RetryLater("the object kept changing under us; trying again later")
        except CalendarUnavailable as exc:
            raise RetryLater(f"calendar server unavailable: {exc}") from exc
        except CalendarAuthError as exc:
            # The operator fixes the account; until then the job waits, visible with this error.
            raise RetryLater(f"calendar server refused our credentials: {exc}") from exc
        except CalendarRejected as exc:
            raise GiveUp(f"calendar server refused the request: {exc}") from exc

    async def _converge(self, meeting_id: uuid.UUID, url: str, plan: Plan) -> tuple[bool, Done | None]:
        """One attempt: (True, what to record) when done, (False, None) when a precondition failed and
        the state was reconciled (try again)."""
        calendar_id, uid, known, data, sequence = plan.calendar_id, plan.uid, plan.known, plan.data, plan.sequence
        if calendar_id is None:
            return True, None
        if data is None:
            # Also without a record: a create whose answer was lost (server killed after storing
            # it) left an object we never recorded. Its name follows from the UID; 404 is done.
            await self.connector.delete(url, known[0] if known else self.connector.object_href(url, uid), None)
            if known is None:
                return True, None
            return True, Done(functools.partial(self._forget, calendar_id, uid))
        try:
            href, etag = await self.connector.put(url, uid, data, known[1] if known else None,
                                                  known[0] if known else None)
        except CalendarPreconditionFailed:
            await self._reconcile(calendar_id, url, known[0] if known else self.connector.object_href(url, uid), uid)
            return False, None
        except CalendarUidConflict as exc:
            raise GiveUp(f"another object in {url} holds the UID {uid}: {exc}") from exc
        if etag is None:
            # The server changed what we sent (RFC 4791 says it then sends no ETag): read its version.
            stored = await self.connector.get(url, href)
            etag = stored.etag if stored else None
        return True, Done(functools.partial(self._record, calendar_id, meeting_id, uid, href, etag, sequence,
                                            plan.partstats))

    async def _reconcile(self, calendar_id: uuid.UUID, url: str, href: str, uid: str) -> None:
        """412: someone changed or created the object; apply the pull rules to what is there now."""
        remote: RemoteObject | None = await self.connector.get(url, href)
        actor = Actor(f"calendar:{url}", frozenset({"secretariat"}))
        outcomes: list[str] = []
        async with UnitOfWork(self.db, actor, write=True) as uow:
            cal = await uow.session.get(m.Calendar, calendar_id)
            if cal is None:
                return
            obj = await uow.session.scalar(select(m.CalendarObject).where(
                m.CalendarObject.calendar_id == calendar_id, m.CalendarObject.uid == uid))
            if remote is None:
                # Gone: create afresh next attempt.
                if obj is not None:
                    await uow.session.delete(obj)
            elif obj is None:
                # Ours from an earlier attempt whose record was lost: adopt it.
                meeting = await uow.session.scalar(select(m.Meeting).where(m.Meeting.uid == uid))
                uow.session.add(m.CalendarObject(calendar_id=calendar_id, meeting_id=meeting.id if meeting else None,
                                                 uid=uid, href=remote.href, etag=remote.etag))
            else:
                move = await self.rules.changed(uow, cal, Seen(remote.href, remote.etag, parse_event(remote.data)))
                if move is not None:
                    outcomes = await self.rules.apply_moves(uow, cal, [move])
            await uow.commit()
        for outcome in outcomes:
            self.rules.meetings.on_booking(outcome)

    async def _record(self, calendar_id: uuid.UUID, meeting_id: uuid.UUID, uid: str, href: str,
                      etag: str | None, sequence: int, partstats: dict[str, str] | None,
                      session: AsyncSession) -> None:
        """Store the object's href, ETag, SEQUENCE and PARTSTATs in `session`: one upsert on (calendar, UID).

        A new row links the meeting only while it still exists; an existing row keeps its link.
        """
        await session.execute(_upsert_object(self.db.dialect), {
            "id": uuid.uuid4(), "calendar_id": calendar_id, "meeting_id": meeting_id, "uid": uid, "href": href,
            "etag": etag, "sequence": sequence, "partstats": partstats})

    @staticmethod
    async def _forget(calendar_id: uuid.UUID, uid: str, session: AsyncSession) -> None:
        """Drop the record of the object removed from the calendar, in `session`."""
        await session.execute(delete(m.CalendarObject).where(
            m.CalendarObject.calendar_id == calendar_id, m.CalendarObject.uid == uid))
