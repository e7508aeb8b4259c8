"""What a change seen in a calendar means for the service (the pull rules).

- Our event moved or shortened in a client: applied when the rooms are free and
  the policy is `apply`; otherwise our version is written back, with a conflict
  record when the rooms were taken.
- Our event deleted or cancelled in a client: written back (the secretariat
  cancels through the service).
- An attendee's PARTSTAT changed: the invitation's RSVP follows.
- Someone else's event in a room calendar: a busy block for the room; a clash
  with one of our bookings is recorded as a conflict, never dropped.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import api
from service.calendar.ical import ParsedEvent
from service.calendar.plan import enqueue_push
from service.db import models as m
from service.errors import DomainError, RoomConflict
from service.timeutil import now
from service.usecases.base import Actor, UnitOfWork
from service.usecases.meetings import Meetings

log = logging.getLogger("forumbridge.calendar")
RSVP = {"ACCEPTED": "accepted", "DECLINED": "declined", "TENTATIVE": "tentative", "NEEDS-ACTION": "needs-action"}


@dataclass(frozen=True)
class Move:
    """A client's move of our event, applied after the sync's own transaction."""

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


class PullRules:
    def __init__(self, meetings: Meetings, policy: str) -> None:
        self.meetings = meetings
        self.policy = policy

    async def changed(self, uow: UnitOfWork, cal: m.Calendar, seen: Seen) -> Move | None:
        s = uow.session
        obj = await s.scalar(select(m.CalendarObject).where(
            m.CalendarObject.calendar_id == cal.id, m.CalendarObject.href == seen.href))
        if obj is None and seen.event is not None:
            obj = await s.scalar(select(m.CalendarObject).where(
                m.CalendarObject.calendar_id == cal.id, m.CalendarObject.uid == seen.event.uid))
        if obj is not None:
            if obj.etag is not None and obj.etag == seen.etag:
                return None  # our own write
            return await self._ours_changed(uow, cal, obj, seen)
        if seen.event is not None and seen.event.ours:
            return None  # one of ours that this calendar should not hold: the next push removes it
        if cal.purpose == "room":
            await self._busy_block(uow, cal, seen)
        return None

    async def deleted(self, uow: UnitOfWork, cal: m.Calendar, href: str) -> None:
        s = uow.session
        obj = await s.scalar(select(m.CalendarObject).where(
            m.CalendarObject.calendar_id == cal.id, m.CalendarObject.href == href))
        if obj is not None:
            meeting = await s.get(m.Meeting, obj.meeting_id) if obj.meeting_id else None
            await s.delete(obj)
            if meeting is not None:
                # The push decides whether the copy belongs there; if it does, it comes back.
                await enqueue_push(s, meeting.id, cal.url)
                uow.audit("calendar_delete_seen", "meeting", meeting.id, {"calendar": cal.url, "href": href})
            return
        block = await s.scalar(select(m.RoomBooking).where(
            m.RoomBooking.calendar_id == cal.id, m.RoomBooking.external_href == href))
        if block is not None:
            await self._resolve(s, block)
            await s.delete(block)
            uow.audit("busy_block_removed", "room", block.room_id, {"calendar": cal.url, "uid": block.external_uid})

    # -- our events ----------------------------------------------------------------
    async def _ours_changed(self, uow: UnitOfWork, cal: m.Calendar, obj: m.CalendarObject, seen: Seen) -> Move | None:
        s = uow.session
        obj.etag = seen.etag  # seen: the next push overwrites it rather than failing on a stale ETag
        meeting = await s.get(m.Meeting, obj.meeting_id) if obj.meeting_id else None
        if meeting is None:
            return None
        ev = seen.event
        if ev is None:
            await enqueue_push(s, meeting.id, cal.url)
            uow.audit("calendar_garbage_reverted", "meeting", meeting.id, {"calendar": cal.url})
            return None
        await self._partstats(uow, meeting, ev)
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

    async def _partstats(self, uow: UnitOfWork, meeting: m.Meeting, ev: ParsedEvent) -> None:
        if not ev.attendees:
            return
        rows = (await uow.session.execute(
            select(m.Invitation, m.Person).join(m.Person, m.Person.id == m.Invitation.person_id)
            .where(m.Invitation.meeting_id == meeting.id))).all()
        for inv, person in rows:
            partstat = ev.attendees.get(person.email_key)
            rsvp = RSVP.get((partstat or "").upper())
            if rsvp and rsvp != inv.rsvp:
                uow.audit("rsvp_from_calendar", "invitation", inv.id, {"from": inv.rsvp, "to": rsvp})
                inv.rsvp = rsvp

    async def apply_move(self, move: Move) -> None:
        """A client moved our event: reschedule with the booking rules, or write ours back."""
        meeting_id, url, start, end = move.meeting_id, move.calendar_url, move.starts_at, move.ends_at
        actor = Actor(f"calendar:{url}", frozenset({"secretariat"}))
        if self.policy == "apply":
            try:
                await self.meetings.update(actor, meeting_id, api.MeetingPatch(starts_at=start, ends_at=end))
                return
            except RoomConflict as exc:
                reason, kind = exc.detail, "client_move_refused"
            except DomainError as exc:
                reason, kind = exc.detail, "client_move_invalid"
            except ValueError as exc:  # e.g. a time outside what the API accepts
                reason, kind = str(exc).splitlines()[0], "client_move_invalid"
        else:
            reason, kind = "the policy is to revert changes made in calendar clients", None
        async with UnitOfWork(self.meetings.db, actor, write=True) as uow:
            s = uow.session
            if kind is not None:
                cal = await s.scalar(select(m.Calendar).where(m.Calendar.url == url))
                s.add(m.Conflict(meeting_id=meeting_id, calendar_id=cal.id if cal else None, kind=kind,
                                 detail=f"a calendar client moved the meeting to {start.isoformat()}–{end.isoformat()}; "
                                        f"refused: {reason}"))
            await enqueue_push(s, meeting_id, url)
            uow.audit("calendar_move_reverted", "meeting", meeting_id,
                      {"calendar": url, "starts_at": start, "ends_at": end, "reason": reason})
            await uow.commit()

    # -- other people's events in room calendars ------------------------------------
    async def _busy_block(self, uow: UnitOfWork, cal: m.Calendar, seen: Seen) -> None:
        s = uow.session
        block = await s.scalar(select(m.RoomBooking).where(
            m.RoomBooking.calendar_id == cal.id, m.RoomBooking.external_href == seen.href))
        ev = seen.event
        blocking = ev is not None and ev.status != "CANCELLED" and ev.transp != "TRANSPARENT"
        if not blocking:
            if block is not None:
                await self._resolve(s, block)
                await s.delete(block)
                uow.audit("busy_block_removed", "room", cal.owner_id, {"calendar": cal.url, "href": seen.href})
            return
        assert ev is not None
        if block is None:
            block = m.RoomBooking(room_id=cal.owner_id, source="calendar", calendar_id=cal.id, active=True,
                                  external_href=seen.href, external_etag=seen.etag)
            s.add(block)
            action = "busy_block_added"
        elif (block.starts_at, block.ends_at) == (ev.starts_at, ev.ends_at):
            block.external_etag = seen.etag
            return
        else:
            action = "busy_block_moved"
        block.starts_at, block.ends_at, block.external_etag = ev.starts_at, ev.ends_at, seen.etag
        block.external_uid, block.summary = ev.uid, (ev.summary or "")[:500] or None
        await s.flush()
        uow.audit(action, "room", cal.owner_id, {"calendar": cal.url, "uid": ev.uid, "starts_at": ev.starts_at,
                                                 "ends_at": ev.ends_at})
        await self._record_clashes(uow, cal, block)

    async def _record_clashes(self, uow: UnitOfWork, cal: m.Calendar, block: m.RoomBooking) -> None:
        s = uow.session
        await self._resolve(s, block)
        clashes = (await s.execute(
            select(m.RoomBooking, m.Meeting).join(m.Meeting, m.Meeting.id == m.RoomBooking.meeting_id).where(
                m.RoomBooking.room_id == block.room_id, m.RoomBooking.active.is_(True),
                m.RoomBooking.source == "service", m.RoomBooking.starts_at < block.ends_at,
                m.RoomBooking.ends_at > block.starts_at))).all()
        room = await s.get(m.Room, block.room_id)
        for booking, meeting in clashes:
            s.add(m.Conflict(
                room_id=block.room_id, meeting_id=meeting.id, calendar_id=cal.id, external_uid=block.external_uid,
                kind="calendar_event_overlaps_booking",
                detail=f"an event made in the calendar of room {room.name if room else block.room_id!s} "
                       f"({block.summary or 'busy'}, {block.starts_at.isoformat()}–{block.ends_at.isoformat()}) "
                       f"overlaps the booking of meeting {meeting.title!r}"))
            uow.audit("conflict_found", "meeting", meeting.id, {"room_id": block.room_id, "uid": block.external_uid})

    @staticmethod
    async def _resolve(s: AsyncSession, block: m.RoomBooking) -> None:
        """Close the open conflicts of a busy block that moved or went away."""
        if block.external_uid is None or block.calendar_id is None:
            return
        await s.execute(update(m.Conflict).where(
            m.Conflict.calendar_id == block.calendar_id, m.Conflict.external_uid == block.external_uid,
            m.Conflict.kind == "calendar_event_overlaps_booking", m.Conflict.resolved_at.is_(None),
        ).values(resolved_at=now()))


