"""Booking rules under any sequence of operations (hypothesis), on real SQLite and PostgreSQL.

For any sequence of book, reschedule and cancel operations on three rooms
(with the odd busy block found in a room's calendar): no two active service
bookings of one room overlap; every refusal names a booking that is really
there, in one of the requested rooms, overlapping the requested time; and the
bookings in the table are exactly those of the meetings that hold their rooms.
The use-case layer (service.usecases.meetings.Meetings) is driven directly.
"""
from __future__ import annotations

import asyncio
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import select

from schemas import api
from service.db import models as m
from service.db.engine import Database, create_database
from service.errors import Conflict, RoomConflict
from service.usecases.base import Actor
from service.usecases.directory import make_directory
from service.usecases.meetings import Meetings
from tests.support.databases import SqliteTemplate

ACTOR = Actor("property", frozenset({"secretariat"}))
ROOMS = 3
# Half-hour slots over one day, few enough that operations clash often.
DAY = datetime(2027, 4, 5, 6, 0, tzinfo=timezone.utc)
SLOT = timedelta(minutes=30)
SLOTS = 16


def span(start: int, length: int) -> tuple[datetime, datetime]:
    return DAY + start * SLOT, DAY + (start + length) * SLOT


@dataclass(frozen=True)
class Book:
    rooms: tuple[int, ...]
    start: int
    length: int


@dataclass(frozen=True)
class Reschedule:
    meeting: int  # index into the meetings made so far (modulo their number)
    start: int
    length: int
    rooms: tuple[int, ...] | None  # None: keep its rooms


@dataclass(frozen=True)
class Cancel:
    meeting: int


@dataclass(frozen=True)
class BusyBlock:
    """An event found in a room's calendar: it blocks the room but may overlap anything."""

    room: int
    start: int
    length: int


rooms = st.lists(st.integers(0, ROOMS - 1), min_size=1, max_size=2, unique=True).map(tuple)
starts, lengths = st.integers(0, SLOTS - 1), st.integers(1, 6)
operations = st.lists(
    st.one_of(
        st.builds(Book, rooms, starts, lengths),
        st.builds(Reschedule, st.integers(0, 20), starts, lengths, st.none() | rooms),
        st.builds(Cancel, st.integers(0, 20)),
        st.builds(BusyBlock, st.integers(0, ROOMS - 1), starts, lengths),
    ),
    min_size=1,
    max_size=25,
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fresh_database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], str]]:
    """A callable that empties a database of the kind and returns its URL, once per example."""
    if request.param == "sqlite":
        template: SqliteTemplate = request.getfixturevalue("sqlite_template")
        with tempfile.TemporaryDirectory(dir=tmp_path_factory.getbasetemp()) as folder:
            counter = iter(range(10**9))

            def sqlite() -> str:
                target = Path(folder) / str(next(counter))
                target.mkdir()
                return template.fresh(target)

            yield sqlite
    else:
        yield request.getfixturevalue("postgres").fresh


class World:
    """Three rooms, a forum, the meetings made so far and what their bookings should be."""

    def __init__(self, db: Database, meetings: Meetings, room_ids: list[uuid.UUID], forum_id: uuid.UUID) -> None:
        self.db = db
        self.meetings = meetings
        self.room_ids = room_ids
        self.forum_id = forum_id
        # meeting id -> (room ids, start, end), for meetings that hold their rooms
        self.holding: dict[uuid.UUID, tuple[frozenset[uuid.UUID], datetime, datetime]] = {}
        self.made: list[uuid.UUID] = []

    @classmethod
    async def make(cls, url: str) -> "World":
        db = create_database(url, pool_size=2)
        directory = make_directory(db, "http://forum.test")
        site = await directory.sites.create(ACTOR, {"name": "Stockholmskontoret", "city": "Stockholm",
                                                    "timezone": "Europe/Stockholm"})
        room_ids = [(await directory.rooms.create(ACTOR, {"site_id": site.id, "name": f"Rum {i}", "capacity": 8})).id
                    for i in range(ROOMS)]
        forum = await directory.forums.create(ACTOR, {"name": "Forum", "kind": "officials"})
        return cls(db, Meetings(db), room_ids, forum.id)

    async def run(self, op: Any) -> None:
        if isinstance(op, BusyBlock):
            start, end = span(op.start, op.length)
            async with self.db.session(write=True) as s:
                s.add(m.RoomBooking(room_id=self.room_ids[op.room], meeting_id=None, starts_at=start, ends_at=end,
                                    source="calendar", summary="Upptaget"))
                await s.commit()
            return
        if isinstance(op, Book):
            wanted = [self.room_ids[r] for r in op.rooms]
            start, end = span(op.start, op.length)
            body = api.MeetingCreate(forum_id=self.forum_id, title="Möte", starts_at=start, ends_at=end,
                                     room_ids=wanted)
            try:
                made = await self.meetings.create(ACTOR, body)
            except RoomConflict as exc:
                await self.check_refusal(exc, wanted, start, end, None)
                return
            self.made.append(made.id)
            self.holding[made.id] = (frozenset(wanted), start, end)
            return
        if not self.made:
            return
        meeting_id = self.made[op.meeting % len(self.made)]
        if isinstance(op, Cancel):
            await self.meetings.cancel(ACTOR, meeting_id)
            self.holding.pop(meeting_id, None)
            return
        start, end = span(op.start, op.length)
        patch: dict[str, Any] = {"starts_at": start, "ends_at": end}
        if op.rooms is not None:
            patch["room_ids"] = [self.room_ids[r] for r in op.rooms]
        try:
            await self.meetings.update(ACTOR, meeting_id, api.MeetingPatch(**patch))
        except RoomConflict as exc:
            assert meeting_id in self.holding, "a cancelled meeting was checked for rooms"
            wanted = patch.get("room_ids") or list(self.holding[meeting_id][0])
            await self.check_refusal(exc, wanted, start, end, meeting_id)
            return
        except Conflict:
            assert meeting_id not in self.holding, "a planned meeting was refused as cancelled"
            return
        rooms_now = frozenset(patch["room_ids"]) if "room_ids" in patch else self.holding[meeting_id][0]
        self.holding[meeting_id] = (rooms_now, start, end)

    async def check_refusal(
        self, exc: RoomConflict, wanted: list[uuid.UUID], start: datetime, end: datetime, mover: uuid.UUID | None
    ) -> None:
        """The refusal names a booking that is there, active, in a wanted room, overlapping [start, end)."""
        [named, *_] = exc.extra["conflicts"]
        assert uuid.UUID(named["room_id"]) in wanted
        named_start, named_end = datetime.fromisoformat(named["starts_at"]), datetime.fromisoformat(named["ends_at"])
        assert named_start < end and start < named_end, (named, start, end)
        async with self.db.session(write=False) as s:
            booking = await s.get(m.RoomBooking, uuid.UUID(named["booking_id"]))
        assert booking is not None and booking.active
        assert (booking.room_id, booking.starts_at, booking.ends_at) == (
            uuid.UUID(named["room_id"]), named_start, named_end)
        assert mover is None or booking.meeting_id != mover, "a meeting was refused for its own booking"

    async def check_bookings(self) -> None:
        """No two active service bookings of a room overlap, and they are exactly the meetings' holdings."""
        async with self.db.session(write=False) as s:
            rows = list(await s.scalars(select(m.RoomBooking).where(
                m.RoomBooking.active.is_(True), m.RoomBooking.source == "service")))
        by_room: dict[uuid.UUID, list[m.RoomBooking]] = {}
        for row in rows:
            by_room.setdefault(row.room_id, []).append(row)
        for room_rows in by_room.values():
            room_rows.sort(key=lambda r: r.starts_at)
            for before, after in zip(room_rows, room_rows[1:]):
                assert before.ends_at <= after.starts_at, f"double booking: {before.id} and {after.id}"
        actual = {(r.meeting_id, r.room_id, r.starts_at, r.ends_at) for r in rows}
        expected = {(mid, room, start, end) for mid, (held, start, end) in self.holding.items() for room in held}
        assert actual == expected


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=operations)
def test_any_sequence_of_bookings_never_double_books_and_every_refusal_names_a_real_clash(
    fresh_database: Callable[[], str], ops: list[Any]
) -> None:
    url = fresh_database()

    async def scenario() -> None:
        world = await World.make(url)
        try:
            for op in ops:
                await world.run(op)
                await world.check_bookings()
        finally:
            await world.db.dispose()

    asyncio.run(scenario())
