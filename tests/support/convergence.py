"""Checks that nothing was lost after a fault: calendars as an independent client reads them, mail as
the SMTP server received it, and the outbox as the database holds it.

Used by tests/integration/test_faults.py and test_replicas.py, with the service in the test's
process (aiohttp's test client) or as `forumbridge serve` subprocesses (an aiohttp ClientSession
with a base URL): both are driven through `ApiClient`.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import caldav
from icalendar import Calendar
from sqlalchemy import func, select

from service.db import models as m
from service.db.engine import Database
from tests.support.caldav_servers import CaldavServer
from tests.support.http import ApiClient
from tests.support.smtp_server import Received, SmtpServer

STHLM = ZoneInfo("Europe/Stockholm")


# -- a forum, its rooms and their calendars --------------------------------------------------------------
async def small_world(api: ApiClient) -> dict[str, Any]:
    sthlm = await api.ok("POST", "/api/v1/sites", {"name": "Stockholmskontoret", "city": "Stockholm"})
    ost = await api.ok("POST", "/api/v1/sites", {"name": "Östersundskontoret", "city": "Östersund"})
    rooms = {}
    for name, site in (("Tillväxten", sthlm), ("Storsjön", ost)):
        rooms[name] = await api.ok("POST", "/api/v1/rooms", {"site_id": site["id"], "name": name, "capacity": 10})
    forum = await api.ok("POST", "/api/v1/forums", {"name": "Forum för regional tillväxt", "kind": "officials"})
    return {"sites": {"Stockholm": sthlm, "Östersund": ost}, "rooms": rooms, "forum": forum}


async def attach_calendars(api: ApiClient, world: dict[str, Any], server: CaldavServer) -> dict[str, str]:
    urls = {"forum": server.new_calendar(), **{room: server.new_calendar() for room in world["rooms"]}}
    await api.ok("PATCH", f"/api/v1/forums/{world['forum']['id']}", {"calendar_url": urls["forum"]})
    for room, body in world["rooms"].items():
        await api.ok("PATCH", f"/api/v1/rooms/{body['id']}", {"calendar_url": urls[room]})
    return urls


async def expected_calendars(api: ApiClient, world: dict[str, Any], urls: dict[str, str], ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """What each calendar must hold: the forum every meeting (cancelled ones marked so), a room its planned meetings."""
    meetings = [await api.ok("GET", f"/api/v1/meetings/{i}") for i in ids]
    out = {urls["forum"]: meetings}
    for room, body in world["rooms"].items():
        out[urls[room]] = [mt for mt in meetings if mt["status"] == "planned" and body["id"] in mt["room_ids"]]
    return out


def client_move(server: CaldavServer, href: str, start: datetime, end: datetime) -> None:
    """Move our event as a calendar client would: GET, edit, PUT with If-Match."""
    status, headers, body = server.request("GET", href)
    assert status == 200, status
    cal = Calendar.from_ical(body)
    ev = next(iter(cal.walk("VEVENT")))
    for name, value in (("DTSTART", start), ("DTEND", end)):
        del ev[name]
        ev.add(name, value)
    etag = {k.lower(): v for k, v in headers.items()}["etag"]
    status, _, body = server.request("PUT", href, cal.to_ical(), {"If-Match": etag, "Content-Type": "text/calendar"})
    assert status in (200, 201, 204), (status, body)


def foreign_event(uid: str, start: datetime, end: datetime) -> bytes:
    utc = "%Y%m%dT%H%M%SZ"
    return (f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//Client//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\n"
            f"DTSTAMP:20270101T000000Z\r\nDTSTART:{start.astimezone(ZoneInfo('UTC')).strftime(utc)}\r\n"
            f"DTEND:{end.astimezone(ZoneInfo('UTC')).strftime(utc)}\r\nSUMMARY:Styrelsemöte\r\n"
            "END:VEVENT\r\nEND:VCALENDAR\r\n").encode()


# -- the outbox and the calendars, driven through the API --------------------------------------------
async def settle(api: ApiClient, rounds: int = 40, pause_s: float = 0.1) -> None:
    """Sync (POST /api/v1/calendars/sync: make waiting jobs due, pull every calendar, run the outbox)
    until two rounds in a row find nothing to do and no calendar has a job waiting."""
    quiet = 0
    status: Any = None
    for _ in range(rounds):
        result = await api.ok("POST", "/api/v1/calendars/sync", status=200)
        status = await api.ok("GET", "/api/v1/calendars")
        waiting = sum(c["pending_jobs"] for c in status["items"])
        failed = [(c["url"], c["jobs"]) for c in status["items"] if c["failed_jobs"]]
        assert not failed, f"calendar jobs given up: {failed}"
        if (result["jobs_run"] == 0 and result["changed"] == 0 and result["deleted"] == 0 and waiting == 0
                and not result["errors"]):
            quiet += 1
            if quiet == 2:
                return
        else:
            quiet = 0
        await asyncio.sleep(pause_s)
    raise AssertionError(f"calendars did not settle: {status}")


async def open_jobs(db: Database) -> list[tuple[str, str, int, str | None]]:
    """(kind, status, attempts, last error) of every job not done: pending, running or failed."""
    async with db.session(write=False) as s:
        rows = await s.execute(select(m.OutboxJob.kind, m.OutboxJob.status, m.OutboxJob.attempts, m.OutboxJob.last_error)
                               .where(m.OutboxJob.status.in_(("pending", "running", "failed"))))
        return [tuple(r) for r in rows.all()]  # type: ignore[misc]


async def drain(api: ApiClient, db: Database, within_s: float = 60.0) -> None:
    """Sync until every outbox job of every kind is done (none pending, running or failed)."""
    deadline = time.monotonic() + within_s
    while True:
        await api.ok("POST", "/api/v1/calendars/sync", status=200)
        left = await open_jobs(db)
        if not left:
            return
        assert not [j for j in left if j[1] == "failed"], left
        assert time.monotonic() < deadline, f"jobs not done after {within_s} s: {left}"
        await asyncio.sleep(0.1)


async def wait_jobs_done(db: Database, within_s: float) -> None:
    """Wait (bounded) until no job is pending or running, without asking for a sync: the workers alone."""
    deadline = time.monotonic() + within_s
    while True:
        left = await open_jobs(db)
        if not left:
            return
        assert time.monotonic() < deadline, f"jobs still waiting after {within_s} s: {left}"
        await asyncio.sleep(0.3)


async def done_job_counts(db: Database) -> dict[str, int]:
    async with db.session(write=False) as s:
        rows = await s.execute(select(m.OutboxJob.status, func.count()).group_by(m.OutboxJob.status))
        return {status: n for status, n in rows.all()}


# -- calendars as an independent client sees them ------------------------------------------------------
def _read(server: CaldavServer, url: str) -> list[tuple[str, bytes]]:
    client = caldav.DAVClient(url=server.origin + "/", username=server.username, password=server.password)
    out = []
    for obj in client.calendar(url=url).events():
        if obj.data is None:
            obj.load()
        out.append((str(obj.url), obj.data.encode() if isinstance(obj.data, str) else obj.data))
    return out


@dataclass(frozen=True)
class Stored:
    href: str
    uid: str
    summary: str
    sequence: int
    status: str
    event: Any


async def stored_events(server: CaldavServer, url: str) -> list[Stored]:
    """Every event object in the calendar at `url`, read with the caldav library's own client."""
    out = []
    for href, data in await asyncio.to_thread(_read, server, url):
        events = list(Calendar.from_ical(data).walk("VEVENT"))
        assert len(events) == 1, (href, data[:500])
        ev = events[0]
        out.append(Stored(href, str(ev["UID"]), str(ev.get("SUMMARY", "")), int(ev.get("SEQUENCE", 0)),
                          str(ev.get("STATUS", "")), ev))
    return out


async def assert_calendar_matches(server: CaldavServer, url: str, meetings: list[dict[str, Any]],
                                  foreign: int = 0) -> list[Stored]:
    """The calendar holds exactly one object per meeting in `meetings` (no duplicate UID, no object
    of ours that should not be there), each as the meeting stands now, plus `foreign` other events."""
    stored = await stored_events(server, url)
    by_uid: dict[str, list[Stored]] = defaultdict(list)
    for obj in stored:
        by_uid[obj.uid].append(obj)
    duplicates = {uid: [o.href for o in objs] for uid, objs in by_uid.items() if len(objs) > 1}
    assert not duplicates, f"duplicate objects in {url}: {duplicates}"
    wanted = {mt["uid"]: mt for mt in meetings}
    ours = {uid for uid in by_uid if uid in wanted}
    assert ours == set(wanted), f"{url}: missing {set(wanted) - ours}"
    assert len(by_uid) - len(ours) == foreign, f"{url}: unexpected objects {set(by_uid) - set(wanted)}"
    for uid, mt in wanted.items():
        [obj] = by_uid[uid]
        assert (obj.summary, obj.sequence) == (mt["title"], mt["sequence"]), (url, obj, mt)
        assert obj.status == ("CANCELLED" if mt["status"] == "cancelled" else "CONFIRMED"), (url, obj, mt)
    return stored


# -- mail as the SMTP server received it ----------------------------------------------------------------
def message_id(received: Received) -> str:
    return str(received.message()["Message-ID"]).strip()


def vevent_of(received: Received) -> Any:
    """The VEVENT of a received message's iCalendar part."""
    for part in received.message().walk():
        if part.get_content_type() == "text/calendar":
            return next(iter(Calendar.from_ical(part.get_payload(decode=True)).walk("VEVENT")))
    raise AssertionError("no text/calendar part")


def by_recipient(messages: list[Received]) -> dict[str, list[Received]]:
    out: dict[str, list[Received]] = defaultdict(list)
    for r in messages:
        for rcpt in r.rcpt_tos:
            out[rcpt.lower()].append(r)
    return out


def assert_each_mailed_once(server: SmtpServer, recipients: list[str], *, allowed_repeats: int = 0) -> dict[str, Received]:
    """Each of `recipients` got exactly one distinct message (one Message-ID) and nobody else got any.

    A Message-ID may arrive more than once only `allowed_repeats` times in all, and only where the
    first copy was caught between the server's acceptance and the sender's record of it: the copy
    carries the same Message-ID, so the receiving mail system can drop it. Messages the server took
    in whole before it dropped the connection (`server.dropped`) count as possibly kept.
    """
    kept = by_recipient(server.received)
    maybe = by_recipient(server.dropped)
    assert set(kept) == {r.lower() for r in recipients}, (sorted(kept), sorted(recipients))
    repeats = 0
    first: dict[str, Received] = {}
    for rcpt, got in kept.items():
        ids = {message_id(r) for r in got} | {message_id(r) for r in maybe.get(rcpt, [])}
        assert len(ids) == 1, f"{rcpt} got different messages: {ids}"
        repeats += len(got) - 1
        first[rcpt] = got[0]
    assert repeats <= allowed_repeats, f"{repeats} messages arrived twice (allowed {allowed_repeats})"
    return first


def by_invitation(messages: list[Received]) -> dict[str, list[Received]]:
    """Messages grouped by the invitation they are for (the service's Message-ID starts with its id)."""
    out: dict[str, list[Received]] = defaultdict(list)
    for r in messages:
        out[message_id(r).strip("<>").split(".", 1)[0]].append(r)
    return out


def assert_one_message_per_invitation(server: SmtpServer, invitation_ids: list[str]) -> int:
    """Each invitation got exactly one message (one Message-ID, counting what the server may have kept
    of dropped connections); returns how many arrived more than once (each time with that same Message-ID)."""
    kept, maybe = by_invitation(server.received), by_invitation(server.dropped)
    assert set(kept) == set(invitation_ids), (f"missing {set(invitation_ids) - set(kept)}, "
                                              f"unexpected {set(kept) - set(invitation_ids)}")
    repeats = 0
    for inv, got in kept.items():
        ids = {message_id(r) for r in got} | {message_id(r) for r in maybe.get(inv, [])}
        assert len(ids) == 1, f"invitation {inv} got different messages: {ids}"
        repeats += len(got) - 1
    return repeats
