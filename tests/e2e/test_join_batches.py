"""Many people opening their join links at once: the joins share transactions (group commit), and
each still gets its own answer, after its own link_opened event is committed."""
from __future__ import annotations

import asyncio
import logging
import re
import secrets
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from service.db import models as m
from service.keys import SERVICES
from tests.conftest import meeting_body
from tests.support.http import ApiClient

MEET = "https://meet.forum.test/"


def join_path(join_url: str) -> str:
    return urlsplit(join_url).path + "/join"


async def conference_ready(api: ApiClient, meeting_id: str) -> None:
    for _ in range(100):
        await api.ok("POST", "/api/v1/calendars/sync", status=200)
        if (await api.ok("GET", f"/api/v1/meetings/{meeting_id}"))["conference"]["status"] == "active":
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the conference did not become active")


async def meeting_now(api: ApiClient, world: dict[str, Any], people: int, *, conference: bool = True) -> dict[str, Any]:
    """A meeting that runs now, and `people` remote invitations (their join URLs by invitation id)."""
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=30)
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, start=start.isoformat(), end=(start + timedelta(hours=2)).isoformat(),
        conference={"provider": "jitsi"} if conference else None))
    if conference:
        await conference_ready(api, meeting["id"])
    links = {}
    for i in range(people):
        person = await api.ok("POST", "/api/v1/people", {"name": f"Expert {i} Öhman", "email": f"e{i}.{secrets.token_hex(3)}@x.example"})
        inv = await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations", {"person_id": person["id"], "mode": "remote"})
        links[inv["id"]] = inv["join_url"]
    return {"meeting": meeting, "links": links}


async def status_and_target(client: Any, path: str) -> tuple[int, str]:
    async with client.get(path, allow_redirects=False) as resp:
        await resp.read()
        return resp.status, resp.headers.get("Location", "")


async def opens(client: Any) -> dict[str, int]:
    """link_opened events per invitation id."""
    async with client.app[SERVICES].db.session(write=False) as s:
        rows = await s.scalars(select(m.AttendanceEvent.invitation_id).where(m.AttendanceEvent.kind == "link_opened"))
        out: dict[str, int] = {}
        for ident in rows:
            out[str(ident)] = out.get(str(ident), 0) + 1
        return out


async def test_concurrent_joins_each_get_their_redirect_and_their_own_event(api: ApiClient, world: dict[str, Any],
                                                                             client: Any) -> None:
    case = await meeting_now(api, world, 12)
    links = case["links"]
    # Everyone twice, all at once.
    paths = [(ident, join_path(url)) for ident, url in links.items()] * 2
    answers = await asyncio.gather(*(status_and_target(client, p) for _, p in paths))
    assert [status for status, _ in answers] == [302] * len(paths)
    assert all(target.startswith(MEET) and "?jwt=" in target for _, target in answers)
    assert await opens(client) == {ident: 2 for ident in links}
    # The joins shared transactions.
    group = client.app[SERVICES].links.opens
    assert group.items == len(paths) and group.batches < len(paths)


async def test_bad_links_in_a_batch_fail_alone(api: ApiClient, world: dict[str, Any], client: Any) -> None:
    live = await meeting_now(api, world, 6)
    ids = list(live["links"])
    # One link replaced by a newer one (the old one is revoked), one meeting cancelled, one without video.
    renewed = await api.ok("POST", f"/api/v1/invitations/{ids[0]}/reissue", status=200)
    cancelled = await meeting_now(api, world, 1)
    await api.ok("DELETE", f"/api/v1/meetings/{cancelled['meeting']['id']}", status=200)
    novideo = await meeting_now(api, world, 1, conference=False)
    unknown = "/j/" + secrets.token_urlsafe(32) + "/join"

    requests = {
        "revoked": join_path(live["links"][ids[0]]),
        "renewed": join_path(renewed["join_url"]),
        "cancelled": join_path(next(iter(cancelled["links"].values()))),
        "novideo": join_path(next(iter(novideo["links"].values()))),
        "unknown": unknown,
        **{f"ok{i}": join_path(live["links"][ident]) for i, ident in enumerate(ids[1:])},
    }
    answers = dict(zip(requests, await asyncio.gather(*(status_and_target(client, p) for p in requests.values()))))
    assert {k: status for k, (status, _) in answers.items()} == {
        "revoked": 410, "renewed": 302, "cancelled": 410, "novideo": 409, "unknown": 404,
        **{f"ok{i}": 302 for i in range(len(ids) - 1)}}
    # Only the joins that were answered with a redirect left an event.
    assert await opens(client) == {ident: 1 for ident in ids}


async def test_a_recorded_join_reads_back_as_any_attendance_event(api: ApiClient, world: dict[str, Any],
                                                                   client: Any) -> None:
    """The batch writes through the database driver: its rows must be what the models store."""
    case = await meeting_now(api, world, 2)
    before = datetime.now(timezone.utc)
    for ident, url in case["links"].items():
        status, target = await status_and_target(client, join_path(url))
        assert status == 302 and target.startswith(MEET)
    after = datetime.now(timezone.utc)
    async with client.app[SERVICES].db.session(write=False) as s:
        events = (await s.scalars(select(m.AttendanceEvent).order_by(m.AttendanceEvent.at))).all()
    assert sorted(str(e.invitation_id) for e in events) == sorted(case["links"])
    for event in events:
        assert isinstance(event.id, uuid.UUID) and isinstance(event.invitation_id, uuid.UUID)
        assert (event.kind, event.source, event.dedup_key) == ("link_opened", "link", None)
        assert before <= event.at == event.recorded_at <= after and event.at.tzinfo is not None
    report = await api.ok("GET", f"/api/v1/meetings/{case['meeting']['id']}/attendance")
    assert report is not None


async def test_joins_are_counted_by_route_and_logged_without_their_token(api: ApiClient, world: dict[str, Any],
                                                                         client: Any) -> None:
    case = await meeting_now(api, world, 1)
    path = join_path(next(iter(case["links"].values())))
    token = path.split("/")[2]
    records: list[str] = []

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger, handler = logging.getLogger("forumbridge.http"), Lines()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        ids = []
        for p in (path, path, "/j/" + secrets.token_urlsafe(32) + "/join"):
            async with client.get(p, allow_redirects=False) as resp:
                ids.append((resp.status, resp.headers.get("X-Request-Id", "")))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert [status for status, _ in ids] == [302, 302, 404]
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for _, rid in ids) and len({rid for _, rid in ids}) == 3
    joins = [line for line in records if "/join" in line]
    assert len(joins) == 3 and not [line for line in records if token in line]
    assert all(rid in line for (_, rid), line in zip(ids, joins))
    async with client.get("/metrics") as resp:
        families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    counted = {(s.labels["route"], s.labels["status"]): s.value for s in families["forumbridge_http_requests"].samples
               if s.name.endswith("_total") and s.labels["route"].startswith("/j/")}
    assert counted == {("/j/{token}/join", "302"): 2, ("/j/{token}/join", "404"): 1}
    latency = [s for s in families["forumbridge_http_request_duration_seconds"].samples
               if s.name.endswith("_count") and s.labels["route"] == "/j/{token}/join"]
    assert [s.value for s in latency] == [3]
