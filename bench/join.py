"""Join benchmark: GET /j/{token}/join of the real service against a bare aiohttp redirect.

For each database (SQLite, then PostgreSQL), in one run:

1. start the service (`forumbridge serve --migrate` as a subprocess on a free loopback port, its own
   SQLite file or a fresh PostgreSQL database forumbridge_bench_*, dropped afterwards) with a Jitsi
   provider configured through FORUMBRIDGE_VIDEO__JITSI__* and its mail going to an SMTP sink
   (aiosmtpd, a subprocess), so that the invitation mails finish instead of retrying meanwhile;
2. create through the API a forum, a meeting that runs now with a Jitsi conference, and
   `--invitations` people each invited remotely; keep each one's join token from `join_url`;
3. wait until the outbox made the conference active and sent every invitation mail;
4. start two bare servers (this script with --serve-bare, each its own process on its own port:
   an aiohttp app whose only handler answers GET /j/{token}/join with a 302 to a fixed URL as long
   as a real one): `bare` returns a web.Response, as the service's handler does; `bare_raise`
   raises web.HTTPFound, aiohttp's documented idiom, which costs more per request;
5. measure, in rounds whose order alternates (bare, join, bare_raise, then the reverse) so that all
   see the same machine load: the load generator (this script with --load, its own process: raw
   HTTP/1.1 keep-alive on `--clients` connections, one request in flight on each, the redirect not
   followed, tokens picked at random among all invitations) runs for a warm-up and then a measured
   window; requests per second, p50/p99 latency and errors of each, and the ratio of the join to
   the bare redirect (goal >= 0.3);
6. check that the database holds exactly one link_opened event per 302 the service sent;
7. crash check: under the same load, SIGKILL the service; every 302 a client received before that
   must have its link_opened row (the record is committed before the redirect is sent).

Timings are printed, never asserted: the machine is shared. The exit status is non-zero only when
something functional went wrong (a service did not start, a request got an unexpected answer, the
number of rows is not the number of 302s, a database was not reachable).

    ./dev bench join                    # full run, both databases
    ./dev bench join --quick            # smoke run with small counts
    ./dev bench join --db sqlite        # one database
    ./dev bench join --profile          # also py-spy the servers in the first round (bench/results/)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sqlite3
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
import asyncpg  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from bench.common import (  # noqa: E402
    write_results, PG_ADMIN_URL, Api, server_version, BenchError, Profiler, Service, SmtpSink, drop_database, free_port, log, machine, new_database,
    pct, pg_admin, proc_cpu_s, table,
)
from service.db import models as m  # noqa: E402

TIME_LIMIT_S = 540  # the whole run, both databases
GOAL_RATIO = 0.3
UTC = timezone.utc
JITSI = {
    "URL": "https://meet.bench.test",
    "APP_ID": "forumbridge",
    "APP_SECRET": "bench-" + "s" * 40,
    "AUDIENCE": "forumbridge",
    "SUBJECT": "meet.bench.test",
    "WEBHOOK_TOKEN": "bench-webhook-token-0123456789",
}
# What the bare servers redirect to: as long as a personal Jitsi URL with its JWT.
BARE_TARGET = "https://meet.bench.test/fb-bench-room?jwt=" + "x" * 420
# The two bare servers: the strict one answers the way the service's handler does; the other uses
# aiohttp's documented `raise web.HTTPFound`, which costs about 30 us more per request.
BARES = {"bare": "return", "bare_raise": "raise"}
TARGETS = ["bare", "join", "bare_raise"]  # measured in this order, then in reverse, round after round


@dataclass(frozen=True)
class Plan:
    invitations: int = 500
    clients: int = 50
    rounds: int = 4  # per target; the order alternates
    warmup_s: float = 1.5  # per phase, not counted
    measure_s: float = 6.0  # per phase
    crash_s: float = 3.0  # load before the SIGKILL


FULL = Plan()
QUICK = Plan(invitations=100, rounds=2, warmup_s=1.0, measure_s=2.0, crash_s=1.5)


# -- the bare server (its own process) ---------------------------------------------------------
def serve_bare(port: int, style: str) -> None:
    """`return`: the answer made the way the service's join handler makes it (a plain Response);
    `raise`: aiohttp's documented redirect idiom, `raise web.HTTPFound(url)`."""
    from aiohttp import web

    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    answer = {"Location": BARE_TARGET, **headers}

    async def returned(request: web.Request) -> web.Response:
        return web.Response(status=302, headers=answer)

    async def raised(request: web.Request) -> web.Response:
        raise web.HTTPFound(BARE_TARGET, headers=headers)

    app = web.Application()
    app.router.add_get("/j/{token}/join", returned if style == "return" else raised)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# -- the load generator (its own process) ------------------------------------------------------
class Load:
    """Keep-alive HTTP/1.1 GETs on `clients` connections, one request in flight on each."""

    def __init__(self, host: str, port: int, paths: list[str], clients: int, warmup_s: float, measure_s: float,
                 ready_file: str | None = None) -> None:
        self.host, self.port = host, port
        self.requests = [f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: forumbridge-bench\r\n\r\n".encode()
                         for p in paths]
        self.clients = clients
        self.ready_file = ready_file
        self.warmup_s, self.measure_s = warmup_s, measure_s
        self.rng = random.Random(os.getpid())
        self.statuses: dict[str, int] = {}  # every answer, warm-up included
        self.window: dict[str, int] = {}  # answers completed inside the measured window
        self.latencies: list[float] = []  # of the measured window, seconds
        self.errors: list[str] = []
        self.t0 = 0.0
        self.stopping = False
        self.open = 0
        self.all_closed = asyncio.Event()

    def next_request(self) -> bytes:
        return self.requests[self.rng.randrange(len(self.requests))]

    def answered(self, status: str, started: float, ended: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        since = ended - self.t0
        if self.warmup_s <= since < self.warmup_s + self.measure_s:
            self.window[status] = self.window.get(status, 0) + 1
            self.latencies.append(ended - started)
        if since >= self.warmup_s + self.measure_s:
            self.stopping = True

    def closed(self) -> None:
        self.open -= 1
        if self.open <= 0:
            self.all_closed.set()

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        conns = []
        for _ in range(self.clients):
            try:
                _, proto = await loop.create_connection(lambda: _Client(self), self.host, self.port)
            except OSError as exc:
                self.errors.append(f"cannot connect: {exc}")
                continue
            conns.append(proto)
        self.open = len(conns)
        if not conns:
            self.all_closed.set()
        if self.ready_file:
            Path(self.ready_file).touch()
        cpu0 = time.process_time()
        self.t0 = time.perf_counter()
        for c in conns:
            c.send()
        try:
            await asyncio.wait_for(self.all_closed.wait(), self.warmup_s + self.measure_s + 60)
        except asyncio.TimeoutError:
            self.errors.append("connections still open 60 s after the end")
        elapsed = time.perf_counter() - self.t0
        cpu = time.process_time() - cpu0
        ok = self.window.get("302", 0)
        return {
            "statuses": self.statuses, "window": self.window, "window_s": self.measure_s, "elapsed_s": elapsed,
            "per_s": ok / self.measure_s, "p50_ms": pct(self.latencies, 50) * 1000,
            "p99_ms": pct(self.latencies, 99) * 1000, "errors": self.errors[:20], "error_count": len(self.errors),
            "cpu_s": cpu, "answers": sum(self.statuses.values()),
        }


class _Client(asyncio.Protocol):
    def __init__(self, load: Load) -> None:
        self.load = load
        self.transport: Any = None
        self.buf = b""
        self.need = -1
        self.status = ""
        self.started = 0.0
        self.busy = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def send(self) -> None:
        if self.load.stopping:
            self.transport.close()
            return
        self.buf, self.need, self.busy = b"", -1, True
        self.started = time.perf_counter()
        self.transport.write(self.load.next_request())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            self.status = head[9:12].decode()
            at = head.find(b"\r\ncontent-length:")
            length = 0
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17:stop if stop > 0 else None])
            self.need = end + 4 + length
        if len(self.buf) >= self.need:
            self.busy = False
            self.load.answered(self.status, self.started, time.perf_counter())
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy:
            self.load.errors.append(f"connection lost during a request: {exc}")
            self.load.statuses["lost"] = self.load.statuses.get("lost", 0) + 1
        self.load.closed()


def run_load(args: argparse.Namespace) -> None:
    paths = json.loads(Path(args.paths).read_text())
    url = urlsplit(args.load)
    load = Load(url.hostname or "127.0.0.1", url.port or 80, paths, args.clients, args.warmup, args.measure,
                args.ready_file)
    print(json.dumps(asyncio.run(load.run())), flush=True)


# -- driving it ------------------------------------------------------------------------------
class Generator:
    """The load generator subprocess, one per phase."""

    def __init__(self, paths_file: Path, clients: int) -> None:
        self.paths_file = paths_file
        self.clients = clients

    def start(self, base: str, warmup_s: float, measure_s: float, ready_file: Path | None = None) -> subprocess.Popen:
        extra = ["--ready-file", str(ready_file)] if ready_file else []
        return subprocess.Popen(
            [sys.executable, __file__, "--load", base, "--paths", str(self.paths_file), "--clients", str(self.clients),
             "--warmup", str(warmup_s), "--measure", str(measure_s), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )

    async def finish(self, proc: subprocess.Popen, timeout_s: float = 120) -> dict[str, Any]:
        started = time.monotonic()
        while proc.poll() is None and time.monotonic() - started < timeout_s:
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise BenchError(f"the load generator failed ({proc.returncode}): {err.decode()[-2000:]}")
        return json.loads(out.decode().strip().splitlines()[-1])

    async def phase(self, base: str, pids: list[int], warmup_s: float, measure_s: float) -> dict[str, Any]:
        cpu0 = [proc_cpu_s(p) for p in pids]
        proc = self.start(base, warmup_s, measure_s)
        result = await self.finish(proc)
        result["server_cpu_s"] = sum(proc_cpu_s(p) for p in pids) - sum(cpu0)
        return result


class BareServer:
    def __init__(self, style: str) -> None:
        self.style = style
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    async def start(self, http: aiohttp.ClientSession) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-bare", str(self.port), "--style", self.style],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(300):
            if self.proc.poll() is not None:
                raise BenchError(f"the bare server exited: {self.proc.stderr.read().decode()[-1000:]}")  # type: ignore[union-attr]
            try:
                async with http.get(self.base + "/j/x/join", allow_redirects=False) as r:
                    if r.status == 302:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise BenchError("the bare server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


# -- one database ---------------------------------------------------------------------------
@dataclass
class Result:
    db: str
    plan: dict[str, Any]
    server_version: str = ""
    durability: str = ""
    setup_s: float = 0.0
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)  # TARGETS name -> combined figures
    phases: list[dict[str, Any]] = field(default_factory=list)
    rows: int | None = None
    redirects: int | None = None
    crash: dict[str, Any] = field(default_factory=dict)
    load_before: float | None = None
    load_after: float | None = None
    problems: list[str] = field(default_factory=list)
    skipped: str = ""


async def invite(api: Api, meeting_id: str, count: int) -> list[str]:
    """`count` people invited remotely; their join tokens."""
    tokens: list[str] = []
    numbers = iter(range(count))

    async def worker() -> None:
        for i in numbers:
            person = await api.call("POST", "/api/v1/people", {
                "name": f"Deltagare {i:04d} Åström", "email": f"deltagare{i:04d}@region.example"})
            inv = await api.call("POST", f"/api/v1/meetings/{meeting_id}/invitations",
                                 {"person_id": person["id"], "mode": "remote"})
            tokens.append(urlsplit(inv["join_url"]).path.rsplit("/", 1)[1])

    await asyncio.gather(*(worker() for _ in range(4)))
    return tokens


async def wait_ready(url: str, api: Api, meeting_id: str, timeout_s: float = 180) -> None:
    """Until the conference is active and the outbox has nothing left to do (the invitation mails are sent)."""
    engine = create_async_engine(url)
    jobs = m.OutboxJob.__table__
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            meeting = await api.call("GET", f"/api/v1/meetings/{meeting_id}")
            async with engine.connect() as conn:
                busy = (await conn.execute(select(func.count()).select_from(jobs).where(
                    jobs.c.status.in_(["pending", "running"])))).scalar_one()
                failed = (await conn.execute(select(func.count()).select_from(jobs).where(
                    jobs.c.status == "failed"))).scalar_one()
            if failed:
                raise BenchError(f"{failed} outbox jobs failed")
            if (meeting.get("conference") or {}).get("status") == "active" and busy == 0:
                return
            await asyncio.sleep(0.25)
    finally:
        await engine.dispose()
    raise BenchError(f"the conference was not active or the outbox not idle within {timeout_s:.0f} s")


async def count_opens(url: str) -> int:
    engine = create_async_engine(url)
    ev = m.AttendanceEvent.__table__
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(
                select(func.count()).select_from(ev).where(ev.c.kind == "link_opened"))).scalar_one())
    finally:
        await engine.dispose()


def combine(phases: list[dict[str, Any]], lat: dict[str, list[float]] | None = None) -> dict[str, Any]:
    ok = sum(p["window"].get("302", 0) for p in phases)
    seconds = sum(p["window_s"] for p in phases)
    answers = sum(p["answers"] for p in phases)
    errors = sum(n for p in phases for s, n in p["statuses"].items() if s != "302")
    return {
        "per_s": ok / seconds if seconds else float("nan"),
        "per_s_rounds": [p["per_s"] for p in phases],
        "p50_ms": pct([p["p50_ms"] for p in phases], 50),
        "p99_ms": max(p["p99_ms"] for p in phases),
        "p50_ms_rounds": [p["p50_ms"] for p in phases],
        "p99_ms_rounds": [p["p99_ms"] for p in phases],
        "errors": errors,
        "redirects": sum(p["statuses"].get("302", 0) for p in phases),
        "server_cpu_us": sum(p["server_cpu_s"] for p in phases) * 1e6 / max(answers, 1),
        "client_cpu_us": sum(p["cpu_s"] for p in phases) * 1e6 / max(answers, 1),
        "client_cpu_share": sum(p["cpu_s"] for p in phases) / max(sum(p["elapsed_s"] for p in phases), 1e-9),
    }


async def run_db(kind: str, plan: Plan, sink: SmtpSink, crash: bool, profiler: Profiler) -> Result:
    result = Result(db=kind, plan=asdict(plan))
    service: Service | None = None
    bares = {name: BareServer(style) for name, style in BARES.items()}
    pg_name = ""
    with tempfile.TemporaryDirectory(prefix=f"forumbridge-bench-join-{kind}-") as tmp:
        folder = Path(tmp)
        try:
            if kind == "postgresql":
                try:
                    result.server_version = "PostgreSQL " + (await pg_admin("SHOW server_version")).split()[0]
                    result.durability = (f"fsync={await pg_admin('SHOW fsync')}, "
                                         f"synchronous_commit={await pg_admin('SHOW synchronous_commit')}")
                except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
                    result.skipped = f"PostgreSQL not reachable at {PG_ADMIN_URL} ({type(exc).__name__}: {exc})"
                    return result
            else:
                result.server_version = f"SQLite {sqlite3.sqlite_version}"
                result.durability = "WAL, synchronous=NORMAL"
            url, pg_name = await new_database(kind, folder, "join")
            env = {f"FORUMBRIDGE_VIDEO__JITSI__{k}": v for k, v in JITSI.items()}
            env.update(sink.env())
            service = Service(url, folder / "join", env)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
                started = time.perf_counter()
                log(f"{kind}: starting the service on {service.base} and the bare servers")
                await asyncio.gather(service.start(http), *(b.start(http) for b in bares.values()))
                api = Api(http, service, await service.token())
                forum = await api.call("POST", "/api/v1/forums", {
                    "name": "Forum för regional hållbar tillväxt och attraktivitet", "kind": "officials"})
                now = datetime.now(UTC).replace(second=0, microsecond=0)
                meeting = await api.call("POST", "/api/v1/meetings", {
                    "forum_id": forum["id"], "title": "Forummöte på distans", "timezone": "Europe/Stockholm",
                    "starts_at": (now - timedelta(hours=1)).isoformat(), "ends_at": (now + timedelta(hours=3)).isoformat(),
                    "conference": {"provider": "jitsi"}})
                log(f"{kind}: inviting {plan.invitations} people")
                tokens = await invite(api, meeting["id"], plan.invitations)
                await wait_ready(url, api, meeting["id"])
                # One join by hand: the service's answer is what the benchmark expects.
                async with http.get(f"{service.base}/j/{tokens[0]}/join", allow_redirects=False) as r:
                    if r.status != 302 or not r.headers.get("Location", "").startswith(JITSI["URL"] + "/"):
                        raise BenchError(f"a join answered {r.status} {r.headers.get('Location')!r}: {await r.text()}")
                redirects = 1
                result.setup_s = time.perf_counter() - started
            paths_file = folder / "paths.json"
            paths_file.write_text(json.dumps([f"/j/{t}/join" for t in tokens]))
            gen = Generator(paths_file, plan.clients)
            targets = {"join": (service.base, [service.pid])}
            targets.update({name: (b.base, [b.proc.pid]) for name, b in bares.items()})  # type: ignore[union-attr]
            log(f"{kind}: {plan.rounds} rounds of {plan.measure_s:.0f} s per target, {plan.clients} clients")
            result.load_before = os.getloadavg()[0]
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in TARGETS}
            order = list(TARGETS)
            for i in range(plan.rounds):
                for name in (order if i % 2 == 0 else order[::-1]):
                    base, pids = targets[name]
                    spy = profiler.start(pids[0], f"{kind}-{name}") if i == 0 else None
                    phase = await gen.phase(base, pids, plan.warmup_s, plan.measure_s)
                    await profiler.stop(spy)
                    phase.update(target=name, round=i)
                    runs[name].append(phase)
                    result.phases.append(phase)
                    log(f"  {name:>10}: {phase['per_s']:8.0f} req/s  p50 {phase['p50_ms']:6.2f} ms  "
                        f"p99 {phase['p99_ms']:7.2f} ms  statuses {phase['statuses']}")
            result.load_after = os.getloadavg()[0]
            result.targets = {name: combine(phases) for name, phases in runs.items()}
            for name, figures in result.targets.items():
                if figures["errors"]:
                    result.problems.append(f"{name}: {figures['errors']} answers other than 302: "
                                           f"{[p['statuses'] for p in runs[name]]}")
            redirects += result.targets["join"]["redirects"]
            result.redirects, result.rows = redirects, await count_opens(url)
            if result.rows != redirects:
                result.problems.append(f"{result.rows} link_opened rows for {redirects} redirects")
            errors = service.log_errors()
            if errors:
                result.problems.append(f"{errors} error lines in the service log:\n{service.log_tail()}")
            if crash:
                result.crash = await crash_check(gen, service, url, plan, result.rows)
                if result.crash["rows_after_kill"] < result.crash["redirects"]:
                    result.problems.append(f"crash check: {result.crash['redirects']} redirects received but only "
                                           f"{result.crash['rows_after_kill']} rows after SIGKILL")
        except BenchError as exc:
            result.problems.append(str(exc))
        finally:
            for b in bares.values():
                b.stop()
            if service is not None:
                service.kill()
            await drop_database(pg_name)
    return result


async def crash_check(gen: Generator, service: Service, url: str, plan: Plan, rows_before: int) -> dict[str, Any]:
    """Joins under load, then SIGKILL: every 302 received must have its row (no write-behind)."""
    log(f"crash check: load for {plan.crash_s:.1f} s, then SIGKILL of the service")
    ready = gen.paths_file.with_name("crash-ready")
    proc = gen.start(service.base, 0.0, 600.0, ready)
    for _ in range(600):
        if ready.exists() or proc.poll() is not None:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(plan.crash_s)
    os.kill(service.pid, signal.SIGKILL)
    service.proc.wait()  # type: ignore[union-attr]
    result = await gen.finish(proc)
    rows = await count_opens(url) - rows_before
    out = {"redirects": result["statuses"].get("302", 0), "rows_after_kill": rows,
           "lost_in_flight": result["statuses"].get("lost", 0)}
    log(f"crash check: {out['redirects']} redirects received, {rows} rows after the kill, "
        f"{out['lost_in_flight']} requests in flight lost")
    return out


# -- the report -------------------------------------------------------------------------------
def report(results: list[Result], plan: Plan, quick: bool, started: datetime, elapsed: float) -> str:
    cols = [r for r in results if not r.skipped and r.targets]

    def f(v: Any, spec: str = ".2f") -> str:
        return "-" if v is None or v != v else format(v, spec)

    def t(r: Result, name: str, key: str) -> Any:
        return r.targets.get(name, {}).get(key)

    def ratio(r: Result, bare: str) -> float | None:
        join, base = t(r, "join", "per_s"), t(r, bare, "per_s")
        return join / base if join and base else None

    def each(name: str, key: str, spec: str) -> list[str]:
        return [f(t(r, name, key), spec) for r in cols]

    rows: list[tuple[str, list[str]]] = [
        ("database", [r.server_version for r in cols]),
        ("durability settings", [r.durability for r in cols]),
        ("GET /j/{token}/join, req/s", each("join", "per_s", ",.0f")),
        ("bare redirect (returns a Response), req/s", each("bare", "per_s", ",.0f")),
        (f"  ratio join / bare (goal >= {GOAL_RATIO})", [f(ratio(r, "bare")) for r in cols]),
        ("bare redirect (raise web.HTTPFound), req/s", each("bare_raise", "per_s", ",.0f")),
        ("  ratio join / bare_raise", [f(ratio(r, "bare_raise")) for r in cols]),
        *[(f"  req/s per round, {name}", [" ".join(f(x, ".0f") for x in t(r, name, "per_s_rounds") or [])
                                          for r in cols]) for name in TARGETS],
        *[(f"{name} latency p50 / p99 ms", [f"{f(t(r, name, 'p50_ms'))} / {f(t(r, name, 'p99_ms'))}" for r in cols])
          for name in TARGETS],
        ("answers other than 302: join / bare / bare_raise", [
            " / ".join(str(t(r, name, "errors")) for name in TARGETS) for r in cols]),
        *[(f"{name}: server CPU us per request", each(name, "server_cpu_us", ".0f")) for name in TARGETS],
        ("load generator CPU us per request: join / bare", [
            f"{f(t(r, 'join', 'client_cpu_us'), '.0f')} / {f(t(r, 'bare', 'client_cpu_us'), '.0f')}" for r in cols]),
        ("load generator busy share: join / bare", [
            f"{f(t(r, 'join', 'client_cpu_share'))} / {f(t(r, 'bare', 'client_cpu_share'))}" for r in cols]),
        ("load average before / after", [
            f"{f(r.load_before)} / {f(r.load_after)}" if r.load_before is not None else "-" for r in cols]),
        ("link_opened rows = 302s the service sent", [
            f"{r.rows:,} = {r.redirects:,}" if r.rows == r.redirects else f"{r.rows} != {r.redirects}" for r in cols]),
        ("crash: 302s received before SIGKILL <= rows", [
            f"{r.crash['redirects']:,} <= {r.crash['rows_after_kill']:,}" if r.crash else "-" for r in cols]),
        ("setup s (service, meeting, invitations, mail)", [f(r.setup_s, ".1f") for r in cols]),
    ]
    lines = [
        f"forumbridge join benchmark ({'quick' if quick else 'full'} run), {started:%Y-%m-%d %H:%M} UTC",
        machine(),
        f"run time {elapsed:.0f} s. {plan.invitations} invitations, {plan.clients} keep-alive connections, "
        f"{plan.rounds} rounds x {plan.measure_s:.0f} s per target after {plan.warmup_s:.1f} s warm-up each, "
        "the order of the targets alternating.",
    ]
    if cols:
        lines.append("")
        lines += table([r.db for r in cols], rows)
    for r in results:
        if r.skipped:
            lines.append(f"\n{r.db}: skipped: {r.skipped}")
    for r in cols:
        value = ratio(r, "bare")
        if value is not None and value < GOAL_RATIO:
            lines.append(f"\n{r.db}: ratio {value:.2f} to the bare redirect is under the goal of {GOAL_RATIO}")
    for r in results:
        for problem in r.problems[:10]:
            lines.append(f"\n{r.db}: PROBLEM: {problem}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    if args.invitations:
        plan = Plan(**{**asdict(plan), "invitations": args.invitations})
    if args.measure:
        plan = Plan(**{**asdict(plan), "measure_s": args.measure})
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    results: list[Result] = []
    sink = SmtpSink()
    profiler = Profiler(args.profile, f"join-{started_at:%Y%m%dT%H%M%S}", gil=True)

    async def all_dbs() -> None:
        await sink.start()
        for kind in kinds:
            results.append(await run_db(kind, plan, sink, crash=not args.no_crash, profiler=profiler))

    try:
        await asyncio.wait_for(all_dbs(), TIME_LIMIT_S)
    except asyncio.TimeoutError:
        results.append(Result(db="(time limit)", plan=asdict(plan), problems=[f"stopped after {TIME_LIMIT_S} s"]))
    except BenchError as exc:
        results.append(Result(db="(setup)", plan=asdict(plan), problems=[str(exc)]))
    finally:
        sink.stop()
    elapsed = time.perf_counter() - started
    print(report(results, plan, args.quick, started_at, elapsed), flush=True)
    write_results("join", started_at, args.quick, elapsed, {"results": [asdict(r) for r in results]})
    for name in profiler.files:
        print(f"profile (py-spy raw, collapsed stacks): {name}", flush=True)
    return 1 if any(r.problems or r.skipped for r in results) else 0


def main() -> int:
    p = argparse.ArgumentParser(description="Join redirects per second of the real service against a bare aiohttp redirect.")
    p.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--invitations", type=int, help="invitations (distinct tokens) to spread the joins over")
    p.add_argument("--measure", type=float, help="seconds of each measured phase")
    p.add_argument("--profile", action="store_true",
                   help="py-spy record the service and the bare server during the first round (bench/results/)")
    p.add_argument("--no-crash", action="store_true", help="skip the SIGKILL check at the end")
    # The two helper processes: the bare redirect server and the load generator.
    p.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--style", choices=["return", "raise"], default="return", help=argparse.SUPPRESS)
    p.add_argument("--load", metavar="BASE_URL", help=argparse.SUPPRESS)
    p.add_argument("--paths", help=argparse.SUPPRESS)
    p.add_argument("--ready-file", help=argparse.SUPPRESS)
    p.add_argument("--clients", type=int, default=FULL.clients, help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=float, default=FULL.warmup_s, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare, args.style)
        return 0
    if args.load:
        args.measure = args.measure or FULL.measure_s
        run_load(args)
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
