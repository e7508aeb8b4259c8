"""Room availability: the conflict check every booking goes through."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import models as m
from service.errors import RoomConflict


@dataclass(frozen=True)
class Clash:
    room: m.Room
    booking: m.RoomBooking
    meeting: m.Meeting | None

    def as_dict(self) -> dict:
        return {
            "room_id": str(self.room.id),
            "room": self.room.name,
            "booking_id": str(self.booking.id),
            "source": self.booking.source,
            "meeting_id": str(self.meeting.id) if self.meeting else None,
            "meeting": self.meeting.title if self.meeting else self.booking.summary,
            "starts_at": self.booking.starts_at.isoformat(),
            "ends_at": self.booking.ends_at.isoformat(),
        }


async def find_clash(
    session: AsyncSession, room: m.Room, start: datetime, end: datetime, exclude_meeting: uuid.UUID | None = None
) -> Clash | None:
    """The first active booking of `room` that overlaps [start, end), if any.

    The service's own bookings of a room never overlap each other, so ordered by
    start they are also ordered by end: the latest one starting before `end` is
    the only one that can reach past `start`. That keeps the check one index
    probe however many bookings the room has. Busy blocks from calendars may
    overlap each other, so they get a plain range query (there are few).
    """
    own = (
        select(m.RoomBooking)
        .where(
            m.RoomBooking.room_id == room.id,
            m.RoomBooking.active.is_(True),
            m.RoomBooking.source == "service",
            m.RoomBooking.starts_at < end,
        )
        .order_by(m.RoomBooking.starts_at.desc())
        .limit(1)
    )
    if exclude_meeting is not None:
        own = own.where(or_(m.RoomBooking.meeting_id.is_(None), m.RoomBooking.meeting_id != exclude_meeting))
    hit = await session.scalar(own)
    if hit is None or hit.ends_at <= start:
        hit = await session.scalar(
            select(m.RoomBooking)
            .where(
                m.RoomBooking.room_id == room.id,
                m.RoomBooking.active.is_(True),
                m.RoomBooking.source == "calendar",
                m.RoomBooking.starts_at < end,
                m.RoomBooking.ends_at > start,
            )
            .order_by(m.RoomBooking.starts_at)
            .limit(1)
        )
    if hit is None:
        return None
    holder = await session.get(m.Meeting, hit.meeting_id) if hit.meeting_id else None
    return Clash(room, hit, holder)


def clash_error(clash: Clash) -> RoomConflict:
    holder = (
        f"meeting {clash.meeting.title!r} ({clash.meeting.id})"
        if clash.meeting
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
    for room in sorted(rooms, key=lambda r: r.id):
        clash = await find_clash(session, room, start, end, exclude_meeting)
        if clash is not None:
            raise clash_error(clash)
