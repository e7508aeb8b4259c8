"""What the busiest requests cost in SQL: statements, and on PostgreSQL transactions and pings.

Each statement is a round trip (and on SQLite a hop to the driver's thread), so these counts
are most of a request's cost. A change that adds one fails here and must raise the budget on
purpose.
"""
from __future__ import annotations

from typing import Any

import pytest
from icalendar import Calendar
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg

from service.keys import SERVICES
from tests.conftest import meeting_body

# Statements per request (BEGIN not counted), the same on both databases.
BUDGET = {"book": 7, "reschedule": 9, "list": 2, "busy": 2, "conflict": 3}


class Tally:
    """Statements sent through the engine, and on PostgreSQL what the driver did besides."""

    def __init__(self, engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.statements: list[str] = []
        self.begins = 0
        self.pings = 0
        event.listen(engine.sync_engine, "before_cursor_execute", self._seen)
        adapter = pg_asyncpg.AsyncAdapt_asyncpg_connection
        start, ping = adapter._start_transaction, adapter._async_ping
        tally = self

        async def counted_start(conn: Any) -> None:
            if conn.isolation_level != "autocommit":
                tally.begins += 1
            await start(conn)

        async def counted_ping(conn: Any) -> None:
            tally.pings += 1
            await ping(conn)

        monkeypatch.setattr(adapter, "_start_transaction", counted_start)
        monkeypatch.setattr(adapter, "_async_ping", counted_ping)

    def _seen(self, conn, cursor, statement, params, context, executemany) -> None:  # noqa: ANN001
        if not statement.startswith("BEGIN"):
            self.statements.append(statement.replace("\n", " "))

    def take(self) -> tuple[list[str], int, int]:
        out = (self.statements, self.begins, self.pings)
        self.statements, self.begins, self.pings = [], 0, 0
        return out


async def test_hot_requests_stay_within_their_statement_budget(
    client: Any, api: Any, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = client.server.app[SERVICES].db
    tally = Tally(db.writer, monkeypatch)
    room = world["rooms"]["Tillväxten"]["id"]
    window = "from=2027-04-01T00:00:00&to=2027-04-10T00:00:00"
    # Warm up: the first request of a kind may fill caches.
    await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", start="2027-04-05T09:00:00",
                                                          end="2027-04-05T10:00:00"))
    await api.ok("GET", f"/api/v1/meetings?{window}")
    await api.ok("GET", f"/api/v1/rooms/{room}/busy?{window}")
    tally.take()

    seen: dict[str, tuple[list[str], int, int]] = {}
    made = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", start="2027-04-06T09:00:00",
                                                                 end="2027-04-06T10:00:00"))
    seen["book"] = tally.take()
    await api.ok("PATCH", f"/api/v1/meetings/{made['id']}",
                 {"starts_at": "2027-04-07T09:00:00", "ends_at": "2027-04-07T10:00:00"})
    seen["reschedule"] = tally.take()
    listed = await api.ok("GET", f"/api/v1/meetings?{window}")
    seen["list"] = tally.take()
    busy = await api.ok("GET", f"/api/v1/rooms/{room}/busy?{window}")
    seen["busy"] = tally.take()
    status, problem = await api.post("/api/v1/meetings", meeting_body(world, "Tillväxten", start="2027-04-07T09:30:00",
                                                                      end="2027-04-07T10:30:00"))
    seen["conflict"] = tally.take()

    # The answers are still the right ones.
    assert [m["id"] for m in listed["items"]][-1] == made["id"]
    assert [b["meeting_id"] for b in busy["items"]][-1] == made["id"]
    assert busy["items"][-1]["starts_at"].startswith("2027-04-07T09:00:00")
    assert status == 409 and problem["conflicts"][0]["meeting_id"] == made["id"]

    for kind, (statements, begins, pings) in seen.items():
        listing = "\n  ".join(s[:160] for s in statements)
        assert len(statements) <= BUDGET[kind], f"{kind}: {len(statements)} statements:\n  {listing}"
        assert pings == 0, f"{kind}: a connection in steady use was pinged"
        if not db.is_sqlite:
            writes = kind in ("book", "reschedule", "conflict")
            # Reads run in autocommit: no BEGIN and ROLLBACK round trips.
            assert begins == (1 if writes else 0), f"{kind}: {begins} transactions"


async def test_a_feed_costs_the_same_statements_for_two_meetings_as_for_six(
    client: Any, api: Any, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = client.server.app[SERVICES]
    # Its invitation mail (to no mail server here) would be retried beside the feed's statements.
    await services.outbox.stop()
    db = services.db
    tally = Tally(db.writer, monkeypatch)
    if db.separate_reader:
        reader = Tally(db.reader, monkeypatch)
    forum = await api.ok("GET", f"/api/v1/forums/{world['forum']['id']}")
    path = forum["feed_url"].split("://", 1)[1].split("/", 1)[1]
    person = await api.ok("POST", "/api/v1/people", {"name": "Åke Strömberg", "email": "ake@region.example"})
    counts, bodies = [], []
    for day in range(1, 7):
        made = await api.ok("POST", "/api/v1/meetings", meeting_body(
            world, "Tillväxten", start=f"2027-05-{day:02d}T09:00:00", end=f"2027-05-{day:02d}T10:00:00",
            sessions=[{"title": "Läget", "starts_at": f"2027-05-{day:02d}T09:00:00", "ends_at": f"2027-05-{day:02d}T09:30:00"}]))
        await api.ok("POST", f"/api/v1/meetings/{made['id']}/invitations", {"person_id": person["id"], "mode": "remote"})
        if day in (2, 6):
            tally.take()
            if db.separate_reader:
                reader.take()
            async with client.get("/" + path) as resp:
                assert resp.status == 200
                bodies.append(await resp.text())
            counts.append(len(tally.take()[0]) + (len(reader.take()[0]) if db.separate_reader else 0))
    # Each meeting with its session, rooms and invited person, in statements that do not grow with them.
    events = Calendar.from_ical(bodies[1]).walk("VEVENT")
    assert len(events) == 6
    assert all([str(a.params["CN"]) for a in ev.get("ATTENDEE", []) if a.params.get("CUTYPE") != "ROOM"] == ["Åke Strömberg"]
               for ev in events)
    assert counts[0] == counts[1], counts
