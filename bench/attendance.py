"""Attendance report benchmark: GET /api/v1/meetings/{id}/attendance of the real service, at two sizes.

For each database (SQLite, then PostgreSQL), in one run:

1. start the service (`forumbridge serve --migrate` as a subprocess on a free loopback port, its own
   SQLite file or a fresh PostgreSQL database forumbridge_bench_*, dropped afterwards) with a Jitsi
   provider configured through FORUMBRIDGE_VIDEO__JITSI__* (a provider that reports presence);
2. create through the API a forum, a site and two meetings of the same shape: they ended half an
   hour ago, have 10 sessions of 30 minutes back to back and a Jitsi conference;
3. write straight into the database (bulk SQLAlchemy Core INSERTs through the model tables) the
   invited people: `--people` (200) for the first meeting and twice as many for the second, each
   with an invitation (four in five remote, one in five in the room at the site; half expected at
   every session, half at 3 to 5 of them) and 10 join/leave events (5 joined/left pairs, source
   jitsi, each with its own dedup key, at random whole minutes from 10 minutes before the start to
   10 minutes after the end, so some begin before a session and some run past it);
4. time the report of each meeting, one request at a time, alternating between the two meetings
   (and which goes first) so that both sizes see the same machine load: a few unmeasured requests,
   then `--runs` measured ones each, as JSON and as CSV (Accept: text/csv); the median of each
   and the ratio of the doubled size to the first (goal <= 2.2, that is linear);
5. check every row of both reports against minutes the benchmark computes on its own from the
   events it wrote, and the per-session summary against the rows.

Timings are printed, never asserted: the machine is shared. The exit status is non-zero only when
something functional went wrong (a service did not start, a request got an unexpected answer, a
report differs from what the events say, a database was not reachable).

    ./dev bench attendance                  # full run, both databases
    ./dev bench attendance --quick          # smoke run with small counts
    ./dev bench attendance --db sqlite      # one database
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import random
import statistics
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
from sqlalchemy import insert  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from bench.common import (  # noqa: E402
    write_results, Api, server_version, BenchError, Service, drop_database, log, machine, new_database,
    proc_cpu_s, table,
)
from service.db import models as m  # noqa: E402

TIME_LIMIT_S = 540  # the whole run, both databases
GOAL_RATIO = 2.2
UTC = timezone.utc
ZONE = "Europe/Stockholm"
SESSIONS = 10
SESSION = timedelta(minutes=30)
EVENTS = 10  # per invitation: 5 joined/left pairs
JITSI = {
    "URL": "https://meet.bench.test",
    "APP_ID": "forumbridge",
    "APP_SECRET": "bench-" + "s" * 40,
    "AUDIENCE": "forumbridge",
    "SUBJECT": "meet.bench.test",
    "WEBHOOK_TOKEN": "bench-webhook-token-0123456789",
}


@dataclass(frozen=True)
class Plan:
    people: int = 200  # invited to the first meeting; the second has twice as many
    runs: int = 15  # measured reports per meeting and format
    warmup: int = 3  # unmeasured reports per meeting first


FULL = Plan()
QUICK = Plan(people=50, runs=5, warmup=1)


# -- what the benchmark writes, and what the report must say about it ----------------------------
@dataclass
class Invited:
    invitation_id: uuid.UUID
    name: str
    mode: str
    expected: set[int] | None  # session numbers; None: every session
    spans: list[tuple[datetime, datetime]]  # joined .. left, disjoint


@dataclass
class Meeting:
    id: str
    starts_at: datetime
    sessions: list[dict[str, Any]]  # as the API gave them, in time order
    invited: list[Invited] = field(default_factory=list)


def plan_people(meeting: Meeting, count: int, rng: random.Random, label: str) -> None:
    """`count` invitations with their presence: 5 disjoint joined/left spans at whole minutes."""
    first = meeting.starts_at - timedelta(minutes=10)
    minutes = int((SESSIONS * SESSION).total_seconds() // 60) + 20
    for i in range(count):
        marks = sorted(rng.sample(range(minutes + 1), EVENTS))
        spans = [(first + timedelta(minutes=marks[k]), first + timedelta(minutes=marks[k + 1]))
                 for k in range(0, EVENTS, 2)]
        expected = None if i % 2 == 0 else set(rng.sample(range(SESSIONS), rng.randint(3, 5)))
        meeting.invited.append(Invited(uuid.uuid4(), f"Deltagare {label}{i:04d} Åkesson",
                                       "in_room" if i % 5 == 0 else "remote", expected, spans))


def expected_minutes(person: Invited, start: datetime, end: datetime) -> float:
    seconds = sum(max(0.0, (min(e, end) - max(s, start)).total_seconds()) for s, e in person.spans)
    return round(seconds / 60, 1)


async def bulk_load(url: str, meeting: Meeting, site_id: str) -> float:
    """People, invitations and events of `meeting`, straight into the database; rows per second."""
    engine = create_async_engine(url, connect_args={"timeout": 60} if url.startswith("sqlite") else {})
    stamp = datetime.now(UTC)
    session_ids = [s["id"] for s in meeting.sessions]
    people, invitations, events = [], [], []
    for person in meeting.invited:
        person_id = uuid.uuid4()
        email = f"{person.invitation_id.hex[:12]}@region.example"
        people.append({"id": person_id, "name": person.name, "email": email, "email_key": email,
                       "organisation": "Region Jämtland Härjedalen", "created_at": stamp, "updated_at": stamp})
        invitations.append({
            "id": person.invitation_id, "meeting_id": uuid.UUID(meeting.id), "person_id": person_id,
            "mode": person.mode, "site_id": uuid.UUID(site_id) if person.mode == "in_room" else None,
            "session_ids": None if person.expected is None else [session_ids[k] for k in sorted(person.expected)],
            "rsvp": "accepted", "token_generation": 1, "created_at": stamp, "updated_at": stamp})
        for k, (joined, left) in enumerate(person.spans):
            for kind, at in (("joined", joined), ("left", left)):
                events.append({"id": uuid.uuid4(), "invitation_id": person.invitation_id, "kind": kind, "at": at,
                               "source": "jitsi", "dedup_key": f"bench:{person.invitation_id}:{k}:{kind}",
                               "recorded_at": stamp})
    started = time.perf_counter()
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(m.Person.__table__), people)
            await conn.execute(insert(m.Invitation.__table__), invitations)
            for chunk in range(0, len(events), 2_000):
                await conn.execute(insert(m.AttendanceEvent.__table__), events[chunk:chunk + 2_000])
    finally:
        await engine.dispose()
    return (len(people) + len(invitations) + len(events)) / (time.perf_counter() - started)


def check_report(meeting: Meeting, report: dict[str, Any], csv_body: bytes) -> list[str]:
    """Differences between the report and the events the benchmark wrote (an empty list: none)."""
    problems: list[str] = []
    rows = report["rows"]
    if len(rows) != len(meeting.invited) * SESSIONS:
        problems.append(f"{len(rows)} rows, expected {len(meeting.invited) * SESSIONS}")
    by_key = {(r["invitation_id"], r["session_id"]): r for r in rows}
    starts = [datetime.fromisoformat(s["starts_at"]) for s in meeting.sessions]
    ends = [datetime.fromisoformat(s["ends_at"]) for s in meeting.sessions]
    for person in meeting.invited:
        for k, session in enumerate(meeting.sessions):
            row = by_key.get((str(person.invitation_id), session["id"]))
            want = expected_minutes(person, starts[k], ends[k])
            expected = person.expected is None or k in person.expected
            if row is None:
                problems.append(f"no row for {person.name} in session {k}")
            elif (row["minutes"], row["present"], row["expected"]) != (want, want > 0, expected):
                problems.append(f"{person.name}, session {k}: {row['minutes']} min present={row['present']} "
                                f"expected={row['expected']}, the events say {want} min, expected={expected}")
            if len(problems) > 10:
                return problems
    for summary in report["sessions"]:
        these = [r for r in rows if r["session_id"] == summary["session_id"]]
        want = {"expected": sum(r["expected"] for r in these),
                "present": sum(r["expected"] and r["present"] for r in these),
                "remote_present": sum(r["expected"] and r["present"] and r["mode"] == "remote" for r in these)}
        if {k: summary[k] for k in want} != want:
            problems.append(f"summary of {summary['session']}: {summary}, the rows say {want}")
    lines = list(csv.DictReader(io.StringIO(csv_body.decode("utf-8-sig"))))
    if len(lines) != len(rows):
        problems.append(f"the CSV has {len(lines)} rows, the JSON {len(rows)}")
    return problems


# -- one database ---------------------------------------------------------------------------
@dataclass
class Result:
    db: str
    plan: dict[str, Any]
    server_version: str = ""
    bulk_rows_per_s: float | None = None
    times_ms: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # format -> people -> ms per run
    sizes: dict[str, int] = field(default_factory=dict)  # people -> bytes of the JSON report
    server_cpu_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # format -> people -> per report
    load_before: float | None = None
    load_after: float | None = None
    problems: list[str] = field(default_factory=list)
    skipped: str = ""


class ReportApi(Api):
    async def report(self, meeting_id: str, fmt: str) -> tuple[float, bytes]:
        """One report, timed until its last byte arrived: (milliseconds, body)."""
        headers = {**self.headers, "Accept": "text/csv" if fmt == "csv" else "application/json"}
        started = time.perf_counter()
        async with self.http.get(f"{self.service.base}/api/v1/meetings/{meeting_id}/attendance", headers=headers) as r:
            body = await r.read()
            elapsed = (time.perf_counter() - started) * 1000
            if r.status != 200:
                raise BenchError(f"attendance report -> {r.status}: {body[:300]!r}")
        return elapsed, body


async def make_meeting(api: ReportApi, forum_id: str, end: datetime, title: str) -> Meeting:
    start = end - SESSIONS * SESSION
    sessions = [{"title": f"Pass {k + 1}: regional utveckling", "starts_at": (start + k * SESSION).isoformat(),
                 "ends_at": (start + (k + 1) * SESSION).isoformat()} for k in range(SESSIONS)]
    created = await api.call("POST", "/api/v1/meetings", {
        "forum_id": forum_id, "title": title, "timezone": ZONE, "starts_at": start.isoformat(),
        "ends_at": end.isoformat(), "conference": {"provider": "jitsi"}, "sessions": sessions})
    ordered = sorted(created["sessions"], key=lambda s: s["starts_at"])
    return Meeting(created["id"], start, ordered)


async def run_db(kind: str, plan: Plan) -> Result:
    result = Result(db=kind, plan=asdict(plan))
    service: Service | None = None
    pg_name = ""
    rng = random.Random(20270405)
    with tempfile.TemporaryDirectory(prefix=f"forumbridge-bench-attendance-{kind}-") as tmp:
        folder = Path(tmp)
        try:
            result.server_version, result.skipped = await server_version(kind)
            if result.skipped:
                return result
            url, pg_name = await new_database(kind, folder, "attendance")
            env = {f"FORUMBRIDGE_VIDEO__JITSI__{k}": v for k, v in JITSI.items()}
            service = Service(url, folder / "attendance", env)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
                log(f"{kind}: starting the service on {service.base}")
                await service.start(http)
                api = ReportApi(http, service, await service.token())
                forum = await api.call("POST", "/api/v1/forums", {
                    "name": "Forum för regional hållbar tillväxt och attraktivitet", "kind": "officials"})
                site = await api.call("POST", "/api/v1/sites", {"name": "Regionens hus Östersund", "city": "Östersund"})
                end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
                sizes = (plan.people, 2 * plan.people)
                meetings = {}
                for n in sizes:
                    meeting = await make_meeting(api, forum["id"], end, f"Forummöte med {n} inbjudna")
                    plan_people(meeting, n, rng, f"{n}-")
                    meetings[n] = meeting
                total_rows, seconds = 0, 0.0
                for n, meeting in meetings.items():
                    log(f"{kind}: writing {n} people, invitations and {n * EVENTS:,} events")
                    rows = 2 * n + n * EVENTS
                    rate = await bulk_load(url, meeting, site["id"])
                    total_rows, seconds = total_rows + rows, seconds + rows / rate
                result.bulk_rows_per_s = total_rows / seconds
                log(f"{kind}: timing the reports, alternating between {sizes[0]} and {sizes[1]} people")
                result.load_before = os.getloadavg()[0]
                for fmt in ("json", "csv"):
                    result.times_ms[fmt] = {str(n): [] for n in sizes}
                    cpu = {str(n): 0.0 for n in sizes}
                    for i in range(plan.warmup + plan.runs):
                        for n in (sizes if i % 2 == 0 else sizes[::-1]):
                            cpu0 = proc_cpu_s(service.pid)
                            elapsed, body = await api.report(meetings[n].id, fmt)
                            if i >= plan.warmup:
                                result.times_ms[fmt][str(n)].append(elapsed)
                                cpu[str(n)] += proc_cpu_s(service.pid) - cpu0
                                if fmt == "json":
                                    result.sizes[str(n)] = len(body)
                    result.server_cpu_ms[fmt] = {k: v * 1000 / plan.runs for k, v in cpu.items()}
                    medians = {k: statistics.median(v) for k, v in result.times_ms[fmt].items()}
                    log(f"  {fmt}: median {medians[str(sizes[0])]:.1f} ms ({sizes[0]}) and "
                        f"{medians[str(sizes[1])]:.1f} ms ({sizes[1]}), ratio "
                        f"{medians[str(sizes[1])] / medians[str(sizes[0])]:.2f}")
                result.load_after = os.getloadavg()[0]
                for n, meeting in meetings.items():
                    _, body = await api.report(meeting.id, "json")
                    _, csv_body = await api.report(meeting.id, "csv")
                    for problem in check_report(meeting, json.loads(body), csv_body):
                        result.problems.append(f"{n} people: {problem}")
            code, _ = await service.stop()
            if code != 0:
                result.problems.append(f"the service exited with {code} on SIGTERM:\n{service.log_tail()}")
            errors = service.log_errors()
            if errors:
                result.problems.append(f"{errors} error lines in the service log:\n{service.log_tail()}")
        except BenchError as exc:
            result.problems.append(str(exc))
        finally:
            if service is not None:
                service.kill()
            await drop_database(pg_name)
    return result


# -- the report -------------------------------------------------------------------------------
def report(results: list[Result], plan: Plan, quick: bool, started: datetime, elapsed: float) -> str:
    cols = [r for r in results if not r.skipped and r.times_ms]
    small, large = str(plan.people), str(2 * plan.people)

    def med(r: Result, fmt: str, n: str) -> float | None:
        values = r.times_ms.get(fmt, {}).get(n)
        return statistics.median(values) if values else None

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    def ratio(r: Result, fmt: str) -> str:
        a, b = med(r, fmt, small), med(r, fmt, large)
        return f"{b / a:.2f}" if a and b else "-"

    rows: list[tuple[str, list[str]]] = [("database", [r.server_version for r in cols])]
    for fmt, label in (("json", "JSON"), ("csv", "CSV")):
        rows += [
            (f"{label} report, median ms: {small} people", [ms(med(r, fmt, small)) for r in cols]),
            (f"{label} report, median ms: {large} people", [ms(med(r, fmt, large)) for r in cols]),
            (f"  ratio {large}/{small} (goal <= {GOAL_RATIO})", [ratio(r, fmt) for r in cols]),
            ("  min / max ms, small; large", [
                f"{ms(min(r.times_ms[fmt][small]))}/{ms(max(r.times_ms[fmt][small]))}; "
                f"{ms(min(r.times_ms[fmt][large]))}/{ms(max(r.times_ms[fmt][large]))}" for r in cols]),
            ("  service CPU ms per report: small / large", [
                f"{ms(r.server_cpu_ms[fmt][small])} / {ms(r.server_cpu_ms[fmt][large])}" for r in cols]),
        ]
    rows += [
        ("rows per report: small / large", [f"{int(small) * SESSIONS:,} / {int(large) * SESSIONS:,}" for _ in cols]),
        ("JSON bytes: small / large", [f"{r.sizes.get(small, 0):,} / {r.sizes.get(large, 0):,}" for r in cols]),
        ("bulk load, rows/s", [f"{r.bulk_rows_per_s:,.0f}" if r.bulk_rows_per_s else "-" for r in cols]),
        ("load average before / after", [
            f"{r.load_before:.2f} / {r.load_after:.2f}" if r.load_before is not None else "-" for r in cols]),
        ("report rows = the events' minutes", ["yes" if not r.problems else "NO" for r in cols]),
    ]
    lines = [
        f"forumbridge attendance benchmark ({'quick' if quick else 'full'} run), {started:%Y-%m-%d %H:%M} UTC",
        machine(),
        f"run time {elapsed:.0f} s. Two meetings of {SESSIONS} sessions, {plan.people} and {2 * plan.people} invited "
        f"people with {EVENTS} join/leave events each; {plan.runs} measured reports per meeting and format after "
        f"{plan.warmup} unmeasured, one at a time, alternating between the meetings.",
    ]
    if cols:
        lines.append("")
        lines += table([r.db for r in cols], rows)
    for r in results:
        if r.skipped:
            lines.append(f"\n{r.db}: skipped: {r.skipped}")
    for r in cols:
        for fmt in ("json", "csv"):
            a, b = med(r, fmt, small), med(r, fmt, large)
            if a and b and b / a > GOAL_RATIO:
                lines.append(f"\n{r.db}: {fmt} ratio {b / a:.2f} is over the goal of {GOAL_RATIO}")
    for r in results:
        for problem in r.problems[:10]:
            lines.append(f"\n{r.db}: PROBLEM: {problem}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    if args.people:
        plan = Plan(**{**asdict(plan), "people": args.people})
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    results: list[Result] = []

    async def all_dbs() -> None:
        for kind in kinds:
            results.append(await run_db(kind, plan))

    try:
        await asyncio.wait_for(all_dbs(), TIME_LIMIT_S)
    except asyncio.TimeoutError:
        results.append(Result(db="(time limit)", plan=asdict(plan), problems=[f"stopped after {TIME_LIMIT_S} s"]))
    elapsed = time.perf_counter() - started
    print(report(results, plan, args.quick, started_at, elapsed), flush=True)
    write_results("attendance", started_at, args.quick, elapsed, {"results": [asdict(r) for r in results]})
    return 1 if any(r.problems or r.skipped for r in results) else 0


def main() -> int:
    p = argparse.ArgumentParser(description="Attendance report time of the real service at two sizes, SQLite and PostgreSQL.")
    p.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--people", type=int, help="people invited to the first meeting (the second has twice as many)")
    return asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
