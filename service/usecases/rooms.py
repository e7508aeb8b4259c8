"""Room availability: the conflict check every booking goes through."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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


# Probes in one statement: SQLite takes at most 500 terms in a compound SELECT (two probes a room).
MAX_PROBES = 200


@dataclass(frozen=True)
class Want:
    """Rooms wanted for [start, end), by the meeting `exclude_meeting` (whose own bookings never clash)."""

    rooms: list[m.Room]
    start: datetime
    end: datetime
    exclude_meeting: uuid.UUID | None = None


async def find_clashes(session: AsyncSession, wants: list[Want]) -> list[Clash | None]:
    """For each want, the first active booking of its rooms that overlaps its span, if any.

    One statement for all of them (one per `MAX_PROBES` probes): each room's probes (see
    `_candidates`) in a UNION ALL, the holding meeting's title joined in. Several meetings moved at once may overlap each
    other only until this check has run over all of them: of two overlapping bookings, the
    later one's probe finds one starting inside the earlier one's span or the earlier one.
    """
    probes = [q for want in wants for room in want.rooms
              for q in _candidates(room.id, want.start, want.end, want.exclude_meeting)]
    rows: list[Any] = []
    for at in range(0, len(probes), MAX_PROBES):
        rows += (
            await session.execute(
                select(m.RoomBooking, m.Meeting.title)
                .outerjoin(m.Meeting, m.Meeting.id == m.RoomBooking.meeting_id)
                .where(m.RoomBooking.id.in_(union_all(*probes[at:at + MAX_PROBES]).scalar_subquery()))
                # The rows as they are now: bookings moved in this transaction by a bulk UPDATE, or
                # moved back by a savepoint's rollback, may sit in the session with other times.
                .execution_options(populate_existing=True)
            )
        ).all()
    return [_first_clash(want, rows) for want in wants]


async def ensure_free_many(session: AsyncSession, wants: list[Want]) -> None:
    """Raise RoomConflict naming the room and its holder for the first want whose rooms are taken."""
    for clash in await find_clashes(session, wants):
        if clash is not None:
            raise clash_error(clash)


def _first_clash(want: Want, rows: list[Any]) -> Clash | None:
    ordered = sorted(want.rooms, key=lambda r: r.id)
    rank = {room.id: i for i, room in enumerate(ordered)}
    hits = [(b, title) for b, title in rows
            if b.room_id in rank and b.starts_at < want.end and b.ends_at > want.start
            and (want.exclude_meeting is None or b.meeting_id != want.exclude_meeting)]
    if not hits:
        return None
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
    await ensure_free_many(session, [Want(rooms, start, end, exclude_meeting)])
