"""Two `forumbridge serve` processes on one PostgreSQL database, one Radicale and one SMTP server:
what one replica does, the other must neither repeat nor undo. See docs/reliability.md."""
from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from service.db import models as m
from service.db.engine import Database, create_database
from service.http.auth import issue_token
from tests.conftest import meeting_body
from tests.support.caldav_servers import CaldavServer
from tests.support.convergence import (STHLM, assert_calendar_matches, assert_one_message_per_invitation,
                                       attach_calendars, client_move, expected_calendars, foreign_event, open_jobs,
                                       settle, small_world, stored_events, wait_jobs_done)
from tests.support.databases import PostgresDatabase
from tests.support.service_process import ServiceProcess, write_config
from tests.support.smtp_server import SmtpServer


class Replicas:
    def __init__(self, a: ServiceProcess, b: ServiceProcess, db: Database, token: str) -> None:
        self.a, self.b, self.db, self.token = a, b, db, token


@pytest.fixture
def replica_config(postgres: PostgresDatabase, radicale_server: CaldavServer, smtp_server: SmtpServer,
                   tmp_path: Path) -> tuple[Path, str, str]:
    """One config file for both processes (database, JWT secret, CalDAV account, SMTP server), the
    database URL and a secretariat token."""
    url, secret = postgres.fresh(), secrets.token_urlsafe(32)
    config = write_config(tmp_path / "forumbridge.toml", {
        "database": {"url": url, "pool_size": 5},
        "auth": {"jwt_secret": secret},
        # Shared by the replicas like the JWT secret: a link mailed by one must open on the other.
        "join": {"link_secret": secrets.token_urlsafe(32)},
        "http": {"host": "127.0.0.1", "public_url": "http://forum.test"},
        "organizer": {"name": "Forumsekretariatet", "email": "forum@tillvaxt.example"},
        # Each replica pulls every calendar on its own timer too.
        "calendar": {"sync_interval_s": 1, "accounts": [
            {"url": a.url_prefix, "username": a.username, "password": a.password} for a in radicale_server.accounts]},
        "mail": {"host": smtp_server.host, "port": smtp_server.port},
    })
    return config, url, issue_token(secret, "sekretariatet", "secretariat", timedelta(hours=1), "forumbridge", "forumbridge")


@pytest.fixture
async def replicas(replica_config: tuple[Path, str, str], tmp_path: Path) -> AsyncIterator[Replicas]:
    """Two processes on that config, each with its own port and data folder, as two machines behind a
    load balancer would run them."""
    config, url, token = replica_config
    a, b = ServiceProcess("a", config, tmp_path), ServiceProcess("b", config, tmp_path)
    db = create_database(url)
    try:
        a.start()
        b.start()
        await asyncio.gather(a.wait_ready(), b.wait_ready())
        yield Replicas(a, b, db, token)
    finally:
        a.stop()
        b.stop()
        await db.dispose()


def _span(body: dict[str, Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(body["starts_at"]), datetime.fromisoformat(body["ends_at"])


async def test_two_replicas_never_double_book_do_each_job_once_and_sync_without_duplicates(
        replicas: Replicas, radicale_server: CaldavServer, smtp_server: SmtpServer) -> None:
    async with replicas.a.api(replicas.token) as api_a, replicas.b.api(replicas.token) as api_b:
        apis = (api_a, api_b)
        world = await small_world(api_a)
        urls = await attach_calendars(api_b, world, radicale_server)
        room = world["rooms"]["Tillväxten"]

        # 1. Concurrent bookings of one room, alternating between the replicas: every hour of a day asked
        # for three times (twice the same hour, once half an hour later).
        asks = []
        for hour in range(8, 20):
            for minute in (0, 0, 30):
                asks.append(meeting_body(world, "Tillväxten", start=f"2027-11-01T{hour:02d}:{minute:02d}:00",
                                         end=f"2027-11-01T{hour + 1:02d}:{minute:02d}:00", title=f"Bokning {hour}:{minute:02d}"))
        replies = await asyncio.gather(*(apis[n % 2].request("POST", "/api/v1/meetings", json=body)
                                         for n, body in enumerate(asks)))
        assert {status for status, _ in replies} <= {201, 409}, [r for r in replies if r[0] not in (201, 409)]
        booked = [body for status, body in replies if status == 201]
        spans = sorted(_span(b) for b in booked)
        assert all(prev[1] <= nxt[0] for prev, nxt in zip(spans, spans[1:])), f"double booking: {spans}"
        booked_ids = {b["id"] for b in booked}
        for (status, body), ask in zip(replies, asks):
            if status == 409:
                # Every refusal names a real, overlapping booking that won.
                [clash] = body["conflicts"]
                start, end = datetime.fromisoformat(ask["starts_at"]).replace(tzinfo=STHLM), \
                    datetime.fromisoformat(ask["ends_at"]).replace(tzinfo=STHLM)
                assert clash["meeting_id"] in booked_ids and clash["room"] == "Tillväxten"
                assert datetime.fromisoformat(clash["starts_at"]) < end and start < datetime.fromisoformat(clash["ends_at"])
        assert len(booked) >= 8 and len(booked) + sum(1 for r in replies if r[0] == 409) == len(asks)
        # As the database holds them, too.
        async with replicas.db.session(write=False) as s:
            rows = (await s.execute(select(m.RoomBooking.starts_at, m.RoomBooking.ends_at).where(
                m.RoomBooking.room_id == room["id"], m.RoomBooking.active.is_(True)).order_by(m.RoomBooking.starts_at))).all()
        assert len(rows) == len(booked) and all(p[1] <= n[0] for p, n in zip(rows, rows[1:]))

        # 2. Invitations made through both replicas: each mailed once, by one of them, with a link that
        # works on either; each meeting in the forum and room calendars once.
        people = [await apis[n % 2].ok("POST", "/api/v1/people", {"name": f"Person {n}", "email": f"p{n}@region.example"})
                  for n in range(4)]
        invitations = []
        for n, meeting in enumerate(booked[:8]):
            for person in people[n % 2:n % 2 + 2]:
                invitations.append(await apis[(n + len(invitations)) % 2].ok(
                    "POST", f"/api/v1/meetings/{meeting['id']}/invitations", {"person_id": person["id"], "mode": "remote"}))
        # Both replicas run the outbox (their workers, and a sync through each at once).
        for _ in range(3):
            await asyncio.gather(*(api.ok("POST", "/api/v1/calendars/sync", status=200) for api in apis))
        await wait_jobs_done(replicas.db, 60)
        assert assert_one_message_per_invitation(smtp_server, [i["id"] for i in invitations]) == 0
        for received in smtp_server.received:
            link = next(line for line in received.message().get_body(preferencelist=("plain",)).get_content().splitlines()
                        if "/j/" in line)
            path = urlsplit(link[link.index("http"):].split()[0]).path
            for api in apis:
                status, _ = await api.get(path)
                assert status == 200, (path, status)
        ids = [b["id"] for b in booked]
        expected = await expected_calendars(api_a, world, urls, ids)
        for url, meetings in expected.items():
            await assert_calendar_matches(radicale_server, url, meetings)

        # 3. Calendar clients change things; both replicas pull the same calendars at once, several times.
        forum = {o.uid: o for o in await stored_events(radicale_server, urls["forum"])}
        moved = [mt for mt in expected[urls["forum"]] if mt["id"] in (booked[0]["id"], booked[3]["id"])]
        for n, meeting in enumerate(moved):
            client_move(radicale_server, forum[meeting["uid"]].href, datetime(2027, 11, 2, 9 + 2 * n, 0, tzinfo=STHLM),
                        datetime(2027, 11, 2, 10 + 2 * n, 0, tzinfo=STHLM))
        status, _, body = radicale_server.request(
            "PUT", urls["Storsjön"] + "styrelse-1.ics",
            foreign_event("styrelse-1", datetime(2027, 11, 3, 9, 0, tzinfo=STHLM), datetime(2027, 11, 3, 11, 0, tzinfo=STHLM)),
            {"Content-Type": "text/calendar", "If-None-Match": "*"})
        assert status in (201, 204), body
        for _ in range(4):
            results = await asyncio.gather(*(api.ok("POST", "/api/v1/calendars/sync", status=200) for api in apis))
            assert not [r["errors"] for r in results if r["errors"]], results
        await settle(api_a)
        await settle(api_b)
        for n, meeting in enumerate(moved):
            after = await api_b.ok("GET", f"/api/v1/meetings/{meeting['id']}")
            assert after["starts_at"] == f"2027-11-02T{9 + 2 * n:02d}:00:00+01:00", after
            # Applied once: one reschedule from the calendar, one SEQUENCE step.
            log = await api_a.ok("GET", f"/api/v1/audit?entity=meeting&entity_id={meeting['id']}")
            assert [e["action"] for e in log["items"] if e["actor"].startswith("calendar:")] == ["rescheduled"]
            assert after["sequence"] == meeting["sequence"] + 1
        expected = await expected_calendars(api_a, world, urls, ids)
        for url, meetings in expected.items():
            await assert_calendar_matches(radicale_server, url, meetings, foreign=1 if url == urls["Storsjön"] else 0)
        async with replicas.db.session(write=False) as s:
            blocks = await s.scalar(select(func.count()).select_from(m.RoomBooking).where(
                m.RoomBooking.external_uid == "styrelse-1", m.RoomBooking.active.is_(True)))
            objects = await s.scalar(select(func.count()).select_from(m.CalendarObject))
        assert blocks == 1
        assert objects == sum(len(v) for v in expected.values())
        assert not await open_jobs(replicas.db)
