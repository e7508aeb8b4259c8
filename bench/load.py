"""Load benchmark: a mixed workload against the real service, open loop and closed loop.

For each database (SQLite, then PostgreSQL) and each mode (open, then closed), in one run:

1. start a fresh service (`forumbridge serve --migrate` as a subprocess on a free loopback port, its
   own SQLite file or a fresh PostgreSQL database forumbridge_bench_*, dropped afterwards) with a
   Jitsi provider configured through FORUMBRIDGE_VIDEO__JITSI__* and its mail going to an SMTP sink
   (aiosmtpd, a subprocess), so that invitation mails finish instead of retrying meanwhile;
2. create through the API a site, a forum, 10 rooms, `--live` meetings that run now with a Jitsi
   conference and `--invitees` remote invitations each (their join tokens kept from `join_url`),
   and one far-future meeting per client for that client to reschedule; wait until every
   conference is active and the outbox is idle;
3. run the load generator (this script with --load, its own process: raw HTTP/1.1 keep-alive, one
   connection per client, one request in flight on each, redirects not followed) for a warm-up and
   then the measured window. Every request picks its kind at random by MIX:
   - list: GET /api/v1/meetings with a one-week window around the client's own time band;
   - busy: GET /api/v1/rooms/{id}/busy for the same week and the client's room;
   - join: GET /j/{token}/join for a random invitee of a live meeting (302 expected);
   - book: POST /api/v1/meetings, 30 minutes in one room at the client's next free hour. Each
     client books only inside its own 100-day band far in the future, so these succeed (201);
   - conflict: the client books its last booking's room and hour again (409 expected, a correct
     answer);
   - reschedule: PATCH the client's own meeting to its next free hour (200);
   - attendance: GET /api/v1/meetings/{id}/attendance of a live meeting (JSON).
   Open loop: `--rate` requests per second in all, on a fixed timetable (arrival j at j/rate
   seconds, to client j mod clients); the latency runs from the scheduled send time, so a request
   that waits for its connection, or for a late generator, counts that wait (no coordinated
   omission). Closed loop: each client sends its next request as soon as it has its answer;
   the figure is the saturation throughput.
4. record per request kind: the statuses, p50/p95/p99/max latency; the service's CPU (from
   /proc/PID/stat) and memory (VmRSS, VmHWM from /proc/PID/status) at the end; the generator's own
   CPU; the service's own handler time per route (from its /metrics histogram); the load average;
5. check that the database holds one meeting per 201 (plus those of the setup) and one
   link_opened event per 302, that the service logged no error, and that it exits 0 on SIGTERM.

Timings are printed, never asserted: the machine is shared. The exit status is non-zero only when
something functional went wrong (a service did not start, a request got an answer of another kind
than expected for it, the counts in the database are off, a database was not reachable).

    ./dev bench load                          # full run: open and closed, SQLite and PostgreSQL
    ./dev bench load --quick                  # smoke run, about a minute
    ./dev bench load --db postgresql --mode open --duration 30 --rate 300
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from bench.common import (  # noqa: E402
    write_results, Api, server_version, RESULTS_DIR, BenchError, Service, SmtpSink, drop_database, log, machine, new_database, pct,
    proc_cpu_s, proc_status, table,
)
from bench.join import JITSI, count_opens, wait_ready  # noqa: E402
from service.db import models as m  # noqa: E402

TIME_LIMIT_S = 1800  # the whole run
GOAL_P99_MS = 100.0
UTC = timezone.utc
ZONE = "Europe/Stockholm"
# Client c books, and moves its own meeting, only inside its band: hour slots from BASE + c * BAND.
BASE = datetime(2100, 1, 4, tzinfo=UTC)
BAND = timedelta(days=100)
SLOT = timedelta(hours=1)
LENGTH = timedelta(minutes=30)
SLOTS = int(BAND / SLOT)
ROOMS = 10
REQUEST_TIMEOUT_S = 30.0
# Request kinds and their share of the requests, in percent.
MIX = {"list": 20, "busy": 15, "join": 35, "book": 13, "conflict": 2, "reschedule": 10, "attendance": 5}
EXPECTED = {"list": 200, "busy": 200, "join": 302, "book": 201, "conflict": 409, "reschedule": 200, "attendance": 200}
# The routes of the service's /metrics that serve each kind.
ROUTES = {
    "list": ("/api/v1/meetings", "GET"), "busy": ("/api/v1/rooms/{id}/busy", "GET"),
    "join": ("/j/{token}/join", "GET"), "book": ("/api/v1/meetings", "POST"),
    "reschedule": ("/api/v1/meetings/{id}", "PATCH"), "attendance": ("/api/v1/meetings/{id}/attendance", "GET"),
}


@dataclass(frozen=True)
class Plan:
    clients: int = 200
    rate: float = 200.0  # open loop: requests per second in all
    duration_s: float = 60.0  # measured window
    warmup_s: float = 5.0  # before it, not counted
    live: int = 4  # meetings that run now, for joins and attendance reports
    invitees: int = 50  # remote invitations per live meeting
    workers: int = 1  # server processes on PostgreSQL (`serve --workers`); SQLite always has one


FULL = Plan()
QUICK = Plan(clients=50, rate=100.0, duration_s=5.0, warmup_s=1.0, live=1, invitees=20)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def slot_start(client: int, slot: int) -> datetime:
    return BASE + client * BAND + slot * SLOT


# -- the load generator (its own process) ------------------------------------------------------
class Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with one request in flight; bodies by Content-Length."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.buf = bytearray()
        self.need = -1
        self.body_at = 0
        self.status = 0
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None:
            return
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            self.status = int(head[9:12])
            if b"\r\ntransfer-encoding:" in head:
                self._fail(ConnectionError("a chunked answer (the generator reads Content-Length only)"))
                return
            at = head.find(b"\r\ncontent-length:")
            length = 0
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17:stop if stop > 0 else None])
            self.body_at, self.need = end + 4, end + 4 + length
        if len(self.buf) >= self.need:
            body = bytes(self.buf[self.body_at:self.need])
            del self.buf[:self.need]
            self.need = -1
            waiter, self.waiter = self.waiter, None
            if not waiter.done():
                waiter.set_result((self.status, body))

    def _fail(self, exc: Exception) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.waiter = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection lost: {exc}"))

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        self.buf.clear()
        self.need = -1
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter


@dataclass
class Client:
    index: int
    room: str
    meeting: str  # the client's own meeting, which it reschedules
    slot: int = 0  # its next free hour
    last: tuple[int, str] | None = None  # hour and room of its last accepted booking
    conn: Conn | None = None

    def fresh(self) -> tuple[int, datetime]:
        if self.slot >= SLOTS - 1:
            raise RuntimeError(f"client {self.index} used up its {SLOTS} hours")
        n = self.slot
        self.slot += 1
        return n, slot_start(self.index, n)


class Kind:
    def __init__(self) -> None:
        self.statuses: dict[str, int] = {}  # every answer, warm-up included
        self.window: dict[str, int] = {}  # answers counted in the measured window
        self.latencies: list[float] = []  # of the measured window, seconds


class Load:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        url = urlsplit(spec["base"])
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.mode = spec["mode"]
        self.rate = spec["rate"]
        self.warmup_s, self.duration_s = spec["warmup_s"], spec["duration_s"]
        self.rng = random.Random(spec["seed"])
        self.kinds = {k: Kind() for k in MIX}
        self.done = 0  # answers completed inside the measured window
        mix = spec.get("mix") or MIX
        self.mix_names, self.mix_weights = list(mix), list(mix.values())
        self.unexpected: list[str] = []
        self.lag: list[float] = []  # open loop: how late each measured request was sent, seconds
        self.clients = [Client(i, spec["rooms"][i % len(spec["rooms"])], spec["own"][i]) for i in range(spec["clients"])]
        self.common = (f"Host: {self.host}:{self.port}\r\nUser-Agent: forumbridge-bench\r\n").encode()
        self.auth = f"Authorization: Bearer {spec['token']}\r\n".encode()
        self.forum = spec["forum"]
        self.live, self.tokens = spec["live"], spec["tokens"]
        self.t0 = 0.0

    # -- requests --------------------------------------------------------------
    def http(self, method: str, path: str, body: Any = None, auth: bool = True) -> bytes:
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self.common + (self.auth if auth else b"")
        if body is None:
            return head + b"\r\n"
        data = json.dumps(body).encode()
        return head + f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data

    def build(self, c: Client, kind: str) -> tuple[bytes, Any]:
        """The request's bytes, and what to remember if it is accepted."""
        if kind == "list" or kind == "busy":
            around = slot_start(c.index, c.slot)
            window = f"from={iso(around - timedelta(days=3))}&to={iso(around + timedelta(days=4))}"
            path = f"/api/v1/meetings?{window}" if kind == "list" else f"/api/v1/rooms/{c.room}/busy?{window}"
            return self.http("GET", path), None
        if kind == "join":
            return self.http("GET", f"/j/{self.rng.choice(self.tokens)}/join", auth=False), None
        if kind == "attendance":
            return self.http("GET", f"/api/v1/meetings/{self.rng.choice(self.live)}/attendance"), None
        if kind == "reschedule":
            _, start = c.fresh()
            return self.http("PATCH", f"/api/v1/meetings/{c.meeting}",
                             {"starts_at": iso(start), "ends_at": iso(start + LENGTH)}), None
        if kind == "conflict":
            assert c.last is not None
            n, room = c.last
            start = slot_start(c.index, n)
        else:
            n, start = c.fresh()
            room = c.room
        return self.http("POST", "/api/v1/meetings", {
            "forum_id": self.forum, "title": f"Beredningsmöte {c.index}:{n}", "timezone": ZONE,
            "starts_at": iso(start), "ends_at": iso(start + LENGTH), "room_ids": [room]}), (n, room)

    def pick(self, c: Client) -> str:
        kind = self.rng.choices(self.mix_names, self.mix_weights)[0]
        return "book" if kind == "conflict" and c.last is None else kind

    async def connect(self, c: Client) -> None:
        loop = asyncio.get_running_loop()
        _, c.conn = await loop.create_connection(Conn, self.host, self.port)

    async def one(self, c: Client, scheduled: float, counted: bool) -> None:
        """Send one request and record its answer; the latency and the time limit run from `scheduled`."""
        kind = self.pick(c)
        data, remember = self.build(c, kind)
        status, body = "", b""
        try:
            async with asyncio.timeout_at(scheduled + REQUEST_TIMEOUT_S):
                if c.conn is None or c.conn.lost:
                    await self.connect(c)
                assert c.conn is not None
                code, body = await c.conn.request(data)
            status = str(code)
        except TimeoutError:
            status = "timeout"
            if c.conn is not None:
                c.conn._fail(ConnectionError("timed out"))
        except (ConnectionError, OSError) as exc:
            status = "lost"
            body = str(exc).encode()
        ended = time.monotonic()
        since = ended - self.t0
        inside = self.warmup_s <= since < self.warmup_s + self.duration_s
        self.done += inside and status != "timeout"
        if self.mode == "closed":
            counted = inside
        record = self.kinds[kind]
        record.statuses[status] = record.statuses.get(status, 0) + 1
        if counted:
            record.window[status] = record.window.get(status, 0) + 1
            record.latencies.append(ended - scheduled)
        if status == str(EXPECTED[kind]):
            if kind == "book":
                c.last = remember
        elif status != "timeout" and len(self.unexpected) < 30:
            self.unexpected.append(f"{kind}: {status} {body[:300].decode(errors='replace')}")

    # -- the two modes -----------------------------------------------------------
    async def open_client(self, c: Client) -> None:
        total = int(self.rate * (self.warmup_s + self.duration_s))
        step = len(self.clients)
        j = c.index
        while j < total:
            at = self.t0 + j / self.rate
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            counted = j >= self.rate * self.warmup_s
            if counted:
                self.lag.append(time.monotonic() - at)
            await self.one(c, at, counted)
            j += step

    async def closed_client(self, c: Client) -> None:
        end = self.t0 + self.warmup_s + self.duration_s
        while time.monotonic() < end:
            await self.one(c, time.monotonic(), False)

    async def run(self) -> dict[str, Any]:
        for c in self.clients:
            await self.connect(c)
        ready = self.spec.get("ready_file")
        if ready:
            Path(ready).touch()
        cpu0 = time.process_time()
        self.t0 = time.monotonic() + 0.05
        work = self.open_client if self.mode == "open" else self.closed_client
        await asyncio.gather(*(work(c) for c in self.clients))
        elapsed = time.monotonic() - self.t0
        cpu = time.process_time() - cpu0
        for c in self.clients:
            if c.conn is not None and c.conn.transport is not None:
                c.conn.transport.close()
        every = [x for k in self.kinds.values() for x in k.latencies]
        return {
            "mode": self.mode, "elapsed_s": elapsed, "answered_per_s": self.done / self.duration_s, "cpu_s": cpu, "window_s": self.duration_s,
            "kinds": {name: summary(k.latencies, k.window, k.statuses, self.duration_s) for name, k in self.kinds.items()},
            "all": summary(every, {}, {}, self.duration_s),
            "unexpected_count": sum(n for name, k in self.kinds.items() for s, n in k.statuses.items()
                                    if s not in (str(EXPECTED[name]), "timeout")),
            "timeouts": sum(k.statuses.get("timeout", 0) for k in self.kinds.values()),
            "timeouts_window": sum(k.window.get("timeout", 0) for k in self.kinds.values()),
            "unexpected": self.unexpected,
            "lag_p99_ms": pct(self.lag, 99) * 1000 if self.lag else None,
            "lag_max_ms": max(self.lag) * 1000 if self.lag else None,
            "accepted_bookings": self.kinds["book"].statuses.get("201", 0),
            "redirects": self.kinds["join"].statuses.get("302", 0),
        }


def summary(latencies: list[float], window: dict[str, int], statuses: dict[str, int], seconds: float) -> dict[str, Any]:
    ms = sorted(x * 1000 for x in latencies)
    return {
        "n": len(ms), "per_s": len(ms) / seconds, "window": window, "statuses": statuses,
        "p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95), "p99_ms": pct(ms, 99), "max_ms": ms[-1] if ms else float("nan"),
    }


def run_load(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    print(json.dumps(asyncio.run(Load(spec).run())), flush=True)


# -- setting up one service ------------------------------------------------------------------
async def gather_limited(count: int, make: Any, parallel: int = 8) -> list[Any]:
    """make(i) for i in range(count), `parallel` at a time, results in order."""
    out: list[Any] = [None] * count
    numbers = iter(range(count))

    async def worker() -> None:
        for i in numbers:
            out[i] = await make(i)

    await asyncio.gather(*(worker() for _ in range(parallel)))
    return out


async def setup(api: Api, plan: Plan) -> dict[str, Any]:
    """Directory, live meetings with their invitees, and one meeting per client; the generator's ids."""
    site = await api.call("POST", "/api/v1/sites", {"name": "Regionens hus", "city": "Örebro"})
    forum = await api.call("POST", "/api/v1/forums", {
        "name": "Forum för regional hållbar tillväxt och attraktivitet", "kind": "officials"})
    rooms = await gather_limited(ROOMS, lambda i: api.call("POST", "/api/v1/rooms", {
        "site_id": site["id"], "name": f"Sal {i + 1}", "capacity": 20}))
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    live = await gather_limited(plan.live, lambda i: api.call("POST", "/api/v1/meetings", {
        "forum_id": forum["id"], "title": f"Forummöte {i + 1} på distans", "timezone": ZONE,
        "starts_at": iso(now - timedelta(hours=1)), "ends_at": iso(now + timedelta(hours=3)),
        "conference": {"provider": "jitsi"}}))

    async def invite(i: int) -> str:
        person = await api.call("POST", "/api/v1/people", {
            "name": f"Deltagare {i:04d} Åström", "email": f"deltagare{i:04d}@region.example"})
        inv = await api.call("POST", f"/api/v1/meetings/{live[i % plan.live]['id']}/invitations",
                             {"person_id": person["id"], "mode": "remote"})
        return urlsplit(inv["join_url"]).path.rsplit("/", 1)[1]

    tokens = await gather_limited(plan.live * plan.invitees, invite)
    own = await gather_limited(plan.clients, lambda c: api.call("POST", "/api/v1/meetings", {
        "forum_id": forum["id"], "title": f"Klientens möte {c}", "timezone": ZONE,
        "starts_at": iso(slot_start(c, SLOTS - 1)), "ends_at": iso(slot_start(c, SLOTS - 1) + LENGTH),
        "room_ids": [rooms[c % ROOMS]["id"]]}))
    return {"forum": forum["id"], "rooms": [r["id"] for r in rooms], "live": [x["id"] for x in live],
            "tokens": tokens, "own": [x["id"] for x in own], "meetings": plan.live + plan.clients}


async def count_meetings(url: str) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(m.Meeting.__table__))).scalar_one())
    finally:
        await engine.dispose()


METRIC = re.compile(r'^forumbridge_http_request_duration_seconds_(sum|count)\{method="([A-Z]+)",route="([^"]+)"\} (\S+)$')


async def handler_times(http: aiohttp.ClientSession, base: str) -> dict[tuple[str, str], list[float]]:
    """(route, method) -> [seconds, requests] from the service's latency histogram."""
    async with http.get(base + "/metrics") as r:
        text = await r.text()
    out: dict[tuple[str, str], list[float]] = {}
    for line in text.splitlines():
        match = METRIC.match(line)
        if match:
            which, method, route, value = match.groups()
            out.setdefault((route, method), [0.0, 0.0])[0 if which == "sum" else 1] = float(value)
    return out


# -- one database and mode ---------------------------------------------------------------------
@dataclass
class Result:
    db: str
    mode: str
    plan: dict[str, Any]
    server_version: str = ""
    setup_s: float = 0.0
    load: dict[str, Any] = field(default_factory=dict)
    handler_ms: dict[str, float] = field(default_factory=dict)  # kind -> mean ms in the service's handler
    server_cpu_s: float = 0.0
    memory_kb: dict[str, int] = field(default_factory=dict)
    loadavg_before: str = ""
    loadavg_after: str = ""
    meetings: str = ""
    opens: str = ""
    exit_code: int | None = None
    problems: list[str] = field(default_factory=list)
    skipped: str = ""


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def process_tree(pid: int) -> list[int]:
    """The service and its workers (`serve --workers N` forks them)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return pids


def tree_cpu_s(pid: int) -> float:
    return sum(proc_cpu_s(p) for p in process_tree(pid))


def tree_memory_kb(pid: int) -> dict[str, int]:
    total: dict[str, int] = {}
    for p in process_tree(pid):
        for key, value in proc_status(p).items():
            total[key] = total.get(key, 0) + value
    return total


async def run_one(kind: str, mode: str, plan: Plan, sink: SmtpSink, mix: dict[str, int]) -> Result:
    workers = plan.workers if kind == "postgresql" else 1
    result = Result(db=kind if workers == 1 else f"{kind} x{workers}", mode=mode, plan=asdict(plan))
    service: Service | None = None
    pg_name = ""
    with tempfile.TemporaryDirectory(prefix=f"forumbridge-bench-load-{kind}-") as tmp:
        folder = Path(tmp)
        try:
            result.server_version, result.skipped = await server_version(kind)
            if result.skipped:
                return result
            url, pg_name = await new_database(kind, folder, "load")
            env = {f"FORUMBRIDGE_VIDEO__JITSI__{k}": v for k, v in JITSI.items()}
            env.update(sink.env())
            env["FORUMBRIDGE_HTTP__WORKERS"] = str(workers)
            service = Service(url, folder / "load", env)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
                started = time.perf_counter()
                log(f"{kind} {mode}: starting the service on {service.base}")
                await service.start(http)
                token = await service.token()
                api = Api(http, service, token)
                ids = await setup(api, plan)
                log(f"{kind} {mode}: set up in {time.perf_counter() - started:.1f} s; waiting for the outbox")
                for meeting_id in ids["live"]:
                    await wait_ready(url, api, meeting_id)
                result.setup_s = time.perf_counter() - started
                spec = {**ids, "base": service.base, "token": token, "mode": mode, "clients": plan.clients,
                        "rate": plan.rate, "warmup_s": plan.warmup_s, "duration_s": plan.duration_s,
                        "seed": f"{kind}-{mode}", "mix": mix}
                spec_file = folder / "spec.json"
                spec_file.write_text(json.dumps(spec))
                before = await handler_times(http, service.base)
                log(f"{kind} {mode}: {plan.clients} clients, "
                    + (f"{plan.rate:.0f} req/s offered, " if mode == "open" else "as fast as answered, ")
                    + f"{plan.warmup_s:.0f} s warm-up + {plan.duration_s:.0f} s measured")
                result.loadavg_before = loadavg()
                cpu0 = tree_cpu_s(service.pid)
                result.load = await generate(spec_file, plan)
                result.server_cpu_s = tree_cpu_s(service.pid) - cpu0
                result.loadavg_after = loadavg()
                result.memory_kb = tree_memory_kb(service.pid)
                after = await handler_times(http, service.base)
                for name, route in ROUTES.items():
                    s0, n0 = before.get(route, [0.0, 0.0])
                    s1, n1 = after.get(route, [0.0, 0.0])
                    if n1 > n0:
                        result.handler_ms[name] = (s1 - s0) / (n1 - n0) * 1000
            load = result.load
            everything = load["all"]
            log(f"{kind} {mode}: {load['answered_per_s']:.0f} req/s answered, p50 {everything['p50_ms']:.1f} ms, "
                f"p99 {everything['p99_ms']:.1f} ms, {load['unexpected_count']} unexpected answers")
            if load["unexpected_count"]:
                result.problems.append(f"{load['unexpected_count']} answers not of the kind expected: "
                                       + "; ".join(load["unexpected"][:5]))
            # A request the generator gave up on (no answer within the time limit) may still have been done.
            late = {name: k["statuses"].get("timeout", 0) for name, k in load["kinds"].items()}
            meetings = await count_meetings(url)
            low = ids["meetings"] + load["accepted_bookings"]
            result.meetings = within(meetings, low, low + late["book"])
            if not low <= meetings <= low + late["book"]:
                result.problems.append(f"{meetings} meetings in the database for {result.meetings} (setup + 201s)")
            opens = await count_opens(url)
            result.opens = within(opens, load["redirects"], load["redirects"] + late["join"])
            if not load["redirects"] <= opens <= load["redirects"] + late["join"]:
                result.problems.append(f"{opens} link_opened rows for {result.opens} redirects")
            errors = service.log_errors()
            if errors:
                RESULTS_DIR.mkdir(parents=True, exist_ok=True)
                kept = RESULTS_DIR / f"load-{datetime.now(UTC):%Y%m%dT%H%M%S}-{kind}-{mode}-service.log"
                kept.write_bytes(service.log_path.read_bytes())
                result.problems.append(f"{errors} error lines in the service log (kept in {kept.relative_to(ROOT)}):\n"
                                       f"{service.log_tail()}")
            result.exit_code, _ = await service.stop()
            if result.exit_code != 0:
                result.problems.append(f"the service exited with {result.exit_code} on SIGTERM")
        except BenchError as exc:
            result.problems.append(str(exc))
        finally:
            if service is not None:
                service.kill()
            await drop_database(pg_name)
    return result


def within(count: int, low: int, high: int) -> str:
    """`count = low`, or where it lies when up to high - low abandoned requests may have been done."""
    if low == high:
        return f"{count:,} = {low:,}" if count == low else f"{count:,} != {low:,}"
    return f"{low:,} <= {count:,} <= {high:,}" if low <= count <= high else f"{count:,} not in {low:,}..{high:,}"


async def generate(spec_file: Path, plan: Plan) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, __file__, "--load", str(spec_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    limit = time.monotonic() + plan.warmup_s + plan.duration_s + REQUEST_TIMEOUT_S + 90
    while proc.poll() is None and time.monotonic() < limit:
        await asyncio.sleep(0.1)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise BenchError(f"the load generator failed ({proc.returncode}): {err.decode()[-2000:]}")
    return json.loads(out.decode().strip().splitlines()[-1])


# -- the report -------------------------------------------------------------------------------
def report(results: list[Result], plan: Plan, mix: dict[str, int], quick: bool, started: datetime, elapsed: float) -> str:
    cols = [r for r in results if not r.skipped and r.load]

    def f(v: Any, spec: str = ".1f") -> str:
        return "-" if v is None or v != v else format(v, spec)

    def k(r: Result, kind: str, key: str) -> Any:
        return r.load["kinds"][kind][key] if kind != "all" else r.load["all"][key]

    rows: list[tuple[str, list[str]]] = [
        ("database", [r.server_version for r in cols]),
        ("mode", [r.mode for r in cols]),
        ("offered req/s (open loop)", [f(k(r, "all", "per_s"), ",.0f") if r.mode == "open" else "-" for r in cols]),
        ("answered req/s in the measured window", [f(r.load["answered_per_s"], ",.0f") for r in cols]),
        ("latency p50 / p95 / p99 ms", [
            f"{f(k(r, 'all', 'p50_ms'))} / {f(k(r, 'all', 'p95_ms'))} / {f(k(r, 'all', 'p99_ms'))}" for r in cols]),
        ("latency max ms", [f(k(r, "all", "max_ms")) for r in cols]),
        ("unexpected answers (all, warm-up included)", [str(r.load["unexpected_count"]) for r in cols]),
        (f"no answer within {REQUEST_TIMEOUT_S:.0f} s: measured / all", [
            f"{r.load['timeouts_window']:,} / {r.load['timeouts']:,}" for r in cols]),
    ]
    for kind in (k for k in MIX if mix.get(k)):
        rows.append((f"{kind} ({EXPECTED[kind]}): n, p50 / p99 ms", [
            f"{k(r, kind, 'n'):,}: {f(k(r, kind, 'p50_ms'))} / {f(k(r, kind, 'p99_ms'))}" for r in cols]))
    rows += [
        ("service handler mean ms: " + " / ".join(ROUTES), [
            " / ".join(f(r.handler_ms.get(name)) for name in ROUTES) for r in cols]),
        ("open loop: send lag p99 / max ms", [
            f"{f(r.load['lag_p99_ms'])} / {f(r.load['lag_max_ms'])}" if r.mode == "open" else "-" for r in cols]),
        ("service CPU, cores busy", [f(r.server_cpu_s / r.load["elapsed_s"], ".2f") for r in cols]),
        ("service CPU ms per request", [
            f(r.server_cpu_s * 1000 / max(1, sum(sum(x["statuses"].values()) for x in r.load["kinds"].values())), ".2f")
            for r in cols]),
        ("generator CPU, cores busy", [f(r.load["cpu_s"] / r.load["elapsed_s"], ".2f") for r in cols]),
        ("service VmRSS / VmHWM MiB at the end", [
            f"{r.memory_kb.get('VmRSS', 0) / 1024:.0f} / {r.memory_kb.get('VmHWM', 0) / 1024:.0f}" for r in cols]),
        ("load average before / after", [f"{r.loadavg_before} / {r.loadavg_after}" for r in cols]),
        ("meetings in db = setup + 201s (+ abandoned)", [r.meetings for r in cols]),
        ("link_opened rows = 302s (+ abandoned)", [r.opens for r in cols]),
        ("exit code on SIGTERM", [str(r.exit_code) for r in cols]),
        ("setup s", [f(r.setup_s) for r in cols]),
    ]
    lines = [
        f"forumbridge load benchmark ({'quick' if quick else 'full'} run), {started:%Y-%m-%d %H:%M} UTC",
        machine(),
        f"run time {elapsed:.0f} s. {plan.clients} clients (one keep-alive connection each); open loop "
        f"{plan.rate:.0f} req/s offered; {plan.warmup_s:.0f} s warm-up + {plan.duration_s:.0f} s measured; "
        f"{plan.live} live meetings x {plan.invitees} remote invitees. Mix: "
        + ", ".join(f"{name} {share * 100 / sum(mix.values()):.0f}%" for name, share in mix.items() if share) + ".",
    ]
    if cols:
        lines.append("")
        lines += table([f"{r.db.replace('postgresql', 'pg')} {r.mode}" for r in cols], rows)
    for r in results:
        if r.skipped:
            lines.append(f"\n{r.db} {r.mode}: skipped: {r.skipped}")
    for r in cols:
        if r.mode == "open" and r.db.startswith("postgresql") and k(r, "all", "p99_ms") >= GOAL_P99_MS:
            lines.append(f"\n{r.db} open: p99 {k(r, 'all', 'p99_ms'):.1f} ms is over the goal of {GOAL_P99_MS:.0f} ms")
    for r in results:
        for problem in r.problems[:10]:
            lines.append(f"\n{r.db} {r.mode}: PROBLEM: {problem}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    overrides = {name: value for name, value in (
        ("duration_s", args.duration), ("rate", args.rate), ("clients", args.clients), ("warmup_s", args.warmup),
        ("live", args.live), ("invitees", args.invitees), ("workers", args.workers)) if value is not None}
    plan = Plan(**{**asdict(plan), **overrides})
    mix = parse_mix(args.mix) if args.mix else MIX
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    modes = ["open", "closed"] if args.mode == "both" else [args.mode]
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    results: list[Result] = []
    sink = SmtpSink()

    async def everything() -> None:
        await sink.start()
        for kind in kinds:
            for mode in modes:
                results.append(await run_one(kind, mode, plan, sink, mix))

    try:
        await asyncio.wait_for(everything(), TIME_LIMIT_S)
    except asyncio.TimeoutError:
        results.append(Result(db="(time limit)", mode="", plan=asdict(plan), problems=[f"stopped after {TIME_LIMIT_S} s"]))
    except BenchError as exc:
        results.append(Result(db="(setup)", mode="", plan=asdict(plan), problems=[str(exc)]))
    finally:
        sink.stop()
    elapsed = time.perf_counter() - started
    print(report(results, plan, mix, args.quick, started_at, elapsed), flush=True)
    write_results("load", started_at, args.quick, elapsed, {"results": [asdict(r) for r in results]})
    return 1 if any(r.problems or r.skipped for r in results) else 0


def parse_mix(text: str) -> dict[str, int]:
    mix: dict[str, int] = {}
    for part in text.split(","):
        name, _, share = part.partition("=")
        if name.strip() not in MIX or not share.strip().isdigit():
            raise SystemExit(f"--mix: {part!r} is not KIND=SHARE with KIND one of {', '.join(MIX)}")
        mix[name.strip()] = int(share)
    if not any(mix.values()):
        raise SystemExit("--mix: every share is 0")
    return mix


def main() -> int:
    p = argparse.ArgumentParser(description="A mixed workload against the real service, open and closed loop.")
    p.add_argument("--quick", action="store_true", help="short windows and fewer invitees, for a smoke run")
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--mode", choices=["open", "closed", "both"], default="both")
    p.add_argument("--duration", type=float, help="seconds of the measured window (default 60)")
    p.add_argument("--warmup", type=float, help="seconds of load before it, not counted (default 5)")
    p.add_argument("--rate", type=float, help="open loop: requests per second offered in all (default 200)")
    p.add_argument("--clients", type=int, help="clients, each with one connection (default 200)")
    p.add_argument("--live", type=int, help="meetings running now, for joins and attendance reports (default 4)")
    p.add_argument("--invitees", type=int, help="remote invitees per live meeting (default 50)")
    p.add_argument("--workers", type=int, help="PostgreSQL: server processes on the port (serve --workers; default 1)")
    p.add_argument("--mix", help="other shares, e.g. join=1 for joins alone, or list=50,book=50 (default: MIX)")
    p.add_argument("--load", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.load:
        run_load(args.load)
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
