"""Booking as the secretariat does it over HTTP: conflicts, back-to-back, cancelling, rescheduling."""
from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from service.db import models as m
from service.keys import SERVICES
from service.usecases import meetings as meetings_usecase
from tests.conftest import meeting_body


async def _active_bookings(client: Any, room_id: str) -> int:
    db = client.app[SERVICES].db
    async with db.session(write=False) as s:
        import uuid

        return await s.scalar(
            select(func.count()).select_from(m.RoomBooking).where(
                m.RoomBooking.room_id == uuid.UUID(room_id), m.RoomBooking.active.is_(True))
        )


async def test_fifty_concurrent_bookings_of_one_room_give_one_meeting(api, world, client) -> None:
    bodies = [
        meeting_body(world, "Tillväxten", start=f"2027-04-05T{9 + i % 3:02d}:00:00", end=f"2027-04-05T{12 + i % 2:02d}:30:00",
                     title=f"Möte {i}")
        for i in range(50)
    ]
    results = await asyncio.gather(*(api.post("/api/v1/meetings", b) for b in bodies))
    statuses = sorted(code for code, _ in results)
    assert statuses.count(201) == 1, statuses
    assert statuses.count(409) == 49, statuses
    assert await _active_bookings(client, world["rooms"]["Tillväxten"]["id"]) == 1
    winner = next(body for code, body in results if code == 201)
    for code, body in results:
        if code == 409:
            assert body["conflicts"][0]["room"] == "Tillväxten"
            assert body["conflicts"][0]["meeting_id"] == winner["id"]
            assert "Tillväxten" in body["detail"]


async def test_concurrent_meetings_sharing_one_of_their_rooms_book_it_once(api, world, client) -> None:
    a = [meeting_body(world, "Tillväxten", "Storsjön", title=f"A{i}") for i in range(25)]
    b = [meeting_body(world, "Utvecklingen", "Storsjön", title=f"B{i}") for i in range(25)]
    interleaved = [x for pair in zip(a, b) for x in pair]
    results = await asyncio.gather(*(api.post("/api/v1/meetings", body) for body in interleaved))
    codes = [code for code, _ in results]
    assert codes.count(201) == 1 and codes.count(409) == 49, codes
    assert await _active_bookings(client, world["rooms"]["Storsjön"]["id"]) == 1
    winner = next(body for code, body in results if code == 201)
    for (code, body), sent in zip(results, interleaved):
        if code == 409:
            clash = body["conflicts"][0]
            assert clash["meeting_id"] == winner["id"]
            assert clash["room_id"] in set(winner["room_ids"]) & set(sent["room_ids"])


async def test_a_burst_of_overlapping_bookings_of_one_room_is_decided_without_a_lost_race(
        api, world, monkeypatch) -> None:
    """Bookings of one room take turns between their check and their insert. On PostgreSQL two
    overlapping inserts used to wait for each other inside the exclusion constraint (a deadlock,
    broken after a second), and a request could lose all its retries: a 500."""
    lost: list[str] = []
    real = meetings_usecase.lost_race

    def spy(exc: Exception) -> bool:
        lost.append(str(exc).splitlines()[0])
        return real(exc)

    monkeypatch.setattr(meetings_usecase, "lost_race", spy)
    asks = [meeting_body(world, "Tillväxten", start=f"2027-11-01T{hour:02d}:{minute:02d}:00",
                         end=f"2027-11-01T{hour + 1:02d}:{minute:02d}:00", title=f"Bokning {hour}:{minute:02d}")
            for hour in range(8, 20) for minute in (0, 0, 30)]
    replies = await asyncio.gather(*(api.post("/api/v1/meetings", body) for body in asks))
    assert {code for code, _ in replies} <= {201, 409}, [r for r in replies if r[0] not in (201, 409)]
    assert lost == []
    def at(text: str) -> datetime:
        moment = datetime.fromisoformat(text)
        return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo("Europe/Stockholm"))

    made = sorted((at(body["starts_at"]), at(body["ends_at"])) for code, body in replies if code == 201)
    assert made and all(end <= start for (_, end), (start, _) in zip(made, made[1:])), made
    for (code, body), sent in zip(replies, asks):
        if code == 409:
            clash = body["conflicts"][0]
            assert at(clash["starts_at"]) < at(sent["ends_at"]) and at(clash["ends_at"]) > at(sent["starts_at"]), (clash, sent)


async def test_back_to_back_bookings_of_one_room_are_fine(api, world) -> None:
    await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", start="2027-04-05T09:00:00", end="2027-04-05T12:00:00"))
    await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", start="2027-04-05T12:00:00", end="2027-04-05T13:00:00"))
    await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", start="2027-04-05T08:00:00", end="2027-04-05T09:00:00"))


async def test_a_one_minute_overlap_is_refused_and_names_the_room_and_holder(api, world) -> None:
    first = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", title="Första mötet"))
    code, body = await api.post("/api/v1/meetings", meeting_body(world, "Tillväxten", start="2027-04-05T11:59:00", end="2027-04-05T13:00:00"))
    assert code == 409
    assert body["title"] == "Room already booked"
    assert body["conflicts"][0]["room_id"] == world["rooms"]["Tillväxten"]["id"]
    assert body["conflicts"][0]["meeting_id"] == first["id"]
    assert "Första mötet" in body["detail"]


async def test_a_cancelled_meetings_room_can_be_booked_again(api, world) -> None:
    first = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten"))
    cancelled = await api.ok("DELETE", f"/api/v1/meetings/{first['id']}", status=200)
    assert cancelled["status"] == "cancelled"
    assert cancelled["sequence"] == first["sequence"] + 1
    again = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten"))
    assert again["room_ids"] == [world["rooms"]["Tillväxten"]["id"]]
    kept = await api.ok("GET", f"/api/v1/meetings/{first['id']}")
    assert kept["status"] == "cancelled" and kept["room_ids"] == first["room_ids"]


async def test_a_reschedule_into_a_conflict_is_refused_and_leaves_the_meeting_as_it_was(api, world) -> None:
    await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", start="2027-04-05T13:00:00", end="2027-04-05T15:00:00"))
    mine = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", "Storsjön", sessions=[
        {"title": "Session 1", "starts_at": "2027-04-05T09:00:00", "ends_at": "2027-04-05T10:00:00"}]))
    code, body = await api.patch(f"/api/v1/meetings/{mine['id']}", {"starts_at": "2027-04-05T12:00:00", "ends_at": "2027-04-05T15:00:00"})
    assert code == 409, body
    after = await api.ok("GET", f"/api/v1/meetings/{mine['id']}")
    assert after == mine
    # The rooms it still holds are still held.
    code, _ = await api.post("/api/v1/meetings", meeting_body(world, "Storsjön", start="2027-04-05T10:00:00", end="2027-04-05T11:00:00"))
    assert code == 409


async def test_a_reschedule_moves_sessions_and_bookings_and_raises_the_sequence(api, world) -> None:
    mine = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", sessions=[
        {"title": "Session 1", "starts_at": "2027-04-05T09:30:00", "ends_at": "2027-04-05T10:00:00"}]))
    moved = await api.ok("PATCH", f"/api/v1/meetings/{mine['id']}", {"starts_at": "2027-04-06T09:00:00", "ends_at": "2027-04-06T12:00:00"})
    assert moved["sequence"] == mine["sequence"] + 1
    assert moved["uid"] == mine["uid"]
    assert moved["sessions"][0]["starts_at"] == "2027-04-06T09:30:00+02:00"
    # The old slot is free, the new one is taken.
    await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten"))
    code, _ = await api.post("/api/v1/meetings", meeting_body(world, "Tillväxten", start="2027-04-06T11:00:00", end="2027-04-06T13:00:00"))
    assert code == 409


async def test_a_meeting_can_be_moved_within_its_own_slot(api, world) -> None:
    mine = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten"))
    moved = await api.ok("PATCH", f"/api/v1/meetings/{mine['id']}", {"ends_at": "2027-04-05T12:30:00"})
    assert moved["ends_at"] == "2027-04-05T12:30:00+02:00"


async def test_sessions_must_lie_inside_their_meeting(api, world) -> None:
    code, body = await api.post("/api/v1/meetings", meeting_body(world, "Tillväxten", sessions=[
        {"title": "För tidigt", "starts_at": "2027-04-05T08:30:00", "ends_at": "2027-04-05T10:00:00"}]))
    assert code == 422
    assert body["errors"][0]["field"] == "sessions.0.starts_at"
    mine = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten"))
    code, body = await api.post(f"/api/v1/meetings/{mine['id']}/sessions", {
        "title": "För sent", "starts_at": "2027-04-05T11:00:00", "ends_at": "2027-04-05T12:30:00"})
    assert code == 422 and body["errors"][0]["field"] == "ends_at"
    code, body = await api.patch(f"/api/v1/meetings/{mine['id']}", {"sessions": [
        {"title": "Ok", "starts_at": "2027-04-05T09:00:00", "ends_at": "2027-04-05T10:00:00"},
        {"title": "Utanför", "starts_at": "2027-04-05T11:00:00", "ends_at": "2027-04-05T13:00:00"}]})
    assert code == 422 and body["errors"][0]["field"] == "sessions.1.ends_at"


async def test_every_visible_change_raises_the_sequence(api, world) -> None:
    mine = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten"))
    seq = mine["sequence"]
    renamed = await api.ok("PATCH", f"/api/v1/meetings/{mine['id']}", {"title": "Nytt namn"})
    assert renamed["sequence"] == seq + 1
    unchanged = await api.ok("PATCH", f"/api/v1/meetings/{mine['id']}", {"title": "Nytt namn"})
    assert unchanged["sequence"] == seq + 1
    session = await api.ok("POST", f"/api/v1/meetings/{mine['id']}/sessions", {
        "title": "Ny session", "starts_at": "2027-04-05T10:00:00", "ends_at": "2027-04-05T11:00:00"})
    after_add = await api.ok("GET", f"/api/v1/meetings/{mine['id']}")
    assert after_add["sequence"] == seq + 2
    await api.ok("PATCH", f"/api/v1/meetings/{mine['id']}/sessions/{session['id']}", {"title": "Omdöpt"})
    await api.ok("DELETE", f"/api/v1/meetings/{mine['id']}/sessions/{session['id']}", status=204)
    final = await api.ok("GET", f"/api/v1/meetings/{mine['id']}")
    assert final["sequence"] == seq + 4 and final["sessions"] == []


async def test_concurrent_changes_of_one_meeting_each_raise_the_sequence(api, world) -> None:
    # Calendar clients take a change only with a higher SEQUENCE: two changes that both wrote the
    # same next number would leave one of them unseen in some calendars.
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten"))
    titles = [f"Forummöte, version {i}" for i in range(6)]
    await asyncio.gather(*(api.ok("PATCH", f"/api/v1/meetings/{meeting['id']}", {"title": t}) for t in titles))
    after = await api.ok("GET", f"/api/v1/meetings/{meeting['id']}")
    assert after["sequence"] == meeting["sequence"] + len(titles) and after["title"] in titles


async def test_busy_shows_the_rooms_bookings_in_the_sites_zone(api, world) -> None:
    mine = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", title="Upptaget"))
    room = world["rooms"]["Tillväxten"]["id"]
    busy = await api.ok("GET", f"/api/v1/rooms/{room}/busy?from=2027-04-05T00:00:00%2B02:00&to=2027-04-06T00:00:00%2B02:00")
    assert [(b["meeting_id"], b["title"], b["starts_at"], b["source"]) for b in busy["items"]] == [
        (mine["id"], "Upptaget", "2027-04-05T09:00:00+02:00", "service")]
    other_day = await api.ok("GET", f"/api/v1/rooms/{room}/busy?from=2027-04-06T00:00:00%2B02:00&to=2027-04-07T00:00:00%2B02:00")
    assert other_day["items"] == []


async def test_meetings_are_listed_by_forum_and_window_and_paged(api, world) -> None:
    other = await api.ok("POST", "/api/v1/forums", {"name": "Politisk nivå", "kind": "political"})
    ids = []
    for day in range(1, 8):
        created = await api.ok("POST", "/api/v1/meetings", meeting_body(
            world, start=f"2027-05-{day:02d}T09:00:00", end=f"2027-05-{day:02d}T10:00:00", title=f"Dag {day}"))
        ids.append(created["id"])
    # 09:15, not 09:00: meetings starting together are ordered by id, which is random.
    await api.ok("POST", "/api/v1/meetings", {**meeting_body(world, start="2027-05-03T09:15:00", end="2027-05-03T10:00:00"),
                                             "forum_id": other["id"]})
    seen, cursor = [], None
    while True:
        path = f"/api/v1/meetings?forum_id={world['forum']['id']}&limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await api.ok("GET", path)
        seen += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids
    window = await api.ok("GET", "/api/v1/meetings?from=2027-05-02T12:00:00%2B02:00&to=2027-05-04T09:30:00%2B02:00")
    assert sorted(m["title"] for m in window["items"]) == ["Dag 3", "Dag 4", "Forummöte"]
    starts = [m["starts_at"] for m in window["items"]]
    assert starts == sorted(starts)


async def test_every_write_is_audited_with_the_tokens_subject(api, world) -> None:
    mine = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten"))
    await api.ok("DELETE", f"/api/v1/meetings/{mine['id']}")
    log = await api.ok("GET", f"/api/v1/audit?entity=meeting&entity_id={mine['id']}")
    assert [(e["action"], e["actor"]) for e in log["items"]] == [("created", "sekretariatet"), ("cancelled", "sekretariatet")]
    everything = await api.ok("GET", "/api/v1/audit?limit=500")
    assert {e["entity"] for e in everything["items"]} >= {"site", "room", "forum", "meeting"}
