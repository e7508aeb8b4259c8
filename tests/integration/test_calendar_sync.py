"""Calendar sync against real Radicale and Xandikos servers, through the HTTP API."""
from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import caldav
import pytest
from icalendar import Calendar
from sqlalchemy import delete, event, select, update

from service import container
from service.app import create_app
from service.calendar.plan import PUSH, push_key
from service.calendar.pull import PullRules
from service.db import models as m
from service.keys import SERVICES
from service.settings import Settings
from tests.conftest import VIDEO, meeting_body
from tests.support.caldav_servers import CaldavServer
from tests.support.http import ApiClient, token_for
from tests.support.tcp_proxy import TcpProxy

STHLM = ZoneInfo("Europe/Stockholm")


@pytest.fixture
def settings(database_url: str, tmp_path: Path, caldav_server: CaldavServer, smtp_server: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database={"url": database_url},
        auth={"jwt_secret": secrets.token_urlsafe(32)},
        http={"public_url": "http://forum.test"},
        organizer={"name": "Forumsekretariatet", "email": "forum@tillvaxt.example"},
        # Invitation mail goes somewhere: a mail job failing again on every sync would keep `settle` from settling.
        mail={"host": smtp_server.host, "port": smtp_server.port},
        # Jitsi, and the static provider, which dials the host room's video address.
        video={**VIDEO, "static": {}},
        calendar={"sync_interval_s": 3600, "accounts": [
            {"url": a.url_prefix, "username": a.username, "password": a.password} for a in caldav_server.accounts]},
    )


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> Any:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def calendars(api: ApiClient, world: dict[str, Any], caldav_server: CaldavServer) -> dict[str, str]:
    """A forum calendar and a calendar for the rooms Tillväxten and Storsjön."""
    urls = {"forum": caldav_server.new_calendar(), "Tillväxten": caldav_server.new_calendar(),
            "Storsjön": caldav_server.new_calendar()}
    await api.ok("PATCH", f"/api/v1/forums/{world['forum']['id']}", {"calendar_url": urls["forum"]})
    for room in ("Tillväxten", "Storsjön"):
        await api.ok("PATCH", f"/api/v1/rooms/{world['rooms'][room]['id']}", {"calendar_url": urls[room]})
    return urls


async def sync(api: ApiClient) -> dict[str, Any]:
    return await api.ok("POST", "/api/v1/calendars/sync", status=200)


async def settle(api: ApiClient, rounds: int = 20) -> None:
    """Sync until nothing is left to do: a pull can queue pushes, a push can follow a pull, and the
    background worker may be holding a job when the sync runs."""
    quiet = 0
    for _ in range(rounds):
        result = await sync(api)
        status = await api.ok("GET", "/api/v1/calendars")
        waiting = sum(c["pending_jobs"] for c in status["items"])
        if result["jobs_run"] == 0 and result["changed"] == 0 and result["deleted"] == 0 and waiting == 0:
            quiet += 1
            if quiet == 2:
                return
        else:
            quiet = 0
        await asyncio.sleep(0.05)
    raise AssertionError(f"calendars did not settle: {status}")


def read_calendar(server: CaldavServer, url: str) -> list[tuple[str, bytes]]:
    """Every object in a calendar, read by an independent client (the caldav library's sync client)."""
    client = caldav.DAVClient(url=server.origin + "/", username=server.username, password=server.password)
    cal = client.calendar(url=url)
    out = []
    for obj in cal.events():
        if obj.data is None:
            obj.load()
        out.append((str(obj.url), obj.data.encode() if isinstance(obj.data, str) else obj.data))
    return out


async def objects(server: CaldavServer, url: str) -> list[tuple[str, Any]]:
    raw = await asyncio.to_thread(read_calendar, server, url)
    return [(href, Calendar.from_ical(data)) for href, data in raw]


def vevent(cal: Any) -> Any:
    [ev] = [c for c in cal.walk("VEVENT")]
    return ev


async def book_on_dst_day(api: ApiClient, world: dict[str, Any]) -> dict[str, Any]:
    body = meeting_body(world, "Tillväxten", "Storsjön", start="2027-03-28T00:30:00", end="2027-03-28T05:00:00",
                        title="Nattmöte; om tillväxt, å ä ö", description="Rad ett\nRad två, med komma; och semikolon",
                        sessions=[{"title": "Kompetensförsörjning", "starts_at": "2027-03-28T01:00:00",
                                   "ends_at": "2027-03-28T03:30:00"}])
    meeting = await api.ok("POST", "/api/v1/meetings", body)
    person = await api.ok("POST", "/api/v1/people", {"name": "Jörgen Ångström", "email": "jorgen@region.example"})
    await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations", {"person_id": person["id"], "mode": "remote"})
    return meeting


async def test_a_booked_meeting_appears_once_in_the_forum_and_each_room_calendar(api, world, calendars, caldav_server) -> None:
    meeting = await book_on_dst_day(api, world)
    await settle(api)
    for name in ("forum", "Tillväxten", "Storsjön"):
        found = await objects(caldav_server, calendars[name])
        assert len(found) == 1, (name, found)
        href, cal = found[0]
        ev = vevent(cal)
        assert str(ev["UID"]) == meeting["uid"]
        assert int(ev["SEQUENCE"]) == meeting["sequence"]
        assert ev.get("DTSTAMP") is not None
        assert ev["DTSTART"].params["TZID"] == "Europe/Stockholm"
        start, end = ev.decoded("DTSTART"), ev.decoded("DTEND")
        assert start.replace(tzinfo=None) == datetime(2027, 3, 28, 0, 30) and start.utcoffset() == timedelta(hours=1)
        assert end.replace(tzinfo=None) == datetime(2027, 3, 28, 5, 0) and end.utcoffset() == timedelta(hours=2)
        assert end.astimezone(timezone.utc) - start.astimezone(timezone.utc) == timedelta(hours=3, minutes=30)
        assert [str(tz["TZID"]) for tz in cal.walk("VTIMEZONE")] == ["Europe/Stockholm"]
        assert str(ev["SUMMARY"]) == "Nattmöte; om tillväxt, å ä ö"
        assert "Tillväxten" in str(ev["LOCATION"]) and "Stockholm" in str(ev["LOCATION"])
        description = str(ev["DESCRIPTION"])
        assert "Kompetensförsörjning" in description and "Rad två, med komma; och semikolon" in description
        assert str(ev["ORGANIZER"]) == "mailto:forum@tillvaxt.example"
        attendees = ev.get("ATTENDEE")
        people = [a for a in attendees if a.params.get("CUTYPE") != "ROOM"]
        rooms = [a for a in attendees if a.params.get("CUTYPE") == "ROOM"]
        assert [(str(a), a.params["PARTSTAT"], a.params["ROLE"]) for a in people] == [
            ("mailto:jorgen@region.example", "NEEDS-ACTION", "REQ-PARTICIPANT")]
        assert sorted(a.params["CN"] for a in rooms) == ["Storsjön", "Tillväxten"]
        assert str(ev["STATUS"]) == "CONFIRMED"
        assert "/j/" not in cal.to_ical().decode()
    status = await api.ok("GET", "/api/v1/calendars")
    assert {c["url"]: (c["objects"], c["pending_jobs"], c["failed_jobs"]) for c in status["items"]} == {
        url: (1, 0, 0) for url in calendars.values()}


async def test_a_rescheduled_meeting_keeps_its_uid_and_raises_its_sequence(api, world, calendars, caldav_server) -> None:
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten"))
    await settle(api)
    moved = await api.ok("PATCH", f"/api/v1/meetings/{meeting['id']}", {
        "starts_at": "2027-04-06T13:00:00", "ends_at": "2027-04-06T15:00:00", "room_ids": [world["rooms"]["Storsjön"]["id"]]})
    await settle(api)
    [(_, forum_cal)] = await objects(caldav_server, calendars["forum"])
    ev = vevent(forum_cal)
    assert str(ev["UID"]) == meeting["uid"] and int(ev["SEQUENCE"]) == moved["sequence"] > meeting["sequence"]
    assert ev.decoded("DTSTART") == datetime(2027, 4, 6, 13, 0, tzinfo=STHLM)
    # The room it left no longer shows it; the room it moved to does.
    assert await objects(caldav_server, calendars["Tillväxten"]) == []
    [(_, room_cal)] = await objects(caldav_server, calendars["Storsjön"])
    assert str(vevent(room_cal)["UID"]) == meeting["uid"]


async def test_a_cancelled_meeting_is_cancelled_in_the_forum_calendar_and_gone_from_the_rooms(api, world, calendars, caldav_server) -> None:
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", "Storsjön"))
    await settle(api)
    await api.ok("DELETE", f"/api/v1/meetings/{meeting['id']}")
    await settle(api)
    [(_, forum_cal)] = await objects(caldav_server, calendars["forum"])
    assert str(vevent(forum_cal)["STATUS"]) == "CANCELLED"
    assert await objects(caldav_server, calendars["Tillväxten"]) == []
    assert await objects(caldav_server, calendars["Storsjön"]) == []


async def test_with_the_server_down_nothing_is_lost_and_calendars_converge_later(api, world, calendars, caldav_server) -> None:
    kept = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", title="Redan synkat"))
    await settle(api)
    caldav_server.stop()
    made = []
    for day in (10, 11, 12):
        made.append(await api.ok("POST", "/api/v1/meetings", meeting_body(
            world, "Tillväxten", start=f"2027-04-{day}T09:00:00", end=f"2027-04-{day}T10:00:00", title=f"Dag {day}")))
    moved = await api.ok("PATCH", f"/api/v1/meetings/{made[0]['id']}", {"title": "Dag 10, flyttad", "ends_at": "2027-04-10T11:00:00"})
    await api.ok("DELETE", f"/api/v1/meetings/{made[1]['id']}")
    await api.ok("PATCH", f"/api/v1/meetings/{kept['id']}", {"title": "Ändrat medan servern var nere"})
    result = await sync(api)
    assert result["errors"], "the sync reports the unreachable server"
    status = await api.ok("GET", "/api/v1/calendars")
    forum = next(c for c in status["items"] if c["url"] == calendars["forum"])
    assert forum["pending_jobs"] >= 4 and forum["failed_jobs"] == 0
    assert all(j["last_error"] for j in forum["jobs"] if j["attempts"] > 0 and j["status"] == "pending")
    assert forum["last_error"]
    caldav_server.start()
    await settle(api)
    forum_objects = {str(vevent(c)["UID"]): vevent(c) for _, c in await objects(caldav_server, calendars["forum"])}
    assert len(forum_objects) == 4 == len(await objects(caldav_server, calendars["forum"]))
    assert str(forum_objects[moved["uid"]]["SUMMARY"]) == "Dag 10, flyttad"
    assert int(forum_objects[moved["uid"]]["SEQUENCE"]) == moved["sequence"]
    assert str(forum_objects[made[1]["uid"]]["STATUS"]) == "CANCELLED"
    assert str(forum_objects[kept["uid"]]["SUMMARY"]) == "Ändrat medan servern var nere"
    room_uids = sorted(str(vevent(c)["UID"]) for _, c in await objects(caldav_server, calendars["Tillväxten"]))
    assert room_uids == sorted([kept["uid"], made[0]["uid"], made[2]["uid"]])
    status = await api.ok("GET", "/api/v1/calendars")
    assert all(c["pending_jobs"] == 0 and c["failed_jobs"] == 0 and c["last_error"] is None for c in status["items"])


def _rewrite(server: CaldavServer, href_url: str, data: bytes, **changes: Any) -> None:
    """Change our event as a calendar client would: edit the text, PUT with If-Match; again, as a
    client does, while the server answers 423 (Xandikos, while another write to the collection runs)."""
    for _ in range(100):
        if _rewrite_once(server, href_url, **changes) != 423:
            return
        time.sleep(0.05)
    raise AssertionError(f"{href_url} stayed locked")


def _rewrite_once(server: CaldavServer, href_url: str, **changes: Any) -> int:
    status, headers, body = server.request("GET", href_url)
    assert status == 200
    cal = Calendar.from_ical(body)
    ev = vevent(cal)
    for name, value in changes.items():
        if name in ("DTSTART", "DTEND"):
            del ev[name]
            ev.add(name, value)
        elif name == "PARTSTAT":
            for att in ev.get("ATTENDEE"):
                if str(att).lower() == f"mailto:{value[0]}":
                    att.params["PARTSTAT"] = value[1]
        else:
            del ev[name]
            ev.add(name, value)
    etag = {k.lower(): v for k, v in headers.items()}["etag"]
    status, _, body = server.request("PUT", href_url, cal.to_ical(), {"If-Match": etag, "Content-Type": "text/calendar"})
    assert status in (200, 201, 204, 423), (status, body)
    return status


async def test_an_event_moved_in_a_client_is_applied_when_the_rooms_are_free(api, world, calendars, caldav_server) -> None:
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten"))
    await settle(api)
    [(href, cal)] = await objects(caldav_server, calendars["forum"])
    _rewrite(caldav_server, href, cal.to_ical(), DTSTART=datetime(2027, 4, 5, 13, 0, tzinfo=STHLM),
             DTEND=datetime(2027, 4, 5, 15, 0, tzinfo=STHLM))
    await settle(api)
    after = await api.ok("GET", f"/api/v1/meetings/{meeting['id']}")
    assert (after["starts_at"], after["ends_at"]) == ("2027-04-05T13:00:00+02:00", "2027-04-05T15:00:00+02:00")
    assert after["sequence"] > meeting["sequence"]
    log = await api.ok("GET", f"/api/v1/audit?entity=meeting&entity_id={meeting['id']}")
    assert any(e["action"] == "rescheduled" and e["actor"].startswith("calendar:") for e in log["items"])
    # The room's calendar follows.
    [(_, room_cal)] = await objects(caldav_server, calendars["Tillväxten"])
    assert vevent(room_cal).decoded("DTSTART") == datetime(2027, 4, 5, 13, 0, tzinfo=STHLM)


async def test_a_change_seen_while_our_push_of_that_object_runs_waits_until_the_push_is_recorded(
        api, world, calendars, caldav_server, client) -> None:
    # A push whose PUT was answered but whose ETag is not recorded yet: a changed ETag may be our own
    # write. The sync leaves the object and its token alone, and takes the change up once it is.
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten"))
    await settle(api)
    db = client.app[SERVICES].db
    url = calendars["forum"]
    async with db.session(write=True) as s:
        async with s.begin():
            token = await s.scalar(select(m.Calendar.sync_token).where(m.Calendar.url == url))
            job = m.OutboxJob(kind=PUSH, key=push_key(url, meeting["id"]), status="running", attempts=1,
                              payload={"meeting_id": meeting["id"], "calendar_url": url},
                              next_attempt_at=datetime.now(timezone.utc) + timedelta(minutes=5))
            s.add(job)
    [(href, cal)] = await objects(caldav_server, url)
    _rewrite(caldav_server, href, cal.to_ical(), DTSTART=datetime(2027, 4, 5, 13, 0, tzinfo=STHLM),
             DTEND=datetime(2027, 4, 5, 15, 0, tzinfo=STHLM))
    assert (await sync(api))["changed"] >= 1
    held = await api.ok("GET", f"/api/v1/meetings/{meeting['id']}")
    assert (held["starts_at"], held["sequence"]) == (meeting["starts_at"], meeting["sequence"])
    async with db.session(write=True) as s:
        async with s.begin():
            assert await s.scalar(select(m.Calendar.sync_token).where(m.Calendar.url == url)) == token
            await s.execute(update(m.OutboxJob).where(m.OutboxJob.id == job.id).values(status="done"))
    await settle(api)
    after = await api.ok("GET", f"/api/v1/meetings/{meeting['id']}")
    assert (after["starts_at"], after["ends_at"]) == ("2027-04-05T13:00:00+02:00", "2027-04-05T15:00:00+02:00")
    assert len(await objects(caldav_server, url)) == 1


async def test_an_event_moved_onto_a_taken_room_is_written_back_and_reported(api, world, calendars, caldav_server) -> None:
    await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", start="2027-04-05T13:00:00", end="2027-04-05T15:00:00", title="Upptar rummet"))
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten"))
    await settle(api)
    href = next(h for h, c in await objects(caldav_server, calendars["forum"]) if str(vevent(c)["UID"]) == meeting["uid"])
    _rewrite(caldav_server, href, b"", DTSTART=datetime(2027, 4, 5, 14, 0, tzinfo=STHLM), DTEND=datetime(2027, 4, 5, 16, 0, tzinfo=STHLM))
    await settle(api)
    after = await api.ok("GET", f"/api/v1/meetings/{meeting['id']}")
    assert after["starts_at"] == meeting["starts_at"] and after["ends_at"] == meeting["ends_at"]
    ours = next(vevent(c) for _, c in await objects(caldav_server, calendars["forum"]) if str(vevent(c)["UID"]) == meeting["uid"])
    assert ours.decoded("DTSTART") == datetime(2027, 4, 5, 9, 0, tzinfo=STHLM)
    conflicts = await api.ok("GET", "/api/v1/conflicts")
    assert [(c["kind"], c["meeting_id"]) for c in conflicts["items"]] == [("client_move_refused", meeting["id"])]
    log = await api.ok("GET", f"/api/v1/audit?entity=meeting&entity_id={meeting['id']}")
    assert "calendar_move_reverted" in [e["action"] for e in log["items"]]


async def test_several_moves_in_one_sync_are_applied_but_the_one_onto_a_taken_room(api, world, calendars, caldav_server) -> None:
    await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", start="2027-04-07T09:00:00", end="2027-04-07T12:00:00", title="Upptar rummet"))
    made = [await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", start=f"2027-04-0{day}T09:00:00",
                                                                   end=f"2027-04-0{day}T12:00:00", title=f"Möte {day}"))
            for day in (5, 6, 8)]
    await settle(api)
    hrefs = {str(vevent(c)["UID"]): h for h, c in await objects(caldav_server, calendars["forum"])}
    wanted = {  # meeting -> where a client drags it; the second lands on the room's other booking
        made[0]["id"]: (datetime(2027, 4, 5, 13, 0, tzinfo=STHLM), datetime(2027, 4, 5, 15, 0, tzinfo=STHLM)),
        made[1]["id"]: (datetime(2027, 4, 7, 10, 0, tzinfo=STHLM), datetime(2027, 4, 7, 12, 0, tzinfo=STHLM)),
        made[2]["id"]: (datetime(2027, 4, 8, 14, 0, tzinfo=STHLM), datetime(2027, 4, 8, 16, 0, tzinfo=STHLM)),
    }
    for meeting in made:
        start, end = wanted[meeting["id"]]
        _rewrite(caldav_server, hrefs[meeting["uid"]], b"", DTSTART=start, DTEND=end)

    # One sync picks up all three, applies two and refuses one.
    result = await sync(api)
    # The forum calendar's three; the room's calendar, synced next, may show the background worker's
    # write-back of the moves before that worker has recorded its ETags.
    assert result["changed"] >= 3 and result["errors"] == []
    after = {m["id"]: await api.ok("GET", f"/api/v1/meetings/{m['id']}") for m in made}
    for meeting in (made[0], made[2]):
        start, end = wanted[meeting["id"]]
        assert (after[meeting["id"]]["starts_at"], after[meeting["id"]]["ends_at"]) == (start.isoformat(), end.isoformat())
        assert after[meeting["id"]]["sequence"] > meeting["sequence"]
    refused = made[1]
    assert (after[refused["id"]]["starts_at"], after[refused["id"]]["ends_at"], after[refused["id"]]["sequence"]) == (
        refused["starts_at"], refused["ends_at"], refused["sequence"])
    conflicts = await api.ok("GET", "/api/v1/conflicts")
    assert [(c["kind"], c["meeting_id"]) for c in conflicts["items"]] == [("client_move_refused", refused["id"])]
    for meeting in made:
        log = await api.ok("GET", f"/api/v1/audit?entity=meeting&entity_id={meeting['id']}")
        actions = [e["action"] for e in log["items"] if e["actor"].startswith("calendar:")]
        assert actions == (["calendar_move_reverted"] if meeting is refused else ["rescheduled"]), (meeting["title"], actions)

    # The calendars follow: the two moves stay (with a higher SEQUENCE), the refused one is written back.
    await settle(api)
    forum = {str(vevent(c)["UID"]): vevent(c) for _, c in await objects(caldav_server, calendars["forum"])}
    for meeting in made:
        ev = forum[meeting["uid"]]
        expected = (datetime(2027, 4, 6, 9, 0, tzinfo=STHLM) if meeting is refused else wanted[meeting["id"]][0])
        assert ev.decoded("DTSTART") == expected
        assert int(ev["SEQUENCE"]) == after[meeting["id"]]["sequence"]
    room = [vevent(c).decoded("DTSTART") for _, c in await objects(caldav_server, calendars["Tillväxten"])]
    assert sorted(room) == sorted([datetime(2027, 4, 7, 9, 0, tzinfo=STHLM), datetime(2027, 4, 6, 9, 0, tzinfo=STHLM),
                                   wanted[made[0]["id"]][0], wanted[made[2]["id"]][0]])


async def test_moves_seen_in_one_sync_are_applied_together_in_the_same_statements_however_many(
        api, world, calendars, caldav_server, client, monkeypatch) -> None:
    # Each meeting in a room, with a session and an invited person: every part of a move is there.
    made = []
    for day in range(1, 9):
        made.append(await api.ok("POST", "/api/v1/meetings", meeting_body(
            world, "Tillväxten", start=f"2027-05-{day:02d}T09:00:00", end=f"2027-05-{day:02d}T12:00:00", title=f"Möte {day}",
            sessions=[{"title": "Läget i regionerna", "starts_at": f"2027-05-{day:02d}T10:00:00",
                       "ends_at": f"2027-05-{day:02d}T11:00:00"}])))
    person = await api.ok("POST", "/api/v1/people", {"name": "Örjan Älvdal", "email": "orjan@region.example"})
    for meeting in made:
        await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations", {"person_id": person["id"], "mode": "remote"})
    await settle(api)
    hrefs = {str(vevent(c)["UID"]): h for h, c in await objects(caldav_server, calendars["forum"])}

    db = client.app[SERVICES].db
    counted: list[int] = []
    statements: list[tuple[Any, str]] = []
    real = PullRules.pulled

    async def pulled(self: PullRules, uow: Any, cal: m.Calendar, seen: Any, deleted: Any, in_flight: Any = ()) -> Any:
        if cal.url != calendars["forum"]:
            return await real(self, uow, cal, seen, deleted, in_flight)
        # The pull's own connection: other calendars' syncs and the outbox worker run beside it.
        mine = (await uow.session.connection()).sync_connection
        start = len(statements)
        out = await real(self, uow, cal, seen, deleted, in_flight)
        await uow.session.flush()  # what the pull left for the commit
        counted.append(sum(1 for conn, _ in statements[start:] if conn is mine))
        return out

    def seen_statement(conn, cursor, statement, params, context, executemany) -> None:  # noqa: ANN001
        statements.append((conn, statement))

    monkeypatch.setattr(PullRules, "pulled", pulled)
    event.listen(db.writer.sync_engine, "before_cursor_execute", seen_statement)
    try:
        for batch in (made[:2], made[2:]):
            for meeting in batch:
                day = int(meeting["starts_at"][8:10])
                _rewrite(caldav_server, hrefs[meeting["uid"]], b"", DTSTART=datetime(2027, 5, day, 14, 0, tzinfo=STHLM),
                         DTEND=datetime(2027, 5, day, 17, 0, tzinfo=STHLM))
            assert (await sync(api))["changed"] >= len(batch)
    finally:
        event.remove(db.writer.sync_engine, "before_cursor_execute", seen_statement)
    # Two moves and six cost the same statements: the booking rules read and write once for all.
    assert len(counted) == 2 and counted[0] == counted[1], counted
    await settle(api)
    for meeting in made:
        after = await api.ok("GET", f"/api/v1/meetings/{meeting['id']}")
        day = int(meeting["starts_at"][8:10])
        assert (after["starts_at"], after["sequence"]) == (f"2027-05-{day:02d}T14:00:00+02:00", meeting["sequence"] + 1)
        assert after["sessions"][0]["starts_at"] == f"2027-05-{day:02d}T15:00:00+02:00"
        log = await api.ok("GET", f"/api/v1/audit?entity=meeting&entity_id={meeting['id']}")
        assert [e["action"] for e in log["items"] if e["actor"].startswith("calendar:")] == ["rescheduled"]
    busy = await api.ok("GET", f"/api/v1/rooms/{world['rooms']['Tillväxten']['id']}/busy"
                               "?from=2027-05-01T00:00:00&to=2027-05-10T00:00:00")
    assert sorted(b["starts_at"][:16] for b in busy["items"]) == [f"2027-05-{d:02d}T14:00" for d in range(1, 9)]
    # Every invitee hears of the new time, and every calendar shows it.
    room = {str(vevent(c)["UID"]): vevent(c).decoded("DTSTART") for _, c in await objects(caldav_server, calendars["Tillväxten"])}
    assert room == {mt["uid"]: datetime(2027, 5, int(mt["starts_at"][8:10]), 14, 0, tzinfo=STHLM) for mt in made}


async def test_two_moves_in_one_sync_onto_the_same_free_slot_are_one_applied_one_refused(
        api, world, calendars, caldav_server) -> None:
    made = [await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Tillväxten", start=f"2027-05-{day:02d}T09:00:00", end=f"2027-05-{day:02d}T12:00:00", title=f"Möte {day}"))
        for day in (3, 4)]
    await settle(api)
    hrefs = {str(vevent(c)["UID"]): h for h, c in await objects(caldav_server, calendars["forum"])}
    slot = (datetime(2027, 5, 5, 13, 0, tzinfo=STHLM), datetime(2027, 5, 5, 15, 0, tzinfo=STHLM))
    for meeting in made:  # the room is free then, but not for both
        _rewrite(caldav_server, hrefs[meeting["uid"]], b"", DTSTART=slot[0], DTEND=slot[1])
    await sync(api)
    after = [await api.ok("GET", f"/api/v1/meetings/{mt['id']}") for mt in made]
    applied = [a for a in after if a["starts_at"] == slot[0].isoformat()]
    kept = [a for a, mt in zip(after, made) if (a["starts_at"], a["sequence"]) == (mt["starts_at"], mt["sequence"])]
    assert len(applied) == 1 and len(kept) == 1, after
    conflicts = await api.ok("GET", "/api/v1/conflicts")
    assert [(c["kind"], c["meeting_id"]) for c in conflicts["items"]] == [("client_move_refused", kept[0]["id"])]
    assert applied[0]["title"] in conflicts["items"][0]["detail"] or applied[0]["id"] in conflicts["items"][0]["detail"]
    await settle(api)
    forum = {str(vevent(c)["UID"]): vevent(c).decoded("DTSTART") for _, c in await objects(caldav_server, calendars["forum"])}
    assert forum == {applied[0]["uid"]: slot[0], kept[0]["uid"]: datetime.fromisoformat(kept[0]["starts_at"])}


async def test_an_on_demand_sync_answers_in_its_time_while_calendar_servers_do_not(
        api, world, calendars, caldav_server, client, monkeypatch) -> None:
    # Two calendars behind a network that takes connections and drops every packet: without a bound
    # the sync would wait out the connector's timeout (30 s) for each in turn.
    # The bound leaves the calendars that do answer time to be read and applied on a loaded machine
    # (1 s was once too short for one of them), and is still a tenth of the connector's timeout.
    monkeypatch.setattr(container, "SYNC_NOW_PULL_S", 3.0)
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten"))
    await settle(api)
    [(href, _)] = await objects(caldav_server, calendars["forum"])
    _rewrite(caldav_server, href, b"", DTSTART=datetime(2027, 4, 5, 13, 0, tzinfo=STHLM),
             DTEND=datetime(2027, 4, 5, 16, 0, tzinfo=STHLM))
    proxy = TcpProxy("127.0.0.1", int(caldav_server.origin.rsplit(":", 1)[1])).start()
    try:
        proxy.stall()
        silent = {}
        for i, name in enumerate(("Kebnekaise", "Sarek")):
            room = await api.ok("POST", "/api/v1/rooms", {"site_id": world["sites"]["Östersund"]["id"], "name": name})
            silent[room["id"]] = f"http://127.0.0.1:{proxy.port}/tyst/{i}/"
            await api.ok("PATCH", f"/api/v1/rooms/{room['id']}", {"calendar_url": silent[room["id"]]})
        result = await sync(api)
        assert sorted(e.split(": ", 1)[0] for e in result["errors"]) == sorted(silent.values())
        assert all("no answer before the sync's time was up" in e for e in result["errors"]), result["errors"]
        # The calendars that answered were read and applied meanwhile.
        after = await api.ok("GET", f"/api/v1/meetings/{meeting['id']}")
        assert after["starts_at"] == "2027-04-05T13:00:00+02:00"
        status = {c["url"]: c for c in (await api.ok("GET", "/api/v1/calendars"))["items"]}
        assert all("no answer" in status[url]["last_error"] for url in silent.values())
        assert status[calendars["forum"]]["last_error"] is None
    finally:
        proxy.close()


async def test_a_partstat_change_in_a_client_updates_the_rsvp(api, world, calendars, caldav_server) -> None:
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten"))
    person = await api.ok("POST", "/api/v1/people", {"name": "Åsa Öberg", "email": "Asa.Oberg@Regeringen.example"})
    inv = await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations", {"person_id": person["id"], "mode": "remote"})
    await settle(api)
    [(href, _)] = await objects(caldav_server, calendars["forum"])
    _rewrite(caldav_server, href, b"", PARTSTAT=("asa.oberg@regeringen.example", "ACCEPTED"))
    await settle(api)
    assert (await api.ok("GET", f"/api/v1/invitations/{inv['id']}"))["rsvp"] == "accepted"


def _foreign_event(uid: str, start: datetime, end: datetime, summary: str = "Styrelsemöte") -> bytes:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Mozilla.org/NONSGML Mozilla Calendar V1.1//EN\r\n"
        f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20270101T000000Z\r\n"
        f"DTSTART:{start.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}\r\nDTEND:{end.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}\r\n"
        f"SUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()


async def test_an_event_made_in_a_room_calendar_blocks_the_room_and_a_clash_is_reported(api, world, calendars, caldav_server) -> None:
    ours = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", start="2027-04-07T09:00:00", end="2027-04-07T10:00:00"))
    await settle(api)
    room_cal = calendars["Tillväxten"]
    blocker = _foreign_event("styrelse-1", datetime(2027, 4, 5, 9, 0, tzinfo=STHLM), datetime(2027, 4, 5, 11, 0, tzinfo=STHLM))
    clash = _foreign_event("frukost-2", datetime(2027, 4, 7, 9, 30, tzinfo=STHLM), datetime(2027, 4, 7, 10, 30, tzinfo=STHLM), "Frukostmöte")
    for name, data in (("styrelse-1.ics", blocker), ("frukost-2.ics", clash)):
        status, _, body = caldav_server.request("PUT", room_cal + name, data, {"Content-Type": "text/calendar", "If-None-Match": "*"})
        assert status in (201, 204), body
    await settle(api)
    code, body = await api.post("/api/v1/meetings", meeting_body(world, "Tillväxten", start="2027-04-05T10:00:00", end="2027-04-05T12:00:00"))
    assert code == 409 and body["conflicts"][0]["room"] == "Tillväxten" and body["conflicts"][0]["source"] == "calendar"
    assert "Styrelsemöte" in body["detail"]
    busy = await api.ok("GET", f"/api/v1/rooms/{world['rooms']['Tillväxten']['id']}/busy?from=2027-04-05T00:00:00&to=2027-04-08T00:00:00")
    assert sorted((b["source"], b["title"]) for b in busy["items"]) == [
        ("calendar", "Frukostmöte"), ("calendar", "Styrelsemöte"), ("service", "Forummöte")]
    conflicts = await api.ok("GET", "/api/v1/conflicts?status=open")
    assert [(c["kind"], c["meeting_id"], c["external_uid"]) for c in conflicts["items"]] == [
        ("calendar_event_overlaps_booking", ours["id"], "frukost-2")]
    # The blocking event goes away: the room is free again and the clash is resolved.
    for name in ("styrelse-1.ics", "frukost-2.ics"):
        caldav_server.request("DELETE", room_cal + name)
    await settle(api)
    await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", start="2027-04-05T10:00:00", end="2027-04-05T12:00:00"))
    assert (await api.ok("GET", "/api/v1/conflicts?status=open"))["items"] == []
    assert len((await api.ok("GET", "/api/v1/conflicts?status=resolved"))["items"]) == 1


async def test_a_sync_token_the_server_forgot_falls_back_to_a_full_listing(api, world, calendars, caldav_server, client) -> None:
    await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten"))
    await settle(api)
    room_cal = calendars["Tillväxten"]
    caldav_server.request("PUT", room_cal + "late.ics", _foreign_event(
        "late-1", datetime(2027, 4, 9, 9, 0, tzinfo=STHLM), datetime(2027, 4, 9, 10, 0, tzinfo=STHLM)),
        {"Content-Type": "text/calendar"})
    db = client.app[SERVICES].db
    async with db.session(write=True) as s:
        async with s.begin():
            await s.execute(update(m.Calendar).values(sync_token="http://radicale.org/ns/sync/forgotten-0000"))
    await settle(api)
    code, body = await api.post("/api/v1/meetings", meeting_body(world, "Tillväxten", start="2027-04-09T09:30:00", end="2027-04-09T10:30:00"))
    assert code == 409 and body["conflicts"][0]["source"] == "calendar"
    async with db.session(write=False) as s:
        tokens = list(await s.scalars(select(m.Calendar.sync_token)))
    assert "http://radicale.org/ns/sync/forgotten-0000" not in tokens


async def test_vdirsyncer_reads_every_object_of_the_forum_calendar(api, world, calendars, caldav_server, tmp_path) -> None:
    for day in (5, 6, 7):
        await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", start=f"2027-04-0{day}T09:00:00", end=f"2027-04-0{day}T10:00:00", title=f"Möte {day} april"))
    await settle(api)
    folder, status = tmp_path / "vdir", tmp_path / "status"
    folder.mkdir()
    auth = f'username = "{caldav_server.username}"\npassword = "{caldav_server.password}"\n' if caldav_server.username else ""
    (tmp_path / "config").write_text(
        f'[general]\nstatus_path = "{status}/"\n\n[pair forum]\na = "local"\nb = "remote"\ncollections = null\n\n'
        f'[storage local]\ntype = "filesystem"\npath = "{folder}/"\nfileext = ".ics"\n\n'
        f'[storage remote]\ntype = "caldav"\nurl = "{calendars["forum"]}"\n{auth}')
    import sys
    vdirsyncer = Path(sys.executable).with_name("vdirsyncer")
    env = {"VDIRSYNCER_CONFIG": str(tmp_path / "config"), "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
    for args in (["discover"], ["sync"]):
        proc = await asyncio.create_subprocess_exec(str(vdirsyncer), *args, env=env, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate(b"y\n" * 5)
        assert proc.returncode == 0, out.decode()
    files = sorted(folder.glob("*.ics"))
    assert len(files) == 3
    titles = sorted(str(vevent(Calendar.from_ical(f.read_bytes()))["SUMMARY"]) for f in files)
    assert titles == ["Möte 5 april", "Möte 6 april", "Möte 7 april"]


async def test_feeds_answer_with_etags_and_a_rotated_token_stops_the_old_url(api, world, client) -> None:
    forum = world["forum"]
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", title="I flödet"))
    feed_path = forum["feed_url"].removeprefix("http://forum.test")
    async with client.get(feed_path) as resp:
        assert resp.status == 200 and resp.content_type == "text/calendar"
        etag, body = resp.headers["ETag"], await resp.read()
    assert str(vevent(Calendar.from_ical(body))["UID"]) == meeting["uid"]
    async with client.get(feed_path, headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304
    await api.ok("PATCH", f"/api/v1/meetings/{meeting['id']}", {"title": "Nytt namn i flödet"})
    async with client.get(feed_path, headers={"If-None-Match": etag}) as resp:
        assert resp.status == 200 and resp.headers["ETag"] != etag
    room = world["rooms"]["Tillväxten"]
    async with client.get(room["feed_url"].removeprefix("http://forum.test")) as resp:
        assert resp.status == 200 and b"Nytt namn i fl" in await resp.read()
    rotated = await api.ok("POST", f"/api/v1/forums/{forum['id']}/feed/rotate", status=200)
    assert rotated["feed_url"] != forum["feed_url"]
    async with client.get(feed_path) as resp:
        assert resp.status == 404
    async with client.get(rotated["feed_url"].removeprefix("http://forum.test")) as resp:
        assert resp.status == 200
    viewer = ApiClient(client, token_for(client.app[SERVICES].settings, "viewer"))
    assert (await viewer.ok("GET", f"/api/v1/forums/{forum['id']}"))["feed_url"] is None
    for bad in ("../../etc/passwd", "%2e%2e%2fsecret", "x" * 30, uuid.uuid4().hex):
        async with client.get(f"/feeds/forums/{bad}.ics") as resp:
            assert resp.status == 404


def _weekly_series(exdates: tuple[str, ...] = ()) -> bytes:
    """Ledningsgruppen, Mondays 09:00-10:00 Stockholm time from 1 March 2027, eight times (across the
    switch to summer time on 28 March), the 15th left out, the 22nd moved to Tuesday 13:00, as
    Thunderbird writes such a series (the master and its moved instance in one object)."""
    ex = "".join(f"EXDATE;TZID=Europe/Stockholm:{d}T090000\r\n" for d in ("20270315",) + exdates)
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Mozilla.org/NONSGML Mozilla Calendar V1.1//EN\r\n"
        "BEGIN:VEVENT\r\nUID:ledning-2027\r\nDTSTAMP:20270101T000000Z\r\nSUMMARY:Ledningsgruppen\r\n"
        "DTSTART;TZID=Europe/Stockholm:20270301T090000\r\nDTEND;TZID=Europe/Stockholm:20270301T100000\r\n"
        f"RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=8\r\n{ex}END:VEVENT\r\n"
        "BEGIN:VEVENT\r\nUID:ledning-2027\r\nDTSTAMP:20270101T000000Z\r\nSUMMARY:Ledningsgruppen (flyttad)\r\n"
        "RECURRENCE-ID;TZID=Europe/Stockholm:20270322T090000\r\n"
        "DTSTART;TZID=Europe/Stockholm:20270323T130000\r\nDTEND;TZID=Europe/Stockholm:20270323T140000\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()


async def test_a_recurring_event_in_a_room_calendar_blocks_every_occurrence(api, world, calendars, caldav_server, client) -> None:
    room_id = world["rooms"]["Tillväxten"]["id"]
    # One of ours on the series' seventh Monday, booked before the series was made.
    ours = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", start="2027-04-12T09:30:00", end="2027-04-12T10:30:00"))
    await settle(api)
    href = calendars["Tillväxten"] + "ledning-2027.ics"
    status, _, body = caldav_server.request("PUT", href, _weekly_series(), {"Content-Type": "text/calendar", "If-None-Match": "*"})
    assert status in (201, 204), body
    await settle(api)

    async def book(start: str, end: str) -> tuple[int, Any]:
        return await api.post("/api/v1/meetings", meeting_body(world, "Tillväxten", start=start, end=end))

    # Every occurrence holds the room, at 09:00 wall time in winter and in summer alike.
    for start, end in (("2027-03-01T09:00:00", "2027-03-01T09:30:00"), ("2027-03-08T09:30:00", "2027-03-08T10:00:00"),
                       ("2027-03-29T08:30:00", "2027-03-29T09:15:00"), ("2027-04-19T09:59:00", "2027-04-19T11:00:00"),
                       ("2027-03-23T13:00:00", "2027-03-23T14:00:00")):
        code, answer = await book(start, end)
        assert code == 409, (start, answer)
        assert answer["conflicts"][0]["source"] == "calendar" and "Ledningsgruppen" in answer["detail"]
    # The left-out Monday, the moved one's old time, the hour after and the Monday after the last are free.
    for start, end in (("2027-03-15T09:00:00", "2027-03-15T10:00:00"), ("2027-03-22T09:00:00", "2027-03-22T10:00:00"),
                       ("2027-04-05T10:00:00", "2027-04-05T11:00:00"), ("2027-04-26T09:00:00", "2027-04-26T10:00:00")):
        code, answer = await book(start, end)
        assert code == 201, (start, answer)
    busy = await api.ok("GET", f"/api/v1/rooms/{room_id}/busy?from=2027-02-01T00:00:00&to=2027-05-01T00:00:00")
    series = sorted(b["starts_at"] for b in busy["items"] if b["source"] == "calendar")
    assert len(series) == 7  # eight Mondays, one left out (the moved one counts once, on its Tuesday)
    conflicts = await api.ok("GET", "/api/v1/conflicts?status=open")
    assert [(c["meeting_id"], c["external_uid"]) for c in conflicts["items"]] == [(ours["id"], "ledning-2027")]

    # This series ends within the window read, so nothing marks it to be read again.
    db = client.app[SERVICES].db
    async with db.session(write=False) as s:
        assert set(await s.scalars(select(m.RoomBooking.series_until).where(m.RoomBooking.source == "calendar"))) == {None}
    # A series read long ago goes on past what was read (its last three occurrences, here): the next
    # sync reads it again.
    async with db.session(write=True) as s:
        async with s.begin():
            last = list(await s.scalars(select(m.RoomBooking.id).where(m.RoomBooking.source == "calendar")
                                        .order_by(m.RoomBooking.starts_at.desc()).limit(3)))
            await s.execute(delete(m.RoomBooking).where(m.RoomBooking.id.in_(last)))
            await s.execute(update(m.RoomBooking).where(m.RoomBooking.source == "calendar")
                            .values(series_until=datetime(2027, 4, 6, tzinfo=timezone.utc)))
    await sync(api)
    busy = await api.ok("GET", f"/api/v1/rooms/{room_id}/busy?from=2027-02-01T00:00:00&to=2027-05-01T00:00:00")
    assert sorted(b["starts_at"] for b in busy["items"] if b["source"] == "calendar") == series

    # The client leaves out the 12th April too: the clash is resolved, the other occurrences still hold.
    status, _, body = caldav_server.request("PUT", href, _weekly_series(("20270412",)), {"Content-Type": "text/calendar"})
    assert status in (201, 204), body
    await settle(api)
    assert (await api.ok("GET", "/api/v1/conflicts?status=open"))["items"] == []
    busy = await api.ok("GET", f"/api/v1/rooms/{room_id}/busy?from=2027-02-01T00:00:00&to=2027-05-01T00:00:00")
    assert len([b for b in busy["items"] if b["source"] == "calendar"]) == 6
    assert (await book("2027-03-01T09:00:00", "2027-03-01T09:30:00"))[0] == 409

    # The series is deleted: every occurrence lets go of the room.
    caldav_server.request("DELETE", href)
    await settle(api)
    busy = await api.ok("GET", f"/api/v1/rooms/{room_id}/busy?from=2027-02-01T00:00:00&to=2027-05-01T00:00:00")
    assert [b for b in busy["items"] if b["source"] == "calendar"] == []
    assert (await book("2027-03-01T09:00:00", "2027-03-01T09:30:00"))[0] == 201


async def test_a_claims_push_plans_are_read_together_and_match_each_jobs_own(
        api, world, calendars, caldav_server, client) -> None:
    """The push reads the plans of a claim's jobs together (CalendarPusher.prepare): in the same
    statements for two jobs as for nine, and each plan as the job alone would have read it."""
    booked = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Tillväxten", start="2027-06-01T09:00:00", end="2027-06-01T10:00:00", title="Möte i Tillväxten"))
    person = await api.ok("POST", "/api/v1/people", {"name": "Åsa Öberg", "email": "asa@region.example"})
    await api.ok("POST", f"/api/v1/meetings/{booked['id']}/invitations", {"person_id": person["id"], "mode": "remote"})
    dropped = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Storsjön", start="2027-06-02T09:00:00", end="2027-06-02T10:00:00"))
    roomless = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, start="2027-06-03T09:00:00", end="2027-06-03T10:00:00"))
    await settle(api)
    await api.ok("DELETE", f"/api/v1/meetings/{dropped['id']}")
    await settle(api)
    forum, here, there = calendars["forum"], calendars["Tillväxten"], calendars["Storsjön"]
    unknown, unregistered = uuid.uuid4(), caldav_server.new_calendar()
    ids = {name: uuid.UUID(mt["id"]) for name, mt in (("booked", booked), ("dropped", dropped), ("roomless", roomless))}
    targets = [(ids["booked"], forum), (ids["booked"], here), (ids["booked"], there), (ids["dropped"], forum),
               (ids["dropped"], there), (ids["roomless"], forum), (ids["roomless"], here), (unknown, forum),
               (ids["booked"], unregistered)]

    services = client.app[SERVICES]
    pusher, db = services.outbox.handlers[PUSH], services.db
    statements: list[str] = []

    def seen(conn, cursor, statement, params, context, executemany) -> None:  # noqa: ANN001
        if "outbox_jobs" not in statement:  # the background worker's polls
            statements.append(statement)

    engines = {db.writer.sync_engine, db.reader.sync_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", seen)
    try:
        together = await pusher.plans(targets)
        nine = len(statements)
        await pusher.plans(targets[:2])
        two = len(statements) - nine
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", seen)
    assert nine == two, statements
    alone = {t: (await pusher.plans([t]))[t] for t in targets}
    assert together == alone

    # And what they say is what the calendars should hold.
    def held(url: str) -> dict[str, tuple[str, str]]:
        return {str(vevent(Calendar.from_ical(data))["UID"]): href for href, data in read_calendar(caldav_server, url)}

    in_forum, in_here = await asyncio.to_thread(held, forum), await asyncio.to_thread(held, here)
    plan = together[(ids["booked"], here)]
    assert plan.known is not None and plan.known[0] in in_here[booked["uid"]]
    event_text = vevent(Calendar.from_ical(plan.data))
    assert (str(event_text["UID"]), str(event_text["SUMMARY"]), int(event_text["SEQUENCE"])) == (
        booked["uid"], "Möte i Tillväxten", booked["sequence"])
    assert [a.params["CN"] for a in event_text.get("ATTENDEE", []) if a.params.get("CUTYPE") != "ROOM"] == ["Åsa Öberg"]
    assert together[(ids["booked"], forum)].data == plan.data  # one text for every calendar
    assert together[(ids["booked"], there)].data is None  # not booked there
    assert together[(ids["roomless"], here)].data is None
    cancelled = together[(ids["dropped"], forum)]
    assert str(vevent(Calendar.from_ical(cancelled.data))["STATUS"]) == "CANCELLED" and cancelled.known is not None
    assert together[(ids["dropped"], there)].data is None and together[(ids["dropped"], there)].known is None
    assert set(in_forum) == {booked["uid"], dropped["uid"], roomless["uid"]}
    gone = together[(unknown, forum)]
    assert (gone.uid, gone.data, gone.known) == (f"{unknown}@forumbridge", None, None)
    assert together[(ids["booked"], unregistered)].calendar_id is None


async def test_a_conference_that_comes_up_after_the_booking_is_shown_in_the_calendars(
        api, world, calendars, caldav_server) -> None:
    """The booking's push and the conference's creation run side by side; whichever ends first,
    the calendars end up showing the conference (URL and CONFERENCE), never a personal link."""
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Tillväxten", start="2027-06-08T09:00:00", end="2027-06-08T10:00:00", conference={"provider": "jitsi"}))
    await settle(api)
    conference = (await api.ok("GET", f"/api/v1/meetings/{meeting['id']}"))["conference"]
    assert conference["status"] == "active" and conference["host_url"]
    for url in (calendars["forum"], calendars["Tillväxten"]):
        [(_, cal)] = await objects(caldav_server, url)
        event = vevent(cal)
        shown = event.get("CONFERENCE")
        shown = shown if isinstance(shown, list) else [shown]
        assert str(event["URL"]) == conference["host_url"]
        assert conference["host_url"] in [str(c) for c in shown if c is not None]
        assert "/j/" not in cal.to_ical().decode()


async def test_a_renamed_room_site_or_person_is_renamed_in_the_calendars(
        api, world, calendars, caldav_server, smtp_server) -> None:
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Tillväxten", start="2027-06-09T09:00:00", end="2027-06-09T10:00:00"))
    person = await api.ok("POST", "/api/v1/people", {"name": "Ola Nordin", "email": "ola@region.example"})
    await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations", {"person_id": person["id"], "mode": "remote"})
    past = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Tillväxten", start="2026-01-09T09:00:00", end="2026-01-09T10:00:00"))
    await settle(api)
    room = world["rooms"]["Tillväxten"]

    async def shown() -> list[tuple[str, list[str]]]:
        out = []
        for url in (calendars["forum"], calendars["Tillväxten"]):
            event = vevent([c for _, c in await objects(caldav_server, url) if str(vevent(c)["UID"]) == meeting["uid"]][0])
            out.append((str(event["LOCATION"]), sorted(str(a.params["CN"]) for a in event.get("ATTENDEE", []))))
        return out

    # One change at a time, each pushed by itself.
    await api.ok("PATCH", f"/api/v1/rooms/{room['id']}", {"name": "Tillväxten, plan 4"})
    await settle(api)
    assert await shown() == [("Tillväxten, plan 4, Stockholm", ["Ola Nordin", "Tillväxten, plan 4"])] * 2
    await api.ok("PATCH", f"/api/v1/sites/{room['site_id']}", {"city": "Solna"})
    await settle(api)
    assert await shown() == [("Tillväxten, plan 4, Solna", ["Ola Nordin", "Tillväxten, plan 4"])] * 2
    await api.ok("PATCH", f"/api/v1/rooms/{room['id']}", {"site_id": world["sites"]["Östersund"]["id"]})
    await settle(api)
    assert await shown() == [("Tillväxten, plan 4, Östersund", ["Ola Nordin", "Tillväxten, plan 4"])] * 2
    mailed = len(smtp_server.received)
    await api.ok("PATCH", f"/api/v1/people/{person['id']}", {"name": "Ola Nordin Åström", "email": "ola.astrom@region.example"})
    await settle(api)
    assert await shown() == [("Tillväxten, plan 4, Östersund", ["Ola Nordin Åström", "Tillväxten, plan 4"])] * 2
    # The new address gets the invitation as it stands.
    [mail] = smtp_server.received[mailed:]
    assert mail.rcpt_tos == ("ola.astrom@region.example",)
    # A meeting already over is left as it was.
    [(_, old)] = [(h, c) for h, c in await objects(caldav_server, calendars["forum"]) if str(vevent(c)["UID"]) == past["uid"]]
    assert str(vevent(old)["LOCATION"]) == "Tillväxten, Stockholm"


async def test_a_static_conference_follows_its_host_rooms_new_video_address(
        api, world, calendars, caldav_server) -> None:
    """The static provider dials the host room's video address; a new address reaches the
    conference and the calendars."""
    room = world["rooms"]["Tillväxten"]
    await api.ok("PATCH", f"/api/v1/rooms/{room['id']}", {"video_endpoint": "sip:tillvaxten@video.example"})
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Tillväxten", start="2027-06-10T09:00:00", end="2027-06-10T10:00:00", conference={"provider": "static"}))
    await settle(api)
    await api.ok("PATCH", f"/api/v1/rooms/{room['id']}", {"video_endpoint": "sip:plan4@video.example"})
    await settle(api)
    after = await api.ok("GET", f"/api/v1/meetings/{meeting['id']}")
    assert after["conference"]["sip_uri"] == "sip:plan4@video.example"
    for url in (calendars["forum"], calendars["Tillväxten"]):
        [(_, cal)] = await objects(caldav_server, url)
        shown = vevent(cal).get("CONFERENCE")
        shown = shown if isinstance(shown, list) else [shown]
        assert [str(c) for c in shown if c is not None] == ["sip:plan4@video.example"]


async def test_the_outbox_hands_each_push_the_plan_its_claim_read(api, world, calendars, caldav_server, monkeypatch) -> None:
    """Pushes run through the worker act on what `prepare` read for their claim: no job reads its
    own plan (only a retry after a 412 would)."""
    from service.calendar.push import CalendarPusher

    calls: list[tuple[str, int]] = []
    real_plans, real_prepare = CalendarPusher.plans, CalendarPusher.prepare
    preparing: set[Any] = set()  # the tasks inside prepare (the worker's), not the jobs' own

    async def plans(self: Any, targets: Any) -> Any:
        calls.append(("prepare" if asyncio.current_task() in preparing else "job", len(targets)))
        return await real_plans(self, targets)

    async def prepare(self: Any, payloads: Any) -> Any:
        task = asyncio.current_task()
        preparing.add(task)
        try:
            return await real_prepare(self, payloads)
        finally:
            preparing.discard(task)

    monkeypatch.setattr(CalendarPusher, "plans", plans)
    monkeypatch.setattr(CalendarPusher, "prepare", prepare)
    for day in range(1, 5):
        await api.ok("POST", "/api/v1/meetings", meeting_body(
            world, "Tillväxten", "Storsjön", start=f"2027-06-1{day}T09:00:00", end=f"2027-06-1{day}T10:00:00"))
    await settle(api)
    assert [c for c in calls if c[0] == "job"] == []
    # Four meetings, each in the forum's calendar and two rooms' calendars: twelve objects.
    assert sum(n for kind, n in calls if kind == "prepare") == 12
    for url in calendars.values():
        assert len(await objects(caldav_server, url)) == 4
