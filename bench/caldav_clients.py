"""What a CalDAV client can change in Radicale's own work: the same creates, sent in different ways.

The push benchmark (caldav_sync.py) sets the whole service against vdirsyncer, and the two differ by
a few per cent either way from one run to the next. This one takes the service away and asks a
narrower question: for the same objects, how much CPU does Radicale spend, and how long do the
creates take, depending on how they are sent? One Radicale (as tests/support/caldav_servers.py
starts it: loopback, htpasswd auth, storage in a temporary folder) receives rounds of creates into
a new, empty calendar each, the kinds of client taking turns so that drift hits them alike:

- `aiohttp, one at a time`: a bare aiohttp client, PUT with `If-None-Match: *`, the next request when
  the last answer is in: what vdirsyncer does, without vdirsyncer's own work;
- `connector, N in flight`: the service's CalDAV connector (caldav.aio on niquests), N requests at
  once (the outbox runs 8).

The objects are rendered by the service's own `render_shared`, with Swedish titles, in
Europe/Stockholm. Radicale's CPU seconds are read from /proc. Figures are printed, never asserted.

With `--trace`, Radicale runs under bench/radicale_traced.py, which notes each request and each
hold of its storage lock, and a second table shows where each kind's time went inside Radicale:
how long its write lock was held, how much of that hold was off the CPU, and how long the lock
stood free between holds.

    ./dev bench caldav_clients                       # 600 creates per round, 3 rounds of each kind
    ./dev bench caldav_clients --creates 300 --rounds 2 --in-flight 1,2,8
    ./dev bench caldav_clients --trace
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Awaitable, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from connectors.calendar.base import CalendarAccount  # noqa: E402
from connectors.calendar.caldav import CaldavConnector, object_name  # noqa: E402
from service.calendar.ical import Event, render_shared  # noqa: E402
from bench.radicale_traced import TraceSummary, trace_summary  # noqa: E402
from tests.support.caldav_servers import RadicaleServer  # noqa: E402


class TracedRadicale(RadicaleServer):
    """The same Radicale, started through bench/radicale_traced.py."""

    def __init__(self, folder: Path, trace: Path) -> None:
        super().__init__(folder)
        self.trace = trace

    def command(self) -> list[str]:
        return [sys.executable, str(ROOT / "bench" / "radicale_traced.py"), str(self.trace), "--config",
                str(self.folder / "config")]


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rendered(count: int) -> list[tuple[str, bytes]]:
    start = datetime(2031, 1, 7, 8, tzinfo=timezone.utc)
    out = []
    for i in range(count):
        uid = f"{uuid.uuid4()}@forumbridge"
        begins = start + timedelta(hours=2 * i)
        out.append((uid, render_shared(Event(
            uid=uid, sequence=0, status="CONFIRMED", title=f"Forummöte {i}: tillväxt i Östersund och Malmö",
            starts_at=begins, ends_at=begins + timedelta(hours=1), timezone="Europe/Stockholm",
            organizer_name="Forumsekretariatet", organizer_email="forum@tillvaxt.example", dtstamp=start))))
    return out


async def run(creates: int, rounds: int, in_flight: list[int], trace: bool) -> int:
    traced: dict[str, list[TraceSummary]] = {}
    with tempfile.TemporaryDirectory(prefix="forumbridge-bench-") as tmp:
        (Path(tmp) / "radicale").mkdir()
        trace_file = Path(tmp) / "radicale.trace"
        server = TracedRadicale(Path(tmp) / "radicale", trace_file) if trace else RadicaleServer(Path(tmp) / "radicale")
        await asyncio.to_thread(server.start)
        try:
            assert server._process is not None
            pid = server._process.pid
            objects = rendered(creates)
            auth = "Basic " + base64.b64encode(f"{server.username}:{server.password}".encode()).decode()
            connector = CaldavConnector(server.accounts)

            async def one_at_a_time(url: str) -> None:
                async with aiohttp.ClientSession() as http:
                    for uid, data in objects:
                        async with http.put(url + object_name(uid), data=data, headers={
                                "Authorization": auth, "If-None-Match": "*", "Content-Type": "text/calendar"}) as resp:
                            if resp.status not in (201, 204):
                                raise RuntimeError(f"PUT answered {resp.status}")

            def connector_with(n: int) -> Callable[[str], Awaitable[None]]:
                async def send(url: str) -> None:
                    gate = asyncio.Semaphore(n)

                    async def put(uid: str, data: bytes) -> None:
                        async with gate:
                            await connector.put(url, uid, data, None)

                    await asyncio.gather(*(put(uid, data) for uid, data in objects))
                return send

            kinds: dict[str, Callable[[str], Awaitable[None]]] = {"aiohttp, one at a time": one_at_a_time}
            kinds.update({f"connector, {n} in flight": connector_with(n) for n in in_flight})
            await connector_with(max(in_flight))(server.new_calendar())  # warm-up: first contact, imports
            seen: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
            for r in range(rounds):
                for kind, send in kinds.items():
                    url = server.new_calendar()
                    cpu0, started = process_cpu_s(pid), time.perf_counter()
                    await send(url)
                    ended = time.perf_counter()
                    seen[kind].append((ended - started, process_cpu_s(pid) - cpu0))
                    if trace:
                        traced.setdefault(kind, []).append(trace_summary(trace_file, started, ended))
                    print(f"[round {r + 1}/{rounds}] {kind}: {seen[kind][-1][0]:.2f} s, Radicale CPU "
                          f"{seen[kind][-1][1]:.2f} s", flush=True)
            await connector.close()
        finally:
            server.stop()
    base_wall = sum(w for w, _ in seen["aiohttp, one at a time"]) / rounds
    base_cpu = sum(c for _, c in seen["aiohttp, one at a time"]) / rounds
    print(f"\n{creates:,} creates into an empty calendar, {rounds} rounds of each kind, means:")
    print(f"{'client':28s} {'wall s':>8s} {'vs aiohttp':>11s} {'Radicale CPU s':>15s} {'vs aiohttp':>11s}")
    for kind, values in seen.items():
        wall, cpu = sum(w for w, _ in values) / rounds, sum(c for _, c in values) / rounds
        print(f"{kind:28s} {wall:8.2f} {wall / base_wall:11.3f} {cpu:15.2f} {cpu / base_cpu:11.3f}")
    if traced:
        print("\nInside Radicale (bench/radicale_traced.py), means per round, seconds: the write lock held, of")
        print("which its holder was off the CPU, the lock free between holds, the CPU of the requests' threads")
        print("outside the write lock; and how many holds ended with the next request already asking for it.")
        print(f"{'client':28s} {'held':>7s} {'off CPU':>8s} {'free':>7s} {'CPU outside':>12s} {'handed on':>10s}")
        for kind, values in traced.items():
            n = len(values)
            held, off = sum(v.write_held for v in values) / n, sum(v.write_held_off_cpu for v in values) / n
            free = sum(v.write_free for v in values) / n
            outside = sum(v.request_cpu - v.write_held_cpu for v in values) / n
            handed = sum(v.waiting_when_freed for v in values) / max(1, sum(v.holds - 1 for v in values))
            print(f"{kind:28s} {held:7.2f} {off:8.2f} {free:7.2f} {outside:12.2f} {handed:10.0%}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--creates", type=int, default=600, help="objects per round (default 600)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of each kind of client (default 3)")
    p.add_argument("--in-flight", default="1,2,8", help="connector concurrencies to try (default 1,2,8)")
    p.add_argument("--trace", action="store_true", help="run Radicale under bench/radicale_traced.py and show "
                   "where its time went")
    args = p.parse_args()
    return asyncio.run(run(args.creates, args.rounds, [int(n) for n in args.in_flight.split(",")], args.trace))


if __name__ == "__main__":
    sys.exit(main())
