"""A meeting as its calendar objects show it, read from the database."""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.calendar.ical import Event, EventAttendee, EventRoom, EventSession
from service.db import models as m
from service.settings import Settings

PARTSTAT = {"accepted": "ACCEPTED", "declined": "DECLINED", "tentative": "TENTATIVE", "needs-action": "NEEDS-ACTION"}


# The reads of `build_events`, built once (a push runs them for every claim of jobs), as plain
# columns: the meetings' rooms with their sites (and calendars, for `shows`), and their invited people.
_ROOMS = (select(m.Room.id, m.Room.name.label("room"), m.Room.video_endpoint, m.Room.calendar_url,
                 m.Site.name.label("site"), m.Site.city)
          .join(m.Site, m.Site.id == m.Room.site_id).where(m.Room.id.in_(bindparam("ids", expanding=True))))
_PEOPLE = (select(m.Invitation.meeting_id, m.Person.name, m.Person.email, m.Invitation.rsvp, m.Invitation.mode)
           .join(m.Person, m.Person.id == m.Invitation.person_id)
           .where(m.Invitation.meeting_id.in_(bindparam("meeting_ids", expanding=True)))
           .order_by(m.Person.name, m.Person.id))


def conference_shown(conf: m.Conference | None) -> tuple[str | None, str | None]:
    """What calendar copies of a meeting show of its conference: its link while it is active (URL,
    CONFERENCE), and its SIP address (else the host room's, see `EventRows.event`)."""
    if conf is None:
        return None, None
    return (conf.host_url if conf.status == "active" else None), (conf.sip_uri or None)


class EventRows:
    """What the events of some meetings need besides the meetings: their rooms and invited people,
    read in two statements however many meetings there are."""

    def __init__(self, rooms: dict[uuid.UUID, Any], people: dict[uuid.UUID, list[Any]]) -> None:
        self.rooms = rooms
        self.people = people

    @classmethod
    async def read(cls, session: AsyncSession, meetings: Iterable[m.Meeting]) -> EventRows:
        meetings = list(meetings)
        room_ids = list({uuid.UUID(r) for mt in meetings for r in mt.room_ids})
        rooms = {row.id: row for row in await session.execute(_ROOMS, {"ids": room_ids})} if room_ids else {}
        people: dict[uuid.UUID, list[Any]] = {}
        if meetings:
            for row in await session.execute(_PEOPLE, {"meeting_ids": [mt.id for mt in meetings]}):
                people.setdefault(row.meeting_id, []).append(row)
        return cls(rooms, people)

    def room_calendars(self, meeting: m.Meeting) -> set[str]:
        """The calendar URLs of the rooms `meeting` books."""
        rooms = (self.rooms.get(uuid.UUID(r)) for r in meeting.room_ids)
        return {room.calendar_url for room in rooms if room is not None and room.calendar_url}

    def event(self, meeting: m.Meeting, settings: Settings) -> Event:
        """Everything a calendar copy of `meeting` says; no personal links."""
        room_ids = [uuid.UUID(r) for r in meeting.room_ids]
        rooms = self.rooms
        link, sip = conference_shown(meeting.conference)
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
            rooms=tuple(EventRoom(name=rooms[r].room, site=rooms[r].site, city=rooms[r].city)
                        for r in room_ids if r in rooms),
            sessions=tuple(
                EventSession(title=s.title, starts_at=s.starts_at, ends_at=s.ends_at, topic=s.topic)
                for s in sorted(meeting.sessions, key=lambda s: (s.starts_at, s.id))
            ),
            attendees=tuple(
                EventAttendee(name=p.name, email=p.email, partstat=PARTSTAT.get(p.rsvp, "NEEDS-ACTION"),
                              role="REQ-PARTICIPANT", remote=p.mode == "remote")
                for p in self.people.get(meeting.id, ())
            ),
            url=link,
            conference_url=link,
            sip_uri=sip or (host.video_endpoint if host else None),
        )


async def build_events(session: AsyncSession, meetings: Sequence[m.Meeting], settings: Settings) -> list[Event]:
    """The events of `meetings`, in their order; no personal links."""
    rows = await EventRows.read(session, meetings)
    return [rows.event(meeting, settings) for meeting in meetings]


async def build_event(session: AsyncSession, meeting: m.Meeting, settings: Settings) -> Event:
    """Everything a calendar copy of `meeting` says; no personal links."""
    return (await build_events(session, [meeting], settings))[0]


def shows(meeting: m.Meeting | None, calendar_url: str, forum_url: str | None, room_urls: Iterable[str]) -> bool:
    """Whether the calendar at `calendar_url` should hold a copy of `meeting` now, given the calendar
    of the meeting's forum and those of the rooms it books.

    A forum calendar keeps a cancelled meeting (STATUS:CANCELLED); a room calendar
    holds only planned meetings booked in that room.
    """
    if meeting is None:
        return False
    if forum_url == calendar_url:
        return True
    return meeting.status == "planned" and bool(meeting.room_ids) and calendar_url in room_urls
