"""A meeting as its calendar objects show it, read from the database."""
from __future__ import annotations

import uuid

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.calendar.ical import Event, EventAttendee, EventRoom, EventSession
from service.db import models as m
from service.settings import Settings

PARTSTAT = {"accepted": "ACCEPTED", "declined": "DECLINED", "tentative": "TENTATIVE", "needs-action": "NEEDS-ACTION"}


# The reads of `build_event`, built once (a push runs them for every object it writes), as plain
# columns: the meeting's rooms with their sites, and its invited people.
_ROOMS = (select(m.Room.id, m.Room.name.label("room"), m.Room.video_endpoint, m.Site.name.label("site"), m.Site.city)
          .join(m.Site, m.Site.id == m.Room.site_id).where(m.Room.id.in_(bindparam("ids", expanding=True))))
_PEOPLE = (select(m.Person.name, m.Person.email, m.Invitation.rsvp, m.Invitation.mode)
           .join(m.Person, m.Person.id == m.Invitation.person_id)
           .where(m.Invitation.meeting_id == bindparam("meeting_id")).order_by(m.Person.name))


async def build_event(session: AsyncSession, meeting: m.Meeting, settings: Settings) -> Event:
    """Everything a calendar copy of `meeting` says; no personal links."""
    room_ids = [uuid.UUID(r) for r in meeting.room_ids]
    rooms = {row.id: row for row in await session.execute(_ROOMS, {"ids": room_ids})} if room_ids else {}
    people = (await session.execute(_PEOPLE, {"meeting_id": meeting.id})).all()
    conf = meeting.conference
    host = rooms.get(room_ids[0]) if room_ids else None
    return Event(
        uid=meeting.uid,
        sequence=meeting.sequence,
        status="CANCELLED" if meeting.status == "cancelled" else "CONFIRMED",
        title=meeting.title,
        description=meeting.description,
        starts_at=meeting.starts_at,
        ends_at=meeting.ends_at,
        timezone=meeting.timezone,
        organizer_name=settings.organizer.name,
        organizer_email=settings.organizer.email,
        dtstamp=meeting.updated_at,
        created=meeting.created_at,
        last_modified=meeting.updated_at,
        rooms=tuple(EventRoom(name=rooms[r].room, site=rooms[r].site, city=rooms[r].city) for r in room_ids if r in rooms),
        sessions=tuple(
            EventSession(title=s.title, starts_at=s.starts_at, ends_at=s.ends_at, topic=s.topic)
            for s in sorted(meeting.sessions, key=lambda s: (s.starts_at, s.id))
        ),
        attendees=tuple(
            EventAttendee(name=name, email=email, partstat=PARTSTAT.get(rsvp, "NEEDS-ACTION"),
                          role="REQ-PARTICIPANT", remote=mode == "remote")
            for name, email, rsvp, mode in people
        ),
        url=conf.host_url if conf is not None and conf.status == "active" else None,
        conference_url=conf.host_url if conf is not None and conf.status == "active" else None,
        sip_uri=(conf.sip_uri if conf is not None and conf.sip_uri else None) or (host.video_endpoint if host else None),
    )


async def belongs(session: AsyncSession, meeting: m.Meeting | None, calendar_url: str) -> bool:
    """Whether the calendar at `calendar_url` should hold a copy of `meeting` now.

    A forum calendar keeps a cancelled meeting (STATUS:CANCELLED); a room calendar
    holds only planned meetings booked in that room.
    """
    if meeting is None:
        return False
    forum_url = await session.scalar(select(m.Forum.calendar_url).where(m.Forum.id == meeting.forum_id))
    if forum_url == calendar_url:
        return True
    if meeting.status != "planned" or not meeting.room_ids:
        return False
    ids = [uuid.UUID(r) for r in meeting.room_ids]
    return bool(await session.scalar(select(m.Room.id).where(m.Room.id.in_(ids), m.Room.calendar_url == calendar_url)))
