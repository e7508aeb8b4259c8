"""Moves seen in one calendar sync, applied together and, when the rules refuse one, one by one.

The pull rules are called directly with the moves in a given order (a sync hands them over in the
order the server lists the objects), on SQLite and PostgreSQL; no calendar server is needed.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from service.calendar.pull import Move
from service.db import models as m
from service.keys import SERVICES
from service.usecases.base import Actor, UnitOfWork
from tests.conftest import meeting_body

STHLM = ZoneInfo("Europe/Stockholm")
CALENDAR = "http://kalender.test/forum/"


async def apply(client: Any, world: dict[str, Any], *moves: tuple[dict[str, Any], datetime, datetime]) -> list[str]:
    services = client.server.app[SERVICES]
    async with UnitOfWork(services.db, Actor(f"calendar:{CALENDAR}", frozenset({"secretariat"})), write=True) as uow:
        cal = await uow.session.scalar(select(m.Calendar).where(m.Calendar.url == CALENDAR))
        if cal is None:
            cal = m.Calendar(url=CALENDAR, purpose="forum", owner_id=uuid.UUID(world["forum"]["id"]))
            uow.session.add(cal)
            await uow.session.flush()
        # Held in the session as a sync holds them: the meetings its change set names (read before
        # the moves, with their sessions) and, in a room's calendar, the room's bookings.
        ids = [uuid.UUID(meeting["id"]) for meeting, _, _ in moves]
        held = [*await uow.session.scalars(select(m.Meeting).where(m.Meeting.id.in_(ids))),
                *await uow.session.scalars(select(m.RoomBooking))]
        outcomes = await services.calendar_sync.rules.apply_moves(
            uow, cal, [Move(meeting_id, CALENDAR, start, end) for meeting_id, (_, start, end) in zip(ids, moves)])
        await uow.commit()
    assert held
    return outcomes


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2027, 5, day, hour, minute, tzinfo=STHLM)


async def room_bookings(api: Any, world: dict[str, Any]) -> list[tuple[str, str]]:
    busy = await api.ok("GET", f"/api/v1/rooms/{world['rooms']['Tillväxten']['id']}/busy"
                               "?from=2027-05-01T00:00:00&to=2027-06-01T00:00:00")
    spans = sorted((b["starts_at"], b["ends_at"]) for b in busy["items"])
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start, f"the room is double-booked: {spans}"
    return spans


async def test_a_refused_batch_falls_back_one_by_one_on_what_the_database_holds(api: Any, world: dict[str, Any], client: Any) -> None:
    # C is dragged onto A's slot while A and B are both dragged onto the same free slot X: together
    # they cannot all be made. One by one, on fresh rows: C is refused (A is still there), A is
    # applied, B is refused (A has X now). Read from rows the failed batch left in the session, C
    # would see A at X and be applied onto A's real slot.
    made = {}
    for name, day in (("A", 3), ("B", 4), ("C", 5)):
        made[name] = await api.ok("POST", "/api/v1/meetings", meeting_body(
            world, "Tillväxten", start=f"2027-05-{day:02d}T09:00:00", end=f"2027-05-{day:02d}T12:00:00", title=f"Möte {name}"))
    x = (at(6, 13), at(6, 15))
    outcomes = await apply(client, world, (made["C"], at(3, 9), at(3, 12)), (made["A"], *x), (made["B"], *x))
    assert outcomes == ["refused", "made", "refused"]
    after = {name: await api.ok("GET", f"/api/v1/meetings/{meeting['id']}") for name, meeting in made.items()}
    assert after["A"]["starts_at"] == x[0].isoformat()
    assert (after["B"]["starts_at"], after["C"]["starts_at"]) == (made["B"]["starts_at"], made["C"]["starts_at"])
    assert await room_bookings(api, world) == sorted(
        [(x[0].isoformat(), x[1].isoformat())] + [(made[n]["starts_at"], made[n]["ends_at"]) for n in ("B", "C")])
    conflicts = await api.ok("GET", "/api/v1/conflicts")
    assert sorted(c["meeting_id"] for c in conflicts["items"]) == sorted([made["B"]["id"], made["C"]["id"]])


async def test_a_batch_refused_by_a_later_move_leaves_the_first_meetings_sessions_to_the_one_by_one_path(
        api: Any, world: dict[str, Any], client: Any) -> None:
    # The first move (a meeting with a session, moved as a whole) is valid; the second is not (a
    # client made the meeting end when it starts). The first is applied alone, its session along.
    first = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Tillväxten", start="2027-05-10T09:00:00", end="2027-05-10T12:00:00", title="Med pass",
        sessions=[{"title": "Öppning", "starts_at": "2027-05-10T09:30:00", "ends_at": "2027-05-10T10:30:00"}]))
    second = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Storsjön", start="2027-05-11T09:00:00", end="2027-05-11T12:00:00", title="Utan pass"))
    outcomes = await apply(client, world, (first, at(10, 13), at(10, 16)), (second, at(11, 10), at(11, 10)))
    assert outcomes == ["made"]  # the invalid one is written back, not counted as a booking
    moved = await api.ok("GET", f"/api/v1/meetings/{first['id']}")
    assert (moved["starts_at"], moved["sequence"]) == (at(10, 13).isoformat(), first["sequence"] + 1)
    assert moved["sessions"][0]["starts_at"] == at(10, 13, 30).isoformat()
    kept = await api.ok("GET", f"/api/v1/meetings/{second['id']}")
    assert (kept["starts_at"], kept["sequence"]) == (second["starts_at"], second["sequence"])
    conflicts = await api.ok("GET", "/api/v1/conflicts")
    assert [(c["kind"], c["meeting_id"]) for c in conflicts["items"]] == [("client_move_invalid", second["id"])]


async def test_moves_far_outside_what_the_api_accepts_are_refused_also_together(api: Any, world: dict[str, Any], client: Any) -> None:
    # The API takes years 1900 to 2200; a client's drag to 2300 is refused whether alone or not.
    made = [await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Tillväxten", start=f"2027-05-{day:02d}T09:00:00", end=f"2027-05-{day:02d}T12:00:00")) for day in (12, 13)]
    far = datetime(2300, 5, 12, 9, 0, tzinfo=STHLM)
    outcomes = await apply(client, world, (made[0], far, far.replace(hour=12)), (made[1], at(13, 13), at(13, 16)))
    assert outcomes == ["made"]
    assert (await api.ok("GET", f"/api/v1/meetings/{made[0]['id']}"))["starts_at"] == made[0]["starts_at"]
    assert (await api.ok("GET", f"/api/v1/meetings/{made[1]['id']}"))["starts_at"] == at(13, 13).isoformat()


async def test_a_meeting_moved_onto_the_slot_another_leaves_in_the_same_sync_is_applied_with_it(
        api: Any, world: dict[str, Any], client: Any) -> None:
    # A client drags B away and A onto B's old slot; the server lists A first. Together the moves
    # leave the room free of overlaps, so both are made, on PostgreSQL too, where the constraint
    # against overlaps is checked after the last of them rather than after each.
    a = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Tillväxten", start="2027-05-17T09:00:00", end="2027-05-17T12:00:00", title="Möte A"))
    b = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Tillväxten", start="2027-05-18T09:00:00", end="2027-05-18T12:00:00", title="Möte B"))
    outcomes = await apply(client, world, (a, at(18, 9), at(18, 12)), (b, at(19, 13), at(19, 16)))
    assert outcomes == ["made", "made"]
    assert (await api.ok("GET", f"/api/v1/meetings/{a['id']}"))["starts_at"] == at(18, 9).isoformat()
    assert (await api.ok("GET", f"/api/v1/meetings/{b['id']}"))["starts_at"] == at(19, 13).isoformat()
    assert await room_bookings(api, world) == [(at(18, 9).isoformat(), at(18, 12).isoformat()),
                                               (at(19, 13).isoformat(), at(19, 16).isoformat())]
    assert (await api.ok("GET", "/api/v1/conflicts"))["items"] == []
