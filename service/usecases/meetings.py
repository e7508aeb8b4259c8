"""Booking: meetings with their rooms and sessions, rescheduling and cancelling."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, Iterable, Sequence, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Select, bindparam, delete, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import api
from service.calendar.plan import Changed, push_jobs
from service.db import models as m
from service.db.engine import Database, sqlstate
from service.errors import Conflict, Invalid, NotFound, RoomConflict
from service.timeutil import now, to_utc
from service.usecases import views
from service.usecases.base import Actor, UnitOfWork, fetch_page
from service.outbox import Job, enqueue_many
from service.usecases.rooms import Want, ensure_free, ensure_free_many

T = TypeVar("T")
MAX_MEETING = timedelta(days=31)
DEFAULT_QUERY_ZONE = "Europe/Stockholm"
# PostgreSQL's guard against overlapping service bookings of a room (migrations 0001 and 0005).
OVERLAP_CONSTRAINT = "room_bookings_no_overlap"
# PostgreSQL's exclusion violation, and the errors after which a retry is the answer.
EXCLUSION_VIOLATION = "23P01"
RETRYABLE = {"40001", "40P01"}


def lost_race(exc: DBAPIError) -> bool:
    """PostgreSQL's word that another transaction won (the room's exclusion constraint, a
    serialization failure, a deadlock): the work may be tried again and then sees the winner."""
    state = sqlstate(exc)
    return state == EXCLUSION_VIOLATION or state in RETRYABLE


@dataclass(frozen=True)
class Span:
    start: datetime
    end: datetime

    @property
    def length(self) -> timedelta:
        return self.end - self.start


def _wall(value: datetime, zone: str) -> datetime:
    """`value` as the clocks in `zone` show it (naive)."""
    return value.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


def _moved_whole(zone: str, old: Span, new: Span) -> bool:
    """Whether a meeting's new time is its old one moved, by the clocks of its zone: the same hours
    from start to end as they read it. A meeting over the night the clocks go forward, moved a week
    on, is a move although it lasts an hour longer."""
    return _wall(new.end, zone) - _wall(new.start, zone) == _wall(old.end, zone) - _wall(old.start, zone)


def _carried(meeting: m.Meeting, old: Span, new: Span, zone: str) -> list[tuple[datetime, datetime]]:
    """The sessions' times (in order of start) after a move as a whole: the same clock times of
    `zone` relative to the meeting's start; one that would fall where the clocks skip or repeat is
    refused, naming it."""
    shift = _wall(new.start, zone) - _wall(old.start, zone)
    return [(to_utc(_wall(row.starts_at, zone) + shift, zone, f"sessions.{i}.starts_at"),
             to_utc(_wall(row.ends_at, zone) + shift, zone, f"sessions.{i}.ends_at"))
            for i, row in enumerate(sorted(meeting.sessions, key=lambda r: r.starts_at))]


def _span(start: datetime, end: datetime, zone: str, prefix: str = "") -> Span:
    s = to_utc(start, zone, f"{prefix}starts_at")
    e = to_utc(end, zone, f"{prefix}ends_at")
    if e <= s:
        raise Invalid(f"{prefix}ends_at", "must be after starts_at")
    return Span(s, e)


def _meeting_span(start: datetime, end: datetime, zone: str) -> Span:
    span = _span(start, end, zone)
    if span.length > MAX_MEETING:
        raise Invalid("ends_at", "a meeting may last at most 31 days")
    return span


def _writable(meeting: m.Meeting | None, meeting_id: uuid.UUID) -> m.Meeting:
    """The meeting, if it may still change."""
    if meeting is None:
        raise NotFound(f"no meeting with id {meeting_id}")
    if meeting.status == "cancelled":
        raise Conflict("the meeting is cancelled; book a new one instead")
    return meeting


async def lock_meetings(s: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, m.Meeting]:
    """The meetings with these ids, read afresh with their sessions; on PostgreSQL their rows stay
    locked until the transaction ends (FOR NO KEY UPDATE, taken in the order of their ids): two
    writes of one meeting (a PATCH and a calendar's move, two calendars' moves) take turns, and
    each raises the SEQUENCE. Rows that merely point at a meeting can still be added meanwhile."""
    stmt = (select(m.Meeting).where(m.Meeting.id.in_(ids)).order_by(m.Meeting.id)
            .execution_options(populate_existing=True))
    if _on_postgresql(s):
        stmt = stmt.with_for_update(of=m.Meeting, key_share=True)
    return {meeting.id: meeting for meeting in await s.scalars(stmt)}


def _on_postgresql(s: AsyncSession) -> bool:
    return s.bind is not None and s.bind.dialect.name == "postgresql"


def _rooms_locked(stmt: Select) -> Select:
    """`stmt` over rooms, their rows locked until the transaction ends (FOR NO KEY UPDATE; foreign
    key checks still pass), always in the order of their ids, whoever locks them: bookings of one
    room take turns between check and insert, and two writers never take two rooms in turn."""
    return stmt.order_by(m.Room.id).with_for_update(key_share=True)


async def lock_rooms(s: AsyncSession, meeting_ids: Sequence[uuid.UUID]) -> None:
    """On PostgreSQL, lock the rooms of these meetings (`_rooms_locked`) all at once: for a write
    that then books them in several steps, each in a savepoint, which would otherwise take them in
    its own order."""
    if not _on_postgresql(s) or not meeting_ids:
        return
    await lock_room_ids(s, {uuid.UUID(r) for mid in meeting_ids
                            if (meeting := await s.get(m.Meeting, mid)) is not None for r in meeting.room_ids})


async def lock_room_ids(s: AsyncSession, room_ids: Iterable[uuid.UUID]) -> None:
    """On PostgreSQL, lock these rooms (`_rooms_locked`) all at once."""
    ids = sorted(set(room_ids))
    if ids and _on_postgresql(s):
        await s.execute(_rooms_locked(select(m.Room.id).where(m.Room.id.in_(ids))))


def _touched(meeting: m.Meeting) -> None:
    """A change calendars must take: the next SEQUENCE (RFC 5545 3.8.7.4)."""
    meeting.sequence += 1
    meeting.updated_at = now()


async def _move_bookings(s: AsyncSession, moves: Sequence[tuple[uuid.UUID, Span]]) -> None:
    """The active bookings of each meeting to its new span, in one statement for all (Core, with a
    row of parameters per meeting: the ORM's bulk update would want primary keys).

    On PostgreSQL the rows are updated one parameter row at a time, and the overlap constraint is
    checked after each; so for several moves it is checked once, after all of them (a meeting may
    take the slot another leaves, as the rules, which see every move at once, allowed). A clash
    raises there, as it would have from the UPDATE.
    """
    bookings = m.RoomBooking.__table__
    conn = await s.connection()
    together = len(moves) > 1 and conn.dialect.name == "postgresql"
    if together:
        await conn.execute(text(f"SET CONSTRAINTS {OVERLAP_CONSTRAINT} DEFERRED"))
    await conn.execute(
        update(bookings).where(bookings.c.meeting_id == bindparam("b_meeting"), bookings.c.active.is_(True))
        .values(starts_at=bindparam("b_start"), ends_at=bindparam("b_end")),
        [{"b_meeting": meeting_id, "b_start": span.start, "b_end": span.end} for meeting_id, span in moves])
    if together:
        await conn.execute(text(f"SET CONSTRAINTS {OVERLAP_CONSTRAINT} IMMEDIATE"))


def _inside(session: Span, meeting: Span, prefix: str) -> None:
    if session.start < meeting.start:
        raise Invalid(f"{prefix}starts_at", "the session starts before its meeting")
    if session.end > meeting.end:
        raise Invalid(f"{prefix}ends_at", "the session ends after its meeting")


class Meetings:
    """The booking use-cases. Every write is one transaction with its audit entry."""

    def __init__(
        self,
        db: Database,
        on_booking: Callable[[str], None] = lambda outcome: None,
        on_change: Callable[[AsyncSession, Sequence[m.Meeting], bool], Awaitable[list[Job]]] | None = None,
        check_provider: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.db = db
        self.on_booking = on_booking
        # In the change's transaction: the jobs that bring participants what they must get (mail, conference).
        self.on_change = on_change
        self.check_provider = check_provider

    async def _changed(self, s: AsyncSession, meeting: m.Meeting, previous_rooms: Iterable[str] = (),
                       previous_forum: uuid.UUID | None = None, new: bool = False) -> None:
        """Queue what the change means for calendars and participants; `new`: the meeting was just
        created, so it has no calendar copies and no invitations yet."""
        await self._changed_many(s, [(meeting, previous_rooms, previous_forum)], new=new)

    async def _changed_many(self, s: AsyncSession, changed: Sequence[Changed], new: bool = False) -> None:
        """`_changed` for several meetings: the calendars of all of them read at once, every job
        queued in one statement."""
        jobs = await push_jobs(s, changed, new=new)
        if self.on_change is not None:
            jobs += await self.on_change(s, [meeting for meeting, _, _ in changed], new)
        await enqueue_many(s, jobs)

    # -- reading ---------------------------------------------------------------
    async def get(self, meeting_id: uuid.UUID) -> api.MeetingOut:
        async with UnitOfWork(self.db, Actor("reader"), write=False) as uow:
            return views.meeting(await self._load(uow, meeting_id))

    async def list(self, q: api.MeetingQuery) -> tuple[list[api.MeetingOut], str | None]:
        stmt = select(m.Meeting)
        if q.forum_id:
            stmt = stmt.where(m.Meeting.forum_id == q.forum_id)
        if q.status:
            stmt = stmt.where(m.Meeting.status == q.status)
        if q.from_:
            stmt = stmt.where(m.Meeting.ends_at > to_utc(q.from_, DEFAULT_QUERY_ZONE, "from"))
        if q.to:
            stmt = stmt.where(m.Meeting.starts_at < to_utc(q.to, DEFAULT_QUERY_ZONE, "to"))
        async with UnitOfWork(self.db, Actor("reader"), write=False) as uow:
            rows, nxt = await fetch_page(
                uow.session, stmt, m.Meeting.starts_at, m.Meeting.id, q.limit, q.cursor, key_is_time=True
            )
            return [views.meeting(r) for r in rows], nxt

    async def busy(self, room_id: uuid.UUID, start: datetime | None, end: datetime | None) -> api.BusyList:
        async with UnitOfWork(self.db, Actor("reader"), write=False) as uow:
            found = (await uow.session.execute(
                select(m.Room.id, m.Site.timezone).outerjoin(m.Site, m.Site.id == m.Room.site_id)
                .where(m.Room.id == room_id))).first()
            if found is None:
                raise NotFound(f"no room with id {room_id}")
            zone = found.timezone or DEFAULT_QUERY_ZONE
            lo = to_utc(start, zone, "from") if start else now()
            hi = to_utc(end, zone, "to") if end else lo + timedelta(days=30)
            if hi <= lo:
                raise Invalid("to", "must be after from")
            if hi - lo > timedelta(days=366):
                raise Invalid("to", "the window may span at most 366 days")
            rows = (
                await uow.session.execute(
                    select(m.RoomBooking.starts_at, m.RoomBooking.ends_at, m.RoomBooking.source,
                           m.RoomBooking.meeting_id, m.RoomBooking.summary, m.Meeting.title)
                    .outerjoin(m.Meeting, m.Meeting.id == m.RoomBooking.meeting_id)
                    .where(
                        m.RoomBooking.room_id == room_id,
                        m.RoomBooking.active.is_(True),
                        m.RoomBooking.starts_at < hi,
                        m.RoomBooking.ends_at > lo,
                    )
                    .order_by(m.RoomBooking.starts_at)
                )
            ).all()
            tz = _tz(zone)
            return api.BusyList(
                room_id=room_id,
                items=[
                    api.BusyOut(
                        starts_at=b.starts_at.astimezone(tz),
                        ends_at=b.ends_at.astimezone(tz),
                        source=b.source,  # type: ignore[arg-type]
                        meeting_id=b.meeting_id,
                        title=b.title if b.title is not None else b.summary,  # a title only where a meeting holds it
                        timezone=zone,
                    )
                    for b in rows
                ],
            )

    # -- booking ---------------------------------------------------------------
    async def create(self, actor: Actor, body: api.MeetingCreate) -> api.MeetingOut:
        async def work(uow: UnitOfWork) -> api.MeetingOut:
            s = uow.session
            zone = body.timezone
            span = _meeting_span(body.starts_at, body.ends_at, zone)
            if not await _forum_exists(s, body.forum_id):
                raise Invalid("forum_id", f"no forum with id {body.forum_id}")
            rooms = await self._rooms(uow, body.room_ids)
            sessions = self._sessions(body.sessions, zone, span)
            await ensure_free(s, rooms, span.start, span.end, None)
            ident = uuid.uuid4()
            meeting = m.Meeting(
                id=ident,
                forum_id=body.forum_id,
                title=body.title,
                description=body.description,
                starts_at=span.start,
                ends_at=span.end,
                timezone=zone,
                status="planned",
                uid=f"{ident}@forumbridge",
                sequence=0,
                room_ids=[str(r) for r in body.room_ids],
                sessions=sessions,
                conference=None,
            )
            if body.conference:
                self.check_provider(body.conference.provider)
                meeting.conference = m.Conference(provider=body.conference.provider, status="pending")
            s.add(meeting)
            await s.flush()
            self._book(uow, meeting, rooms)
            await self._changed(s, meeting, new=True)
            uow.audit("created", "meeting", meeting.id, {
                "title": meeting.title, "starts_at": span.start, "ends_at": span.end,
                "room_ids": meeting.room_ids, "sessions": len(sessions)})
            await uow.commit()
            return views.meeting(meeting)

        return await self._booking(actor, work, counts=True)

    async def update(self, actor: Actor, meeting_id: uuid.UUID, patch: api.MeetingPatch) -> api.MeetingOut:
        given = patch.model_fields_set

        async def work(uow: UnitOfWork) -> api.MeetingOut:
            out = await self.update_in(uow, meeting_id, patch)
            await uow.commit()
            return out

        return await self._booking(actor, work, counts="room_ids" in given or "starts_at" in given or "ends_at" in given)

    async def update_in(self, uow: UnitOfWork, meeting_id: uuid.UUID, patch: api.MeetingPatch) -> api.MeetingOut:
        """`update`'s work in the caller's transaction, which the caller commits (or rolls back)."""
        given = patch.model_fields_set
        s = uow.session
        meeting = await self._writable(uow, meeting_id)
        before_rooms, before_forum = list(meeting.room_ids), meeting.forum_id
        changed: dict[str, Any] = {}
        for name in ("title", "description"):
            if name in given and getattr(patch, name) != getattr(meeting, name):
                if name == "title" and patch.title is None:
                    raise Invalid("title", "may not be null")
                changed[name] = getattr(patch, name)
        if "forum_id" in given and patch.forum_id != meeting.forum_id:
            if patch.forum_id is None or not await _forum_exists(s, patch.forum_id):
                raise Invalid("forum_id", f"no forum with id {patch.forum_id}")
            changed["forum_id"] = patch.forum_id
        zone = patch.timezone if "timezone" in given and patch.timezone else meeting.timezone
        old = Span(meeting.starts_at, meeting.ends_at)
        new = _meeting_span(
            patch.starts_at if patch.starts_at is not None else old.start,
            patch.ends_at if patch.ends_at is not None else old.end,
            zone,
        )
        room_ids = [str(r) for r in patch.room_ids] if patch.room_ids is not None else list(meeting.room_ids)
        rooms = await self._rooms(uow, [uuid.UUID(r) for r in room_ids])
        moved = new != old
        if zone != meeting.timezone:
            changed["timezone"] = zone
        if moved:
            changed.update(starts_at=new.start, ends_at=new.end)
        if room_ids != meeting.room_ids:
            changed["room_ids"] = room_ids
        if patch.sessions is not None:
            sessions = self._sessions(patch.sessions, zone, new)
            changed["sessions"] = len(sessions)
        elif moved:
            sessions = None
            self._sessions_fit(meeting, old, new, meeting.timezone)
        if "conference" in given:
            self._set_conference(meeting, patch.conference, changed)
        if not changed:
            return views.meeting(meeting)
        if moved or "room_ids" in changed:
            await ensure_free(s, rooms, new.start, new.end, meeting.id)
            if "room_ids" in changed:
                await s.execute(
                    delete(m.RoomBooking).where(m.RoomBooking.meeting_id == meeting.id, m.RoomBooking.active.is_(True))
                )
                await s.flush()
                self._book(uow, meeting, rooms, new)
            else:
                await _move_bookings(s, [(meeting.id, new)])
        old_zone = meeting.timezone
        for name in ("title", "description", "forum_id", "timezone", "room_ids"):
            if name in changed:
                setattr(meeting, name, changed[name])
        if patch.sessions is not None:
            await self._replace_sessions(uow, meeting, sessions or [])
        elif moved:
            self._carry_sessions(meeting, old, new, old_zone)
        meeting.starts_at, meeting.ends_at = new.start, new.end
        _touched(meeting)
        await s.flush()
        await self._changed(s, meeting, before_rooms, before_forum)
        uow.audit("rescheduled" if moved else "updated", "meeting", meeting.id, changed)
        return views.meeting(meeting)

    async def reschedule_many(self, uow: UnitOfWork, moves: Sequence[tuple[uuid.UUID, datetime, datetime]]) -> int:
        """Give several meetings a new time each, in the caller's transaction: `update_in`'s rules for
        a new time (rooms kept, sessions taken along), with the room check and the writes made once
        for all of them. Raises as `update_in` would on the first move the rules refuse, having
        changed nothing in the session but the bookings' rows (the caller rolls its savepoint back
        and tries the moves one by one). The last move given for a meeting counts. Returns how
        many meetings got a new time.

        The bookings move first and are then checked all together: two of the moves may not take
        the same room at the same time. (PostgreSQL's exclusion constraint is checked once, after
        the last booking moved, so there too a meeting may take the slot another one leaves.)
        """
        s = uow.session
        wanted = {meeting_id: (starts_at, ends_at) for meeting_id, starts_at, ends_at in moves}
        meetings = await self._lock(uow, list(wanted))
        moved: list[tuple[m.Meeting, Span, Span]] = []
        for meeting_id, (starts_at, ends_at) in wanted.items():
            meeting = _writable(meetings.get(meeting_id), meeting_id)
            patch = api.MeetingPatch(starts_at=starts_at, ends_at=ends_at)  # the API's bounds on a time
            old = Span(meeting.starts_at, meeting.ends_at)
            new = _meeting_span(patch.starts_at or old.start, patch.ends_at or old.end, meeting.timezone)
            if new != old:
                self._sessions_fit(meeting, old, new, meeting.timezone)
                moved.append((meeting, old, new))
        if not moved:
            return 0
        roomed = [(meeting, new) for meeting, _, new in moved if meeting.room_ids]
        if roomed:
            rooms = {r.id: r for r in await self._rooms(uow, list({uuid.UUID(r) for mt, _ in roomed for r in mt.room_ids}))}
            await _move_bookings(s, [(meeting.id, new) for meeting, new in roomed])
            await ensure_free_many(s, [Want([rooms[uuid.UUID(r)] for r in meeting.room_ids], new.start, new.end, meeting.id)
                                       for meeting, new in roomed])
        for meeting, old, new in moved:
            self._carry_sessions(meeting, old, new, meeting.timezone)
            meeting.starts_at, meeting.ends_at = new.start, new.end
            _touched(meeting)
            uow.audit("rescheduled", "meeting", meeting.id, {"starts_at": new.start, "ends_at": new.end})
        await s.flush()
        await self._changed_many(s, [(meeting, meeting.room_ids, meeting.forum_id) for meeting, _, _ in moved])
        return len(moved)

    async def cancel(self, actor: Actor, meeting_id: uuid.UUID) -> api.MeetingOut:
        async with UnitOfWork(self.db, actor, write=True) as uow:
            meeting = await self._load(uow, meeting_id)
            if meeting.status != "cancelled":
                meeting.status = "cancelled"
                _touched(meeting)
                bookings = await uow.session.scalars(
                    select(m.RoomBooking).where(m.RoomBooking.meeting_id == meeting.id, m.RoomBooking.active.is_(True))
                )
                for booking in bookings:
                    booking.active = False
                await self._changed(uow.session, meeting)
                uow.audit("cancelled", "meeting", meeting.id, {"title": meeting.title})
                await uow.commit()
            return views.meeting(meeting)

    # -- sessions --------------------------------------------------------------
    async def list_sessions(self, meeting_id: uuid.UUID) -> list[api.SessionOut]:
        return (await self.get(meeting_id)).sessions

    async def add_session(self, actor: Actor, meeting_id: uuid.UUID, body: api.SessionIn) -> api.SessionOut:
        async with UnitOfWork(self.db, actor, write=True) as uow:
            meeting = await self._writable(uow, meeting_id)
            [row] = self._sessions([body], meeting.timezone, Span(meeting.starts_at, meeting.ends_at), prefix="")
            row.meeting_id = meeting.id
            uow.session.add(row)
            _touched(meeting)
            await uow.session.flush()
            await self._changed(uow.session, meeting)
            uow.audit("session_added", "meeting", meeting.id, {"session_id": row.id, "title": row.title})
            await uow.commit()
            return views.session(row, meeting.timezone)

    async def update_session(
        self, actor: Actor, meeting_id: uuid.UUID, session_id: uuid.UUID, patch: api.SessionPatch
    ) -> api.SessionOut:
        async with UnitOfWork(self.db, actor, write=True) as uow:
            meeting = await self._writable(uow, meeting_id)
            row = self._find_session(meeting, session_id)
            given = patch.model_fields_set
            if "title" in given and patch.title is None:
                raise Invalid("title", "may not be null")
            span = _span(patch.starts_at or row.starts_at, patch.ends_at or row.ends_at, meeting.timezone)
            _inside(span, Span(meeting.starts_at, meeting.ends_at), "")
            changed: dict[str, Any] = {}
            for name in ("title", "topic"):
                if name in given and getattr(patch, name) != getattr(row, name):
                    changed[name] = getattr(patch, name)
            if (span.start, span.end) != (row.starts_at, row.ends_at):
                changed.update(starts_at=span.start, ends_at=span.end)
            if changed:
                for name, value in changed.items():
                    setattr(row, name, value)
                _touched(meeting)
                await self._changed(uow.session, meeting)
                uow.audit("session_updated", "meeting", meeting.id, {"session_id": row.id, **changed})
                await uow.commit()
            return views.session(row, meeting.timezone)

    async def delete_session(self, actor: Actor, meeting_id: uuid.UUID, session_id: uuid.UUID) -> None:
        async with UnitOfWork(self.db, actor, write=True) as uow:
            meeting = await self._writable(uow, meeting_id)
            row = self._find_session(meeting, session_id)
            meeting.sessions.remove(row)
            await self._prune_invitations(uow, meeting.id, {str(session_id)})
            _touched(meeting)
            await self._changed(uow.session, meeting)
            uow.audit("session_removed", "meeting", meeting.id, {"session_id": session_id, "title": row.title})
            await uow.commit()

    # -- helpers ---------------------------------------------------------------
    async def _booking(self, actor: Actor, work: Callable[[UnitOfWork], Awaitable[T]], counts: bool) -> T:
        """Run a booking transaction; on PostgreSQL a lost race surfaces as an
        exclusion violation, and the retry then names the winner."""
        for attempt in range(5):
            try:
                async with UnitOfWork(self.db, actor, write=True) as uow:
                    result = await work(uow)
                if counts:
                    self.on_booking("made")
                return result
            except RoomConflict:
                if counts:
                    self.on_booking("refused")
                raise
            except (IntegrityError, DBAPIError) as exc:
                if not lost_race(exc) or attempt == 4:
                    raise
        raise AssertionError("unreachable")

    async def _load(self, uow: UnitOfWork, meeting_id: uuid.UUID) -> m.Meeting:
        """The meeting; for a write fresh from the database, and on PostgreSQL locked (`_lock`)."""
        meeting = ((await self._lock(uow, [meeting_id])).get(meeting_id) if uow.write
                   else await uow.session.get(m.Meeting, meeting_id))
        if meeting is None:
            raise NotFound(f"no meeting with id {meeting_id}")
        return meeting

    async def _writable(self, uow: UnitOfWork, meeting_id: uuid.UUID) -> m.Meeting:
        return _writable(await self._load(uow, meeting_id), meeting_id)

    async def _lock(self, uow: UnitOfWork, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, m.Meeting]:
        """The meetings with these ids, read afresh (whatever the session held: a rolled-back try of
        a move leaves expired rows there) in one statement, with their sessions."""
        await uow.session.flush()  # nothing of the caller's is overwritten by the fresh read
        return await lock_meetings(uow.session, ids)

    @staticmethod
    def _find_session(meeting: m.Meeting, session_id: uuid.UUID) -> m.Session:
        for row in meeting.sessions:
            if row.id == session_id:
                return row
        raise NotFound(f"no session {session_id} in meeting {meeting.id}")

    async def _rooms(self, uow: UnitOfWork, ids: list[uuid.UUID]) -> list[m.Room]:
        """The rooms a write books. On PostgreSQL their rows stay locked until it ends
        (`_rooms_locked`, after any meeting locks). Without that, two overlapping inserts each
        waited for the other inside the exclusion constraint, a deadlock PostgreSQL breaks only
        after deadlock_timeout (1 s), and under a burst of bookings of one room a request could
        lose every retry."""
        if not ids:
            return []
        stmt = select(m.Room).where(m.Room.id.in_(ids))
        if _on_postgresql(uow.session):
            stmt = _rooms_locked(stmt)
        found = {r.id: r for r in await uow.session.scalars(stmt)}
        for i, ident in enumerate(ids):
            if ident not in found:
                raise Invalid(f"room_ids.{i}", f"no room with id {ident}")
        return [found[i] for i in ids]

    @staticmethod
    def _sessions(items: list[api.SessionIn], zone: str, meeting: Span, prefix: str = "sessions.") -> list[m.Session]:
        rows = []
        for i, item in enumerate(items):
            p = f"{prefix}{i}." if prefix else ""
            span = _span(item.starts_at, item.ends_at, zone, p)
            _inside(span, meeting, p)
            rows.append(m.Session(title=item.title, topic=item.topic, starts_at=span.start, ends_at=span.end))
        return rows

    @staticmethod
    def _sessions_fit(meeting: m.Meeting, old: Span, new: Span, zone: str) -> None:
        """Raise unless the sessions fit the new time: one moved as a whole by the clocks of `zone`
        (the meeting's, before any change of it) takes them along (and they must exist there), one
        resized must still hold them. Changes nothing."""
        if _moved_whole(zone, old, new):
            _carried(meeting, old, new, zone)
        else:
            for i, row in enumerate(sorted(meeting.sessions, key=lambda r: r.starts_at)):
                _inside(Span(row.starts_at, row.ends_at), new, f"sessions.{i}.")

    @staticmethod
    def _carry_sessions(meeting: m.Meeting, old: Span, new: Span, zone: str) -> None:
        """A meeting moved as a whole takes its sessions along (`_sessions_fit`, given the same
        `zone`, has checked a resize)."""
        if _moved_whole(zone, old, new):
            for row, (start, end) in zip(sorted(meeting.sessions, key=lambda r: r.starts_at),
                                         _carried(meeting, old, new, zone)):
                row.starts_at, row.ends_at = start, end

    async def _replace_sessions(self, uow: UnitOfWork, meeting: m.Meeting, rows: list[m.Session]) -> None:
        gone = {str(r.id) for r in meeting.sessions}
        meeting.sessions = rows
        await self._prune_invitations(uow, meeting.id, gone)

    @staticmethod
    async def _prune_invitations(uow: UnitOfWork, meeting_id: uuid.UUID, gone: set[str]) -> None:
        """Drop removed sessions from invitations; one left with none is expected at all."""
        rows = await uow.session.scalars(select(m.Invitation).where(m.Invitation.meeting_id == meeting_id))
        for inv in rows:
            if inv.session_ids is not None and gone & set(inv.session_ids):
                kept = [s for s in inv.session_ids if s not in gone]
                inv.session_ids = kept or None

    def _set_conference(self, meeting: m.Meeting, conf: api.ConferenceIn | None, changed: dict[str, Any]) -> None:
        current = meeting.conference.provider if meeting.conference else None
        wanted = conf.provider if conf else None
        if current == wanted:
            return
        if wanted:
            self.check_provider(wanted)
        meeting.conference = m.Conference(provider=wanted, status="pending") if wanted else None
        changed["conference"] = wanted

    @staticmethod
    def _book(uow: UnitOfWork, meeting: m.Meeting, rooms: list[m.Room], span: Span | None = None) -> None:
        start, end = (span.start, span.end) if span else (meeting.starts_at, meeting.ends_at)
        for room in sorted(rooms, key=lambda r: r.id):
            uow.session.add(
                m.RoomBooking(room_id=room.id, meeting_id=meeting.id, starts_at=start, ends_at=end, source="service")
            )


async def _forum_exists(s: AsyncSession, forum_id: uuid.UUID) -> bool:
    return await s.scalar(select(m.Forum.id).where(m.Forum.id == forum_id)) is not None


def _tz(zone: str):  # noqa: ANN202
    from zoneinfo import ZoneInfo

    return ZoneInfo(zone)
