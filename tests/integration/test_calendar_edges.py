"""Calendar sync where clients, the secretariat and the sync cross each other's paths: an RSVP given
in the service against a client's older copy, a calendar re-filing our event, a room changing or
handing on its calendar, a busy block and a booking of one room at the same moment."""
from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest

from service.usecases import meetings as meetings_module
from tests.conftest import meeting_body
from tests.integration.test_calendar_sync import (  # noqa: F401 - fixtures used by name
    STHLM, _foreign_event, _rewrite, calendars, client, objects, settings, settle, vevent,
)
from tests.support.caldav_servers import CaldavServer
from tests.support.http import ApiClient

BOARD = (datetime(2027, 4, 5, 9, 0, tzinfo=STHLM), datetime(2027, 4, 5, 11, 0, tzinfo=STHLM))


def _board_meeting(caldav_server: CaldavServer, calendar_url: str, name: str) -> None:
    """The regional board's meeting, 09:00 to 11:00, made in a room's calendar by a client."""
    status, _, body = caldav_server.request("PUT", calendar_url + f"{name}.ics", _foreign_event(name, *BOARD),
                                            {"Content-Type": "text/calendar", "If-None-Match": "*"})
    assert status in (201, 204), body


async def _book(api: ApiClient, world: dict[str, Any], room: str) -> tuple[int, Any]:
    """A meeting in `room` at 09:30 to 10:30 on the board meeting's day."""
    return await api.post("/api/v1/meetings", meeting_body(world, room, start="2027-04-05T09:30:00",
                                                            end="2027-04-05T10:30:00"))


async def test_an_rsvp_given_in_the_service_survives_a_clients_older_copy(
        api: ApiClient, world: dict[str, Any], calendars: dict[str, str], caldav_server: CaldavServer) -> None:
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten"))
    person = await api.ok("POST", "/api/v1/people", {"name": "Åsa Öberg", "email": "asa@regeringen.example"})
    inv = await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations",
                       {"person_id": person["id"], "mode": "remote"})
    await settle(api)
    # Someone corrects the title in the forum calendar; Åsa's PARTSTAT there stays NEEDS-ACTION, as
    # we wrote it. Then, before any sync, Åsa declines through the service: its push meets the
    # client's copy (412), and the pull rules read that copy.
    [(href, _)] = await objects(caldav_server, calendars["forum"])
    _rewrite(caldav_server, href, b"", SUMMARY="Forummöte (rättad titel)")
    await api.ok("PATCH", f"/api/v1/invitations/{inv['id']}", {"rsvp": "declined"})
    await settle(api)
    assert (await api.ok("GET", f"/api/v1/invitations/{inv['id']}"))["rsvp"] == "declined"
    for url in (calendars["forum"], calendars["Tillväxten"]):
        [(_, data)] = await objects(caldav_server, url)
        attendee = [a for a in vevent(data).get("ATTENDEE", []) if "asa@regeringen.example" in str(a).lower()]
        assert [a.params.get("PARTSTAT") for a in attendee] == ["DECLINED"], url
    # A PARTSTAT a client does change still comes back.
    [(href, _)] = await objects(caldav_server, calendars["forum"])
    _rewrite(caldav_server, href, b"", PARTSTAT=("asa@regeringen.example", "ACCEPTED"))
    await settle(api)
    assert (await api.ok("GET", f"/api/v1/invitations/{inv['id']}"))["rsvp"] == "accepted"


async def test_our_event_filed_under_another_name_by_a_client_still_follows_the_meeting(
        api: ApiClient, world: dict[str, Any], calendars: dict[str, str], caldav_server: CaldavServer) -> None:
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten"))
    await settle(api)
    url = calendars["forum"]
    [(href, _)] = await objects(caldav_server, url)
    status, _, data = caldav_server.request("GET", href)
    assert status == 200
    # The client deletes the object and creates it again under a name of its own (same UID).
    assert caldav_server.request("DELETE", href)[0] in (200, 204)
    status, _, body = caldav_server.request("PUT", url + "klientens-namn.ics", data,
                                            {"Content-Type": "text/calendar", "If-None-Match": "*"})
    assert status in (201, 204), body
    await settle(api)
    await api.ok("PATCH", f"/api/v1/meetings/{meeting['id']}",
                 {"starts_at": "2027-04-06T09:00:00", "ends_at": "2027-04-06T12:00:00"})
    await settle(api)
    held = await objects(caldav_server, url)
    assert [h.rsplit("/", 1)[1] for h, _ in held] == ["klientens-namn.ics"]
    assert str(vevent(held[0][1]).decoded("DTSTART")).startswith("2027-04-06 09:00")
    status = await api.ok("GET", "/api/v1/calendars")
    assert all(c["failed_jobs"] == 0 for c in status["items"]), status
    await api.ok("DELETE", f"/api/v1/meetings/{meeting['id']}")
    await settle(api)
    [(_, data)] = await objects(caldav_server, url)
    assert str(vevent(data).get("STATUS")) == "CANCELLED"


async def test_a_room_that_changes_calendar_is_no_longer_held_by_the_old_ones_events(
        api: ApiClient, world: dict[str, Any], calendars: dict[str, str], caldav_server: CaldavServer) -> None:
    _board_meeting(caldav_server, calendars["Tillväxten"], "styrelse-1")
    await settle(api)
    code, body = await _book(api, world, "Tillväxten")
    assert code == 409 and [c["source"] for c in body["conflicts"]] == ["calendar"], body
    await api.ok("PATCH", f"/api/v1/rooms/{world['rooms']['Tillväxten']['id']}",
                 {"calendar_url": caldav_server.new_calendar()})
    await settle(api)
    code, body = await _book(api, world, "Tillväxten")
    assert code == 201, body


async def test_a_calendar_handed_to_another_room_blocks_that_room_and_frees_the_first(
        api: ApiClient, world: dict[str, Any], calendars: dict[str, str], caldav_server: CaldavServer) -> None:
    room_calendar = calendars["Tillväxten"]
    _board_meeting(caldav_server, room_calendar, "styrelse-1")
    await settle(api)
    # The calendar was Storsjön's all along: the secretariat hands it over.
    await api.ok("PATCH", f"/api/v1/rooms/{world['rooms']['Tillväxten']['id']}", {"calendar_url": None})
    await api.ok("PATCH", f"/api/v1/rooms/{world['rooms']['Storsjön']['id']}", {"calendar_url": room_calendar})
    await settle(api)
    code, body = await _book(api, world, "Storsjön")
    assert code == 409 and [c["room"] for c in body["conflicts"]] == ["Storsjön"], body
    code, body = await _book(api, world, "Tillväxten")
    assert code == 201, body


async def test_a_busy_block_and_a_booking_of_the_room_at_the_same_moment_never_both_pass_unnoticed(
        api: ApiClient, world: dict[str, Any], calendars: dict[str, str], caldav_server: CaldavServer,
        monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("a race of two transactions at once: SQLite runs one writer at a time")
    await settle(api)
    _board_meeting(caldav_server, calendars["Tillväxten"], "styrelse-9")
    reached, go = asyncio.Event(), asyncio.Event()
    ensure_free = meetings_module.ensure_free

    async def paused(*args: Any, **kwargs: Any) -> Any:
        result = await ensure_free(*args, **kwargs)  # the room is free: the block is not there yet
        reached.set()
        await go.wait()
        return result

    monkeypatch.setattr(meetings_module, "ensure_free", paused)
    booking = asyncio.create_task(_book(api, world, "Tillväxten"))
    await asyncio.wait_for(reached.wait(), 30)
    monkeypatch.setattr(meetings_module, "ensure_free", ensure_free)
    # The pull that finds the board meeting runs while the booking holds the room between its
    # check and its commit. Unlocked, it finished here, found no booking, and both committed.
    pull = asyncio.create_task(api.ok("POST", "/api/v1/calendars/sync", status=200))
    await asyncio.wait({pull}, timeout=3)
    go.set()
    code, body = await booking
    await pull
    await settle(api)
    conflicts = (await api.ok("GET", "/api/v1/conflicts?status=open"))["items"]
    assert code == 409 or [c for c in conflicts if c["kind"] == "calendar_event_overlaps_booking"], (code, body)


async def test_our_event_dragged_into_another_rooms_calendar_goes_back_where_it_belongs(
        api: ApiClient, world: dict[str, Any], calendars: dict[str, str], caldav_server: CaldavServer) -> None:
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten"))
    await settle(api)
    [(href, copy)] = await objects(caldav_server, calendars["Tillväxten"])
    uid = str(vevent(copy).get("UID"))
    status, _, data = caldav_server.request("GET", href)
    assert status == 200
    # A client moves the event to Storsjön's calendar: deleted in one, created in the other, same UID.
    assert caldav_server.request("DELETE", href)[0] in (200, 204)
    status, _, body = caldav_server.request("PUT", calendars["Storsjön"] + "flyttad.ics", data,
                                            {"Content-Type": "text/calendar", "If-None-Match": "*"})
    assert status in (201, 204), body
    await settle(api)
    # Storsjön's calendar does not show the room booked by a meeting that is not there; Tillväxten's
    # shows it again; the meeting still has its room.
    assert await objects(caldav_server, calendars["Storsjön"]) == []
    [(_, back)] = await objects(caldav_server, calendars["Tillväxten"])
    assert str(vevent(back).get("UID")) == uid
    assert (await api.ok("GET", f"/api/v1/meetings/{meeting['id']}"))["room_ids"] == meeting["room_ids"]
    status = await api.ok("GET", "/api/v1/calendars")
    assert all(c["failed_jobs"] == 0 and c["pending_jobs"] == 0 for c in status["items"]), status


async def test_a_pull_of_a_calendar_its_room_has_left_writes_no_blocks_for_that_room(
        api: ApiClient, world: dict[str, Any], calendars: dict[str, str], caldav_server: CaldavServer,
        client: Any) -> None:
    from sqlalchemy import select, update

    from service.db import models as m
    from service.keys import SERVICES

    services = client.app[SERVICES]
    _board_meeting(caldav_server, calendars["Tillväxten"], "styrelse-1")
    await settle(api)
    await api.ok("PATCH", f"/api/v1/rooms/{world['rooms']['Tillväxten']['id']}",
                 {"calendar_url": caldav_server.new_calendar()})
    await settle(api)
    # A pull of the old calendar that had listed it before the room left, as it finishes afterwards.
    async with services.db.session(write=True) as s:
        async with s.begin():
            old = await s.scalar(select(m.Calendar.id).where(m.Calendar.url == calendars["Tillväxten"]))
            await s.execute(update(m.Calendar).where(m.Calendar.id == old).values(sync_token=None))
    await services.calendar_sync.sync_one(old)
    code, body = await _book(api, world, "Tillväxten")
    assert code == 201, body
