"""Which calendars a change touches: one converge job per (meeting, calendar)."""
from __future__ import annotations

import hashlib
import uuid
from typing import Any, Iterable, Sequence

from sqlalchemy import delete, literal, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import models as m
from service.errors import Conflict
from service.outbox import Job, enqueue, enqueue_many
from service.timeutil import now

PUSH = "calendar.push"


def push_key(calendar_url: str, meeting_id: uuid.UUID | str) -> str:
    digest = hashlib.sha256(calendar_url.encode()).hexdigest()[:20]
    return f"calendar:{digest}:{meeting_id}"


def _push_job(meeting_id: uuid.UUID | str, calendar_url: str) -> Job:
    return PUSH, {"meeting_id": str(meeting_id), "calendar_url": calendar_url}, push_key(calendar_url, meeting_id)


async def enqueue_push(session: AsyncSession, meeting_id: uuid.UUID | str, calendar_url: str) -> None:
    await enqueue(session, *_push_job(meeting_id, calendar_url))


# A changed meeting, with the rooms and the forum it had before the change.
Changed = tuple[m.Meeting, Iterable[str], "uuid.UUID | None"]


async def plan_meeting(session: AsyncSession, meeting: m.Meeting, previous_room_ids: Iterable[str] = (),
                       previous_forum_id: uuid.UUID | None = None, *, new: bool = False) -> None:
    """Queue a push to every calendar that shows, or showed, `meeting` (`new`: it has no copies yet)."""
    await enqueue_many(session, await push_jobs(session, [(meeting, previous_room_ids, previous_forum_id)], new=new))


async def push_jobs(session: AsyncSession, changed: Sequence[Changed], *, new: bool = False) -> list[Job]:
    """A push job to every calendar that shows, or showed, each changed meeting (`new`: none has
    copies yet), in the meetings' order.

    The calendars of all of them come from one statement: the forums', the rooms', and those
    holding a copy, each row keyed by the forum, room or meeting it belongs to.
    """
    forum_ids = {fid for meeting, _, previous in changed for fid in (meeting.forum_id, previous) if fid}
    room_ids = {uuid.UUID(r) for meeting, previous, _ in changed for r in (*meeting.room_ids, *previous)}
    parts = [select(literal("forum").label("kind"), m.Forum.id.label("key"), m.Forum.calendar_url.label("url"))
             .where(m.Forum.id.in_(forum_ids), m.Forum.calendar_url.is_not(None))]
    if room_ids:
        parts.append(select(literal("room"), m.Room.id, m.Room.calendar_url)
                     .where(m.Room.id.in_(room_ids), m.Room.calendar_url.is_not(None)))
    if not new:
        # Calendars holding a copy already: a copy that should go away is removed there.
        parts.append(select(literal("copy"), m.CalendarObject.meeting_id, m.Calendar.url)
                     .join(m.CalendarObject, m.CalendarObject.calendar_id == m.Calendar.id)
                     .where(m.CalendarObject.meeting_id.in_([meeting.id for meeting, _, _ in changed])))
    urls: dict[tuple[str, uuid.UUID], set[str]] = {}
    for kind, key, url in await session.execute(union_all(*parts) if len(parts) > 1 else parts[0]):
        urls.setdefault((kind, key), set()).add(url)
    jobs: list[Job] = []
    for meeting, previous_rooms, previous_forum in changed:
        keys = [("forum", meeting.forum_id), ("forum", previous_forum), ("copy", meeting.id)]
        keys += [("room", uuid.UUID(r)) for r in (*meeting.room_ids, *previous_rooms)]
        wanted = set().union(*(urls.get(k, ()) for k in keys))
        jobs += [_push_job(meeting.id, url) for url in sorted(wanted)]
    return jobs


async def meetings_to_come(session: AsyncSession, meeting_ids: Any) -> list[m.Meeting]:
    """The meetings among `meeting_ids` (a subquery) that have not ended, in id order (so that two
    writes queueing jobs for the same meetings queue them in the same order)."""
    return list(await session.scalars(select(m.Meeting).where(
        m.Meeting.id.in_(meeting_ids), m.Meeting.ends_at > now()).order_by(m.Meeting.id)))


async def attach_calendar(session: AsyncSession, url: str | None, purpose: str, owner_id: uuid.UUID,
                          previous_url: str | None) -> None:
    """Register a forum's or room's calendar, and queue its meetings there (and away from the old one).

    The busy blocks a room had from the calendar it leaves go with it: nothing reads that calendar
    for the room any more, so they would never follow their events again. A calendar given to a new
    owner starts afresh (no sync token, no blocks): its first sync lists it for that owner."""
    if previous_url and previous_url != url:
        await _drop_blocks(session, previous_url)
    if url:
        cal = await session.scalar(select(m.Calendar).where(m.Calendar.url == url))
        if cal is not None and cal.owner_id != owner_id and await _still_used(session, cal, owner_id):
            raise Conflict(f"calendar_url: {url} is already the calendar of another {cal.purpose}", field="calendar_url")
        if cal is None:
            session.add(m.Calendar(url=url, purpose=purpose, owner_id=owner_id))
        else:
            if cal.owner_id != owner_id or cal.purpose != purpose:
                await _drop_blocks(session, url)
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


async def _still_used(session: AsyncSession, cal: m.Calendar, owner_id: uuid.UUID) -> bool:
    """Whether a forum or room other than `owner_id` (whose new URL is flushed already) names `cal`."""
    forum = await session.scalar(select(m.Forum.id).where(m.Forum.calendar_url == cal.url, m.Forum.id != owner_id))
    room = await session.scalar(select(m.Room.id).where(m.Room.calendar_url == cal.url, m.Room.id != owner_id))
    return bool(forum or room)


async def _drop_blocks(session: AsyncSession, url: str) -> None:
    """The busy blocks read from the calendar at `url` removed, their open conflicts resolved."""
    calendar_id = select(m.Calendar.id).where(m.Calendar.url == url).scalar_subquery()
    await session.execute(update(m.Conflict).where(
        m.Conflict.calendar_id == calendar_id, m.Conflict.kind == "calendar_event_overlaps_booking",
        m.Conflict.resolved_at.is_(None)).values(resolved_at=now()))
    await session.execute(delete(m.RoomBooking).where(
        m.RoomBooking.calendar_id == calendar_id, m.RoomBooking.source == "calendar"))


