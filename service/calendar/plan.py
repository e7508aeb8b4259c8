"""Which calendars a change touches: one converge job per (meeting, calendar)."""
from __future__ import annotations

import hashlib
import uuid
from typing import Any, Iterable

from sqlalchemy import select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import models as m
from service.errors import Conflict
from service.outbox import enqueue, enqueue_many
from service.timeutil import now

PUSH = "calendar.push"


def push_key(calendar_url: str, meeting_id: uuid.UUID | str) -> str:
    digest = hashlib.sha256(calendar_url.encode()).hexdigest()[:20]
    return f"calendar:{digest}:{meeting_id}"


def _push_job(meeting_id: uuid.UUID | str, calendar_url: str) -> tuple[str, dict[str, Any], str]:
    return PUSH, {"meeting_id": str(meeting_id), "calendar_url": calendar_url}, push_key(calendar_url, meeting_id)


async def enqueue_push(session: AsyncSession, meeting_id: uuid.UUID | str, calendar_url: str) -> None:
    await enqueue(session, *_push_job(meeting_id, calendar_url))


async def plan_meeting(session: AsyncSession, meeting: m.Meeting, previous_room_ids: Iterable[str] = (),
                       previous_forum_id: uuid.UUID | None = None, *, new: bool = False) -> None:
    """Queue a push to every calendar that shows, or showed, `meeting` (`new`: it has no copies yet).

    The calendars come from one statement: the forums', the rooms', and those holding a copy.
    """
    forum_ids = {meeting.forum_id} | ({previous_forum_id} if previous_forum_id else set())
    parts = [select(m.Forum.calendar_url.label("url"))
             .where(m.Forum.id.in_(forum_ids), m.Forum.calendar_url.is_not(None))]
    room_ids = {uuid.UUID(r) for r in (*meeting.room_ids, *previous_room_ids)}
    if room_ids:
        parts.append(select(m.Room.calendar_url.label("url"))
                     .where(m.Room.id.in_(room_ids), m.Room.calendar_url.is_not(None)))
    if not new:
        # Calendars holding a copy already: a copy that should go away is removed there.
        parts.append(select(m.Calendar.url.label("url"))
                     .join(m.CalendarObject, m.CalendarObject.calendar_id == m.Calendar.id)
                     .where(m.CalendarObject.meeting_id == meeting.id))
    urls = set(await session.scalars(union_all(*parts) if len(parts) > 1 else parts[0]))
    await enqueue_many(session, [_push_job(meeting.id, url) for url in sorted(urls)])


async def attach_calendar(session: AsyncSession, url: str | None, purpose: str, owner_id: uuid.UUID,
                          previous_url: str | None) -> None:
    """Register a forum's or room's calendar, and queue its meetings there (and away from the old one)."""
    if url:
        cal = await session.scalar(select(m.Calendar).where(m.Calendar.url == url))
        if cal is not None and cal.owner_id != owner_id and await _still_used(session, cal):
            raise Conflict(f"calendar_url: {url} is already the calendar of another {cal.purpose}", field="calendar_url")
        if cal is None:
            session.add(m.Calendar(url=url, purpose=purpose, owner_id=owner_id))
        else:
            cal.purpose, cal.owner_id, cal.sync_token = purpose, owner_id, None
        await session.flush()
    if purpose == "forum":
        meeting_ids = list(await session.scalars(
            select(m.Meeting.id).where(m.Meeting.forum_id == owner_id, m.Meeting.ends_at > now())))
    else:
        booked = select(m.RoomBooking.meeting_id).where(
            m.RoomBooking.room_id == owner_id, m.RoomBooking.active.is_(True), m.RoomBooking.meeting_id.is_not(None))
        meeting_ids = list(await session.scalars(select(m.Meeting.id).where(m.Meeting.id.in_(booked))))
    targets = [u for u in (url, previous_url) if u]
    jobs = [_push_job(meeting_id, target) for meeting_id in meeting_ids for target in targets]
    if previous_url:
        # Copies left in the old calendar by meetings no longer listed above.
        old = await session.scalars(
            select(m.CalendarObject.meeting_id).join(m.Calendar, m.Calendar.id == m.CalendarObject.calendar_id)
            .where(m.Calendar.url == previous_url, m.CalendarObject.meeting_id.is_not(None)))
        jobs += [_push_job(meeting_id, previous_url) for meeting_id in set(old)]
    # One statement for all of them: a forum of 1,000 meetings took 0.7 s one INSERT at a time, with
    # the calendar server waiting for the first push meanwhile.
    await enqueue_many(session, jobs)


async def _still_used(session: AsyncSession, cal: m.Calendar) -> bool:
    forum = await session.scalar(select(m.Forum.id).where(m.Forum.calendar_url == cal.url))
    room = await session.scalar(select(m.Room.id).where(m.Room.calendar_url == cal.url))
    return bool(forum or room)


