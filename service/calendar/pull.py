"""What a change seen in a calendar means for the service (the pull rules).

- Our event moved or shortened in a client: applied when the rooms are free and
  the policy is `apply`; otherwise our version is written back, with a conflict
  record when the rooms were taken.
- Our event deleted or cancelled in a client: written back (the secretariat
  cancels through the service).
- An attendee's PARTSTAT changed: the invitation's RSVP follows.
- Someone else's event in a room calendar: a busy block for the room (one per
  occurrence of a recurring event, in the window the parse reads); a clash with
  one of our bookings is recorded as a conflict, never dropped.
"""
from __future__ import annotations

import bisect
import logging
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import api
from service.calendar.ical import ParsedEvent
from service.calendar.plan import enqueue_push
from service.db import models as m
from service.errors import DomainError, RoomConflict
from service.timeutil import now
from service.usecases.base import UnitOfWork
from service.usecases.meetings import Meetings, lock_meetings, lock_room_ids, lock_rooms, lost_race

log = logging.getLogger("forumbridge.calendar")
RSVP = {"ACCEPTED": "accepted", "DECLINED": "declined", "TENTATIVE": "tentative", "NEEDS-ACTION": "needs-action"}
# Tries of one move when PostgreSQL reports a lost race (exclusion violation, serialization failure).
MOVE_ATTEMPTS = 5


@dataclass(frozen=True)
class Move:
    """A client's move of our event, applied (or refused) by `PullRules.apply_moves`."""

    meeting_id: uuid.UUID
    calendar_url: str
    starts_at: Any
    ends_at: Any


@dataclass
class Seen:
    """One object as found in a calendar."""

    href: str
    etag: str | None
    event: ParsedEvent | None


@dataclass
class Known:
    """What the database holds about a set of seen objects, read in a few queries for all of them."""

    by_href: dict[str, m.CalendarObject] = field(default_factory=dict)
    by_uid: dict[str, m.CalendarObject] = field(default_factory=dict)
    meetings: dict[uuid.UUID, m.Meeting] = field(default_factory=dict)
    invitations: dict[uuid.UUID, list[tuple[m.Invitation, m.Person]]] = field(default_factory=dict)
    # Busy blocks by the href of their event: one per occurrence of a recurring event.
    blocks: dict[str, list[m.RoomBooking]] = field(default_factory=dict)

    def ours(self, seen: Seen) -> m.CalendarObject | None:
        """Our record of a seen object: by its href, else by its UID (moved to another href)."""
        obj = self.by_href.get(seen.href)
        if obj is None and seen.event is not None:
            obj = self.by_uid.get(seen.event.uid)
        return obj


class PullRules:
    def __init__(self, meetings: Meetings, policy: str) -> None:
        self.meetings = meetings
        self.policy = policy

    async def pulled(self, uow: UnitOfWork, cal: m.Calendar, seen: Sequence[Seen], deleted: Sequence[str],
                     in_flight: Collection[uuid.UUID] = ()) -> tuple[list[str], int]:
        """Apply one sync's change set in the caller's transaction: the objects changed, those
        deleted, then the clients' moves. Returns the booking outcomes ("made", "refused") for
        the caller to count once it has committed, and how many objects were held back.

        `in_flight` names the meetings whose push to this calendar is running: their PUT may have
        been answered and its ETag not yet recorded, so a changed ETag there may be our own write.
        Such an object is held back (nothing applied, its ETag not recorded); the caller then keeps
        the old sync token, so that the next sync sees the object again, with the push recorded."""
        known = await self.preload(uow, cal, seen, deleted)
        if cal.purpose == "room" and cal.owner_id is not None and (seen or deleted):
            # The room's row locked (PostgreSQL) before its busy blocks are written and checked
            # against our bookings, as every booking locks it before checking them: otherwise a
            # booking and a new block could each find the room free and both commit. The rooms of
            # the meetings this pull may move are taken with it, in the one order all writers use.
            await lock_room_ids(uow.session, {cal.owner_id} | {
                uuid.UUID(r) for meeting in known.meetings.values() for r in meeting.room_ids})
            # The room may have left this calendar while the pull read it (its blocks went with it,
            # `attach_calendar`): nothing of it is written for the room then.
            if await uow.session.scalar(select(m.Room.calendar_url).where(m.Room.id == cal.owner_id)) != cal.url:
                return [], 0
        held = [obj for obj in seen if self._in_flight(obj, known, in_flight)]
        seen = [obj for obj in seen if obj not in held]
        moves = [move for obj in seen if (move := await self.changed(uow, cal, obj, known, in_flight)) is not None]
        for href in deleted:
            await self.deleted(uow, cal, href, known)
        return await self.apply_moves(uow, cal, moves), len(held)

    @staticmethod
    def _in_flight(seen: Seen, known: Known, in_flight: Collection[uuid.UUID]) -> bool:
        if not in_flight:
            return False
        obj = known.ours(seen)
        if obj is None:
            # Not recorded yet: a create in flight, which records it itself (`_adopt` leaves it).
            return False
        return obj.meeting_id in in_flight and (obj.etag is None or obj.etag != seen.etag)

    async def preload(self, uow: UnitOfWork, cal: m.Calendar, seen: Sequence[Seen], deleted: Sequence[str] = ()) -> Known:
        """Our objects, their meetings, the invitations that PARTSTATs may change and the busy blocks
        that the seen and deleted hrefs concern: a query each, whatever the number of objects."""
        s, known = uow.session, Known()
        hrefs = list(dict.fromkeys([o.href for o in seen] + list(deleted)))
        uids = list({o.event.uid for o in seen if o.event is not None})
        if not hrefs:
            return known
        where = m.CalendarObject.href.in_(hrefs)
        if uids:
            where = or_(where, m.CalendarObject.uid.in_(uids))
        for obj in await s.scalars(select(m.CalendarObject).where(m.CalendarObject.calendar_id == cal.id, where)):
            known.by_href[obj.href] = obj
            known.by_uid.setdefault(obj.uid, obj)
        ids = {o.meeting_id for o in known.by_href.values() if o.meeting_id is not None}
        if ids:
            # Locked first (PostgreSQL), before this pull writes any row of theirs, as every write
            # of a meeting does: a pull and a PATCH, or two pulls, never wait on each other in a ring.
            known.meetings = await lock_meetings(s, sorted(ids))
            with_attendees = {known.by_href[o.href].meeting_id for o in seen
                              if o.href in known.by_href and o.event is not None and o.event.attendees}
            with_attendees |= {obj.meeting_id for o in seen if o.href not in known.by_href and o.event is not None
                               and o.event.attendees and (obj := known.by_uid.get(o.event.uid)) is not None}
            with_attendees.discard(None)
            if with_attendees:
                rows = (await s.execute(
                    select(m.Invitation, m.Person).join(m.Person, m.Person.id == m.Invitation.person_id)
                    .where(m.Invitation.meeting_id.in_(with_attendees)))).all()
                for inv, person in rows:
                    known.invitations.setdefault(inv.meeting_id, []).append((inv, person))
        if cal.purpose == "room":
            for b in await s.scalars(select(m.RoomBooking).where(
                    m.RoomBooking.calendar_id == cal.id, m.RoomBooking.external_href.in_(hrefs))
                    .order_by(m.RoomBooking.starts_at)):
                known.blocks.setdefault(b.external_href, []).append(b)
        return known

    async def changed(self, uow: UnitOfWork, cal: m.Calendar, seen: Seen, known: Known | None = None,
                      in_flight: Collection[uuid.UUID] = ()) -> Move | None:
        """One object as seen in the calendar; a client's move of our event is returned for `apply_moves`."""
        if known is None:
            known = await self.preload(uow, cal, [seen])
        obj = known.ours(seen)
        if obj is not None:
            if obj.href != seen.href:
                # A client filed our event under a name of its own (a calendar holds one object per
                # UID, so the old name is gone): our record follows it, and so do our later writes.
                if known.by_href.get(obj.href) is obj:
                    del known.by_href[obj.href]
                obj.href = seen.href
                known.by_href[seen.href] = obj
            if obj.etag is not None and obj.etag == seen.etag:
                return None  # our own write
            return await self._ours_changed(uow, cal, obj, seen, known)
        if seen.event is not None and seen.event.ours:
            await self._adopt(uow, cal, seen, known, in_flight)
            return None
        if cal.purpose == "room":
            await self._busy_block(uow, cal, seen, known)
        return None

    async def deleted(self, uow: UnitOfWork, cal: m.Calendar, href: str, known: Known | None = None) -> None:
        s = uow.session
        if known is None:
            known = await self.preload(uow, cal, [], [href])
        obj = known.by_href.pop(href, None)
        if obj is not None:
            meeting = known.meetings.get(obj.meeting_id) if obj.meeting_id else None
            await s.delete(obj)
            if known.by_uid.get(obj.uid) is obj:
                del known.by_uid[obj.uid]
            if meeting is not None:
                # The push decides whether the copy belongs there; if it does, it comes back.
                await enqueue_push(s, meeting.id, cal.url)
                uow.audit("calendar_delete_seen", "meeting", meeting.id, {"calendar": cal.url, "href": href})
            return
        blocks = known.blocks.pop(href, [])
        if blocks:
            await self._drop(s, blocks)
            uow.audit("busy_block_removed", "room", blocks[0].room_id, {"calendar": cal.url, "uid": blocks[0].external_uid})

    async def apply_moves(self, uow: UnitOfWork, cal: m.Calendar, moves: Sequence[Move]) -> list[str]:
        """Clients moved our events: reschedule each with the booking rules, or write ours back.

        All in the caller's transaction: first all at once in one savepoint; if the rules refuse
        one, each in a savepoint of its own, so that a move the rules refuse (its room is taken,
        say) leaves no trace but its conflict record, its audit entry and the job that writes our
        version back, while the others are applied. Returns the booking outcomes.
        """
        if self.policy == "apply" and len(moves) > 1:
            # The moves' rooms locked once, in order, outside the savepoints: tried one by one below,
            # each would lock its rooms in the server's order and hold them, which can deadlock with a
            # booking that takes the same rooms in theirs.
            await lock_rooms(uow.session, [mv.meeting_id for mv in moves])
            if (made := await self._all_moves(uow, moves)) is not None:
                return ["made"] * made
        outcomes: list[str] = []
        for move in moves:
            applied, reason, kind = await self._try_move(uow, move)
            if applied:
                outcomes.append("made")
                continue
            if kind == "client_move_refused":
                outcomes.append("refused")
            start, end = move.starts_at, move.ends_at
            if kind is not None:
                uow.session.add(m.Conflict(
                    meeting_id=move.meeting_id, calendar_id=cal.id, kind=kind,
                    detail=f"a calendar client moved the meeting to {start.isoformat()}–{end.isoformat()}; "
                           f"refused: {reason}"))
            await enqueue_push(uow.session, move.meeting_id, cal.url)
            uow.audit("calendar_move_reverted", "meeting", move.meeting_id,
                      {"calendar": cal.url, "starts_at": start, "ends_at": end, "reason": reason})
        return outcomes

    async def _all_moves(self, uow: UnitOfWork, moves: Sequence[Move]) -> int | None:
        """Apply every move in one savepoint, with the booking rules' reads and writes made once for
        all of them; how many meetings moved, or None (and none applied) when the rules refuse one
        or a race is lost, and then each is tried on its own."""
        try:
            async with uow.session.begin_nested():
                return await self.meetings.reschedule_many(
                    uow, [(mv.meeting_id, mv.starts_at, mv.ends_at) for mv in moves])
        except (DomainError, ValueError):
            return None
        except DBAPIError as exc:
            if not lost_race(exc):
                raise
            return None

    async def _try_move(self, uow: UnitOfWork, move: Move) -> tuple[bool, str | None, str | None]:
        """(applied, why not, conflict kind or None) for one move, in a savepoint."""
        if self.policy != "apply":
            return False, "the policy is to revert changes made in calendar clients", None
        for attempt in range(MOVE_ATTEMPTS):
            try:
                patch = api.MeetingPatch(starts_at=move.starts_at, ends_at=move.ends_at)
                async with uow.session.begin_nested():
                    await self.meetings.update_in(uow, move.meeting_id, patch)
                return True, None, None
            except RoomConflict as exc:
                return False, exc.detail, "client_move_refused"
            except DomainError as exc:
                return False, exc.detail, "client_move_invalid"
            except ValueError as exc:  # e.g. a time outside what the API accepts
                return False, str(exc).splitlines()[0], "client_move_invalid"
            except DBAPIError as exc:
                # PostgreSQL: another transaction booked the room meanwhile (the exclusion constraint)
                # or a serialization failure; the savepoint is gone, the next try sees the winner.
                if not lost_race(exc) or attempt == MOVE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    # -- our events ----------------------------------------------------------------
    async def _ours_changed(self, uow: UnitOfWork, cal: m.Calendar, obj: m.CalendarObject, seen: Seen,
                            known: Known) -> Move | None:
        s = uow.session
        obj.etag = seen.etag  # seen: the next push overwrites it rather than failing on a stale ETag
        meeting = known.meetings.get(obj.meeting_id) if obj.meeting_id else None
        if meeting is None:
            return None
        ev = seen.event
        if ev is None:
            await enqueue_push(s, meeting.id, cal.url)
            uow.audit("calendar_garbage_reverted", "meeting", meeting.id, {"calendar": cal.url})
            return None
        self._partstats(uow, known.invitations.get(meeting.id, ()), ev, obj.partstats)
        obj.partstats = dict(ev.attendees)
        if meeting.status == "cancelled":
            if ev.status != "CANCELLED":
                await enqueue_push(s, meeting.id, cal.url)
            return None
        if ev.status == "CANCELLED":
            await enqueue_push(s, meeting.id, cal.url)
            uow.audit("calendar_cancel_reverted", "meeting", meeting.id, {"calendar": cal.url})
            return None
        if (ev.starts_at, ev.ends_at) != (meeting.starts_at, meeting.ends_at):
            return Move(meeting.id, cal.url, ev.starts_at, ev.ends_at)
        return None

    @staticmethod
    async def _adopt(uow: UnitOfWork, cal: m.Calendar, seen: Seen, known: Known,
                     in_flight: Collection[uuid.UUID]) -> None:
        """One of our meetings' events that this calendar holds without our record of it: a client
        dragged it here from another calendar, say, or a create's answer was lost. It goes on record
        under the name the client gave it, and a push makes it right: it is removed where the meeting
        does not belong, brought up to date where it does. A create of ours still in flight records
        it itself; an event naming no meeting of ours is left alone."""
        assert seen.event is not None
        s = uow.session
        meeting_id = await s.scalar(select(m.Meeting.id).where(m.Meeting.uid == seen.event.uid))
        if meeting_id is None or meeting_id in in_flight:
            return
        obj = m.CalendarObject(calendar_id=cal.id, meeting_id=meeting_id, uid=seen.event.uid, href=seen.href,
                               etag=seen.etag, partstats=dict(seen.event.attendees))
        s.add(obj)
        known.by_href[seen.href], known.by_uid[obj.uid] = obj, obj
        await enqueue_push(s, meeting_id, cal.url)
        uow.audit("calendar_copy_adopted", "meeting", meeting_id, {"calendar": cal.url, "href": seen.href})

    @staticmethod
    def _partstats(uow: UnitOfWork, invitations: Sequence[tuple[m.Invitation, m.Person]], ev: ParsedEvent,
                   before: dict[str, str] | None) -> None:
        """The RSVPs a client changed in its copy: those whose PARTSTAT differs from what the copy
        held before (`before`: what we last wrote or read there; None: not known, every one)."""
        if not ev.attendees:
            return
        for inv, person in invitations:
            partstat = ev.attendees.get(person.email_key)
            if before is not None and partstat is not None and before.get(person.email_key) == partstat:
                continue  # as the copy held it already: the client changed something else
            rsvp = RSVP.get((partstat or "").upper())
            if rsvp and rsvp != inv.rsvp:
                uow.audit("rsvp_from_calendar", "invitation", inv.id, {"from": inv.rsvp, "to": rsvp})
                inv.rsvp = rsvp

    # -- other people's events in room calendars ------------------------------------
    async def _busy_block(self, uow: UnitOfWork, cal: m.Calendar, seen: Seen, known: Known) -> None:
        """Someone else's event in a room calendar holds the room: one block per span of it (each
        occurrence of a recurring event in the window its parse reads), following the event."""
        s = uow.session
        blocks = known.blocks.get(seen.href, [])
        ev = seen.event
        blocking = ev is not None and ev.status != "CANCELLED" and ev.transp != "TRANSPARENT"
        spans = ev.spans() if ev is not None and blocking else []
        read_until = ev.read_until if ev is not None and blocking else None
        if not spans and read_until is not None:
            # A series with no occurrence in the window yet: one inactive row keeps it to be read again.
            spans, placeholder = [(read_until, read_until)], True
        else:
            placeholder = False
        if not spans:
            if blocks:
                await self._drop(s, blocks)
                known.blocks.pop(seen.href, None)
                uow.audit("busy_block_removed", "room", cal.owner_id, {"calendar": cal.url, "href": seen.href})
            return
        assert ev is not None
        if [(b.starts_at, b.ends_at, b.active) for b in blocks] == [(b, e, not placeholder) for b, e in spans]:
            for block in blocks:  # the same times (a series read again): only what it was read to moves on
                block.external_etag, block.series_until = seen.etag, read_until
            return
        action = "busy_block_moved" if blocks else "busy_block_added"
        # Blocks are kept by their start: when a series is read again with its window moved on, the
        # occurrences it still holds keep their rows (and their conflicts), only the rest change.
        by_start = {b.starts_at: b for b in blocks}
        wanted = {x for x, _ in spans}
        spare = [b for b in blocks if b.starts_at not in wanted]
        kept: list[m.RoomBooking] = []
        for starts_at, ends_at in spans:
            block = by_start.pop(starts_at, None)
            if block is None:
                block = spare.pop() if spare else None
            if block is None:
                block = m.RoomBooking(room_id=cal.owner_id, source="calendar", calendar_id=cal.id, active=True,
                                      external_href=seen.href)
                s.add(block)
            block.starts_at, block.ends_at, block.external_etag = starts_at, ends_at, seen.etag
            block.external_uid, block.summary = ev.uid, (ev.summary or "")[:500] or None
            block.active, block.series_until = not placeholder, read_until
            kept.append(block)
        for block in spare:
            await s.delete(block)
        known.blocks[seen.href] = kept
        await s.flush()
        if placeholder:
            await self._resolve(s, kept[0])
            uow.audit("busy_block_removed" if blocks else "busy_series_later", "room", cal.owner_id,
                      {"calendar": cal.url, "uid": ev.uid, "read_until": read_until})
            return
        detail = {"calendar": cal.url, "uid": ev.uid, "starts_at": spans[0][0], "ends_at": spans[0][1]}
        if ev.occurrences is not None:
            detail |= {"occurrences": len(spans), "last_ends_at": spans[-1][1]}
        uow.audit(action, "room", cal.owner_id, detail)
        await self._record_clashes(uow, cal, kept)

    async def _record_clashes(self, uow: UnitOfWork, cal: m.Calendar, blocks: Sequence[m.RoomBooking]) -> None:
        """The open conflicts of an event's blocks made to match the bookings of ours they overlap
        now: one query for the bookings, one for the open conflicts; a clash already on record stays
        as it is, one that went away is resolved, a new one is recorded."""
        s = uow.session
        first = blocks[0]
        ordered = sorted(blocks, key=lambda b: b.starts_at)
        starts = [b.starts_at for b in ordered]
        longest = max(b.ends_at - b.starts_at for b in ordered)
        rows = (await s.execute(
            select(m.RoomBooking, m.Meeting).join(m.Meeting, m.Meeting.id == m.RoomBooking.meeting_id).where(
                m.RoomBooking.room_id == first.room_id, m.RoomBooking.active.is_(True),
                m.RoomBooking.source == "service", m.RoomBooking.starts_at < ordered[-1].ends_at + longest,
                m.RoomBooking.ends_at > ordered[0].starts_at))).all()
        clashes: dict[uuid.UUID, tuple[m.Meeting, m.RoomBooking]] = {}
        for booking, meeting in rows:
            i = bisect.bisect_left(starts, booking.ends_at) - 1  # the last block starting before it ends
            while i >= 0 and ordered[i].starts_at + longest > booking.starts_at:
                if ordered[i].ends_at > booking.starts_at:
                    clashes.setdefault(meeting.id, (meeting, ordered[i]))
                    break
                i -= 1
        recorded = {c.meeting_id: c for c in await s.scalars(select(m.Conflict).where(
            m.Conflict.calendar_id == first.calendar_id, m.Conflict.external_uid == first.external_uid,
            m.Conflict.kind == "calendar_event_overlaps_booking", m.Conflict.resolved_at.is_(None)))}
        for meeting_id, conflict in recorded.items():
            if meeting_id not in clashes:
                conflict.resolved_at = now()
        new = [(meeting, block) for meeting_id, (meeting, block) in clashes.items() if meeting_id not in recorded]
        if not new:
            return
        room = await s.get(m.Room, first.room_id)
        for meeting, block in new:
            s.add(m.Conflict(
                room_id=block.room_id, meeting_id=meeting.id, calendar_id=cal.id, external_uid=block.external_uid,
                kind="calendar_event_overlaps_booking",
                detail=f"an event made in the calendar of room {room.name if room else block.room_id!s} "
                       f"({block.summary or 'busy'}, {block.starts_at.isoformat()}–{block.ends_at.isoformat()}) "
                       f"overlaps the booking of meeting {meeting.title!r}"))
            uow.audit("conflict_found", "meeting", meeting.id, {"room_id": block.room_id, "uid": block.external_uid})

    async def _drop(self, s: AsyncSession, blocks: Sequence[m.RoomBooking]) -> None:
        """An event's blocks gone: their open conflicts resolved, their rows deleted."""
        await self._resolve(s, blocks[0])
        for block in blocks:
            await s.delete(block)

    @staticmethod
    async def _resolve(s: AsyncSession, block: m.RoomBooking) -> None:
        """Close the open conflicts of a busy block that moved or went away."""
        if block.external_uid is None or block.calendar_id is None:
            return
        await s.execute(update(m.Conflict).where(
            m.Conflict.calendar_id == block.calendar_id, m.Conflict.external_uid == block.external_uid,
            m.Conflict.kind == "calendar_event_overlaps_booking", m.Conflict.resolved_at.is_(None),
        ).values(resolved_at=now()))


