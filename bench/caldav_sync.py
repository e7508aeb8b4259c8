"""CalDAV sync benchmark: the real service against one Radicale, side by side with vdirsyncer.

In one run, against ONE Radicale that the benchmark starts on a free loopback port (storage in a
temporary folder, htpasswd auth, as tests/support/caldav_servers.py does it):

1. Push. For each calendar size N (the push size, 1,000, and every --sizes value) one service
   (`forumbridge serve --migrate` as a subprocess, its own SQLite file or PostgreSQL database) gets
   a forum and N future meetings bulk-inserted into its database (SQLAlchemy Core, no rooms). The
   clock starts when the benchmark sends `PATCH /api/v1/forums/{id}` with an empty Radicale
   calendar as `calendar_url`: that request commits one `calendar.push` outbox job per meeting (the
   service's own `attach_calendar`) and wakes the worker. It stops when the database holds no
   pending or running job and N `calendar_objects` rows for the calendar (polled every 20 ms);
   a PROPFIND then checks that Radicale holds N objects. For the push size the same N meetings are
   rendered in-process by the service's own code (`build_event` + `render_shared`) into a folder of
   .ics files, and `vdirsyncer sync` uploads that folder into an empty calendar on the same
   Radicale, once before and once after our push (the mean of the two is the reference, so drift
   of the shared machine hits both sides alike). `vdirsyncer discover` runs first, untimed; the
   timed command includes vdirsyncer's start-up.
2. Incremental pick-up. Each service syncs until quiet (the first sync has no token and lists the
   calendar; afterwards the service holds an RFC 6578 sync token), and a vdirsyncer pair mirrors
   the same calendar into a folder (discover + first sync, untimed). Then, round after round, a
   "calendar client" (the benchmark, with plain conditional PUTs) moves 10 events 30 minutes later,
   and both pick that change set up, in alternating order:
   - ours: `POST /api/v1/calendars/sync` (sync-collection, multiget of what changed, the pull rules
     apply the moves through the booking rules, then the due outbox jobs run), timed until it
     returns and until the outbox is idle again (the moves queue pushes of the new SEQUENCE back to
     the calendar, which the background worker may be running when the request returns);
   - vdirsyncer: `vdirsyncer sync` of the pair, which downloads the 10 changed events.
   Each round is followed by untimed settling (our own writes coming back; vdirsyncer fetching our
   write-back when it ran first) so that every timed round starts from the same state.
3. The same at every calendar size, rounds of the sizes interleaved, to show how each side grows.

Timings are printed, never asserted: the machine is shared. The exit status is non-zero only when
something functional went wrong (a service or Radicale did not start, a request got an unexpected
answer, a calendar or a vdirsyncer folder does not hold what it should, a job failed, a service did
not exit cleanly).

    ./dev bench caldav_sync                      # full run: push 1,000, pick-up at 100, 1,000, 5,000
    ./dev bench caldav_sync --quick              # smoke run with small counts
    ./dev bench caldav_sync --sizes 100,1000     # other calendar sizes for the pick-up
    ./dev bench caldav_sync --db postgresql      # PostgreSQL instead of SQLite
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import resource
import signal
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
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
from icalendar import Calendar  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from bench.common import (  # noqa: E402
    PG_ADMIN_URL, RESULTS_DIR, VENV_BIN, BenchError, Service, log, machine, pct, pg_admin, pg_url, proc_cpu_s,
    proc_status,
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
PICKUP_GOAL = 0.25  # ours / vdirsyncer, picking up the changes in a calendar of the push size
POLL_S = 0.02
PUSH_TIMEOUT_S = 900.0

UTC = timezone.utc
ZONE = "Europe/Stockholm"
# Meeting i: one hour at BASE + 2 i hours; a client's move by MOVE stays clear of the next one.
BASE = datetime(2031, 3, 3, 7, tzinfo=UTC)
MOVE = timedelta(minutes=30)
DESCRIPTION = ("Dagordning:\n1. Föregående protokoll\n2. Regional kompetensförsörjning, lägesrapport\n"
               "3. Infrastruktur och kollektivtrafik\n4. Övriga frågor\n\nHandlingar skickas en vecka före mötet.")


@dataclass(frozen=True)
class Plan:
    push: int = 1_000  # meetings pushed and uploaded by vdirsyncer side by side
    sizes: tuple[int, ...] = (100, 1_000, 5_000)  # calendar sizes for the incremental pick-up
    changes: int = 10  # events a client changes per round
    rounds: int = 5  # measured rounds per size
    warmup: int = 1  # unmeasured rounds per size first


FULL = Plan()
QUICK = Plan(push=200, sizes=(50, 200), rounds=2, warmup=1)


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

    async def hrefs(self, calendar_url: str) -> dict[str, str]:
        """The objects in a calendar: href -> ETag (PROPFIND Depth 1)."""
        body = ('<?xml version="1.0" encoding="utf-8"?><propfind xmlns="DAV:"><prop><getetag/></prop></propfind>')
        headers = {**self.auth, "Depth": "1", "Content-Type": "application/xml"}
        async with self.http.request("PROPFIND", calendar_url, data=body, headers=headers) as r:
            payload = await r.read()
            if r.status != 207:
                raise BenchError(f"PROPFIND {calendar_url}: {r.status} {payload[:300]!r}")
        own = urlsplit(calendar_url).path.rstrip("/")
        out = {}
        for resp in ET.fromstring(payload).iter("{DAV:}response"):
            href = resp.findtext("{DAV:}href") or ""
            if href.rstrip("/") == own:
                continue
            out[href] = resp.findtext(".//{DAV:}getetag") or ""
        return out

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


def moved(data: bytes, delta: timedelta) -> bytes:
    """The event as a calendar client writes it back after dragging it `delta` later."""
    cal = Calendar.from_ical(data)
    for ev in cal.walk("VEVENT"):
        for name in ("DTSTART", "DTEND"):
            prop = ev[name]
            prop.dt = prop.dt + delta
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
        self.folder = folder
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
        pid = self.server._process.pid if self.server._process else 0
        server0, own0 = proc_cpu_s(pid), resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            VDIRSYNCER, "-v", "WARNING", "-c", str(self.config), *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 600)
        elapsed = time.perf_counter() - started
        own1, server1 = resource.getrusage(resource.RUSAGE_CHILDREN), proc_cpu_s(pid)
        if proc.returncode != 0:
            raise BenchError(f"vdirsyncer {' '.join(args)} exited with {proc.returncode}:\n"
                             f"{out.decode(errors='replace')[-1500:]}\n{err.decode(errors='replace')[-1500:]}")
        cpu = (own1.ru_utime + own1.ru_stime) - (own0.ru_utime + own0.ru_stime)
        return Run(elapsed, cpu, server1 - server0)

    def files(self) -> dict[str, str]:
        """Local file name -> hash of its content."""
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in self.local.glob("*.ics")}


# -- one service with one forum calendar -----------------------------------------------------
@dataclass
class Instance:
    size: int
    url: str
    service: Service
    pg_name: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    forum_id: str = ""
    calendar_url: str = ""
    calendar_id: Any = None
    meetings: list[tuple[uuid.UUID, str]] = field(default_factory=list)  # (id, uid) of meeting i
    moved: dict[int, datetime] = field(default_factory=dict)  # meeting i -> where the client moved it
    mirror: Vdirsyncer | None = None
    engine: Any = None

    async def api(self, http: aiohttp.ClientSession, method: str, path: str, body: dict | None = None,
                  want: int = 200) -> Any:
        async with http.request(method, self.service.base + path, json=body, headers=self.headers) as r:
            data = await r.json(content_type=None)
            if r.status != want:
                raise BenchError(f"{method} {path} -> {r.status}, not {want}: {str(data)[:500]}")
            return data

    async def setup(self, http: aiohttp.ClientSession) -> None:
        self.headers = {"Authorization": f"Bearer {await self.service.token()}"}
        forum = await self.api(http, "POST", "/api/v1/forums", {
            "name": f"Forum för regional tillväxt ({self.size:,} möten)", "kind": "officials"}, want=201)
        self.forum_id = forum["id"]
        self.engine = create_async_engine(self.url, connect_args={"timeout": 60} if self.url.startswith("sqlite") else {})
        await bulk_meetings(self.engine, uuid.UUID(self.forum_id), self.size, self.meetings)

    async def state(self) -> tuple[int, int, int]:
        """(pending or running jobs, failed jobs, calendar_objects rows of the calendar), read from the database."""
        jobs, objects = m.OutboxJob.__table__, m.CalendarObject.__table__
        stmt = select(
            select(func.count()).select_from(jobs).where(jobs.c.status.in_(("pending", "running"))).scalar_subquery(),
            select(func.count()).select_from(jobs).where(jobs.c.status == "failed").scalar_subquery(),
            select(func.count()).select_from(objects).where(objects.c.calendar_id == self.calendar_id).scalar_subquery(),
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(stmt)).one()
        return int(row[0]), int(row[1]), int(row[2])

    async def idle(self, timeout_s: float = 120.0) -> None:
        """Wait until the outbox holds no pending or running job."""
        deadline = time.monotonic() + timeout_s
        while True:
            unfinished, failed, _ = await self.state()
            if failed:
                raise BenchError(f"{self.size:,}: {failed} outbox jobs failed:\n{self.service.log_tail()}")
            if unfinished == 0:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"{self.size:,}: {unfinished} jobs still unfinished after {timeout_s:.0f} s")
            await asyncio.sleep(POLL_S)


async def bulk_meetings(engine: Any, forum_id: uuid.UUID, count: int, out: list[tuple[uuid.UUID, str]]) -> None:
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


# -- profiling (optional) --------------------------------------------------------------------
class Profiler:
    """`py-spy record` of one process while a phase runs (--profile; py-spy must be in .venv/bin)."""

    def __init__(self, enabled: bool, stamp: str) -> None:
        self.exe = VENV_BIN / "py-spy"
        self.enabled = enabled and self.exe.exists()
        if enabled and not self.enabled:
            log(f"--profile: {self.exe} not found (pip install py-spy into .venv); not profiling")
        self.stamp = stamp
        self.files: list[str] = []

    @contextlib.asynccontextmanager
    async def record(self, pid: int, phase: str) -> AsyncIterator[None]:
        if not self.enabled:
            yield
            return
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        out = RESULTS_DIR / f"caldav_sync-{self.stamp}-{phase}.txt"
        proc = await asyncio.create_subprocess_exec(
            str(self.exe), "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--output", str(out),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await asyncio.sleep(0.5)  # attached
        try:
            yield
        finally:
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.wait(), 60)
            self.files.append(str(out.relative_to(ROOT)))


# -- the measurements ----------------------------------------------------------------------
@dataclass
class Result:
    db: str
    plan: dict[str, Any]
    server: str = ""
    push: dict[str, dict[str, Any]] = field(default_factory=dict)  # size -> our push figures
    vdir_upload: list[dict[str, float]] = field(default_factory=list)  # before and after our push
    first_sync: dict[str, dict[str, float]] = field(default_factory=dict)  # size -> ours / vdirsyncer, no token yet
    pickup: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # size -> series -> seconds per round
    load: list[float] = field(default_factory=list)
    rss_kb: dict[str, int | None] = field(default_factory=dict)
    exit_code: dict[str, int | None] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def push(http: aiohttp.ClientSession, inst: Instance, dav: Dav, radicale: RadicaleServer) -> dict[str, Any]:
    """Our push of the instance's meetings into a new, empty calendar: PATCH calendar_url until the outbox is idle."""
    inst.calendar_url = radicale.new_calendar()
    pid = radicale._process.pid if radicale._process else 0
    cpu0, server0 = proc_cpu_s(inst.service.pid), proc_cpu_s(pid)
    started = time.perf_counter()
    await inst.api(http, "PATCH", f"/api/v1/forums/{inst.forum_id}", {"calendar_url": inst.calendar_url})
    committed = time.perf_counter()
    async with inst.engine.connect() as conn:
        inst.calendar_id = (await conn.execute(
            select(m.Calendar.id).where(m.Calendar.url == inst.calendar_url))).scalar_one()
    deadline = time.monotonic() + PUSH_TIMEOUT_S
    while True:
        unfinished, failed, objects = await inst.state()
        if failed:
            raise BenchError(f"push {inst.size:,}: {failed} jobs failed:\n{inst.service.log_tail()}")
        if unfinished == 0 and objects == inst.size:
            break
        if unfinished == 0 and objects != inst.size:
            raise BenchError(f"push {inst.size:,}: the outbox is idle with {objects} objects recorded")
        if time.monotonic() > deadline:
            raise BenchError(f"push {inst.size:,}: {unfinished} jobs unfinished after {PUSH_TIMEOUT_S:.0f} s")
        await asyncio.sleep(POLL_S)
    elapsed = time.perf_counter() - started
    cpu1, server1 = proc_cpu_s(inst.service.pid), proc_cpu_s(pid)
    held = len(await dav.hrefs(inst.calendar_url))
    if held != inst.size:
        raise BenchError(f"push {inst.size:,}: Radicale holds {held} objects")
    return {"seconds": elapsed, "commit_s": committed - started, "per_job_ms": elapsed * 1000 / inst.size,
            "service_cpu_s": cpu1 - cpu0, "server_cpu_s": server1 - server0, "held": held}


async def vdir_upload(radicale: RadicaleServer, dav: Dav, source: Path, folder: Path, expected: int) -> dict[str, float]:
    """vdirsyncer uploading a folder of .ics files into a new, empty calendar; `sync` is timed, `discover` not."""
    calendar_url = radicale.new_calendar()
    pair = Vdirsyncer(radicale, calendar_url, folder)
    for path in source.glob("*.ics"):
        (pair.local / path.name).write_bytes(path.read_bytes())
    await pair.run("discover")
    run = await pair.run("sync")
    held = len(await dav.hrefs(calendar_url))
    if held != expected:
        raise BenchError(f"vdirsyncer upload: Radicale holds {held} objects, not {expected}")
    return {"seconds": run.seconds, "cpu_s": run.cpu_s, "server_cpu_s": run.server_cpu_s, "held": held}


async def settle(http: aiohttp.ClientSession, inst: Instance, rounds: int = 10) -> dict[str, Any]:
    """Sync until a sync changes nothing and runs nothing; returns the first sync's result."""
    first: dict[str, Any] | None = None
    for _ in range(rounds):
        result = await inst.api(http, "POST", "/api/v1/calendars/sync")
        if result["errors"]:
            raise BenchError(f"{inst.size:,}: sync errors {result['errors']}")
        first = first or result
        await inst.idle()
        if result["changed"] == 0 and result["deleted"] == 0 and result["jobs_run"] == 0:
            return first
    raise BenchError(f"{inst.size:,}: the calendar did not settle: {result}")


async def client_moves(inst: Instance, dav: Dav, rng: random.Random, count: int) -> list[int]:
    """A calendar client moves `count` of our events (not moved before) 30 minutes later."""
    free = [i for i in range(inst.size) if i not in inst.moved]
    picks = rng.sample(free, count)
    for i in picks:
        href = inst.calendar_url + object_name(inst.meetings[i][1])
        data, etag = await dav.get(href)
        await dav.put(href, moved(data, MOVE), etag)
        inst.moved[i] = BASE + timedelta(hours=2 * i) + MOVE
    return picks


async def pickup_round(http: aiohttp.ClientSession, inst: Instance, dav: Dav, plan: Plan, rng: random.Random,
                       ours_first: bool, record: dict[str, list[float]] | None) -> None:
    """One change set picked up by both sides; timed into `record` unless it is None (warm-up)."""
    assert inst.mirror is not None
    await client_moves(inst, dav, rng, plan.changes)
    vdir_ran_first = False
    for side in (("ours", "vdirsyncer") if ours_first else ("vdirsyncer", "ours")):
        if side == "ours":
            cpu0 = proc_cpu_s(inst.service.pid)
            started = time.perf_counter()
            result = await inst.api(http, "POST", "/api/v1/calendars/sync")
            returned = time.perf_counter()
            await inst.idle()
            settled = time.perf_counter()
            cpu = proc_cpu_s(inst.service.pid) - cpu0
            if result["errors"] or result["changed"] != plan.changes:
                raise BenchError(f"{inst.size:,}: our sync saw {result}, not {plan.changes} changes")
            if record is not None:
                record["ours_returned"].append(returned - started)
                record["ours"].append(settled - started)
                record["ours_cpu"].append(cpu)
        else:
            before = inst.mirror.files()
            run = await inst.mirror.run("sync")
            after = inst.mirror.files()
            changed = sum(1 for name, digest in after.items() if before.get(name) != digest)
            if changed != plan.changes or len(after) != inst.size:
                raise BenchError(f"{inst.size:,}: vdirsyncer changed {changed} of {len(after)} files, "
                                 f"not {plan.changes} of {inst.size}")
            vdir_ran_first = not ours_first
            if record is not None:
                record["vdirsyncer"].append(run.seconds)
                record["vdirsyncer_cpu"].append(run.cpu_s)
    # Untimed: our own write-back coming back to us, and to vdirsyncer when it ran first.
    await settle(http, inst)
    if vdir_ran_first:
        await inst.mirror.run("sync")


async def check_moves(inst: Instance) -> str:
    """Every event the client moved has moved in the service's database too."""
    ids = {inst.meetings[i][0]: start for i, start in inst.moved.items()}
    async with inst.engine.connect() as conn:
        rows = (await conn.execute(select(m.Meeting.id, m.Meeting.starts_at, m.Meeting.sequence)
                                   .where(m.Meeting.id.in_(list(ids))))).all()
    wrong = [r for r in rows if r.starts_at.astimezone(UTC) != ids[r.id] or r.sequence < 1]
    if wrong or len(rows) != len(ids):
        raise BenchError(f"{inst.size:,}: {len(wrong)} of {len(ids)} client moves not applied in the service")
    return f"{inst.size:,}: {len(ids)} client moves applied (new time, SEQUENCE raised)"


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
            import radicale as radicale_module
            result.server = f"Radicale {radicale_module.VERSION} on {radicale.origin}"
            config = folder / "forumbridge.toml"
            config.write_text(
                "[calendar]\n"
                "sync_interval_s = 86400\n"  # no background pull during the run: every pull is the benchmark's
                "[[calendar.accounts]]\n"
                f"url = {json.dumps(radicale.origin + '/')}\n"
                f"username = {json.dumps(radicale.username)}\n"
                f"password = {json.dumps(radicale.password)}\n", encoding="utf-8")
            for size in sizes:
                label = f"svc-{size}"
                if db == "sqlite":
                    name, url = "", f"sqlite+aiosqlite:///{folder / label / 'forumbridge.db'}"
                else:
                    name = f"forumbridge_bench_{os.getpid()}_{size}_{uuid.uuid4().hex[:6]}"
                    await pg_admin(f'CREATE DATABASE "{name}"')
                    url = pg_url(name)
                service = Service(url, folder / label, {"FORUMBRIDGE_CONFIG": str(config)})
                instances.append(Instance(size, url, service, pg_name=name))
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
                dav = Dav(http, radicale)
                log(f"Radicale on {radicale.origin}; starting {len(instances)} services ({db})")
                await asyncio.gather(*(inst.service.start(http) for inst in instances))
                for inst in instances:
                    await inst.setup(http)
                log(f"loaded {', '.join(f'{i.size:,}' for i in instances)} meetings, one forum per service")

                # 1. push
                for inst in instances:
                    if inst.size == plan.push:
                        source = folder / "rendered"
                        count = await render_folder(inst.url, config, inst.forum_id, source)
                        log(f"push {inst.size:,}: vdirsyncer uploading {count:,} rendered .ics files (before ours)")
                        result.vdir_upload.append(await vdir_upload(radicale, dav, source, folder / "upload-1", count))
                        log(f"  {result.vdir_upload[-1]['seconds']:.2f} s")
                    log(f"push {inst.size:,}: ours, from the PATCH of calendar_url until the outbox is idle")
                    async with profiler.record(inst.service.pid, f"push-{inst.size}") if inst.size == plan.push \
                            else contextlib.nullcontext():
                        result.push[str(inst.size)] = await push(http, inst, dav, radicale)
                    p = result.push[str(inst.size)]
                    log(f"  {p['seconds']:.2f} s ({p['per_job_ms']:.1f} ms a job; the PATCH took {p['commit_s']:.2f} s)")
                    if inst.size == plan.push:
                        log(f"push {inst.size:,}: vdirsyncer uploading again (after ours)")
                        result.vdir_upload.append(await vdir_upload(radicale, dav, source, folder / "upload-2", count))
                        log(f"  {result.vdir_upload[-1]['seconds']:.2f} s")

                # 2. first syncs: ours without a token, vdirsyncer's first download
                measured = [inst for inst in instances if inst.size in plan.sizes]
                for inst in measured:
                    started = time.perf_counter()
                    await settle(http, inst)
                    ours = time.perf_counter() - started
                    inst.mirror = Vdirsyncer(radicale, inst.calendar_url, folder / f"mirror-{inst.size}")
                    await inst.mirror.run("discover")
                    first = await inst.mirror.run("sync")
                    if len(inst.mirror.files()) != inst.size:
                        raise BenchError(f"{inst.size:,}: vdirsyncer downloaded {len(inst.mirror.files())} events")
                    status = await inst.api(http, "GET", "/api/v1/calendars")
                    if not all(c["sync_token_kept"] for c in status["items"]):
                        raise BenchError(f"{inst.size:,}: no sync token kept after the first sync: {status}")
                    result.first_sync[str(inst.size)] = {"ours": ours, "vdirsyncer": first.seconds}
                    log(f"first sync {inst.size:,}: ours {ours:.2f} s (until quiet), vdirsyncer download {first.seconds:.2f} s")

                # 3. incremental pick-up, sizes interleaved, the side that goes first alternating
                series = ("ours", "ours_returned", "ours_cpu", "vdirsyncer", "vdirsyncer_cpu")
                for inst in measured:
                    result.pickup[str(inst.size)] = {k: [] for k in series}
                result.load.append(os.getloadavg()[0])
                total = plan.warmup + plan.rounds
                for r in range(total):
                    order = measured if r % 2 == 0 else list(reversed(measured))
                    for k, inst in enumerate(order):
                        record = result.pickup[str(inst.size)] if r >= plan.warmup else None
                        async with profiler.record(inst.service.pid, f"pickup-{inst.size}-{r}") \
                                if inst.size == plan.push and record is not None else contextlib.nullcontext():
                            await pickup_round(http, inst, dav, plan, rng, ours_first=(r + k) % 2 == 0, record=record)
                    log(f"pick-up round {r + 1}/{total}{' (warm-up)' if r < plan.warmup else ''} done")
                result.load.append(os.getloadavg()[0])
                for inst in measured:
                    result.checks.append(await check_moves(inst))
                    held = await dav.hrefs(inst.calendar_url)
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
                if inst.pg_name:
                    try:
                        await pg_admin(f'DROP DATABASE IF EXISTS "{inst.pg_name}" WITH (FORCE)')
                    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
                        log(f"could not drop {inst.pg_name}: {exc}")


# -- the report -----------------------------------------------------------------------------
def report(result: Result, plan: Plan, quick: bool, started: datetime, elapsed: float) -> str:
    def s(v: float | None) -> str:
        return "-" if v is None or v != v else f"{v:.2f}"

    def ms(v: float | None) -> str:
        return "-" if v is None or v != v else f"{v * 1000:.0f}"

    P = f"{plan.push:,}"
    rows: list[tuple[str, str]] = [("server", result.server), ("database", result.db)]
    ours = result.push.get(str(plan.push))
    vd = [u["seconds"] for u in result.vdir_upload]
    vd_mean = sum(vd) / len(vd) if vd else None
    if ours:
        rows += [
            (f"push {P} new meetings, ours: s (PATCH calendar_url until outbox idle)", s(ours["seconds"])),
            ("  of which the PATCH (commits the jobs): s", s(ours["commit_s"])),
            ("  ms per meeting", f"{ours['per_job_ms']:.1f}"),
            ("  CPU s: service / Radicale", f"{s(ours['service_cpu_s'])} / {s(ours['server_cpu_s'])}"),
        ]
    if vd:
        rows += [
            (f"push {P}, vdirsyncer upload: s, before / after ours", " / ".join(s(v) for v in vd)),
            ("  CPU s: vdirsyncer / Radicale (mean)", f"{s(sum(u['cpu_s'] for u in result.vdir_upload) / len(vd))} / "
                                                       f"{s(sum(u['server_cpu_s'] for u in result.vdir_upload) / len(vd))}"),
        ]
    if ours and vd_mean:
        rows.append((f"  **ratio ours / vdirsyncer** (goal <= {PUSH_GOAL})", f"{ours['seconds'] / vd_mean:.2f}"))
    for size, p in sorted(result.push.items(), key=lambda kv: int(kv[0])):
        if int(size) != plan.push:
            rows.append((f"push {int(size):,} new meetings, ours: s (ms per meeting)", f"{s(p['seconds'])} ({p['per_job_ms']:.1f})"))
    for size, f in sorted(result.first_sync.items(), key=lambda kv: int(kv[0])):
        rows.append((f"first sync of {int(size):,} (no token): ours until quiet / vdirsyncer download, s",
                     f"{s(f['ours'])} / {s(f['vdirsyncer'])}"))
    for size, series in sorted(result.pickup.items(), key=lambda kv: int(kv[0])):
        n = int(size)
        o, v, ret = series["ours"], series["vdirsyncer"], series["ours_returned"]
        if not o or not v:
            continue
        goal = f" (goal <= {PICKUP_GOAL})" if n == plan.push else ""
        rows += [
            (f"pick up {plan.changes} moved events in {n:,}: ours p50 ms (min)", f"{ms(pct(o, 50))} ({ms(min(o))})"),
            ("  ours, until the sync request returned: p50 ms", ms(pct(ret, 50))),
            ("  vdirsyncer sync: p50 ms (min)", f"{ms(pct(v, 50))} ({ms(min(v))})"),
            (f"  **ratio ours / vdirsyncer, p50**{goal}", f"{pct(o, 50) / pct(v, 50):.2f}"),
            ("  CPU ms p50: service / vdirsyncer", f"{ms(pct(series['ours_cpu'], 50))} / {ms(pct(series['vdirsyncer_cpu'], 50))}"),
        ]
    if result.pickup:
        any_size = next(iter(result.pickup.values()))
        rows.append(("rounds per size (after warm-up)", str(len(any_size["ours"]))))
    if result.load:
        rows.append(("load average before / after the pick-up rounds", " / ".join(f"{x:.2f}" for x in result.load)))
    if result.rss_kb:
        rows.append(("service RSS at the end, MiB", ", ".join(
            f"{int(k):,}: {v / 1024:.0f}" if v else f"{int(k):,}: -" for k, v in sorted(result.rss_kb.items(), key=lambda kv: int(kv[0])))))
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
    for problem in result.problems[:10]:
        lines.append(f"\nPROBLEM: {problem}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    if args.sizes:
        plan = Plan(**{**asdict(plan), "sizes": tuple(int(x.replace("_", "")) for x in args.sizes.split(",") if x)})
    if args.rounds:
        plan = Plan(**{**asdict(plan), "rounds": args.rounds})
    if args.push:
        plan = Plan(**{**asdict(plan), "push": args.push})
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
    try:
        profiler = Profiler(args.profile, f"{started_at:%Y%m%dT%H%M%S}")
        await asyncio.wait_for(run(plan, args.db, result, profiler), TIME_LIMIT_S)
        result.profiles = profiler.files
    except asyncio.TimeoutError:
        result.problems.append(f"stopped after {TIME_LIMIT_S} s")
    elapsed = time.perf_counter() - started
    print(report(result, plan, args.quick, started_at, elapsed), flush=True)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"caldav_sync-{started_at:%Y%m%dT%H%M%S}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps({
        "date": started_at.isoformat(), "cores": os.cpu_count(), "quick": args.quick, "seconds": elapsed,
        "command": " ".join(["./dev bench caldav_sync", *sys.argv[1:]]), "result": asdict(result),
    }, indent=2, default=str))
    print(f"\nfigures also written to {out.relative_to(ROOT)}", flush=True)
    return 1 if result.problems else 0


def main() -> int:
    p = argparse.ArgumentParser(description="CalDAV push and incremental pick-up of the real service against "
                                            "Radicale, side by side with vdirsyncer.")
    p.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    p.add_argument("--sizes", help="calendar sizes for the incremental pick-up, comma-separated (default 100,1000,5000)")
    p.add_argument("--push", type=int, help="meetings to push side by side with vdirsyncer (default 1000)")
    p.add_argument("--rounds", type=int, help="measured pick-up rounds per size (default 5)")
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument("--profile", action="store_true",
                   help="record py-spy profiles (raw stacks) of the service during our push and pick-ups at the push size")
    return asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
