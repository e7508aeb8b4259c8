"""What a personal join link opens: the participant's page, the join redirect, their calendar copy, RSVP."""
from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from connectors.video import ConferenceInfo, MeetingInfo, Participant
from service.calendar.plan import plan_meeting
from service.calendar.ical import EventAttendee, render_personal
from service.calendar.snapshot import build_event
from service.db import models as m
from service.db.engine import Database
from service.errors import DomainError, Unavailable
from service.participation.errors import LinkGone, LinkUnknown, NoVideo
from service.links import LinkKeys, plausible, token_hash
from service.participation.joins import GroupCommit
from service.participation.video import VideoGateway, room_key
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
# It runs on the connection's driver, not through SQLAlchemy: its layers cost more per row than the
# statement itself (see the join section of bench/BENCHMARKS.md). The values are stored as the
# models' types store them: on SQLite UUIDs as 32 hex digits and times as naive UTC text.
log = logging.getLogger(__name__)

_RESOLVE_COLUMNS = """
    SELECT jt.token_hash, jt.revoked_at, jt.generation, inv.token_generation, inv.id, p.name, p.email,
           mt.id, mt.forum_id, mt.title, mt.starts_at, mt.ends_at, mt.status,
           c.provider, c.provider_ref, c.host_url, c.sip_uri, c.dial_in, c.status
      FROM join_tokens jt
      JOIN invitations inv ON inv.id = jt.invitation_id
      JOIN meetings mt ON mt.id = inv.meeting_id
      JOIN people p ON p.id = inv.person_id
      LEFT OUTER JOIN conferences c ON c.meeting_id = mt.id
"""
# One statement text whatever the batch's size, so that the driver's statement cache keeps it prepared;
# both use the unique index on token_hash.
_RESOLVE_SQLITE = _RESOLVE_COLUMNS + " WHERE jt.token_hash IN (SELECT value FROM json_each(?))"
_RECORD_SQLITE = ("INSERT INTO attendance_events (id, invitation_id, kind, at, source, dedup_key, recorded_at) "
                  "VALUES (?, ?, 'link_opened', ?, 'link', NULL, ?)")
# On PostgreSQL the lookup and the writing are one statement, one round trip, committed on its own:
# every asked hash (repeats included) whose link opens its meeting's video gets its link_opened row.
# The conditions are those of `Links._opened` and of `VideoGateway.personal_url`, which then give each
# join the same outcome: a conference that is active, and for a static room one with a web link (a
# room reached by SIP only has no personal link to give, and a join refused is no presence).
_OPEN_PG = """
    WITH found AS (""" + _RESOLVE_COLUMNS.replace("SELECT jt.token_hash,", "SELECT jt.token_hash AS digest,") \
    .replace("inv.id,", "inv.id AS invitation_id,").replace("mt.ends_at, mt.status,", "mt.ends_at AS ends, mt.status AS state,") \
    .replace("c.provider,", "c.provider AS video,") + """
         WHERE jt.token_hash = ANY($1::varchar[])),
    opened AS (
        INSERT INTO attendance_events (id, invitation_id, kind, at, source, dedup_key, recorded_at)
        SELECT gen_random_uuid(), f.invitation_id, 'link_opened', $2::timestamptz, 'link', NULL, $2::timestamptz
          FROM unnest($1::varchar[]) AS asked (digest) JOIN found f ON f.digest = asked.digest
         WHERE f.revoked_at IS NULL AND f.generation = f.token_generation AND $2::timestamptz <= f.ends + $3::interval
           AND f.state = 'planned' AND f.video IS NOT NULL AND f.ends > f.starts_at
           AND f.status = 'active' AND (f.video <> 'static' OR f.host_url IS NOT NULL)
        RETURNING 1)
    SELECT found.*, (SELECT count(*) FROM opened) FROM found
"""


def _same(value: Any) -> Any:
    return value


def _sqlite_time(value: str) -> datetime:
    """A time as SQLAlchemy stores UTCDateTime on SQLite (``2027-04-05 07:00:00.000000``), made aware."""
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class _Link:
    """One token's row: its state, whose it is, and which meeting it opens."""

    revoked_at: Any
    generation: int
    current_generation: int
    invitation_id: uuid.UUID
    name: str
    email: str
    meeting_id: Any  # as the driver gives it: the key of the batch's meetings


@dataclass(frozen=True, slots=True)
class _Target:
    """A meeting of the batch, made once however many of its links are opened: what the
    video provider is given for it."""

    status: str
    ends_at: datetime
    meeting: MeetingInfo | None  # None: its data cannot make a video link (`problem` says why)
    conference: ConferenceInfo | None
    conference_status: str | None
    problem: str = ""


@dataclass(frozen=True, slots=True)
class Opened:
    """A link open that has been recorded: what its personal video URL is made of, and the URL."""

    meeting: MeetingInfo
    conference: ConferenceInfo
    conference_status: str
    who: Participant
    url: str = ""


def _on_sqlite_thread(driver: Any, work: Callable[[sqlite3.Connection], Any]) -> Any:
    """Run `work` with the sqlite3 connection on aiosqlite's own thread, in one hand-over.

    aiosqlite hands each call to its thread and back (a queue and a wake-up of the event loop);
    a transaction through the driver's API would be about ten of them.
    """
    return driver._execute(lambda: work(driver._conn))  # noqa: SLF001 - aiosqlite's only way to run code there


class Links:
    def __init__(self, db: Database, keys: LinkKeys, settings: Settings, video: VideoGateway) -> None:
        self.db = db
        self.keys = keys
        self.settings = settings
        self.video = video
        self.grace = timedelta(minutes=settings.join.grace_minutes)
        # Concurrent joins share transactions, and each waits for its own commit. One transaction
        # at a time, on both databases: each takes every join that arrived while the one before
        # was written, so the batches grow with the load. On PostgreSQL several at once (to overlap
        # their log flushes) made smaller batches and more backends competing for the CPU: under
        # the join benchmark's load, 4 cost 10 to 40% more service CPU per join than 1.
        self.opens: GroupCommit[str, Opened] = GroupCommit(db.writer, self._record_opens, concurrency=1,
                                                           own_transaction=True)

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
        return (await self.opens.submit(token_hash(token))).url

    async def _record_opens(self, conn: AsyncConnection, hashes: Sequence[str]) -> list[Opened | DomainError]:
        """One batch of joins, in one transaction of its own: resolve every token in one query, then write
        a link_opened event for each valid one in one statement, and commit. A bad link fails only its
        own join. On SQLite the whole transaction is one call on the driver's thread."""
        driver = (await conn.get_raw_connection()).driver_connection
        if self.db.is_sqlite:
            return await _on_sqlite_thread(driver, lambda db: self._record_opens_sqlite(db, hashes))
        at = now()
        rows = await driver.fetch(_OPEN_PG, list(hashes), at, self.grace)
        outcomes, events = self._outcomes(hashes, [tuple(r)[:-1] for r in rows], at, _same, _same)
        written = rows[0][-1] if rows else 0
        if written != len(events):
            log.error("join batch: %d link_opened rows written for %d redirects", written, len(events))
        return outcomes

    def _record_opens_sqlite(self, db: sqlite3.Connection, hashes: Sequence[str]) -> list[Opened | DomainError]:
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute(_RESOLVE_SQLITE, (json.dumps(list(set(hashes))),)).fetchall()
                at = now()
                outcomes, events = self._outcomes(hashes, rows, at, uuid.UUID, _sqlite_time)
                if events:
                    stamp = at.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")
                    db.executemany(_RECORD_SQLITE, [(uuid.uuid4().hex, invitation, stamp, stamp)
                                                    for invitation in events])
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except (sqlite3.OperationalError, sqlite3.InterfaceError) as exc:  # locked, busy, disk I/O
            raise Unavailable("the database cannot be reached; try again shortly") from exc
        return outcomes

    def _outcomes(self, hashes: Sequence[str], rows: Sequence[tuple[Any, ...]], at: datetime,
                  ident: Callable[[Any], uuid.UUID], moment: Callable[[Any], datetime],
                  ) -> tuple[list[Opened | DomainError], list[Any]]:
        """Each join's outcome, in order, and the stored invitation ids of the events to write."""
        links: dict[str, tuple[_Link, Any]] = {}
        meetings: dict[Any, _Target] = {}
        for (digest, revoked_at, generation, current, invitation_id, name, email, meeting_id, forum_id, title,
             starts_at, ends_at, status, provider, ref, host_url, sip_uri, dial_in, conference_status) in rows:
            if meeting_id not in meetings:
                ident_ = ident(meeting_id)
                conference = None if provider is None else ConferenceInfo(
                    provider=provider, provider_ref=ref, host_url=host_url, sip_uri=sip_uri, dial_in=dial_in)
                ends = moment(ends_at)
                try:
                    info: MeetingInfo | None = MeetingInfo(
                        meeting_id=str(ident_), title=title, starts_at=moment(starts_at), ends_at=ends,
                        room_key=room_key(ident_), forum_id=str(ident(forum_id)))
                    problem = ""
                except ValueError as exc:  # fails its own joins, not the batch
                    info, problem = None, str(exc)
                meetings[meeting_id] = _Target(status, ends, info, conference, conference_status, problem)
            links[digest] = (_Link(revoked_at, generation, current, ident(invitation_id), name, email, meeting_id),
                             invitation_id)
        outcomes: list[Opened | DomainError] = []
        events: list[Any] = []
        for digest in hashes:
            found = links.get(digest)
            try:
                opened = self._opened(found[0] if found else None, meetings, at)
            except DomainError as exc:
                outcomes.append(exc)
                continue
            outcomes.append(opened)
            events.append(found[1])  # type: ignore[index]
        return outcomes, events

    def _opened(self, link: _Link | None, meetings: dict[Any, _Target], at: datetime) -> Opened:
        if link is None:
            raise LinkUnknown("no such link")
        target = meetings[link.meeting_id]
        self._check(link.revoked_at, link.generation, link.current_generation, target.ends_at, at)
        if target.status != "planned":
            raise LinkGone("the meeting has been cancelled")
        if target.conference is None:
            raise NoVideo("this meeting has no video conference")
        if target.meeting is None:
            raise NoVideo(f"no personal video link can be made: {target.problem}")
        who = Participant(invitation_id=str(link.invitation_id), name=link.name, email=link.email, moderator=False)
        # Made before the open is recorded: a join that gets no video (a conference not ready, a
        # provider that cannot make a personal link) is refused and leaves no trace of presence.
        try:
            url = self.video.personal_url(target.meeting, target.conference, target.conference_status, who)  # type: ignore[arg-type]
        except DomainError:
            raise
        except Exception as exc:  # noqa: BLE001 - one join's failure, not the batch's
            log.exception("join: making the personal video URL failed")
            raise NoVideo("no personal video link can be made now; try again in a minute") from exc
        return Opened(target.meeting, target.conference, target.conference_status, who, url)  # type: ignore[arg-type]

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
