"""Clock changes and time zones at the edges; Swedish names, emoji and combining marks kept as sent."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select

from service.db import models as m
from service.keys import SERVICES
from tests.conftest import meeting_body
from tests.support.http import ApiClient

UTC = timezone.utc


async def stored(client: Any, meeting_id: str) -> tuple[datetime, datetime]:
    async with client.app[SERVICES].db.session(write=False) as s:
        row = await s.scalar(select(m.Meeting).where(m.Meeting.id == uuid.UUID(meeting_id)))
        return row.starts_at, row.ends_at


def hours(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)) / timedelta(hours=1)


@pytest.mark.parametrize(("day", "start", "end", "utc_start", "utc_end", "length"), [
    pytest.param("2027-03-28", "2027-03-28T00:30:00+01:00", "2027-03-28T05:00:00+02:00",
                 datetime(2027, 3, 27, 23, 30, tzinfo=UTC), datetime(2027, 3, 28, 3, 0, tzinfo=UTC), 3.5,
                 id="spring forward"),
    pytest.param("2027-10-31", "2027-10-31T00:30:00+02:00", "2027-10-31T05:00:00+01:00",
                 datetime(2027, 10, 30, 22, 30, tzinfo=UTC), datetime(2027, 10, 31, 4, 0, tzinfo=UTC), 5.5,
                 id="fall back"),
])
async def test_a_meeting_on_the_day_the_clocks_change_is_stored_and_returned_right(
    api: ApiClient, world: dict, client: Any, day, start, end, utc_start, utc_end, length
) -> None:
    made = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Tillväxten", start=f"{day}T00:30:00", end=f"{day}T05:00:00", sessions=[
            {"title": "Över omställningen", "starts_at": f"{day}T01:00:00", "ends_at": f"{day}T04:00:00"}]))
    assert (made["starts_at"], made["ends_at"], made["timezone"]) == (start, end, "Europe/Stockholm")
    assert hours(made["starts_at"], made["ends_at"]) == length
    assert await stored(client, made["id"]) == (utc_start, utc_end)
    assert await api.ok("GET", f"/api/v1/meetings/{made['id']}") == made
    session = made["sessions"][0]
    assert (session["starts_at"], session["ends_at"]) == (f"{day}T01:00:00{start[-6:]}", f"{day}T04:00:00{end[-6:]}")


@pytest.mark.parametrize(("start", "end", "field", "why"), [
    pytest.param("2027-03-28T02:30:00", "2027-03-28T04:00:00", "starts_at", "does not exist", id="start skipped"),
    pytest.param("2027-03-28T01:00:00", "2027-03-28T02:15:00", "ends_at", "does not exist", id="end skipped"),
    pytest.param("2027-10-31T02:30:00", "2027-10-31T04:00:00", "starts_at", "twice", id="start ambiguous"),
    pytest.param("2027-10-31T01:00:00", "2027-10-31T02:59:00", "ends_at", "twice", id="end ambiguous"),
])
async def test_a_local_time_the_clocks_skip_or_repeat_is_refused_by_name(api, world, start, end, field, why) -> None:
    code, problem = await api.post("/api/v1/meetings", meeting_body(world, "Tillväxten", start=start, end=end))
    assert code == 422, problem
    assert problem["errors"][0]["field"] == field and why in problem["errors"][0]["message"]


async def test_a_session_at_a_skipped_time_is_refused_by_its_path(api: ApiClient, world: dict) -> None:
    code, problem = await api.post("/api/v1/meetings", meeting_body(
        world, start="2027-03-28T00:30:00", end="2027-03-28T05:00:00", sessions=[
            {"title": "Ok", "starts_at": "2027-03-28T01:00:00", "ends_at": "2027-03-28T01:30:00"},
            {"title": "Finns inte", "starts_at": "2027-03-28T02:10:00", "ends_at": "2027-03-28T04:00:00"}]))
    assert code == 422 and problem["errors"][0]["field"] == "sessions.1.starts_at"


@pytest.mark.parametrize(("given", "returned"), [
    ("2027-10-31T02:30:00+02:00", "2027-10-31T02:30:00+02:00"),
    ("2027-10-31T02:30:00+01:00", "2027-10-31T02:30:00+01:00"),
    ("2027-04-05T07:00:00Z", "2027-04-05T09:00:00+02:00"),
    ("2027-04-05T03:00:00-04:00", "2027-04-05T09:00:00+02:00"),
])
async def test_a_time_given_with_an_offset_is_taken_as_given(api: ApiClient, world: dict, given, returned) -> None:
    end = (datetime.fromisoformat(given.replace("Z", "+00:00")) + timedelta(hours=1)).isoformat()
    made = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", start=given, end=end))
    assert made["starts_at"] == returned
    assert hours(made["starts_at"], made["ends_at"]) == 1


@pytest.mark.parametrize(("day", "offset"), [("2027-01-12", "-05:00"), ("2027-04-05", "-04:00")])
async def test_a_meeting_in_new_york_is_returned_in_new_york_time(api: ApiClient, world: dict, day, offset) -> None:
    made = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, start=f"{day}T09:00:00", end=f"{day}T11:00:00", timezone="America/New_York",
        sessions=[{"title": "Session", "starts_at": f"{day}T10:00:00", "ends_at": f"{day}T11:00:00"}]))
    assert (made["starts_at"], made["timezone"]) == (f"{day}T09:00:00{offset}", "America/New_York")
    assert made["sessions"][0]["starts_at"] == f"{day}T10:00:00{offset}"
    # The clocks change on another day there: 2027-03-14 02:30 does not exist in New York.
    code, problem = await api.post("/api/v1/meetings", meeting_body(
        world, start="2027-03-14T02:30:00", end="2027-03-14T04:00:00", timezone="America/New_York"))
    assert code == 422 and problem["errors"][0]["field"] == "starts_at"


async def test_a_move_across_the_clock_change_keeps_the_sessions_wall_clock_time(api: ApiClient, world: dict) -> None:
    made = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Tillväxten", start="2027-03-27T09:00:00", end="2027-03-27T12:00:00",
        sessions=[{"title": "S", "starts_at": "2027-03-27T09:30:00", "ends_at": "2027-03-27T10:00:00"}]))
    moved = await api.ok("PATCH", f"/api/v1/meetings/{made['id']}", {
        "starts_at": "2027-03-28T09:00:00", "ends_at": "2027-03-28T12:00:00"})
    assert moved["starts_at"] == "2027-03-28T09:00:00+02:00"
    assert moved["sessions"][0]["starts_at"] == "2027-03-28T09:30:00+02:00"


TEXTS = [
    pytest.param("Möte om tillväxt 🌲 i Östersund", id="emoji"),
    pytest.param("Mo\u0308te i O\u0308stersund och A\u030are", id="combining marks"),
    pytest.param("👩🏽‍💻 Åsa & Jörgen <b>“citat”</b> — ½", id="zwj emoji and markup"),
]


@pytest.mark.parametrize("text", TEXTS)
async def test_names_and_titles_round_trip_unchanged(api: ApiClient, text: str) -> None:
    site = await api.ok("POST", "/api/v1/sites", {"name": text, "city": text})
    room = await api.ok("POST", "/api/v1/rooms", {"site_id": site["id"], "name": text, "equipment": [text]})
    person = await api.ok("POST", "/api/v1/people", {
        "name": text, "email": "åsa.öberg@exempel.se", "organisation": text, "region": text})
    forum = await api.ok("POST", "/api/v1/forums", {"name": text, "kind": "political"})
    meeting = await api.ok("POST", "/api/v1/meetings", {
        "forum_id": forum["id"], "title": text, "description": text, "room_ids": [room["id"]],
        "starts_at": "2027-04-05T09:00:00", "ends_at": "2027-04-05T12:00:00",
        "sessions": [{"title": text, "topic": text, "starts_at": "2027-04-05T09:00:00", "ends_at": "2027-04-05T10:00:00"}]})
    session = await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/sessions", {
        "title": text, "topic": text, "starts_at": "2027-04-05T10:00:00", "ends_at": "2027-04-05T11:00:00"})
    expected = [
        (f"/api/v1/sites/{site['id']}", {"name": text, "city": text}),
        (f"/api/v1/rooms/{room['id']}", {"name": text, "equipment": [text]}),
        (f"/api/v1/people/{person['id']}", {"name": text, "organisation": text, "region": text,
                                            "email": "åsa.öberg@exempel.se"}),
        (f"/api/v1/forums/{forum['id']}", {"name": text}),
        (f"/api/v1/meetings/{meeting['id']}", {"title": text, "description": text}),
    ]
    for path, fields in expected:
        read = await api.ok("GET", path)
        assert {k: read[k] for k in fields} == fields, path
    sessions = (await api.ok("GET", f"/api/v1/meetings/{meeting['id']}/sessions"))["items"]
    assert [(s["title"], s["topic"]) for s in sessions] == [(text, text), (text, text)]
    assert (session["title"], session["topic"]) == (text, text)


async def test_a_name_of_200_emoji_fits_and_201_do_not(api: ApiClient) -> None:
    site = await api.ok("POST", "/api/v1/sites", {"name": "🌲" * 200, "city": "Östersund"})
    assert (await api.ok("GET", f"/api/v1/sites/{site['id']}"))["name"] == "🌲" * 200
    code, problem = await api.post("/api/v1/sites", {"name": "🌲" * 201, "city": "Östersund"})
    assert code == 422 and problem["errors"][0]["field"] == "name"


async def test_an_email_differing_only_in_the_case_of_swedish_letters_is_the_same_person(api: ApiClient) -> None:
    await api.ok("POST", "/api/v1/people", {"name": "Åsa Öberg", "email": "Åsa.Öberg@exempel.se"})
    code, problem = await api.post("/api/v1/people", {"name": "Åsa Öberg", "email": "åsa.öberg@EXEMPEL.SE"})
    assert code == 409 and problem["errors"][0]["field"] == "email"


async def test_a_meeting_over_the_night_the_clocks_go_forward_moves_a_week_on_with_its_sessions(api, world) -> None:
    # 28 March 2027: Stockholm goes from 02:00 CET to 03:00 CEST; that night 20:00 to 04:00 is 7 hours.
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Tillväxten", start="2027-03-27T20:00:00", end="2027-03-28T04:00:00",
        sessions=[{"title": "Kvällspass", "starts_at": "2027-03-27T20:00:00", "ends_at": "2027-03-27T22:00:00"},
                  {"title": "Nattpass", "starts_at": "2027-03-28T03:00:00", "ends_at": "2027-03-28T04:00:00"}]))
    # The same clock times a week on, a night of 8 hours: a move, and the sessions keep their clock times.
    moved = await api.ok("PATCH", f"/api/v1/meetings/{meeting['id']}",
                         {"starts_at": "2027-04-03T20:00:00", "ends_at": "2027-04-04T04:00:00"})
    assert [(s["starts_at"], s["ends_at"]) for s in moved["sessions"]] == [
        ("2027-04-03T20:00:00+02:00", "2027-04-03T22:00:00+02:00"),
        ("2027-04-04T03:00:00+02:00", "2027-04-04T04:00:00+02:00")]
    # And back: the night session's clock times exist again that night (03:00 is after the skip).
    back = await api.ok("PATCH", f"/api/v1/meetings/{meeting['id']}",
                        {"starts_at": "2027-03-27T20:00:00", "ends_at": "2027-03-28T04:00:00"})
    assert [s["starts_at"] for s in back["sessions"]] == ["2027-03-27T20:00:00+01:00", "2027-03-28T03:00:00+02:00"]
    # A move that would put a session where the clocks skip is refused, naming it.
    skipped = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Storsjön", start="2027-04-03T20:00:00", end="2027-04-04T04:00:00",
        sessions=[{"title": "Nattpass", "starts_at": "2027-04-04T02:00:00", "ends_at": "2027-04-04T03:00:00"}]))
    status, body = await api.patch(f"/api/v1/meetings/{skipped['id']}",
                                   {"starts_at": "2027-03-27T20:00:00", "ends_at": "2027-03-28T04:00:00"})
    assert status == 422 and "sessions.0.starts_at" in str(body), body


async def test_a_move_that_also_changes_the_zone_takes_the_sessions_along(api, world) -> None:
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Tillväxten", start="2027-03-20T09:00:00", end="2027-03-20T11:00:00", timezone="UTC",
        sessions=[{"title": "Inledning", "starts_at": "2027-03-20T09:00:00", "ends_at": "2027-03-20T10:00:00"}]))
    # Two hours on UTC's clocks, three on Stockholm's that night (the clocks go forward at 02:00 CET).
    moved = await api.ok("PATCH", f"/api/v1/meetings/{meeting['id']}", {
        "timezone": "Europe/Stockholm", "starts_at": "2027-03-28T00:30:00+00:00", "ends_at": "2027-03-28T02:30:00+00:00"})
    [session] = moved["sessions"]
    assert (session["starts_at"], session["ends_at"]) == ("2027-03-28T01:30:00+01:00", "2027-03-28T03:30:00+02:00")
