"""What a personal join link opens: the participant's page, the join redirect, their calendar copy, RSVP."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import select

from service.calendar.plan import plan_meeting
from service.calendar.ical import EventAttendee, render_personal
from service.calendar.snapshot import build_event
from service.db import models as m
from service.db.engine import Database
from service.participation.errors import LinkGone, LinkUnknown, NoVideo
from service.links import LinkKeys, plausible, token_hash
from service.participation.attendance import record
from service.participation.video import VideoGateway
from service.settings import Settings
from service.timeutil import now
from service.usecases.base import Actor, UnitOfWork


@dataclass(frozen=True)
class SessionView:
    title: str
    topic: str | None
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True)
class ParticipantView:
    """Everything the participant's page shows; nothing about anyone else."""

    token: str
    invitation_id: uuid.UUID
    name: str
    email: str
    mode: str
    site: str | None
    rooms: list[str]
    meeting_title: str
    meeting_description: str | None
    starts_at: datetime
    ends_at: datetime
    timezone: str
    status: str
    sessions: list[SessionView]
    rsvp: str
    has_video: bool
    organizer_name: str
    organizer_email: str


class Links:
    def __init__(self, db: Database, keys: LinkKeys, settings: Settings, video: VideoGateway) -> None:
        self.db = db
        self.keys = keys
        self.settings = settings
        self.video = video
        self.grace = timedelta(minutes=settings.join.grace_minutes)

    async def _resolve(self, session, token: str) -> tuple[m.Invitation, m.Meeting, m.Person]:  # noqa: ANN001
        if not plausible(token):
            raise LinkUnknown("no such link")
        row = (await session.execute(
            select(m.JoinToken, m.Invitation, m.Meeting, m.Person)
            .join(m.Invitation, m.Invitation.id == m.JoinToken.invitation_id)
            .join(m.Meeting, m.Meeting.id == m.Invitation.meeting_id)
            .join(m.Person, m.Person.id == m.Invitation.person_id)
            .where(m.JoinToken.token_hash == token_hash(token)))).first()
        if row is None:
            raise LinkUnknown("no such link")
        jt, inv, meeting, person = row
        if jt.revoked_at is not None or jt.generation != inv.token_generation:
            raise LinkGone("this link has been replaced by a newer one")
        if now() > meeting.ends_at + self.grace:
            raise LinkGone("this link has expired with its meeting")
        return inv, meeting, person

    async def view(self, token: str) -> ParticipantView:
        async with self.db.session(write=False) as s:
            inv, meeting, person = await self._resolve(s, token)
            site = await s.get(m.Site, inv.site_id) if inv.site_id else None
            room_ids = [uuid.UUID(r) for r in meeting.room_ids]
            rooms = {r.id: r.name for r in await s.scalars(select(m.Room).where(m.Room.id.in_(room_ids)))} if room_ids else {}
            expected = None if inv.session_ids is None else set(inv.session_ids)
            sessions = [SessionView(x.title, x.topic, x.starts_at, x.ends_at)
                        for x in sorted(meeting.sessions, key=lambda x: x.starts_at)
                        if expected is None or str(x.id) in expected]
            return ParticipantView(
                token=token, invitation_id=inv.id, name=person.name, email=person.email, mode=inv.mode,
                site=site.name if site else None, rooms=[rooms[r] for r in room_ids if r in rooms],
                meeting_title=meeting.title, meeting_description=meeting.description,
                starts_at=meeting.starts_at, ends_at=meeting.ends_at, timezone=meeting.timezone,
                status=meeting.status, sessions=sessions, rsvp=inv.rsvp,
                has_video=meeting.conference is not None and meeting.status == "planned",
                organizer_name=self.settings.organizer.name, organizer_email=self.settings.organizer.email)

    async def join(self, token: str) -> str:
        """Record the link open (committed before this returns) and give the personal video URL, made now."""
        async with UnitOfWork(self.db, Actor("participant"), write=True) as uow:
            inv, meeting, person = await self._resolve(uow.session, token)
            if meeting.status != "planned":
                raise LinkGone("the meeting has been cancelled")
            conference = meeting.conference
            if conference is None:
                raise NoVideo("this meeting has no video conference")
            await record(uow.session, inv.id, "link_opened", now(), "link", None)
            await uow.commit()
        return self.video.personal_url(meeting, conference, inv, person)

    async def rsvp(self, token: str, answer: str) -> None:
        async with UnitOfWork(self.db, Actor("participant"), write=True) as uow:
            inv, meeting, _ = await self._resolve(uow.session, token)
            if inv.rsvp != answer:
                uow.audit("rsvp_from_link", "invitation", inv.id, {"from": inv.rsvp, "to": answer})
                inv.rsvp = answer
                await plan_meeting(uow.session, meeting)
            await uow.commit()

    async def calendar(self, token: str) -> bytes:
        """The participant's own copy: their link in LOCATION (remote), DESCRIPTION, URL and CONFERENCE."""
        async with self.db.session(write=False) as s:
            inv, meeting, person = await self._resolve(s, token)
            event = await build_event(s, meeting, self.settings)
        return personal_copy(event, person, inv, self.keys.url(token))


def personal_copy(event, person: m.Person, inv: m.Invitation, join_url: str, method: str | None = None) -> bytes:  # noqa: ANN001
    """Render `person`'s copy, adding them as an attendee if the event does not list them (a withdrawn invitation)."""
    if not any(a.email.strip().lower() == person.email_key for a in event.attendees):
        event = replace(event, attendees=(*event.attendees, EventAttendee(
            name=person.name, email=person.email, partstat="NEEDS-ACTION", remote=inv.mode == "remote")))
    return render_personal(event, person.email, join_url, method)
