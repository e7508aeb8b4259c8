"""Room availability: the conflict check every booking goes through."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import models as m
from service.errors import RoomConflict


@dataclass(frozen=True)
class Clash:
    room: m.Room
    booking: m.RoomBooking
    # The meeting holding the booking, when it is one of ours: its id and title.
    meeting_id: uuid.UUID | None
    meeting_title: str | None

    def as_dict(self) -> dict:
        return {
            "room_id": str(self.room.id),
            "room": self.room.name,
            "booking_id": str(self.booking.id),
            "source": self.booking.source,
            "meeting_id": str(self.meeting_id) if self.meeting_id else None,
            "meeting": self.meeting_title if self.meeting_id else self.booking.summary,
            "starts_at": self.booking.starts_at.isoformat(),
            "ends_at": self.booking.ends_at.isoformat(),
        }


def _candidates(room_id: uuid.UUID, start: datetime, end: datetime, exclude_meeting: uuid.UUID | None) -> list[Select]:
    """The bookings of one room that may overlap [start, end): at most one of each source.

    The service's own bookings of a room never overlap each other, so ordered by
    start they are also ordered by end: the latest one starting before `end` is
    the only one that can reach past `start`. That keeps the check one index
    probe however many bookings the room has. Busy blocks from calendars may
    overlap each other, so they get a plain range query (there are few).
    """
    def starting_before_end(source: str) -> Select:
        return select(m.RoomBooking.id).where(
            m.RoomBooking.room_id == room_id,
            m.RoomBooking.active.is_(True),
            m.RoomBooking.source == source,
            m.RoomBooking.starts_at < end,
        ).limit(1)

    own = starting_before_end("service").order_by(m.RoomBooking.starts_at.desc())
    if exclude_meeting is not None:
        own = own.where(or_(m.RoomBooking.meeting_id.is_(None), m.RoomBooking.meeting_id != exclude_meeting))
    blocks = starting_before_end("calendar").where(m.RoomBooking.ends_at > start).order_by(m.RoomBooking.starts_at)
    # Each probe keeps its own ORDER BY and LIMIT inside a subquery (SQLite allows them
    # in a compound SELECT no other way).
    own_q, blocks_q = own.subquery(), blocks.subquery()
    return [select(own_q.c.id), select(blocks_q.c.id)]


async def find_clash(
    session: AsyncSession, rooms: list[m.Room], start: datetime, end: datetime, exclude_meeting: uuid.UUID | None = None
) -> Clash | None:
    """The first active booking of any of `rooms` that overlaps [start, end), if any.

    One statement for all rooms: each room's probes (see `_candidates`) in a UNION ALL,
    the holding meeting's title joined in.
    """
    if not rooms:
        return None
    ordered = sorted(rooms, key=lambda r: r.id)
    probes = [q for room in ordered for q in _candidates(room.id, start, end, exclude_meeting)]
    rows = (
        await session.execute(
            select(m.RoomBooking, m.Meeting.title)
            .outerjoin(m.Meeting, m.Meeting.id == m.RoomBooking.meeting_id)
            .where(m.RoomBooking.id.in_(union_all(*probes).scalar_subquery()))
        )
    ).all()
    hits = [(b, title) for b, title in rows if b.starts_at < end and b.ends_at > start]
    if not hits:
        return None
    rank = {room.id: i for i, room in enumerate(ordered)}
    booking, title = min(hits, key=lambda h: (rank[h[0].room_id], h[0].source != "service", h[0].starts_at))
    room = next(r for r in ordered if r.id == booking.room_id)
    holder = booking.meeting_id if title is not None else None
    return Clash(room, booking, holder, title)


def clash_error(clash: Clash) -> RoomConflict:
    holder = (
        f"meeting {clash.meeting_title!r} ({clash.meeting_id})"
        if clash.meeting_id
        else f"an event in the room's calendar ({clash.booking.summary or 'busy'})"
    )
    return RoomConflict(
        f"room {clash.room.name!r} ({clash.room.id}) is already booked from "
        f"{clash.booking.starts_at.isoformat()} to {clash.booking.ends_at.isoformat()} by {holder}",
        conflicts=[clash.as_dict()],
    )


async def ensure_free(
    session: AsyncSession, rooms: list[m.Room], start: datetime, end: datetime, exclude_meeting: uuid.UUID | None
) -> None:
    """Raise RoomConflict naming the room and its holder if any of `rooms` is taken."""
    clash = await find_clash(session, rooms, start, end, exclude_meeting)
    if clash is not None:
        raise clash_error(clash)
