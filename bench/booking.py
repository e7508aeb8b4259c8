"""Booking benchmark: the real service, over HTTP, on SQLite and on PostgreSQL.

For each database, in one run:

1. start two instances of the service (`forumbridge serve --migrate` as
   subprocesses on free loopback ports), each on its own database: SQLite
   files in a temporary folder, or two fresh PostgreSQL databases
   forumbridge_bench_* (dropped afterwards); get a secretariat token for each
   from `forumbridge token`;
2. create a site, a forum and rooms in each through the API;
3. load existing bookings of one room straight into each database (bulk
   INSERT of meetings + room_bookings rows through SQLAlchemy Core): 100 into
   the first, 100,000 into the second;
4. time single bookings of that room, one request at a time, alternating
   between the two instances so that both sizes see the same machine load:
   accepted ones in the gaps between the existing bookings (some touching
   them back to back) and after the last one, and refused ones (409) that
   overlap an existing booking;
5. on the 100,000 instance, book a fixed number of distinct, non-overlapping
   slots over several rooms with 20 concurrent clients; count bookings per
   second and errors;
6. check the data (no two active bookings of a room overlap; every 201 left
   exactly one booking), read each service's resident memory from
   /proc/PID/status, stop it with SIGTERM and record its exit code.

Timings are printed, never asserted: the machine is shared. The exit status
is non-zero only when something functional went wrong (a service did not
start, a request got an unexpected answer, bookings overlap, a service did
not exit cleanly, a database was not reachable).

    ./dev bench booking                  # full run, both databases
    ./dev bench booking --quick          # smoke run with small counts
    ./dev bench booking --db sqlite      # one database
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
from sqlalchemy import func, insert, select, text  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from bench.common import (  # noqa: E402
    write_results, PG_ADMIN_URL, BenchError, Service, log, pct, pg_admin, pg_url, proc_cpu_s, proc_status,
)
from service.db import models as m  # noqa: E402

TIME_LIMIT_S = 540  # the whole run, both databases
GOAL_RATIO = 1.5

UTC = timezone.utc
ZONE = "Europe/Stockholm"
# Existing bookings: one hour at every even UTC hour, day after day, from BASE.
# The odd hours between them stay free; a measured booking takes a quarter of one.
BASE = datetime(2031, 1, 6, tzinfo=UTC)
PER_DAY = 12
HOUR = timedelta(hours=1)
QUARTER = timedelta(minutes=15)
# The throughput phase books other rooms, far from all of the above.
THROUGHPUT_BASE = datetime(2120, 1, 4, tzinfo=UTC)


@dataclass(frozen=True)
class Plan:
    small: int = 100
    large: int = 100_000
    accepted: int = 200  # measured accepted bookings per size: half in gaps, half after the last booking
    refused: int = 100  # measured refused (409) bookings per size
    warmup: int = 20  # unmeasured requests per size first (half accepted, half refused)
    throughput: int = 2_000
    clients: int = 20
    throughput_rooms: int = 10


FULL = Plan()
QUICK = Plan(large=5_000, accepted=40, refused=20, warmup=6, throughput=200)


# -- where bookings go --------------------------------------------------------------
def existing_span(i: int) -> tuple[datetime, datetime]:
    """Existing booking number i of the measured room."""
    day, slot = divmod(i, PER_DAY)
    start = BASE + timedelta(days=day, hours=2 * slot)
    return start, start + HOUR


def gap_span(i: int, quarter: int) -> tuple[datetime, datetime]:
    """A quarter of the free hour after existing booking i (quarter 0 touches booking i, 3 touches i+1)."""
    start = existing_span(i)[1] + quarter * QUARTER
    return start, start + QUARTER


class Layout:
    """Free places in one room with `existing` bookings; none is handed out twice."""

    def __init__(self, existing: int, rng: random.Random) -> None:
        self.existing = existing
        self.rng = rng
        self.used: set[tuple[int, int]] = set()
        self.next_after = (existing - 1) * 4

    def gap(self) -> tuple[datetime, datetime]:
        """A random free quarter strictly between two existing bookings."""
        for _ in range(10_000):
            place = (self.rng.randrange(self.existing - 1), self.rng.randrange(4))
            if place not in self.used:
                self.used.add(place)
                return gap_span(*place)
        raise RuntimeError("no free gap left; lower the counts")

    def after(self) -> tuple[datetime, datetime]:
        """The next quarter after the last existing booking (each back to back with the one before)."""
        n, self.next_after = self.next_after, self.next_after + 1
        return gap_span(n // 4, n % 4)

    def refused(self) -> tuple[datetime, datetime]:
        """Half an hour inside a random existing booking."""
        start = existing_span(self.rng.randrange(self.existing))[0] + QUARTER
        return start, start + 2 * QUARTER

    def requests(self, accepted: int, refused: int) -> list[tuple[str, tuple[datetime, datetime]]]:
        out = [("gap", self.gap()) for _ in range(accepted // 2)]
        out += [("after", self.after()) for _ in range(accepted - accepted // 2)]
        out += [("refused", self.refused()) for _ in range(refused)]
        self.rng.shuffle(out)
        return out


# -- requests -------------------------------------------------------------------------
def meeting_body(forum_id: str, room_id: str, span: tuple[datetime, datetime], title: str) -> dict:
    return {
        "forum_id": forum_id,
        "title": title,
        "starts_at": span[0].isoformat(),
        "ends_at": span[1].isoformat(),
        "timezone": ZONE,
        "room_ids": [room_id],
    }


@dataclass
class Instance:
    """One service on its own database, holding `existing` bookings of its measured room."""

    existing: int
    url: str
    service: Service
    layout: Layout
    pg_name: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    forum_id: str = ""
    room_id: str = ""
    rooms: list[str] = field(default_factory=list)
    made: int = 0  # 201s in the measured room
    times: dict[str, list[float]] = field(default_factory=lambda: {"gap": [], "after": [], "refused": []})

    async def ok(self, http: aiohttp.ClientSession, path: str, body: dict) -> dict:
        async with http.post(self.service.base + path, json=body, headers=self.headers) as r:
            data = await r.json(content_type=None)
            if r.status >= 300:
                raise BenchError(f"POST {path} -> {r.status}: {data}")
            return data

    async def setup(self, http: aiohttp.ClientSession, extra_rooms: int) -> None:
        self.headers = {"Authorization": f"Bearer {await self.service.token()}"}
        site = await self.ok(http, "/api/v1/sites", {"name": "Stockholmskontoret", "city": "Stockholm"})
        forum = await self.ok(http, "/api/v1/forums", {
            "name": "Forum för regional hållbar tillväxt och attraktivitet", "kind": "officials"})
        room = await self.ok(http, "/api/v1/rooms", {"site_id": site["id"], "name": "Tillväxten", "capacity": 30})
        self.forum_id, self.room_id = forum["id"], room["id"]
        for i in range(extra_rooms):
            extra = await self.ok(http, "/api/v1/rooms", {"site_id": site["id"], "name": f"Rum {i + 1}", "capacity": 8})
            self.rooms.append(extra["id"])

    async def book(self, http: aiohttp.ClientSession, kind: str, span: tuple[datetime, datetime],
                   problems: list[str], record: bool) -> None:
        body = meeting_body(self.forum_id, self.room_id, span, f"Mätt {kind}")
        started = time.perf_counter()
        async with http.post(self.service.base + "/api/v1/meetings", json=body, headers=self.headers) as r:
            payload = await r.read()
            elapsed = time.perf_counter() - started
        want = 409 if kind == "refused" else 201
        if r.status == 201:
            self.made += 1
        if r.status != want:
            problems.append(f"{self.existing} existing, {kind} {span[0].isoformat()}: {r.status} {payload[:300]!r}")
        elif kind == "refused" and b'"conflicts"' not in payload:
            problems.append(f"a 409 without the conflicting booking: {payload[:300]!r}")
        elif record:
            self.times[kind].append(elapsed * 1000)


# -- the database side ---------------------------------------------------------------------
async def bulk_load(url: str, forum_id: str, room_id: str, count: int, analyze: bool) -> float:
    """Existing bookings 0..count-1 of the room, written straight into the database; rows per second."""
    engine = create_async_engine(url, connect_args={"timeout": 60} if url.startswith("sqlite") else {})
    meetings, bookings = m.Meeting.__table__, m.RoomBooking.__table__
    forum, room = uuid.UUID(forum_id), uuid.UUID(room_id)
    stamp = datetime.now(UTC)
    started = time.perf_counter()
    try:
        async with engine.begin() as conn:
            for chunk in range(0, count, 5_000):
                mrows, brows = [], []
                for i in range(chunk, min(chunk + 5_000, count)):
                    start, end = existing_span(i)
                    ident = uuid.uuid4()
                    mrows.append({
                        "id": ident, "forum_id": forum, "title": f"Befintligt möte {i}", "starts_at": start,
                        "ends_at": end, "timezone": ZONE, "status": "planned", "uid": f"{ident}@forumbridge",
                        "sequence": 0, "room_ids": [room_id], "created_at": stamp, "updated_at": stamp,
                    })
                    brows.append({
                        "id": uuid.uuid4(), "room_id": room, "meeting_id": ident, "starts_at": start, "ends_at": end,
                        "source": "service", "active": True, "created_at": stamp,
                    })
                await conn.execute(insert(meetings), mrows)
                await conn.execute(insert(bookings), brows)
        elapsed = time.perf_counter() - started
        if analyze and not url.startswith("sqlite"):
            # What autovacuum does after a table grows (this server runs with it off).
            async with engine.begin() as conn:
                await conn.execute(text("ANALYZE meetings"))
                await conn.execute(text("ANALYZE room_bookings"))
    finally:
        await engine.dispose()
    return count / elapsed


async def check_data(url: str, room_id: str, expected: int) -> tuple[int, str]:
    """Overlapping active service bookings (any room), and the measured room's booking count against `expected`."""
    engine = create_async_engine(url)
    rb = m.RoomBooking.__table__
    try:
        async with engine.connect() as conn:
            overlaps = (await conn.execute(text(
                "SELECT count(*) FROM (SELECT starts_at, "
                "lag(ends_at) OVER (PARTITION BY room_id ORDER BY starts_at) AS prev_end "
                "FROM room_bookings WHERE active AND source = 'service') AS t WHERE prev_end > starts_at"
            ))).scalar_one()
            count = (await conn.execute(
                select(func.count()).select_from(rb).where(rb.c.room_id == uuid.UUID(room_id), rb.c.active.is_(True))
            )).scalar_one()
    finally:
        await engine.dispose()
    verdict = f"{count:,} = {expected:,}" if count == expected else f"{count:,} != {expected:,} expected"
    return int(overlaps), verdict


# -- the measurements ----------------------------------------------------------------------
def summary(values: list[float]) -> dict[str, float]:
    return {"p50": pct(values, 50), "p95": pct(values, 95), "n": len(values)}


async def measure_latency(http: aiohttp.ClientSession, pair: list[Instance], plan: Plan, result: Result) -> None:
    """Single bookings, one at a time, alternating between the instances (and which goes first)."""
    warm = [inst.layout.requests(plan.warmup // 2, plan.warmup - plan.warmup // 2) for inst in pair]
    measured = [inst.layout.requests(plan.accepted, plan.refused) for inst in pair]
    result.load_before = os.getloadavg()[0]
    for lists, record in ((warm, False), (measured, True)):
        for i in range(max(len(x) for x in lists)):
            order = range(len(pair)) if i % 2 == 0 else reversed(range(len(pair)))
            for j in order:
                if i < len(lists[j]):
                    kind, span = lists[j][i]
                    await pair[j].book(http, kind, span, result.problems, record)
    result.load_after = os.getloadavg()[0]
    for inst in pair:
        t = inst.times
        result.latency[str(inst.existing)] = {
            "accepted": summary(t["gap"] + t["after"]),
            "gap": summary(t["gap"]),
            "after": summary(t["after"]),
            "refused": summary(t["refused"]),
        }
        a, f = result.latency[str(inst.existing)]["accepted"], result.latency[str(inst.existing)]["refused"]
        log(f"  {inst.existing:>7,} existing: accepted p50 {a['p50']:.2f} ms p95 {a['p95']:.2f} ms; "
            f"refused p50 {f['p50']:.2f} ms p95 {f['p95']:.2f} ms")


async def measure_throughput(inst: Instance, plan: Plan, result: Result) -> None:
    """`plan.clients` clients, each with its own connection, book distinct slots until `plan.throughput` are done."""
    counter = itertools.count()
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    rooms = inst.rooms

    async def client() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            while (k := next(counter)) < plan.throughput:
                start = THROUGHPUT_BASE + (k // len(rooms)) * HOUR
                body = meeting_body(inst.forum_id, rooms[k % len(rooms)], (start, start + HOUR), f"Last {k}")
                started = time.perf_counter()
                try:
                    async with http.post(inst.service.base + "/api/v1/meetings", json=body, headers=inst.headers) as r:
                        await r.read()
                        key = str(r.status)
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    key = type(exc).__name__
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[key] = statuses.get(key, 0) + 1

    cpu0, own0 = proc_cpu_s(inst.service.pid), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(plan.clients)))
    elapsed = time.perf_counter() - started
    cpu1, own1 = proc_cpu_s(inst.service.pid), time.process_time()
    made = statuses.get("201", 0)
    result.throughput = {
        "bookings": plan.throughput,
        "clients": plan.clients,
        "rooms": len(rooms),
        "seconds": elapsed,
        "per_s": made / elapsed,
        "errors": plan.throughput - made,
        "statuses": statuses,
        "p50_ms": pct(latencies, 50),
        "p95_ms": pct(latencies, 95),
        "service_cpu_ms_per_booking": (cpu1 - cpu0) * 1000 / max(made, 1),
        "bench_cpu_ms_per_booking": (own1 - own0) * 1000 / max(made, 1),
    }
    if made != plan.throughput:
        result.problems.append(f"throughput: {plan.throughput - made} errors {statuses}")
    log(f"  throughput: {made / elapsed:.0f} bookings/s over {elapsed:.1f} s, statuses {statuses}")


# -- one database ---------------------------------------------------------------------
@dataclass
class Result:
    db: str
    plan: dict[str, Any]
    server_version: str = ""
    latency: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    load_before: float | None = None
    load_after: float | None = None
    bulk_rows_per_s: float | None = None
    throughput: dict[str, Any] = field(default_factory=dict)
    rss_kb: dict[str, int | None] = field(default_factory=dict)
    hwm_kb: dict[str, int | None] = field(default_factory=dict)
    exit_code: dict[str, int | None] = field(default_factory=dict)
    shutdown_s: dict[str, float] = field(default_factory=dict)
    overlaps: int | None = None
    bookings_check: str = ""
    problems: list[str] = field(default_factory=list)
    skipped: str = ""


async def run_db(kind: str, plan: Plan, analyze: bool) -> Result:
    result = Result(db=kind, plan=asdict(plan))
    rng = random.Random(20310106)
    pair: list[Instance] = []
    with tempfile.TemporaryDirectory(prefix=f"forumbridge-bench-{kind}-") as tmp:
        folder = Path(tmp)
        try:
            if kind == "postgresql":
                try:
                    result.server_version = "PostgreSQL " + (await pg_admin("SHOW server_version")).split()[0]
                except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
                    result.skipped = f"PostgreSQL not reachable at {PG_ADMIN_URL} ({type(exc).__name__}: {exc})"
                    return result
            else:
                result.server_version = f"SQLite {sqlite3.sqlite_version}"
            for existing in (plan.small, plan.large):
                label = f"{existing}"
                if kind == "sqlite":
                    name, url = "", f"sqlite+aiosqlite:///{folder / label / 'forumbridge.db'}"
                else:
                    name = f"forumbridge_bench_{os.getpid()}_{label}_{uuid.uuid4().hex[:6]}"
                    await pg_admin(f'CREATE DATABASE "{name}"')
                    url = pg_url(name)
                pair.append(Instance(existing, url, Service(url, folder / label), Layout(existing, rng), pg_name=name))
            small, large = pair
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
                log(f"{kind}: starting two services, on {small.service.base} and {large.service.base}")
                await asyncio.gather(*(inst.service.start(http) for inst in pair))
                await small.setup(http, 0)
                await large.setup(http, plan.throughput_rooms)
                for inst in pair:
                    log(f"{kind}: loading {inst.existing:,} existing bookings into the database")
                    rate = await bulk_load(inst.url, inst.forum_id, inst.room_id, inst.existing, analyze)
                    if inst is large:
                        result.bulk_rows_per_s = rate
                log(f"{kind}: timing bookings, alternating between {plan.small:,} and {plan.large:,} existing")
                await measure_latency(http, pair, plan, result)
                log(f"{kind}: {plan.throughput:,} bookings with {plan.clients} concurrent clients")
                await measure_throughput(large, plan, result)
            for inst in pair:
                status = proc_status(inst.service.pid)
                result.rss_kb[str(inst.existing)] = status.get("VmRSS")
                result.hwm_kb[str(inst.existing)] = status.get("VmHWM")
            for inst in pair:
                code, seconds = await inst.service.stop()
                result.exit_code[str(inst.existing)], result.shutdown_s[str(inst.existing)] = code, seconds
                if code != 0:
                    result.problems.append(f"the service ({inst.existing:,}) exited with {code} on SIGTERM:\n"
                                           f"{inst.service.log_tail()}")
                errors = inst.service.log_errors()
                if errors:
                    result.problems.append(f"{errors} error lines in the log of the service ({inst.existing:,}):\n"
                                           f"{inst.service.log_tail()}")
            checks = [await check_data(inst.url, inst.room_id, inst.existing + inst.made) for inst in pair]
            result.overlaps = sum(c[0] for c in checks)
            result.bookings_check = checks[1][1]
            if result.overlaps:
                result.problems.append(f"{result.overlaps} overlapping active bookings")
            for inst, (_, verdict) in zip(pair, checks):
                if "!=" in verdict:
                    result.problems.append(f"measured room with {inst.existing:,} existing: {verdict}")
        except BenchError as exc:
            result.problems.append(str(exc))
        finally:
            for inst in pair:
                inst.service.kill()
            for inst in pair:
                if inst.pg_name:
                    try:
                        await pg_admin(f'DROP DATABASE IF EXISTS "{inst.pg_name}" WITH (FORCE)')
                    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
                        log(f"could not drop {inst.pg_name}: {exc}")
    return result


# -- the report -------------------------------------------------------------------------
def report(results: list[Result], plan: Plan, quick: bool, started: datetime, elapsed: float) -> str:
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    small, large = str(plan.small), str(plan.large)
    cols = [r for r in results if not r.skipped and r.latency]

    def ms(v: float | None) -> str:
        return "-" if v is None or v != v else f"{v:.2f}"

    def lat(r: Result, size: str, kind: str, q: str) -> float | None:
        return r.latency.get(size, {}).get(kind, {}).get(q)

    def ratio(r: Result, kind: str, q: str) -> str:
        a, b = lat(r, small, kind, q), lat(r, large, kind, q)
        return f"{b / a:.2f}" if a and b else "-"

    def mib(kb: int | None) -> str:
        return f"{kb / 1024:.0f}" if kb else "-"

    S, L = f"{plan.small:,}", f"{plan.large:,}"
    rows: list[tuple[str, list[str]]] = [
        ("database", [r.server_version for r in cols]),
        (f"accepted booking p50 ms, {S} existing", [ms(lat(r, small, "accepted", "p50")) for r in cols]),
        (f"accepted booking p95 ms, {S} existing", [ms(lat(r, small, "accepted", "p95")) for r in cols]),
        (f"accepted booking p50 ms, {L} existing", [ms(lat(r, large, "accepted", "p50")) for r in cols]),
        (f"accepted booking p95 ms, {L} existing", [ms(lat(r, large, "accepted", "p95")) for r in cols]),
        (f"  ratio p50 {L}/{S} (goal < {GOAL_RATIO})", [ratio(r, "accepted", "p50") for r in cols]),
        (f"  ratio p95 {L}/{S}", [ratio(r, "accepted", "p95") for r in cols]),
        ("  in gaps: p50 ms, small / large", [
            f"{ms(lat(r, small, 'gap', 'p50'))} / {ms(lat(r, large, 'gap', 'p50'))}" for r in cols]),
        ("  after the last: p50 ms, small / large", [
            f"{ms(lat(r, small, 'after', 'p50'))} / {ms(lat(r, large, 'after', 'p50'))}" for r in cols]),
        (f"refused (409) p50 ms, {S} existing", [ms(lat(r, small, "refused", "p50")) for r in cols]),
        (f"refused (409) p95 ms, {S} existing", [ms(lat(r, small, "refused", "p95")) for r in cols]),
        (f"refused (409) p50 ms, {L} existing", [ms(lat(r, large, "refused", "p50")) for r in cols]),
        (f"refused (409) p95 ms, {L} existing", [ms(lat(r, large, "refused", "p95")) for r in cols]),
        (f"  ratio p50 {L}/{S} (goal < {GOAL_RATIO})", [ratio(r, "refused", "p50") for r in cols]),
        (f"  ratio p95 {L}/{S}", [ratio(r, "refused", "p95") for r in cols]),
        ("samples per size: accepted / refused", [
            f"{r.latency.get(large, {}).get('accepted', {}).get('n', 0)} / "
            f"{r.latency.get(large, {}).get('refused', {}).get('n', 0)}" for r in cols]),
        ("load average before / after the timing", [
            f"{r.load_before:.2f} / {r.load_after:.2f}" if r.load_before is not None else "-" for r in cols]),
        (f"bulk load of {L} meetings + bookings, rows/s", [
            f"{r.bulk_rows_per_s:,.0f}" if r.bulk_rows_per_s else "-" for r in cols]),
        (f"throughput, bookings/s ({plan.clients} clients, {plan.throughput:,} bookings, {plan.throughput_rooms} rooms)",
         [f"{r.throughput['per_s']:.0f}" if r.throughput else "-" for r in cols]),
        ("  errors", [str(r.throughput.get("errors", "-")) for r in cols]),
        ("  latency under load p50 / p95 ms", [
            f"{ms(r.throughput.get('p50_ms'))} / {ms(r.throughput.get('p95_ms'))}" for r in cols]),
        ("  service CPU ms per booking", [ms(r.throughput.get("service_cpu_ms_per_booking")) for r in cols]),
        ("  benchmark client CPU ms per booking", [ms(r.throughput.get("bench_cpu_ms_per_booking")) for r in cols]),
        (f"service RSS after the run, MiB: {L} (peak) / {S}", [
            f"{mib(r.rss_kb.get(large))} ({mib(r.hwm_kb.get(large))}) / {mib(r.rss_kb.get(small))}" for r in cols]),
        ("exit code on SIGTERM: large / small", [
            " / ".join(str(r.exit_code.get(k, "-")) for k in (large, small)) for r in cols]),
        ("  seconds to exit: large / small", [
            " / ".join(f"{r.shutdown_s[k]:.1f}" if k in r.shutdown_s else "-" for k in (large, small)) for r in cols]),
        ("overlapping active bookings", [str(r.overlaps) if r.overlaps is not None else "-" for r in cols]),
        ("measured room's bookings = existing + 201s", [r.bookings_check or "-" for r in cols]),
    ]
    lines = [
        f"forumbridge booking benchmark ({'quick' if quick else 'full'} run), {started:%Y-%m-%d %H:%M} UTC",
        f"machine: {cores} cores ({usable} usable), {platform.machine()}, Linux {platform.release()}, "
        f"Python {platform.python_version()}",
        f"run time {elapsed:.0f} s. Latency: one request at a time over loopback HTTP, alternating between a service "
        f"on a database with {S} and one with {L} existing bookings of the room.",
    ]
    if cols:
        head = ["", *[r.db for r in cols]]
        width0 = max(len(head[0]), *(len(label) for label, _ in rows))
        widths = [max(len(head[i + 1]), *(len(v[i]) for _, v in rows)) for i in range(len(cols))]
        lines.append("")
        lines.append("  ".join([head[0].ljust(width0), *(h.rjust(w) for h, w in zip(head[1:], widths))]))
        lines.append("-" * len(lines[-1]))
        for label, values in rows:
            lines.append("  ".join([label.ljust(width0), *(v.rjust(w) for v, w in zip(values, widths))]))
    for r in results:
        if r.skipped:
            lines.append(f"\n{r.db}: skipped: {r.skipped}")
    for r in cols:
        for kind in ("accepted", "refused"):
            a, b = lat(r, small, kind, "p50"), lat(r, large, kind, "p50")
            if a and b and b / a >= GOAL_RATIO:
                lines.append(f"\n{r.db}: {kind} p50 ratio {b / a:.2f} is over the goal of {GOAL_RATIO}")
    for r in results:
        for problem in r.problems[:10]:
            lines.append(f"\n{r.db}: PROBLEM: {problem}")
        if len(r.problems) > 10:
            lines.append(f"{r.db}: ... and {len(r.problems) - 10} more problems")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    results: list[Result] = []

    async def all_dbs() -> None:
        for kind in kinds:
            results.append(await run_db(kind, plan, analyze=not args.no_analyze))

    try:
        await asyncio.wait_for(all_dbs(), TIME_LIMIT_S)
    except asyncio.TimeoutError:
        results.append(Result(db="(time limit)", plan=asdict(plan), problems=[f"stopped after {TIME_LIMIT_S} s"]))
    elapsed = time.perf_counter() - started
    print(report(results, plan, args.quick, started_at, elapsed), flush=True)
    write_results("booking", started_at, args.quick, elapsed, {"results": [asdict(r) for r in results]})
    return 1 if any(r.problems or r.skipped for r in results) else 0


def main() -> int:
    p = argparse.ArgumentParser(description="Booking latency and throughput of the real service on SQLite and PostgreSQL.")
    p.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--no-analyze", action="store_true",
                   help="skip ANALYZE on PostgreSQL after the bulk load (what a server without autovacuum sees)")
    return asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
