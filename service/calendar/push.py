"""The calendar push job: make one calendar's copy of one meeting match the database."""
from __future__ import annotations

import functools
import logging
import uuid
from typing import Any

from sqlalchemy import and_, bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

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
from service.calendar.snapshot import belongs, build_event
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
    )
    return stmt.on_conflict_do_update(
        index_elements=["calendar_id", "uid"],
        set_={"href": stmt.excluded.href, "etag": stmt.excluded.etag, "sequence": stmt.excluded.sequence},
    )


# A job's reads, built once (a push runs them for every object it writes):
# the meeting with its sessions and conference in one query (not three, as `get` would);
_MEETING = (select(m.Meeting).where(m.Meeting.id == bindparam("id"))
            .options(joinedload(m.Meeting.sessions), joinedload(m.Meeting.conference)))
# the calendar, our object's href and ETag in it (None: no object recorded) and the calendar of the
# meeting's forum (none without a meeting), as plain columns.
_FOUND = (
    select(m.Calendar.id, m.CalendarObject.id.is_not(None), m.CalendarObject.href, m.CalendarObject.etag,
           select(m.Forum.calendar_url).where(m.Forum.id == bindparam("forum_id")).scalar_subquery())
    .where(m.Calendar.url == bindparam("url"))
    .outerjoin(m.CalendarObject, and_(m.CalendarObject.calendar_id == m.Calendar.id,
                                      m.CalendarObject.uid == bindparam("uid")))
)


class CalendarPusher:
    """Handler of `calendar.push` jobs: create, update (If-Match) or remove the object."""

    def __init__(self, db: Database, connector: CalendarConnector, settings: Settings, rules: PullRules) -> None:
        self.db = db
        self.connector = connector
        self.settings = settings
        self.rules = rules

    async def __call__(self, payload: dict[str, Any]) -> Done | None:
        """Converge one object; what the server answered (href, ETag) is recorded by the outbox in
        the transaction that marks the job done. A crash between the server's answer and that
        commit leaves the job to run again: its create then finds the object (412) and adopts it,
        its update finds a changed ETag and reconciles, its delete finds nothing (404)."""
        meeting_id, url = uuid.UUID(payload["meeting_id"]), payload["calendar_url"]
        try:
            for _ in range(ATTEMPTS):
                converged, record = await self._converge(meeting_id, url)
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

    async def _converge(self, meeting_id: uuid.UUID, url: str) -> tuple[bool, Done | None]:
        """One attempt: (True, what to record) when done, (False, None) when a precondition failed and
        the state was reconciled (try again)."""
        async with self.db.session(write=False) as s:
            meeting = (await s.execute(_MEETING, {"id": meeting_id})).unique().scalar_one_or_none()
            uid = meeting.uid if meeting else f"{meeting_id}@forumbridge"
            found = (await s.execute(_FOUND, {"url": url, "uid": uid,
                                              "forum_id": meeting.forum_id if meeting else None})).first()
            if found is None:
                return True, None
            calendar_id, recorded, recorded_href, recorded_etag, in_forum = found
            # A forum's calendar holds all its meetings; for any other, ask the rules.
            wanted = meeting is not None and (in_forum == url or await belongs(s, meeting, url))
            data = render_shared(await build_event(s, meeting, self.settings)) if wanted and meeting else None
            known = (recorded_href, recorded_etag) if recorded else None
            sequence = meeting.sequence if meeting else 0
        if data is None:
            # Also without a record: a create whose answer was lost (server killed after storing
            # it) left an object we never recorded. Its name follows from the UID; 404 is done.
            await self.connector.delete(url, known[0] if known else self.connector.object_href(url, uid), None)
            if known is None:
                return True, None
            return True, Done(functools.partial(self._forget, calendar_id, uid))
        try:
            href, etag = await self.connector.put(url, uid, data, known[1] if known else None)
        except CalendarPreconditionFailed:
            await self._reconcile(calendar_id, url, known[0] if known else self.connector.object_href(url, uid), uid)
            return False, None
        except CalendarUidConflict as exc:
            raise GiveUp(f"another object in {url} holds the UID {uid}: {exc}") from exc
        if etag is None:
            # The server changed what we sent (RFC 4791 says it then sends no ETag): read its version.
            stored = await self.connector.get(url, href)
            etag = stored.etag if stored else None
        return True, Done(functools.partial(self._record, calendar_id, meeting_id, uid, href, etag, sequence))

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
                      etag: str | None, sequence: int, session: AsyncSession) -> None:
        """Store the object's href, ETag and SEQUENCE in `session`: one upsert on (calendar, UID).

        A new row links the meeting only while it still exists; an existing row keeps its link.
        """
        await session.execute(_upsert_object(self.db.dialect), {
            "id": uuid.uuid4(), "calendar_id": calendar_id, "meeting_id": meeting_id, "uid": uid, "href": href,
            "etag": etag, "sequence": sequence})

    @staticmethod
    async def _forget(calendar_id: uuid.UUID, uid: str, session: AsyncSession) -> None:
        """Drop the record of the object removed from the calendar, in `session`."""
        await session.execute(delete(m.CalendarObject).where(
            m.CalendarObject.calendar_id == calendar_id, m.CalendarObject.uid == uid))
