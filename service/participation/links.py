"""What a personal join link opens: the participant's page, the join redirect, their calendar copy, RSVP."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Sequence

from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.calendar.plan import plan_meeting
from service.calendar.ical import EventAttendee, render_personal
from service.calendar.snapshot import build_event
from service.db import models as m
from service.db.engine import Database
from service.errors import DomainError
from service.participation.errors import LinkGone, LinkUnknown, NoVideo
from service.links import LinkKeys, plausible, token_hash
from service.participation.joins import GroupCommit
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


# What a join needs, for a whole batch of token hashes in one statement: the link's state and the
# columns of the meeting, its conference (outer join: there may be none), the invitation and the person.
_JT, _INV, _MEETING, _PERSON, _CONF = (t.__table__ for t in (m.JoinToken, m.Invitation, m.Meeting, m.Person, m.Conference))
_RESOLVE_MANY = (
    select(_JT.c.token_hash, _JT.c.revoked_at, _JT.c.generation, _INV.c.token_generation,
           _INV.c.id.label("invitation_id"), _PERSON.c.name, _PERSON.c.email,
           _MEETING.c.id.label("meeting_id"), _MEETING.c.forum_id, _MEETING.c.title, _MEETING.c.starts_at,
           _MEETING.c.ends_at, _MEETING.c.status, _CONF.c.provider, _CONF.c.provider_ref, _CONF.c.host_url,
           _CONF.c.sip_uri, _CONF.c.dial_in, _CONF.c.status.label("conference_status"))
    .select_from(_JT)
    .join(_INV, _INV.c.id == _JT.c.invitation_id)
    .join(_MEETING, _MEETING.c.id == _INV.c.meeting_id)
    .join(_PERSON, _PERSON.c.id == _INV.c.person_id)
    .outerjoin(_CONF, _CONF.c.meeting_id == _MEETING.c.id)
    .where(_JT.c.token_hash.in_(bindparam("hashes", expanding=True)))
)
_RECORD = insert(m.AttendanceEvent.__table__)


# The columns of each row that VideoGateway.personal_url reads, without loading ORM objects.
@dataclass(frozen=True, slots=True)
class _MeetingRef:
    id: uuid.UUID
    forum_id: uuid.UUID
    title: str
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True, slots=True)
class _ConferenceRef:
    provider: str
    provider_ref: str | None
    host_url: str | None
    sip_uri: str | None
    dial_in: str | None
    status: str


@dataclass(frozen=True, slots=True)
class _InvitationRef:
    id: uuid.UUID


@dataclass(frozen=True, slots=True)
class _PersonRef:
    name: str
    email: str


@dataclass(frozen=True, slots=True)
class _Link:
    """One token's row: its state, whose it is, and which meeting it opens."""

    revoked_at: datetime | None
    generation: int
    current_generation: int
    invitation: _InvitationRef
    person: _PersonRef
    meeting_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class _Target:
    """A meeting of the batch, made once however many of its links are opened."""

    status: str
    meeting: _MeetingRef
    conference: _ConferenceRef | None


@dataclass(frozen=True, slots=True)
class Opened:
    """A link open that has been recorded: what its personal video URL is made of."""

    meeting: _MeetingRef
    conference: _ConferenceRef
    invitation: _InvitationRef
    person: _PersonRef


class Links:
    def __init__(self, db: Database, keys: LinkKeys, settings: Settings, video: VideoGateway) -> None:
        self.db = db
        self.keys = keys
        self.settings = settings
        self.video = video
        self.grace = timedelta(minutes=settings.join.grace_minutes)
        # Concurrent joins share transactions, and each waits for its own commit. SQLite has one
        # writer; on PostgreSQL a few transactions at once overlap their log flushes.
        lanes = 1 if db.is_sqlite else max(1, min(4, settings.database.pool_size // 2))
        self.opens: GroupCommit[str, Opened] = GroupCommit(db.writer, self._record_opens, concurrency=lanes)

    def _check(self, revoked_at: datetime | None, generation: int, current: int, ends_at: datetime,
               at: datetime) -> None:
        """A link that was replaced, revoked or has expired is gone (410)."""
        if revoked_at is not None or generation != current:
            raise LinkGone("this link has been replaced by a newer one")
        if at > ends_at + self.grace:
            raise LinkGone("this link has expired with its meeting")

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
        self._check(jt.revoked_at, jt.generation, inv.token_generation, meeting.ends_at, now())
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
        if not plausible(token):
            raise LinkUnknown("no such link")
        opened = await self.opens.submit(token_hash(token))
        return self.video.personal_url(opened.meeting, opened.conference, opened.invitation,  # type: ignore[arg-type]
                                       opened.person)

    async def _record_opens(self, conn: AsyncConnection, hashes: Sequence[str]) -> list[Opened | DomainError]:
        """One batch of joins, in one transaction: resolve every token in one query, then write a
        link_opened event for each valid one in one statement. A bad link fails only its own join."""
        links: dict[str, _Link] = {}
        meetings: dict[uuid.UUID, _Target] = {}
        for (digest, revoked_at, generation, current, invitation_id, name, email, meeting_id, forum_id, title,
             starts_at, ends_at, status, provider, ref, host_url, sip_uri, dial_in, conference_status) in (
                await conn.execute(_RESOLVE_MANY, {"hashes": list(set(hashes))})):
            links[digest] = _Link(revoked_at, generation, current, _InvitationRef(invitation_id),
                                  _PersonRef(name, email), meeting_id)
            if meeting_id not in meetings:
                conference = None if provider is None else _ConferenceRef(
                    provider, ref, host_url, sip_uri, dial_in, conference_status)
                meetings[meeting_id] = _Target(status, _MeetingRef(meeting_id, forum_id, title, starts_at, ends_at),
                                               conference)
        at = now()
        outcomes: list[Opened | DomainError] = []
        events: list[dict[str, Any]] = []
        for digest in hashes:
            try:
                opened = self._opened(links.get(digest), meetings, at)
            except DomainError as exc:
                outcomes.append(exc)
                continue
            outcomes.append(opened)
            events.append({"id": uuid.uuid4(), "invitation_id": opened.invitation.id, "kind": "link_opened",
                           "at": at, "source": "link", "dedup_key": None, "recorded_at": at})
        if events:
            await conn.execute(_RECORD, events)
        return outcomes

    def _opened(self, link: _Link | None, meetings: dict[uuid.UUID, _Target], at: datetime) -> Opened:
        if link is None:
            raise LinkUnknown("no such link")
        target = meetings[link.meeting_id]
        self._check(link.revoked_at, link.generation, link.current_generation, target.meeting.ends_at, at)
        if target.status != "planned":
            raise LinkGone("the meeting has been cancelled")
        if target.conference is None:
            raise NoVideo("this meeting has no video conference")
        return Opened(target.meeting, target.conference, link.invitation, link.person)

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
