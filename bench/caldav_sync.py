"""CalDAV sync benchmark: the real service against one Radicale, side by side with vdirsyncer.

Everything runs against ONE Radicale that the benchmark starts on a free loopback port, with its
storage in a temporary folder and htpasswd auth, the way tests/support/caldav_servers.py does it.
Each calendar size gets its own service (`forumbridge serve --migrate` as a subprocess, with its
own SQLite file or PostgreSQL database), so that a sync only ever pulls that one calendar.

1. Push. Meetings are bulk-inserted into the service's database (SQLAlchemy Core, one forum, future
   one-hour meetings, no rooms). The clock starts when the benchmark sends
   `PATCH /api/v1/forums/{id}` with an empty Radicale calendar as `calendar_url`. That request
   commits one `calendar.push` outbox job per meeting (the service's own `attach_calendar`) and
   wakes the outbox worker. The clock stops when the database holds no pending or running job and
   one `calendar_objects` row per meeting (polled every 100 ms); a PROPFIND then checks that Radicale
   holds them all. vdirsyncer does the same work: the same meetings, rendered in-process by the
   service's own code (`build_event` + `render_shared`) into a folder of .ics files, uploaded by
   `vdirsyncer sync` into an empty calendar. `vdirsyncer discover` runs first and is not timed;
   the timed command includes vdirsyncer's start-up. The two alternate, vdirsyncer first and
   last (v o v o v with --push-rounds 2), each push into a new calendar, so that load drift on the
   shared machine hits both sides alike.
2. Incremental pick-up. Each service syncs until quiet: the first sync has no token and lists the
   whole calendar, and afterwards the service holds an RFC 6578 sync token. A vdirsyncer pair
   mirrors the same calendar into a folder (discover and first sync, not timed). Then, round after
   round, a calendar client (the benchmark, with plain conditional PUTs) changes 10 events, and
   both sides pick that change set up, in alternating order:
   - `moved`: each event is dragged 30 minutes later. The service applies that through its
     booking rules and writes the event back with a raised SEQUENCE (10 outbox jobs). Two times
     are taken: until the 10 meetings have their new time in the database (polled), which is our
     sync cycle and is set against the goal, since vdirsyncer's sync ends with the server's state
     in its store and writes nothing back; and until the write-back is done too.
   - `retitled`: a word is added to each SUMMARY. The service records the new ETags and changes
     nothing (its title stays the one it writes next time), so this is the pull alone.
   Ours is `POST /api/v1/calendars/sync` (sync-collection, one multiget of what changed, the pull
   rules, then the due outbox jobs), timed until the outbox is idle again: the background worker
   may still be writing moves back when the request returns. vdirsyncer's is `vdirsyncer sync`
   of the pair, which downloads the 10 events. Every round ends with untimed settling (our own
   write-back coming back to us, and to vdirsyncer when it went first).
3. The same at every calendar size (--sizes), the sizes' rounds interleaved. Calendars up to the
   push size are filled by our push (timed too). Larger ones are filled straight into Radicale's
   storage (see fill_storage; --fill-by-push pushes them instead, which takes minutes).

Timings are printed, never asserted: the machine is shared. CPU seconds of each process are
printed next to them, since they depend less on what else runs. The exit status is non-zero only
when something functional went wrong: a service or Radicale did not start, a request got an
unexpected answer, a calendar or a vdirsyncer folder does not hold what it should, a job failed,
a change was not applied, or a service did not exit cleanly.

    ./dev bench caldav_sync                      # full run: push 1,000; pick-up at 100, 1,000, 5,000
    ./dev bench caldav_sync --quick              # smoke run with small counts
    ./dev bench caldav_sync --sizes 100,1000     # other calendar sizes for the pick-up
    ./dev bench caldav_sync --db postgresql      # PostgreSQL instead of SQLite
    ./dev bench caldav_sync --profile            # py-spy profiles of the service (pip install py-spy)
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import resource
import sqlite3
import sys
import tempfile
import time
import traceback
import uuid
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
from icalendar import Calendar, vText  # noqa: E402
from sqlalchemy import func, insert, select, update  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: E402

from bench.common import (  # noqa: E402
    write_results, PG_ADMIN_URL, VENV_BIN, BenchError, Profiler, Service, drop_database, log, machine, new_database, pct,
    pg_admin, proc_cpu_s, proc_status,
)
from connectors.calendar.caldav import object_name  # noqa: E402
from service.calendar.ical import render_shared  # noqa: E402
from service.calendar.snapshot import build_event  # noqa: E402
from service.db import models as m  # noqa: E402
from service.db.engine import create_database  # noqa: E402
from service.settings import load_settings  # noqa: E402
from tests.support.caldav_servers import RadicaleServer  # noqa: E402

VDIRSYNCER = str(VENV_BIN / "vdirsyncer") if (VENV_BIN / "vdirsyncer").exists() else "vdirsyncer"
TIME_LIMIT_S = 1500  # the whole run
PUSH_GOAL = 1.0  # ours / vdirsyncer, pushing the push size
PICKUP_GOAL = 0.25  # ours / vdirsyncer, picking up a change set in a calendar of the push size
POLL_S = 0.02
# A push takes tens of seconds: polling every 100 ms costs at most 0.3% of it in resolution, and
# the benchmark's own queries take less CPU from the machine the service and Radicale share.
PUSH_POLL_S = 0.1
PUSH_TIMEOUT_S = 900.0
KINDS = ("moved", "retitled")

UTC = timezone.utc
ZONE = "Europe/Stockholm"
# Meeting i: one hour at BASE + 2i hours; a move by MOVE stays clear of the next one.
BASE = datetime(2031, 3, 3, 7, tzinfo=UTC)
MOVE = timedelta(minutes=30)
DESCRIPTION = ("Dagordning:\n1. Föregående protokoll\n2. Regional kompetensförsörjning, lägesrapport\n"
               "3. Infrastruktur och kollektivtrafik\n4. Övriga frågor\n\nHandlingar skickas en vecka före mötet.")


@dataclass(frozen=True)
class Plan:
    push: int = 1_000  # meetings pushed by us and uploaded by vdirsyncer, side by side
    push_rounds: int = 2  # our pushes, each between two vdirsyncer uploads
    sizes: tuple[int, ...] = (100, 1_000, 5_000)  # calendar sizes for the incremental pick-up
    changes: int = 10  # events a client changes per round
    rounds: int = 5  # measured rounds per size and kind of change
    warmup: int = 1  # unmeasured rounds per size first
    # Calendars larger than the push size are filled straight into Radicale's storage unless this is set.
    fill_by_push: bool = False


FULL = Plan()
QUICK = Plan(push=200, push_rounds=1, sizes=(100, 200), rounds=2, warmup=1)


# -- CalDAV, as an outside client ----------------------------------------------------------
class Dav:
    """Plain WebDAV requests to the benchmark's Radicale as its user (outside the code under test)."""

    def __init__(self, http: aiohttp.ClientSession, server: RadicaleServer) -> None:
        self.http = http
        self.server = server
        token = base64.b64encode(f"{server.username}:{server.password}".encode()).decode()
        self.auth = {"Authorization": f"Basic {token}"}

    def url(self, href: str) -> str:
        return href if href.startswith("http") else self.server.origin + href

    async def etags(self, calendar_url: str) -> dict[str, str]:
        """The objects in a calendar: href -> ETag (PROPFIND Depth 1)."""
        body = '<?xml version="1.0" encoding="utf-8"?><propfind xmlns="DAV:"><prop><getetag/></prop></propfind>'
        headers = {**self.auth, "Depth": "1", "Content-Type": "application/xml"}
        async with self.http.request("PROPFIND", calendar_url, data=body, headers=headers) as r:
            payload = await r.read()
            if r.status != 207:
                raise BenchError(f"PROPFIND {calendar_url}: {r.status} {payload[:300]!r}")
        own = urlsplit(calendar_url).path.rstrip("/")
        out = {}
        for resp in ET.fromstring(payload).iter("{DAV:}response"):
            href = resp.findtext("{DAV:}href") or ""
            if href.rstrip("/") != own:
                out[href] = resp.findtext(".//{DAV:}getetag") or ""
        return out

    async def sync_collection(self, calendar_url: str) -> int:
        """An RFC 6578 sync-collection REPORT from no token; the number of objects listed."""
        body = ('<?xml version="1.0" encoding="utf-8"?><sync-collection xmlns="DAV:"><sync-token/>'
                "<sync-level>1</sync-level><prop><getetag/></prop></sync-collection>")
        headers = {**self.auth, "Content-Type": "application/xml"}
        async with self.http.request("REPORT", calendar_url, data=body, headers=headers) as r:
            payload = await r.read()
            if r.status != 207:
                raise BenchError(f"REPORT sync-collection {calendar_url}: {r.status} {payload[:300]!r}")
        return sum(1 for _ in ET.fromstring(payload).iter("{DAV:}response"))

    async def get(self, href: str) -> tuple[bytes, str]:
        async with self.http.get(self.url(href), headers=self.auth) as r:
            data = await r.read()
            if r.status != 200:
                raise BenchError(f"GET {href}: {r.status} {data[:300]!r}")
            return data, r.headers.get("ETag", "")

    async def put(self, href: str, data: bytes, etag: str) -> None:
        headers = {**self.auth, "Content-Type": "text/calendar; charset=utf-8", "If-Match": etag}
        async with self.http.put(self.url(href), data=data, headers=headers) as r:
            body = await r.read()
            if r.status not in (201, 204):
                raise BenchError(f"client PUT {href}: {r.status} {body[:300]!r}")


def changed_by_client(data: bytes, kind: str) -> bytes:
    """The event as a calendar client writes it back: dragged 30 minutes later, or retitled."""
    cal = Calendar.from_ical(data)
    for ev in cal.walk("VEVENT"):
        if kind == "moved":
            for name in ("DTSTART", "DTEND"):
                ev[name].dt = ev[name].dt + MOVE
        else:
            ev["SUMMARY"] = vText(f"{ev['SUMMARY']} (ändrad i kalendern)")
    return cal.to_ical()


# -- vdirsyncer ----------------------------------------------------------------------------
@dataclass
class Run:
    seconds: float
    cpu_s: float  # vdirsyncer's own user + system CPU
    server_cpu_s: float  # Radicale's CPU meanwhile


class Vdirsyncer:
    """One vdirsyncer pair: a Radicale calendar and a local folder of .ics files."""

    def __init__(self, server: RadicaleServer, calendar_url: str, folder: Path) -> None:
        self.server = server
        self.calendar_url = calendar_url
        self.local = folder / "local"
        self.local.mkdir(parents=True, exist_ok=True)
        self.config = folder / "config"
        self.config.write_text("\n".join([
            "[general]",
            f"status_path = {json.dumps(str(folder / 'status') + '/')}",
            "[pair calendar]",
            'a = "local"',
            'b = "remote"',
            "collections = null",
            "[storage local]",
            'type = "filesystem"',
            f"path = {json.dumps(str(self.local) + '/')}",
            'fileext = ".ics"',
            "[storage remote]",
            'type = "caldav"',
            f"url = {json.dumps(calendar_url)}",
            f"username = {json.dumps(server.username)}",
            f"password = {json.dumps(server.password)}",
        ]) + "\n", encoding="utf-8")

    async def run(self, *args: str) -> Run:
        server = radicale_pid(self.server)
        server0, own0 = proc_cpu_s(server), resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            VDIRSYNCER, "-v", "WARNING", "-c", str(self.config), *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 600)
        elapsed = time.perf_counter() - started
        own1, server1 = resource.getrusage(resource.RUSAGE_CHILDREN), proc_cpu_s(server)
        if proc.returncode != 0:
            raise BenchError(f"vdirsyncer {' '.join(args)} exited with {proc.returncode}:\n"
                             f"{out.decode(errors='replace')[-1500:]}\n{err.decode(errors='replace')[-1500:]}")
        cpu = (own1.ru_utime + own1.ru_stime) - (own0.ru_utime + own0.ru_stime)
        return Run(elapsed, cpu, server1 - server0)

    def files(self) -> dict[str, str]:
        """Local file name -> hash of its content."""
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in self.local.glob("*.ics")}


def radicale_pid(server: RadicaleServer) -> int:
    return server._process.pid if server._process is not None else 0


# -- one service -------------------------------------------------------------------------------
@dataclass
class Forum:
    """A forum of the service with its meetings and, once set, its calendar."""

    id: str
    meetings: list[tuple[uuid.UUID, str]]  # (id, uid) of meeting i
    calendar_url: str = ""
    calendar_id: uuid.UUID | None = None


@dataclass
class Instance:
    size: int
    url: str
    service: Service
    pg_name: str = ""
    engine: AsyncEngine | None = None
    headers: dict[str, str] = field(default_factory=dict)
    forum: Forum | None = None  # the forum whose calendar the pick-up rounds sync
    touched: set[int] = field(default_factory=set)  # meetings a client changed already
    moved: dict[int, datetime] = field(default_factory=dict)  # meeting i -> where the client moved it
    mirror: Vdirsyncer | None = None

    async def api(self, http: aiohttp.ClientSession, method: str, path: str, body: dict | None = None,
                  want: int = 200) -> Any:
        async with http.request(method, self.service.base + path, json=body, headers=self.headers) as r:
            data = await r.json(content_type=None)
            if r.status != want:
                raise BenchError(f"{method} {path} -> {r.status}, not {want}: {str(data)[:500]}")
            return data

    async def new_forum(self, http: aiohttp.ClientSession, count: int) -> Forum:
        """A forum through the API, with `count` meetings bulk-inserted into the database."""
        made = await self.api(http, "POST", "/api/v1/forums", {
            "name": f"Forum för regional tillväxt ({count:,} möten)", "kind": "officials"}, want=201)
        forum = Forum(made["id"], [])
        assert self.engine is not None
        await bulk_meetings(self.engine, uuid.UUID(forum.id), count, forum.meetings)
        return forum

    async def state(self, calendar_id: uuid.UUID | None) -> tuple[int, int, int]:
        """(pending or running jobs, failed jobs, calendar_objects of the calendar), from the database."""
        jobs, objects = m.OutboxJob.__table__, m.CalendarObject.__table__
        stmt = select(
            select(func.count()).select_from(jobs).where(jobs.c.status.in_(("pending", "running"))).scalar_subquery(),
            select(func.count()).select_from(jobs).where(jobs.c.status == "failed").scalar_subquery(),
            select(func.count()).select_from(objects).where(objects.c.calendar_id == calendar_id).scalar_subquery(),
        )
        assert self.engine is not None
        async with self.engine.connect() as conn:
            row = (await conn.execute(stmt)).one()
        return int(row[0]), int(row[1]), int(row[2])

    async def idle(self, timeout_s: float = 120.0) -> None:
        """Wait until the outbox holds no pending or running job."""
        deadline = time.monotonic() + timeout_s
        while True:
            unfinished, failed, _ = await self.state(None)
            if failed:
                raise BenchError(f"{self.size:,}: {failed} outbox jobs failed:\n{self.service.log_tail()}")
            if unfinished == 0:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"{self.size:,}: {unfinished} jobs still unfinished after {timeout_s:.0f} s")
            await asyncio.sleep(POLL_S)


async def bulk_meetings(engine: AsyncEngine, forum_id: uuid.UUID, count: int, out: list[tuple[uuid.UUID, str]]) -> None:
    """Meetings 0..count-1 of the forum, written straight into the database (no rooms, no jobs)."""
    stamp = datetime.now(UTC)
    rows = []
    for i in range(count):
        ident = uuid.uuid4()
        start = BASE + timedelta(hours=2 * i)
        uid = f"{ident}@forumbridge"
        out.append((ident, uid))
        rows.append({
            "id": ident, "forum_id": forum_id, "title": f"Forummöte {i + 1}: tillväxt och attraktivitet",
            "description": DESCRIPTION, "starts_at": start, "ends_at": start + timedelta(hours=1), "timezone": ZONE,
            "status": "planned", "uid": uid, "sequence": 0, "room_ids": [], "created_at": stamp, "updated_at": stamp,
        })
    async with engine.begin() as conn:
        for chunk in range(0, count, 2_000):
            await conn.execute(insert(m.Meeting.__table__), rows[chunk:chunk + 2_000])


async def render_folder(url: str, config: Path, forum_id: str, folder: Path) -> int:
    """The forum's meetings as the service renders them for a shared calendar, one .ics file each."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = load_settings(config)
    db = create_database(url)
    count = 0
    try:
        async with db.session(write=False) as s:
            for meeting in await s.scalars(select(m.Meeting).where(m.Meeting.forum_id == uuid.UUID(forum_id))):
                data = render_shared(await build_event(s, meeting, settings))
                (folder / object_name(meeting.uid)).write_bytes(data)
                count += 1
    finally:
        await db.dispose()
    return count


# -- the measurements ----------------------------------------------------------------------
@dataclass
class Result:
    db: str
    plan: dict[str, Any]
    server: str = ""
    push: list[dict[str, float]] = field(default_factory=list)  # our pushes of the push size
    vdir_upload: list[dict[str, float]] = field(default_factory=list)  # vdirsyncer's, around ours
    push_other: dict[str, dict[str, float]] = field(default_factory=dict)  # size -> our push of other sizes
    filled: dict[str, float] = field(default_factory=dict)  # size -> seconds, filled through the storage
    first_sync: dict[str, dict[str, float]] = field(default_factory=dict)  # size -> ours / vdirsyncer, no token
    # size -> kind -> series -> one value per measured round
    pickup: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)
    rss_kb: dict[str, int | None] = field(default_factory=dict)
    exit_code: dict[str, int | None] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def push(http: aiohttp.ClientSession, inst: Instance, forum: Forum, dav: Dav,
               radicale: RadicaleServer) -> dict[str, float]:
    """Our push of the forum's meetings into a new, empty calendar: from the PATCH until the outbox is idle."""
    forum.calendar_url = radicale.new_calendar()
    count = len(forum.meetings)
    server = radicale_pid(radicale)
    cpu0, server0 = proc_cpu_s(inst.service.pid), proc_cpu_s(server)
    started = time.perf_counter()
    await inst.api(http, "PATCH", f"/api/v1/forums/{forum.id}", {"calendar_url": forum.calendar_url})
    committed = time.perf_counter()
    assert inst.engine is not None
    async with inst.engine.connect() as conn:
        forum.calendar_id = (await conn.execute(
            select(m.Calendar.id).where(m.Calendar.url == forum.calendar_url))).scalar_one()
    deadline = time.monotonic() + PUSH_TIMEOUT_S
    while True:
        unfinished, failed, objects = await inst.state(forum.calendar_id)
        if failed:
            raise BenchError(f"push {count:,}: {failed} jobs failed:\n{inst.service.log_tail()}")
        if unfinished == 0 and objects == count:
            break
        if unfinished == 0:
            raise BenchError(f"push {count:,}: the outbox is idle with {objects} objects recorded")
        if time.monotonic() > deadline:
            raise BenchError(f"push {count:,}: {unfinished} jobs unfinished after {PUSH_TIMEOUT_S:.0f} s")
        await asyncio.sleep(PUSH_POLL_S)
    elapsed = time.perf_counter() - started
    cpu1, server1 = proc_cpu_s(inst.service.pid), proc_cpu_s(server)
    held = len(await dav.etags(forum.calendar_url))
    if held != count:
        raise BenchError(f"push {count:,}: Radicale holds {held} objects")
    return {"seconds": elapsed, "commit_s": committed - started, "per_meeting_ms": elapsed * 1000 / count,
            "cpu_s": cpu1 - cpu0, "server_cpu_s": server1 - server0}


async def vdir_upload(radicale: RadicaleServer, dav: Dav, source: Path, folder: Path, expected: int) -> dict[str, float]:
    """vdirsyncer uploading a folder of .ics files into a new, empty calendar; `sync` is timed, `discover` not."""
    pair = Vdirsyncer(radicale, radicale.new_calendar(), folder)
    for path in source.glob("*.ics"):
        (pair.local / path.name).write_bytes(path.read_bytes())
    await pair.run("discover")
    run = await pair.run("sync")
    held = len(await dav.etags(pair.calendar_url))
    if held != expected:
        raise BenchError(f"vdirsyncer upload: Radicale holds {held} objects, not {expected}")
    return {"seconds": run.seconds, "cpu_s": run.cpu_s, "server_cpu_s": run.server_cpu_s}


async def fill_storage(inst: Instance, forum: Forum, radicale: RadicaleServer, dav: Dav, config: Path) -> float:
    """A calendar holding the forum's meetings as if our push had put them there; returns the seconds it took.

    Radicale checks on every new object that no other object in the collection has its UID, by
    reading them all, so filling a calendar through PUT grows with the square of its size (about
    10 minutes for 5,000, for any client). Here the service's own renderings are written straight
    into the storage folder of a new Radicale calendar, their ETags are read back with a PROPFIND,
    and the service's database gets what a push records: the calendar, the forum's calendar_url
    and one calendar_objects row (href, ETag) per meeting. A first sync-collection REPORT makes
    Radicale record the objects' ETag history, which its PUT would have done.
    """
    started = time.perf_counter()
    forum.calendar_url = radicale.new_calendar()
    base = urlsplit(forum.calendar_url).path
    storage = radicale.folder / "collections" / "collection-root" / base.strip("/")
    if not storage.is_dir():
        raise BenchError(f"Radicale's storage folder for {forum.calendar_url} is not at {storage}")
    count = await render_folder(inst.url, config, forum.id, storage)
    etags = await dav.etags(forum.calendar_url)
    # Radicale keeps a history of ETags for sync tokens, written by PUT; files dropped into the
    # storage have none yet, and the first sync-collection would write it for every object.
    await dav.sync_collection(forum.calendar_url)
    if count != len(forum.meetings) or len(etags) != count:
        raise BenchError(f"fill {count:,}: rendered {count}, Radicale lists {len(etags)}")
    stamp = datetime.now(UTC)
    calendar_id, forum_id = uuid.uuid4(), uuid.UUID(forum.id)
    rows = [{"id": uuid.uuid4(), "calendar_id": calendar_id, "meeting_id": ident, "uid": uid,
             "href": base + object_name(uid), "etag": etags[base + object_name(uid)], "sequence": 0}
            for ident, uid in forum.meetings]
    assert inst.engine is not None
    async with inst.engine.begin() as conn:
        await conn.execute(insert(m.Calendar.__table__).values(
            id=calendar_id, url=forum.calendar_url, purpose="forum", owner_id=forum_id, created_at=stamp,
            updated_at=stamp))
        await conn.execute(update(m.Forum.__table__).where(m.Forum.__table__.c.id == forum_id)
                           .values(calendar_url=forum.calendar_url, updated_at=stamp))
        for chunk in range(0, len(rows), 2_000):
            await conn.execute(insert(m.CalendarObject.__table__), rows[chunk:chunk + 2_000])
    forum.calendar_id = calendar_id
    return time.perf_counter() - started


async def retire(inst: Instance, forum: Forum) -> None:
    """Take a forum's calendar out of the service's syncs (the database only: no job removes its events)."""
    assert inst.engine is not None
    async with inst.engine.begin() as conn:
        await conn.execute(update(m.Forum.__table__).where(m.Forum.__table__.c.id == uuid.UUID(forum.id))
                           .values(calendar_url=None))


async def settle(http: aiohttp.ClientSession, inst: Instance, rounds: int = 10) -> dict[str, Any]:
    """Sync until a sync changes nothing and runs nothing; returns the first sync's result."""
    first: dict[str, Any] | None = None
    result: dict[str, Any] = {}
    for _ in range(rounds):
        result = await inst.api(http, "POST", "/api/v1/calendars/sync")
        if result["errors"]:
            raise BenchError(f"{inst.size:,}: sync errors {result['errors']}")
        first = first or result
        await inst.idle()
        if result["changed"] == 0 and result["deleted"] == 0 and result["jobs_run"] == 0:
            return first
    raise BenchError(f"{inst.size:,}: the calendar did not settle: {result}")


async def client_changes(inst: Instance, dav: Dav, rng: random.Random, count: int, kind: str) -> list[int]:
    """A calendar client changes `count` of our events, ones that no client changed before while there are enough."""
    assert inst.forum is not None
    fresh = [i for i in range(inst.size) if i not in inst.touched]
    picks = rng.sample(fresh if len(fresh) >= count else range(inst.size), count)
    for i in picks:
        href = inst.forum.calendar_url + object_name(inst.forum.meetings[i][1])
        data, etag = await dav.get(href)
        await dav.put(href, changed_by_client(data, kind), etag)
        inst.touched.add(i)
        if kind == "moved":
            inst.moved[i] = inst.moved.get(i, BASE + timedelta(hours=2 * i)) + MOVE
    return picks


async def applied(inst: Instance, picks: list[int]) -> float:
    """The moment (perf_counter) every moved meeting in `picks` has its new time in the database (polled)."""
    assert inst.forum is not None and inst.engine is not None
    wanted = {inst.forum.meetings[i][0]: inst.moved[i] for i in picks}
    stmt = select(m.Meeting.id, m.Meeting.starts_at).where(m.Meeting.id.in_(list(wanted)))
    while True:
        async with inst.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        if all(r.starts_at.astimezone(UTC) == wanted[r.id] for r in rows):
            return time.perf_counter()
        await asyncio.sleep(POLL_S / 2)


async def pickup_round(http: aiohttp.ClientSession, inst: Instance, dav: Dav, plan: Plan, rng: random.Random,
                       kind: str, ours_first: bool, record: dict[str, list[float]] | None) -> None:
    """One change set picked up by both sides; timed into `record` unless it is None (warm-up)."""
    assert inst.mirror is not None
    server = radicale_pid(dav.server)
    picks = await client_changes(inst, dav, rng, plan.changes, kind)
    for side in (("ours", "vdirsyncer") if ours_first else ("vdirsyncer", "ours")):
        if side == "ours":
            cpu0, server0 = proc_cpu_s(inst.service.pid), proc_cpu_s(server)
            started = time.perf_counter()
            # For moves, also when the service has applied them (before writing them back).
            watch = asyncio.create_task(applied(inst, picks)) if kind == "moved" else None
            try:
                result = await inst.api(http, "POST", "/api/v1/calendars/sync")
                returned = time.perf_counter()
                await inst.idle()
                settled = time.perf_counter()
                moved_at = await asyncio.wait_for(watch, 30) if watch is not None else returned
            finally:
                if watch is not None and not watch.done():
                    watch.cancel()
            cpu, server_cpu = proc_cpu_s(inst.service.pid) - cpu0, proc_cpu_s(server) - server0
            if result["errors"] or result["changed"] != plan.changes:
                raise BenchError(f"{inst.size:,} {kind}: our sync saw {result}, not {plan.changes} changes")
            if record is not None:
                record["ours"].append(settled - started)
                record["ours_returned"].append(returned - started)
                record["ours_applied"].append(moved_at - started)
                record["ours_cpu"].append(cpu)
                record["ours_server_cpu"].append(server_cpu)
        else:
            before = inst.mirror.files()
            run = await inst.mirror.run("sync")
            after = inst.mirror.files()
            changed = sum(1 for name, digest in after.items() if before.get(name) != digest)
            if changed != plan.changes or len(after) != inst.size:
                raise BenchError(f"{inst.size:,} {kind}: vdirsyncer changed {changed} of {len(after)} files, "
                                 f"not {plan.changes} of {inst.size}")
            if record is not None:
                record["vdirsyncer"].append(run.seconds)
                record["vdirsyncer_cpu"].append(run.cpu_s)
                record["vdirsyncer_server_cpu"].append(run.server_cpu_s)
    # Not timed: our own write-back coming back to us, and to vdirsyncer when it went first.
    await settle(http, inst)
    if kind == "moved" and not ours_first:
        await inst.mirror.run("sync")


async def check_moves(inst: Instance) -> str:
    """Every event the client moved has moved in the service's database too, with a raised SEQUENCE."""
    assert inst.forum is not None and inst.engine is not None
    ids = {inst.forum.meetings[i][0]: start for i, start in inst.moved.items()}
    async with inst.engine.connect() as conn:
        rows = (await conn.execute(select(m.Meeting.id, m.Meeting.starts_at, m.Meeting.sequence)
                                   .where(m.Meeting.id.in_(list(ids))))).all()
    wrong = [r for r in rows if r.starts_at.astimezone(UTC) != ids[r.id] or r.sequence < 1]
    if wrong or len(rows) != len(ids):
        raise BenchError(f"{inst.size:,}: {len(wrong)} of {len(ids)} client moves not applied in the service")
    return f"{inst.size:,}: {len(ids)} client moves applied (new time, SEQUENCE raised), calendar holds {inst.size:,}"


# -- one run -----------------------------------------------------------------------------------
async def run(plan: Plan, db: str, result: Result, profiler: Profiler) -> None:
    rng = random.Random(20310303)
    sizes = sorted(set(plan.sizes) | {plan.push})
    instances: list[Instance] = []
    with tempfile.TemporaryDirectory(prefix="forumbridge-bench-caldav-") as tmp:
        folder = Path(tmp)
        (folder / "radicale").mkdir()
        radicale = RadicaleServer(folder / "radicale")
        try:
            await asyncio.to_thread(radicale.start)
            import radicale as radicale_package
            result.server = f"Radicale {radicale_package.VERSION}"
            config = folder / "forumbridge.toml"
            config.write_text(
                "[calendar]\n"
                "sync_interval_s = 86400\n"  # no background pull: every pull is the benchmark's
                "[[calendar.accounts]]\n"
                f"url = {json.dumps(radicale.origin + '/')}\n"
                f"username = {json.dumps(radicale.username)}\n"
                f"password = {json.dumps(radicale.password)}\n", encoding="utf-8")
            for size in sizes:
                url, name = await new_database(db, folder, f"svc-{size}")
                service = Service(url, folder / f"svc-{size}", {"FORUMBRIDGE_CONFIG": str(config)})
                instances.append(Instance(size, url, service, pg_name=name))
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
                dav = Dav(http, radicale)
                log(f"Radicale on {radicale.origin}; starting {len(instances)} services on {db}")
                await asyncio.gather(*(inst.service.start(http) for inst in instances))
                for inst in instances:
                    inst.headers = {"Authorization": f"Bearer {await inst.service.token()}"}
                    inst.engine = create_async_engine(
                        inst.url, connect_args={"timeout": 60} if inst.url.startswith("sqlite") else {})
                    inst.forum = await inst.new_forum(http, inst.size)

                # 1. push
                for inst in instances:
                    assert inst.forum is not None
                    if inst.size == plan.push:
                        await push_side_by_side(http, inst, dav, radicale, config, folder, plan, result, profiler)
                    elif inst.size < plan.push or plan.fill_by_push:
                        log(f"push {inst.size:,}: ours")
                        p = result.push_other[str(inst.size)] = await push(http, inst, inst.forum, dav, radicale)
                        log(f"  {p['seconds']:.2f} s, {p['per_meeting_ms']:.1f} ms a meeting")
                    else:
                        seconds = await fill_storage(inst, inst.forum, radicale, dav, config)
                        result.filled[str(inst.size)] = seconds
                        log(f"filled a calendar with {inst.size:,} events through Radicale's storage in {seconds:.1f} s")

                # 2. first syncs: ours without a token, vdirsyncer's first download
                measured = [inst for inst in instances if inst.size in plan.sizes]
                for inst in measured:
                    assert inst.forum is not None
                    started = time.perf_counter()
                    await settle(http, inst)
                    ours = time.perf_counter() - started
                    inst.mirror = Vdirsyncer(radicale, inst.forum.calendar_url, folder / f"mirror-{inst.size}")
                    await inst.mirror.run("discover")
                    first = await inst.mirror.run("sync")
                    if len(inst.mirror.files()) != inst.size:
                        raise BenchError(f"{inst.size:,}: vdirsyncer downloaded {len(inst.mirror.files())} events")
                    status = await inst.api(http, "GET", "/api/v1/calendars")
                    if [c["sync_token_kept"] for c in status["items"]] != [True]:
                        raise BenchError(f"{inst.size:,}: not one calendar with a sync token: {status}")
                    result.first_sync[str(inst.size)] = {"ours": ours, "vdirsyncer": first.seconds}
                    log(f"first sync of {inst.size:,}: ours {ours:.2f} s (until quiet), "
                        f"vdirsyncer's download {first.seconds:.2f} s")

                # 3. incremental pick-up: sizes interleaved, the side that goes first alternating
                series = ("ours", "ours_returned", "ours_applied", "ours_cpu", "ours_server_cpu", "vdirsyncer", "vdirsyncer_cpu",
                          "vdirsyncer_server_cpu")
                for inst in measured:
                    result.pickup[str(inst.size)] = {kind: {k: [] for k in series} for kind in KINDS}
                result.load.append(os.getloadavg()[0])
                total = plan.warmup + plan.rounds
                for r in range(total):
                    order = measured if r % 2 == 0 else measured[::-1]
                    for k, inst in enumerate(order):
                        for j, kind in enumerate(KINDS):
                            record = result.pickup[str(inst.size)][kind] if r >= plan.warmup else None
                            profile = profiler.start(inst.service.pid, f"pickup-{kind}-{inst.size}-{r}") \
                                if record is not None and inst.size == plan.push else None
                            if profile is not None:
                                await asyncio.sleep(0.5)  # py-spy attaching
                            try:
                                await pickup_round(http, inst, dav, plan, rng, kind, (r + k + j) % 2 == 0, record)
                            finally:
                                await profiler.stop(profile)
                    log(f"pick-up round {r + 1}/{total}{' (warm-up)' if r < plan.warmup else ''} done")
                result.load.append(os.getloadavg()[0])
                for inst in measured:
                    assert inst.forum is not None
                    result.checks.append(await check_moves(inst))
                    held = await dav.etags(inst.forum.calendar_url)
                    if len(held) != inst.size:
                        raise BenchError(f"{inst.size:,}: the calendar holds {len(held)} objects at the end")

            for inst in instances:
                result.rss_kb[str(inst.size)] = proc_status(inst.service.pid).get("VmRSS")
            for inst in instances:
                code, _ = await inst.service.stop()
                result.exit_code[str(inst.size)] = code
                if code != 0:
                    result.problems.append(f"the service ({inst.size:,}) exited with {code}:\n{inst.service.log_tail()}")
                errors = inst.service.log_errors()
                if errors:
                    result.problems.append(f"{errors} error lines in the log of the service ({inst.size:,}):\n"
                                           f"{inst.service.log_tail()}")
        except Exception as exc:  # noqa: BLE001 - reported with the figures so far
            result.problems.append(str(exc) if isinstance(exc, BenchError) else traceback.format_exc())
            for inst in instances:
                if inst.service.proc is not None and inst.service.log_errors():
                    result.problems.append(f"log of the service ({inst.size:,}):\n{inst.service.log_tail()}")
        finally:
            for inst in instances:
                inst.service.kill()
                if inst.engine is not None:
                    await inst.engine.dispose()
            radicale.stop()
            for inst in instances:
                await drop_database(inst.pg_name)


async def push_side_by_side(http: aiohttp.ClientSession, inst: Instance, dav: Dav, radicale: RadicaleServer,
                            config: Path, folder: Path, plan: Plan, result: Result, profiler: Profiler) -> None:
    """vdirsyncer, ours, vdirsyncer, ours, ..., vdirsyncer: each push into a new calendar.

    Each of our pushes is of another forum of the same service, with as many meetings; all but the
    last are taken out of the syncs afterwards, so the pick-up rounds sync one calendar.
    """
    assert inst.forum is not None
    source = folder / "rendered"
    count = await render_folder(inst.url, config, inst.forum.id, source)
    forums = [await inst.new_forum(http, plan.push) for _ in range(plan.push_rounds - 1)] + [inst.forum]
    for r in range(plan.push_rounds + 1):
        log(f"push {plan.push:,}: vdirsyncer uploading {count:,} rendered .ics files ({r + 1}/{plan.push_rounds + 1})")
        result.vdir_upload.append(await vdir_upload(radicale, dav, source, folder / f"upload-{r}", count))
        log(f"  {result.vdir_upload[-1]['seconds']:.2f} s")
        if r == plan.push_rounds:
            break
        log(f"push {plan.push:,}: ours, from the PATCH of calendar_url until the outbox is idle "
            f"({r + 1}/{plan.push_rounds})")
        profile = profiler.start(inst.service.pid, f"push-{plan.push}-{r}")
        if profile is not None:
            await asyncio.sleep(0.5)  # py-spy attaching
        try:
            p = await push(http, inst, forums[r], dav, radicale)
        finally:
            await profiler.stop(profile)
        result.push.append(p)
        log(f"  {p['seconds']:.2f} s ({p['per_meeting_ms']:.1f} ms a meeting; the PATCH took {p['commit_s']:.2f} s)")
        if forums[r] is not inst.forum:
            await retire(inst, forums[r])


# -- the report -----------------------------------------------------------------------------
def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def report(result: Result, plan: Plan, quick: bool, started: datetime, elapsed: float) -> str:
    def s(v: float | None) -> str:
        return "-" if v is None or v != v else f"{v:.2f}"

    def ms(v: float | None) -> str:
        return "-" if v is None or v != v else f"{v * 1000:.0f}"

    P = f"{plan.push:,}"
    rows: list[tuple[str, str]] = [("server", result.server), ("database", result.db)]
    if result.push and result.vdir_upload:
        ours = [p["seconds"] for p in result.push]
        vd = [u["seconds"] for u in result.vdir_upload]
        # Each of our pushes against the mean of the vdirsyncer uploads just before and after it.
        bracketed = [o / ((vd[i] + vd[i + 1]) / 2) for i, o in enumerate(ours) if i + 1 < len(vd)]
        rows += [
            (f"push {P} new meetings: ours, s (PATCH until the outbox is idle)", " / ".join(s(v) for v in ours)),
            ("  of which the PATCH that commits the jobs, s", " / ".join(s(p["commit_s"]) for p in result.push)),
            ("  CPU s per push: service + Radicale", f"{s(mean([p['cpu_s'] for p in result.push]))} + "
                                                     f"{s(mean([p['server_cpu_s'] for p in result.push]))}"),
            (f"push {P}: vdirsyncer sync, s (before, between, after ours)", " / ".join(s(v) for v in vd)),
            ("  CPU s per upload: vdirsyncer + Radicale", f"{s(mean([u['cpu_s'] for u in result.vdir_upload]))} + "
                                                           f"{s(mean([u['server_cpu_s'] for u in result.vdir_upload]))}"),
            (f"  **ratio ours / vdirsyncer** (goal <= {PUSH_GOAL}): means; each push vs its neighbours",
             f"{mean(ours) / mean(vd):.2f}; " + " / ".join(f"{b:.2f}" for b in bracketed)),
        ]
    for size, p in sorted(result.push_other.items(), key=lambda kv: int(kv[0])):
        rows.append((f"push {int(size):,} new meetings: ours, s (ms a meeting)", f"{s(p['seconds'])} ({p['per_meeting_ms']:.1f})"))
    for size, seconds in sorted(result.filled.items(), key=lambda kv: int(kv[0])):
        rows.append((f"calendar of {int(size):,} filled through Radicale's storage, s", s(seconds)))
    for size, f in sorted(result.first_sync.items(), key=lambda kv: int(kv[0])):
        rows.append((f"first sync of {int(size):,}, no token: ours (until quiet) / vdirsyncer, s",
                     f"{s(f['ours'])} / {s(f['vdirsyncer'])}"))
    for size, kinds in sorted(result.pickup.items(), key=lambda kv: int(kv[0])):
        n = int(size)
        for kind, series in kinds.items():
            o, v = series["ours"], series["vdirsyncer"]
            if not o or not v:
                continue
            goal = f" (goal <= {PICKUP_GOAL})" if n == plan.push else ""
            if kind == "moved":
                # Our sync cycle ends when the moves are applied in the database: that is what
                # vdirsyncer's sync does (the server's state in the local store). Writing the new
                # SEQUENCE back is the service's next push, which vdirsyncer has no counterpart of.
                a = series["ours_applied"]
                rows += [
                    (f"pick up {plan.changes} moved in {n:,}: ours applied / vdirsyncer, p50 ms",
                     f"{ms(pct(a, 50))} / {ms(pct(v, 50))}"),
                    (f"  **ratio ours (applied) / vdirsyncer, p50**{goal}", f"{pct(a, 50) / pct(v, 50):.2f}"),
                    ("  ours applied and written back (the outbox idle again), p50 ms; ratio",
                     f"{ms(pct(o, 50))}; {pct(o, 50) / pct(v, 50):.2f}"),
                ]
            else:
                rows += [
                    (f"pick up {plan.changes} {kind} in {n:,}: ours / vdirsyncer, p50 ms",
                     f"{ms(pct(o, 50))} / {ms(pct(v, 50))}"),
                    (f"  **ratio ours / vdirsyncer, p50**{goal}", f"{pct(o, 50) / pct(v, 50):.2f}"),
                ]
            rows += [
                ("  ours until the sync request returned, p50 ms; min ours / vdirsyncer",
                 f"{ms(pct(series['ours_returned'], 50))}; {ms(min(o))} / {ms(min(v))}"),
            ]
            rows += [
                ("  CPU ms p50: service + Radicale / vdirsyncer + Radicale",
                 f"{ms(pct(series['ours_cpu'], 50))} + {ms(pct(series['ours_server_cpu'], 50))} / "
                 f"{ms(pct(series['vdirsyncer_cpu'], 50))} + {ms(pct(series['vdirsyncer_server_cpu'], 50))}"),
            ]
    if result.pickup:
        first = next(iter(next(iter(result.pickup.values())).values()))
        rows.append(("measured pick-up rounds per size and kind", str(len(first["ours"]))))
    if result.load:
        rows.append(("load average before / after the pick-up rounds", " / ".join(f"{x:.2f}" for x in result.load)))
    if result.rss_kb:
        rows.append(("service RSS at the end, MiB", ", ".join(
            f"{int(k):,}: {v / 1024:.0f}" if v else f"{int(k):,}: -"
            for k, v in sorted(result.rss_kb.items(), key=lambda kv: int(kv[0])))))
    if result.exit_code:
        rows.append(("exit codes on SIGTERM", ", ".join(str(v) for v in result.exit_code.values())))
    width = max(len(label) for label, _ in rows)
    lines = [
        f"forumbridge CalDAV sync benchmark ({'quick' if quick else 'full'} run, {result.db}), {started:%Y-%m-%d %H:%M} UTC",
        machine() + f", SQLite {sqlite3.sqlite_version}",
        f"run time {elapsed:.0f} s",
        "",
    ]
    lines += [f"{label.ljust(width)}  {value}" for label, value in rows]
    for check in result.checks:
        lines.append(f"check: {check}")
    if result.profiles:
        lines.append("profiles: " + ", ".join(result.profiles))
    for problem in result.problems[:10]:
        lines.append(f"\nPROBLEM: {problem}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    if args.sizes:
        changes["sizes"] = tuple(int(x.replace("_", "")) for x in args.sizes.split(",") if x.strip())
    for name in ("push", "push_rounds", "rounds"):
        if getattr(args, name):
            changes[name] = getattr(args, name)
    if args.fill_by_push:
        changes["fill_by_push"] = True
    plan = Plan(**{**asdict(plan), **changes})
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    result = Result(db=args.db, plan=asdict(plan))
    if args.db == "postgresql":
        try:
            result.db = "PostgreSQL " + (await pg_admin("SHOW server_version")).split()[0]
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
            print(f"PostgreSQL not reachable at {PG_ADMIN_URL} ({type(exc).__name__}: {exc})", file=sys.stderr)
            return 1
    else:
        result.db = f"SQLite {sqlite3.sqlite_version}"
    profiler = Profiler(args.profile, f"caldav_sync-{started_at:%Y%m%dT%H%M%S}")
    try:
        await asyncio.wait_for(run(plan, args.db, result, profiler), TIME_LIMIT_S)
    except asyncio.TimeoutError:
        result.problems.append(f"stopped after {TIME_LIMIT_S} s")
    result.profiles = profiler.files
    elapsed = time.perf_counter() - started
    print(report(result, plan, args.quick, started_at, elapsed), flush=True)
    write_results("caldav_sync", started_at, args.quick, elapsed, {
        "command": " ".join(["./dev bench caldav_sync", *sys.argv[1:]]), "result": asdict(result)})
    return 1 if result.problems else 0


def main() -> int:
    p = argparse.ArgumentParser(description="CalDAV push and incremental pick-up of the real service against "
                                            "Radicale, side by side with vdirsyncer.")
    p.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    p.add_argument("--sizes", help="calendar sizes for the incremental pick-up, comma-separated (default 100,1000,5000)")
    p.add_argument("--push", type=int, help="meetings pushed side by side with vdirsyncer (default 1000)")
    p.add_argument("--push-rounds", type=int, help="our pushes, each between two vdirsyncer uploads (default 2)")
    p.add_argument("--rounds", type=int, help="measured pick-up rounds per size and kind of change (default 5)")
    p.add_argument("--fill-by-push", action="store_true",
                   help="fill calendars larger than the push size through our push too (slow: Radicale reads the "
                        "whole collection on every new object)")
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument("--profile", action="store_true",
                   help="py-spy profiles (raw stacks) of the service during our pushes and pick-ups at the push "
                        "size, into bench/results/ (py-spy must be installed in .venv)")
    return asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
