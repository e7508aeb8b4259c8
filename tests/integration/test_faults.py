"""Faults, each caused for real, and a check that nothing is lost: see docs/reliability.md."""
from __future__ import annotations

import asyncio
import secrets
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from service.app import create_app
from service.db import models as m
from service.db.engine import create_database
from service.http.auth import issue_token
from service.keys import SERVICES
from service.settings import Settings
from tests.conftest import VIDEO, meeting_body
from tests.support.caldav_servers import CaldavServer
from tests.support.convergence import (STHLM, assert_calendar_matches, assert_each_mailed_once,
                                       assert_one_message_per_invitation, attach_calendars, by_recipient, client_move,
                                       drain, expected_calendars, foreign_event, message_id, open_jobs, settle,
                                       small_world, stored_events, vevent_of, wait_jobs_done)
from tests.support.databases import PostgresDatabase
from tests.support.http import ApiClient, token_for
from tests.support.service_process import ServiceProcess, write_config
from tests.support.smtp_server import SmtpServer
from tests.support.tcp_proxy import TcpProxy

PROBLEM = "application/problem+json"
# How long any one request may take while the database is cut off: the pool's connect timeout
# plus the command timeout, with room to spare on a loaded 2-core machine.
BOUND_S = 25.0


# -- the database connection cut ------------------------------------------------------------------
@pytest.fixture
def pg_proxy(postgres: PostgresDatabase) -> Iterator[tuple[TcpProxy, str]]:
    """A TCP proxy in front of the test's PostgreSQL database, and the database URL through it."""
    url = make_url(postgres.fresh())
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    try:
        yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    finally:
        proxy.close()


@pytest.fixture
def cut_settings(pg_proxy: tuple[TcpProxy, str], tmp_path: Path, smtp_server: SmtpServer) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        # Short limits, so that a stalled network fails requests quickly (the defaults are 10 s and 30 s).
        database={"url": pg_proxy[1], "pool_size": 4, "connect_timeout_s": 2, "command_timeout_s": 2},
        auth={"jwt_secret": secrets.token_urlsafe(32)},
        http={"public_url": "http://forum.test"},
        video=VIDEO,
        # The sync loop runs often, so that it meets the cut too.
        calendar={"sync_interval_s": 0.3},
        mail={"host": smtp_server.host, "port": smtp_server.port},
    )


async def _timed(coro: Any) -> Any:
    started = time.monotonic()
    result = await asyncio.wait_for(coro, BOUND_S)
    return result, time.monotonic() - started


@pytest.mark.parametrize("fault", ["cut", "stall"])
async def test_database_cut_gives_503_problems_and_the_service_recovers_by_itself(
        aiohttp_client: Any, cut_settings: Settings, pg_proxy: tuple[TcpProxy, str], smtp_server: SmtpServer,
        fault: str) -> None:
    """cut: every connection reset and new ones refused; stall: packets silently dropped."""
    proxy, _ = pg_proxy
    client = await aiohttp_client(create_app(cut_settings))
    svc = client.app[SERVICES]
    api = ApiClient(client, token_for(cut_settings, "secretariat", "sekretariatet"))
    sthlm = await api.ok("POST", "/api/v1/sites", {"name": "Stockholmskontoret", "city": "Stockholm"})
    room = await api.ok("POST", "/api/v1/rooms", {"site_id": sthlm["id"], "name": "Tillväxten", "capacity": 10})
    forum = await api.ok("POST", "/api/v1/forums", {"name": "Forum", "kind": "officials"})
    world = {"forum": forum, "rooms": {"Tillväxten": room}}
    person = await api.ok("POST", "/api/v1/people", {"name": "Åsa Öberg", "email": "asa@region.example"})
    first = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", title="Före avbrottet"))
    inv = await api.ok("POST", f"/api/v1/meetings/{first['id']}/invitations", {"person_id": person["id"], "mode": "remote"})
    join_path = inv["join_url"].removeprefix("http://forum.test")
    feed_path = forum["feed_url"].removeprefix("http://forum.test")

    counter = iter(range(1000))

    def requests() -> list[tuple[str, Any]]:
        """One of each kind of request: reads, writes, the sync, pages, feeds, readiness."""
        n = next(counter)
        day, hour = 10 + n // 8, 8 + n % 8
        body = meeting_body(world, "Tillväxten", start=f"2027-05-{day:02d}T{hour:02d}:00:00",
                            end=f"2027-05-{day:02d}T{hour:02d}:30:00", title=f"Möte {n}")
        return [
            ("list meetings", api.send("GET", "/api/v1/meetings")),
            ("book", api.send("POST", "/api/v1/meetings", json=body)),
            ("busy", api.send("GET", f"/api/v1/rooms/{room['id']}/busy?from=2027-05-01T00:00:00&to=2027-06-01T00:00:00")),
            ("patch", api.send("PATCH", f"/api/v1/meetings/{first['id']}", json={"description": f"ändring {n}"})),
            ("person", api.send("POST", "/api/v1/people", json={"name": f"P {n}", "email": f"p{n}@x.example"})),
            ("calendars", api.send("GET", "/api/v1/calendars")),
            ("sync", api.send("POST", "/api/v1/calendars/sync")),
            ("audit", api.send("GET", "/api/v1/audit")),
            ("feed", api.send("GET", feed_path)),
            ("page", api.send("GET", join_path)),
            ("ready", api.send("GET", "/readyz")),
        ]

    booked: list[dict[str, Any]] = []
    patched: list[tuple[str, int]] = []
    slowest = {False: 0.0, True: 0.0}

    async def run_round(*, during_cut: bool) -> list[tuple[str, int]]:
        batch = requests()
        replies = await asyncio.gather(*(_timed(coro) for _, coro in batch))
        out = []
        for (name, _), (reply, elapsed) in zip(batch, replies):
            assert reply.status != 500, (name, reply.status, reply.raw[:500])
            if reply.status in (200, 201):
                if name == "book":
                    booked.append(reply.json())
                if name == "patch":
                    patched.append((name, int(reply.json()["description"].split()[-1])))
            else:
                assert during_cut, (name, reply.status, reply.raw[:500])
                assert reply.status == 503, (name, reply.status, reply.raw[:500])
                if name not in ("page",):
                    assert reply.content_type == PROBLEM, (name, reply.headers)
                    problem = reply.json()
                    assert problem["status"] == 503 and problem["title"], problem
            out.append((name, reply.status))
            slowest[during_cut] = max(slowest[during_cut], elapsed)
        return out

    await run_round(during_cut=False)
    # Requests in flight when the connection goes, then requests while it is gone.
    flight = asyncio.ensure_future(run_round(during_cut=True))
    await asyncio.sleep(0.05)
    proxy.cut() if fault == "cut" else proxy.stall()
    await flight
    statuses = []
    for _ in range(2):
        statuses += await run_round(during_cut=True)
    assert {name for name, status in statuses if status == 503} == {name for name, _ in statuses}, statuses
    # The connection comes back: the next requests succeed, without a restart.
    proxy.restore()
    deadline = time.monotonic() + BOUND_S
    while (await api.send("GET", "/api/v1/meetings")).status != 200:
        assert time.monotonic() < deadline, "the service did not recover"
        await asyncio.sleep(0.2)
    for _ in range(2):
        await run_round(during_cut=False)
    print(f"{fault}: slowest answer {slowest[True]:.1f} s while cut off, {slowest[False]:.1f} s otherwise")
    # Nothing that was answered 201 is lost.
    listed = {mt["id"] for mt in (await api.ok("GET", "/api/v1/meetings?limit=200"))["items"]}
    assert {b["id"] for b in booked} <= listed
    # The background workers lived through it: new mail goes out without anyone asking.
    assert not svc.outbox._task.done() and not svc.sync_loop._task.done()
    late = await api.ok("POST", "/api/v1/people", {"name": "Sent efter", "email": "sent@region.example"})
    await api.ok("POST", f"/api/v1/meetings/{first['id']}/invitations", {"person_id": late["id"], "mode": "remote"})
    deadline = time.monotonic() + BOUND_S
    while not any("sent@region.example" in r.rcpt_tos for r in smtp_server.received):
        assert time.monotonic() < deadline, "the outbox worker did not pick up new work after the cut"
        await asyncio.sleep(0.2)
    # Work in flight at the cut does not wait out its lease (minutes): every job ends done, soon.
    await wait_jobs_done(svc.db, BOUND_S)
    # And no change was lost: Åsa's last mail carries the meeting as it was last changed.
    last = max(n for name, n in patched if name == "patch")
    to_asa = [r for r in smtp_server.received if "asa@region.example" in r.rcpt_tos]
    assert f"ändring {last}" in str(vevent_of(to_asa[-1])["DESCRIPTION"])


# -- the SMTP server refusing and dropping connections -------------------------------------------------
@pytest.fixture
def mail_settings(database_url: str, tmp_path: Path, smtp_server: SmtpServer) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database={"url": database_url},
        auth={"jwt_secret": secrets.token_urlsafe(32)},
        http={"public_url": "http://forum.test"},
        organizer={"name": "Forumsekretariatet", "email": "forum@tillvaxt.example"},
        mail={"host": smtp_server.host, "port": smtp_server.port},
    )


async def test_smtp_refusing_and_dropping_mid_data_every_invitation_arrives_once(
        aiohttp_client: Any, mail_settings: Settings, smtp_server: SmtpServer) -> None:
    client = await aiohttp_client(create_app(mail_settings))
    db = client.app[SERVICES].db
    api = ApiClient(client, token_for(mail_settings, "secretariat", "sekretariatet"))
    world = await small_world(api)
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", "Storsjön", title="Forummöte"))
    # The server is down while the invitations are made: nothing can go, nothing is lost.
    smtp_server.stop()
    emails = [f"person{n}@region{n % 3}.example" for n in range(10)]
    for n, email in enumerate(emails):
        person = await api.ok("POST", "/api/v1/people", {"name": f"Person {n}", "email": email})
        await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations", {"person_id": person["id"], "mode": "remote"})
    for _ in range(2):
        await api.ok("POST", "/api/v1/calendars/sync", status=200)
    waiting = await open_jobs(db)
    assert smtp_server.received == [] and len(waiting) == 10 and all(j[1] in ("pending", "running") for j in waiting)
    # Back, but unwell: 4xx at MAIL, RCPT and the end of DATA, and connections dropped in the middle of
    # DATA (after the message arrived whole, before the reply): the sender cannot tell whether it was kept.
    smtp_server.start()
    smtp_server.refuse("mail", 421, times=2)
    smtp_server.refuse("rcpt", 450, times=2)
    smtp_server.refuse("data", 451, times=2)
    smtp_server.drop_during_data(times=3)
    await drain(api, db)
    assert smtp_server.handler.refusals == [] and smtp_server.handler.drops_left == 0, "every fault was met"
    assert len(smtp_server.dropped) == 3
    first = assert_each_mailed_once(smtp_server, emails)
    # A dropped message was sent again with the same Message-ID (the server may have kept the first copy).
    for dropped in smtp_server.dropped:
        [rcpt] = dropped.rcpt_tos
        assert message_id(dropped) == message_id(first[rcpt])
    assert all(int(vevent_of(r)["SEQUENCE"]) == meeting["sequence"] for r in first.values())
    audit = await api.ok("GET", "/api/v1/audit?entity=invitation&limit=100")
    assert [e["action"] for e in audit["items"]].count("mail_sent") == 10

    # A change while the server refuses everything with 451: one update each once it accepts again.
    smtp_server.refuse("data", 451)
    moved = await api.ok("PATCH", f"/api/v1/meetings/{meeting['id']}", {"title": "Forummöte, flyttat",
                                                                         "starts_at": "2027-04-05T10:00:00"})
    for _ in range(3):
        await api.ok("POST", "/api/v1/calendars/sync", status=200)
    assert len(smtp_server.received) == 10
    smtp_server.heal()
    smtp_server.drop_during_data(times=2)
    await drain(api, db)
    mail = by_recipient(smtp_server.received)
    dropped = by_recipient(smtp_server.dropped)
    for email in emails:
        ids = [message_id(r) for r in mail[email]]
        assert len(set(ids)) == 2 and len(ids) == 2, (email, ids)  # the invitation and one update
        update = mail[email][-1]
        assert str(vevent_of(update)["SUMMARY"]) == "Forummöte, flyttat"
        assert int(vevent_of(update)["SEQUENCE"]) == moved["sequence"]
        assert {message_id(r) for r in dropped.get(email, [])} <= set(ids)


# -- the CalDAV server killed in the middle of a sync ----------------------------------------------------
@pytest.fixture
def dav_settings(postgres: PostgresDatabase, tmp_path: Path, caldav_server: CaldavServer) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database={"url": postgres.fresh()},
        auth={"jwt_secret": secrets.token_urlsafe(32)},
        http={"public_url": "http://forum.test"},
        organizer={"name": "Forumsekretariatet", "email": "forum@tillvaxt.example"},
        calendar={"sync_interval_s": 3600, "accounts": [
            {"url": a.url_prefix, "username": a.username, "password": a.password} for a in caldav_server.accounts]},
        mail={"host": "127.0.0.1", "port": 9},
    )


async def recorded_objects(db: Any) -> int:
    async with db.session(write=False) as s:
        return int(await s.scalar(select(func.count()).select_from(m.CalendarObject)) or 0)


async def test_caldav_server_killed_mid_sync_calendars_converge_without_duplicates(
        aiohttp_client: Any, dav_settings: Settings, caldav_server: CaldavServer) -> None:
    client = await aiohttp_client(create_app(dav_settings))
    db = client.app[SERVICES].db
    api = ApiClient(client, token_for(dav_settings, "secretariat", "sekretariatet"))
    world = await small_world(api)
    urls = await attach_calendars(api, world, caldav_server)
    ids = []
    # Many meetings booked while the server is away: a backlog of pushes (forum and room calendar each).
    caldav_server.stop()
    count = 24
    for n in range(count):
        room = ("Tillväxten", "Storsjön")[n % 2]
        day, hour = 1 + n // 6, 8 + n % 6
        ids.append((await api.ok("POST", "/api/v1/meetings", meeting_body(
            world, room, start=f"2027-09-{day:02d}T{hour:02d}:00:00", end=f"2027-09-{day:02d}T{hour:02d}:45:00",
            title=f"Möte {n}")))["id"])
    caldav_server.start()
    # The push of the backlog runs (the sync request, and the background worker beside it); the server is
    # killed with SIGKILL once part of it is stored.
    syncing = asyncio.ensure_future(api.send("POST", "/api/v1/calendars/sync"))
    deadline = time.monotonic() + 60
    while await recorded_objects(db) < 6:
        assert time.monotonic() < deadline, "the push did not start"
        await asyncio.sleep(0.005)
    caldav_server.kill()
    killed_at = await recorded_objects(db)
    print(f"killed with {killed_at} of {2 * count} objects recorded")
    assert killed_at < 2 * count, "the push ended before the kill: nothing was interrupted"
    reply = await asyncio.wait_for(syncing, 60)
    assert reply.status == 200, reply.raw[:500]
    # While it is dead the secretariat goes on: a reschedule, a cancellation, a move to the other room,
    # a new booking. None of it may be lost.
    await api.ok("PATCH", f"/api/v1/meetings/{ids[0]}", {"title": "Möte 0, flyttat", "starts_at": "2027-09-01T07:00:00"})
    await api.ok("DELETE", f"/api/v1/meetings/{ids[1]}")
    await api.ok("PATCH", f"/api/v1/meetings/{ids[2]}", {"room_ids": [world["rooms"]["Storsjön"]["id"]]})
    ids.append((await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Tillväxten", start="2027-09-20T09:00:00", end="2027-09-20T10:00:00", title="Bokat medan servern var död")))["id"])
    caldav_server.start()
    await api.ok("POST", "/api/v1/calendars/sync", status=200)
    # Whatever the crash left (Xandikos: a collection locked, 423, until its stale git lock goes) is
    # waited out, never given up on.
    assert not [j for j in await open_jobs(db) if j[1] == "failed"]
    # What the server's operator does after a crash: stop it, remove stale locks, start it.
    caldav_server.stop()
    print("stale locks removed after the first kill:", caldav_server.clear_stale_locks())
    caldav_server.start()
    await settle(api)
    expected = await expected_calendars(api, world, urls, ids)
    for url, meetings in expected.items():
        await assert_calendar_matches(caldav_server, url, meetings)
    assert not await open_jobs(db)

    # Then a calendar client changes things (moves one of our events, books the room in its own
    # calendar) and the server is killed again while the service pulls those changes.
    forum_objects = {o.uid: o for o in await stored_events(caldav_server, urls["forum"])}
    target = expected[urls["forum"]][5]
    client_move(caldav_server, forum_objects[target["uid"]].href,
                datetime(2027, 9, 25, 13, 0, tzinfo=STHLM), datetime(2027, 9, 25, 14, 0, tzinfo=STHLM))
    status, _, body = caldav_server.request(
        "PUT", urls["Tillväxten"] + "styrelse-1.ics",
        foreign_event("styrelse-1", datetime(2027, 9, 26, 9, 0, tzinfo=STHLM), datetime(2027, 9, 26, 11, 0, tzinfo=STHLM)),
        {"Content-Type": "text/calendar", "If-None-Match": "*"})
    assert status in (201, 204), body
    syncing = asyncio.ensure_future(api.send("POST", "/api/v1/calendars/sync"))
    await asyncio.sleep(0.02)
    caldav_server.kill()
    assert (await asyncio.wait_for(syncing, 60)).status == 200
    print("stale locks removed after the second kill:", caldav_server.clear_stale_locks())
    caldav_server.start()
    await settle(api)
    moved = await api.ok("GET", f"/api/v1/meetings/{target['id']}")
    assert moved["starts_at"] == "2027-09-25T13:00:00+02:00", moved
    expected = await expected_calendars(api, world, urls, ids)
    for url, meetings in expected.items():
        await assert_calendar_matches(caldav_server, url, meetings, foreign=1 if url == urls["Tillväxten"] else 0)
    busy = await api.ok("GET", f"/api/v1/rooms/{world['rooms']['Tillväxten']['id']}/busy?from=2027-09-26T00:00:00&to=2027-09-27T00:00:00")
    assert [b["source"] for b in busy["items"]] == ["calendar"]
    # The service's record agrees with the server: one object row per object, none left over.
    assert await recorded_objects(db) == sum(len(v) for v in expected.values())


# -- the service killed with SIGKILL while it drains the outbox ------------------------------------------
@pytest.fixture
def serve_config(postgres: PostgresDatabase, radicale_server: CaldavServer, smtp_server: SmtpServer,
                 tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    """A config file for `forumbridge serve` on the test's PostgreSQL database, Radicale and SMTP server;
    the database URL; a secretariat token."""
    url, secret = postgres.fresh(), secrets.token_urlsafe(32)
    config = write_config(tmp_path / "forumbridge.toml", {
        "database": {"url": url, "pool_size": 5},
        "auth": {"jwt_secret": secret},
        "http": {"host": "127.0.0.1", "public_url": "http://forum.test"},
        "organizer": {"name": "Forumsekretariatet", "email": "forum@tillvaxt.example"},
        "calendar": {"sync_interval_s": 3600, "accounts": [
            {"url": a.url_prefix, "username": a.username, "password": a.password} for a in radicale_server.accounts]},
        "mail": {"host": smtp_server.host, "port": smtp_server.port},
    })
    yield config, url, issue_token(secret, "sekretariatet", "secretariat", timedelta(hours=1), "forumbridge", "forumbridge")
    radicale_server.start()  # a test that stopped it leaves it running for the next
    smtp_server.start()


async def test_service_killed_while_draining_the_outbox_every_job_done_and_mail_sent_once(
        serve_config: tuple[Path, str, str], radicale_server: CaldavServer, smtp_server: SmtpServer,
        tmp_path: Path) -> None:
    config, url, token = serve_config
    service = ServiceProcess("a", config, tmp_path)
    db = create_database(url)
    service.start()
    try:
        await service.wait_ready()
        async with service.api(token) as api:
            world = await small_world(api)
            urls = await attach_calendars(api, world, radicale_server)
            people = [await api.ok("POST", "/api/v1/people", {"name": f"Person {n}", "email": f"person{n}@region.example"})
                      for n in range(6)]
            # A backlog: the calendar and mail servers are away while the secretariat books and invites.
            radicale_server.stop()
            smtp_server.stop()
            ids, invitations = [], []
            for n in range(16):
                room = ("Tillväxten", "Storsjön")[n % 2]
                day, hour = 1 + n // 4, 9 + 2 * (n % 4)
                ids.append((await api.ok("POST", "/api/v1/meetings", meeting_body(
                    world, room, start=f"2027-10-{day:02d}T{hour:02d}:00:00", end=f"2027-10-{day:02d}T{hour:02d}:45:00",
                    title=f"Möte {n}")))["id"])
                for person in people[n % 3:n % 3 + 3]:
                    invitations.append((await api.ok("POST", f"/api/v1/meetings/{ids[-1]}/invitations",
                                                     {"person_id": person["id"], "mode": "remote"}))["id"])
            backlog = len(await open_jobs(db))
            radicale_server.start()
            smtp_server.start()
            # The drain starts (the sync request, and the worker beside it) and the process is killed in the middle.
            drainer = asyncio.ensure_future(api.send("POST", "/api/v1/calendars/sync"))
            deadline = time.monotonic() + 60
            while len(smtp_server.received) < 10:
                assert time.monotonic() < deadline, f"the drain did not start:\n{service.tail()}"
                await asyncio.sleep(0.005)
            service.kill()
            with pytest.raises(Exception):
                await asyncio.wait_for(drainer, 30)  # its connection died with the process
        left = await open_jobs(db)
        held = [j for j in left if j[1] == "running"]
        sent_before = len(smtp_server.received)
        print(f"killed after {sent_before} of {len(invitations)} mails; {len(left)} of {backlog}+ jobs open, "
              f"{len(held)} held by the dead process")
        assert left and sent_before < len(invitations), "the drain ended before the kill"
        # The dead process's leases run out (5 minutes; here the clock is moved on instead of waited for).
        async with db.session(write=True) as s:
            async with s.begin():
                await s.execute(m.OutboxJob.__table__.update().where(m.OutboxJob.status == "running")
                                .values(next_attempt_at=m.utcnow() - timedelta(seconds=1)))
        service.start()
        await service.wait_ready()
        async with service.api(token) as api:
            await drain(api, db)
            await settle(api)
            expected = await expected_calendars(api, world, urls, ids)
            for cal_url, meetings in expected.items():
                await assert_calendar_matches(radicale_server, cal_url, meetings)
        assert not await open_jobs(db)
        # Every invitation mailed once; a repeat only for a mail caught between the server's acceptance and
        # the service's record of it (in flight at the kill), and then with the same Message-ID.
        mail_held = sum(1 for j in held if j[0].startswith("mail."))
        repeats = assert_one_message_per_invitation(smtp_server, invitations)
        print(f"{repeats} mail(s) sent twice, with the same Message-ID; {mail_held} mail jobs were in flight")
        # A process hands one message at a time to the server and records it before the next
        # (InvitationMailer._sending), so at most one is caught.
        assert repeats <= min(mail_held, 1)
    finally:
        service.kill()
        await db.dispose()
