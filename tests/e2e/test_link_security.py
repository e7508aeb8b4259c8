"""Personal join links as an attacker would try them: other people's links, revoked, expired, unknown and junk
tokens, cross-site form posts, tampered and repeated webhooks, tokens in the database and in the logs."""
from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator
from urllib.parse import quote, urlsplit

import pytest
from icalendar import Calendar
from sqlalchemy import func, select

from service.db import models as m
from service.keys import SERVICES
from tests.conftest import VIDEO, meeting_body
from tests.support.http import ApiClient

HOOK = {"Authorization": f"Bearer {VIDEO['jitsi']['webhook_token']}", "Content-Type": "application/json"}
TITLE = "Forummöte om hållbar tillväxt – Östersund"
TOKEN_ALPHABET = re.compile(r"^[A-Za-z0-9_-]+$")


def path_of(join_url: str) -> str:
    return urlsplit(join_url).path


def token_of(join_url: str) -> str:
    return path_of(join_url).rsplit("/", 1)[1]


async def get(client: Any, path: str, **kw: Any) -> tuple[int, str, Any]:
    async with client.get(path, allow_redirects=False, **kw) as resp:
        return resp.status, await resp.text(), resp.headers


async def rsvp(client: Any, path: str, answer: str, form_token: str | None, headers: dict[str, str] | None = None) -> int:
    form = {"answer": answer, "lang": "sv"}
    if form_token is not None:
        form["form_token"] = form_token
    async with client.post(path + "/rsvp", data=form, headers=headers or {}, allow_redirects=False) as resp:
        return resp.status


def form_token_in(page: str) -> str:
    found = re.search(r'name="form_token" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


async def conference_ready(api: ApiClient, meeting_id: str) -> None:
    for _ in range(100):
        await api.ok("POST", "/api/v1/calendars/sync", status=200)
        if (await api.ok("GET", f"/api/v1/meetings/{meeting_id}"))["conference"]["status"] == "active":
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the conference did not become active")


async def two_experts(api: ApiClient, world: dict[str, Any], *, start: datetime | None = None,
                      hours: int = 3, conference: bool = True) -> dict[str, Any]:
    """A meeting with a Jitsi conference, and two remote experts with their join links."""
    start = start or datetime(2027, 4, 5, 7, 0, tzinfo=timezone.utc)
    end = start + timedelta(hours=hours)
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Tillväxten", "Storsjön", start=start.isoformat(), end=end.isoformat(), title=TITLE,
        conference={"provider": "jitsi"} if conference else None,
        sessions=[{"title": "Kompetensförsörjning", "starts_at": start.isoformat(),
                   "ends_at": (start + timedelta(hours=1)).isoformat()}]))
    if conference:
        await conference_ready(api, meeting["id"])
    people, invitations = {}, {}
    for key, name, email in (("a", "Märta Åkesson", "marta@region.example"), ("b", "Björn Sjöström", "bjorn@kommun.example")):
        people[key] = await api.ok("POST", "/api/v1/people", {"name": name, "email": email})
        invitations[key] = await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations",
                                        {"person_id": people[key]["id"], "mode": "remote"})
    return {"meeting": meeting, "people": people, "inv": invitations}


async def rsvps(api: ApiClient, case: dict[str, Any]) -> dict[str, str]:
    return {k: (await api.ok("GET", f"/api/v1/invitations/{inv['id']}"))["rsvp"] for k, inv in case["inv"].items()}


async def link_events(client: Any) -> int:
    async with client.app[SERVICES].db.session(write=False) as s:
        return await s.scalar(select(func.count()).select_from(m.AttendanceEvent))


def assert_reveals_nothing(page: str) -> None:
    for secret in (TITLE, "Märta", "Björn", "marta@", "bjorn@", "Kompetensförsörjning"):
        assert secret not in page


async def test_a_link_shows_and_changes_only_its_own_invitation(api: ApiClient, world: dict[str, Any], client: Any) -> None:
    case = await two_experts(api, world)
    a, b = case["inv"]["a"], case["inv"]["b"]
    status, page_a, headers = await get(client, path_of(a["join_url"]))
    assert status == 200
    assert "Märta Åkesson" in page_a and TITLE in page_a
    assert "Björn" not in page_a and "bjorn@" not in page_a and token_of(b["join_url"]) not in page_a
    assert headers["Cache-Control"] == "no-store" and headers["Referrer-Policy"] == "no-referrer"
    status, page_b, _ = await get(client, path_of(b["join_url"]))
    assert "Björn Sjöström" in page_b and "Märta" not in page_b

    # A's form token is A's alone: it does not work with B's link, nor B's with A's.
    assert await rsvp(client, path_of(b["join_url"]), "declined", form_token_in(page_a)) == 403
    assert await rsvp(client, path_of(a["join_url"]), "declined", form_token_in(page_b)) == 403
    assert await rsvps(api, case) == {"a": "needs-action", "b": "needs-action"}
    assert await rsvp(client, path_of(a["join_url"]), "accepted", form_token_in(page_a)) == 303
    assert await rsvps(api, case) == {"a": "accepted", "b": "needs-action"}

    # A's calendar copy and A's join carry A's link and identity only.
    status, ics, _ = await get(client, path_of(a["join_url"]) + "/calendar.ics")
    assert status == 200 and a["join_url"] in ics and token_of(b["join_url"]) not in ics
    status, _, headers = await get(client, path_of(a["join_url"]) + "/join")
    assert status == 302 and "jwt=" in headers["Location"]
    async with client.app[SERVICES].db.session(write=False) as s:
        opened = (await s.scalars(select(m.AttendanceEvent))).all()
    assert [(str(e.invitation_id), e.kind) for e in opened] == [(a["id"], "link_opened")]


async def test_a_reissued_link_revokes_the_old_one_everywhere(api: ApiClient, world: dict[str, Any], client: Any) -> None:
    case = await two_experts(api, world)
    old = case["inv"]["a"]["join_url"]
    _, old_page, _ = await get(client, path_of(old))
    old_form_token = form_token_in(old_page)
    fresh = (await api.ok("POST", f"/api/v1/invitations/{case['inv']['a']['id']}/reissue", status=200))["join_url"]
    assert fresh and fresh != old and token_of(fresh) != token_of(old)
    before = await link_events(client)

    for suffix in ("", "/join", "/calendar.ics"):
        status, body, _ = await get(client, path_of(old) + suffix)
        assert status == 410, (suffix, status)
        assert_reveals_nothing(body)
    # The old page's own form, sent after the reissue.
    assert await rsvp(client, path_of(old), "declined", old_form_token) == 410
    assert await rsvps(api, case) == {"a": "needs-action", "b": "needs-action"}
    assert await link_events(client) == before

    status, page, _ = await get(client, path_of(fresh))
    assert status == 200 and "Märta Åkesson" in page
    assert (await get(client, path_of(fresh) + "/join"))[0] == 302
    assert (await get(client, path_of(fresh) + "/calendar.ics"))[0] == 200
    assert await rsvp(client, path_of(fresh), "declined", form_token_in(page)) == 303
    assert (await rsvps(api, case))["a"] == "declined"
    # B's link is untouched.
    assert (await get(client, path_of(case["inv"]["b"]["join_url"])))[0] == 200


async def test_unknown_and_junk_tokens_are_404_and_say_nothing(api: ApiClient, world: dict[str, Any], client: Any) -> None:
    case = await two_experts(api, world)
    real = token_of(case["inv"]["a"]["join_url"])
    lookalike = real[:-1] + ("A" if real[-1] != "A" else "B")
    keys = client.app[SERVICES].link_keys
    for token in (secrets.token_urlsafe(32), lookalike, real.upper() if real.upper() != real else real.lower()):
        for suffix in ("", "/join", "/calendar.ics"):
            status, body, _ = await get(client, f"/j/{token}{suffix}")
            assert status == 404, (token, suffix)
            assert_reveals_nothing(body)
        # Even with a form token made for it, an unknown link changes nothing.
        assert await rsvp(client, f"/j/{token}", "accepted", keys.form_token(token, "rsvp")) == 404
    status, body, _ = await get(client, f"/j/{secrets.token_urlsafe(32)}", headers={"Accept-Language": "en"})
    assert status == 404 and "Unknown link" in body

    junk = ["..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..", "%2e%2e", "A" * 4000,
            quote("åäö-möte"), quote("😀" * 20), "%00", "%ff%fe", quote("<script>alert(1)</script>"),
            quote(real + "\n"), quote(real) + "%20", real + "==", "*", "%25"]
    for token in junk:
        for suffix in ("", "/join", "/calendar.ics"):
            status, body, _ = await get(client, f"/j/{token}{suffix}")
            assert status == 404, (token[:40], suffix, status)
            assert "<script>alert" not in body
        assert await rsvp(client, f"/j/{token}", "accepted", "x") == 404, token[:40]
    assert await rsvps(api, case) == {"a": "needs-action", "b": "needs-action"}


async def raw_get(client: Any, target: str) -> int:
    """A request line sent as written (no client normalises `..` away)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: forum.test\r\nConnection: close\r\n\r\n".encode("utf-8", "surrogateescape"))
    await writer.drain()
    status_line = await reader.readline()
    await reader.read()
    writer.close()
    return int(status_line.split()[1])


async def test_path_traversal_is_404_and_never_a_server_error(client: Any) -> None:
    for target in ("/j/../../etc/passwd", "/j/..%2F..%2Fetc%2Fpasswd", "/j/%2e%2e/%2e%2e/etc/passwd",
                   "/j/x/../../../etc/passwd", "/j/../j/../feeds/../etc/passwd/join", "/j/./calendar.ics",
                   "/j//join", "/j/%c0%ae%c0%ae/etc/passwd"):
        status = await raw_get(client, target)
        assert status in (400, 404), (target, status)


async def test_an_expired_link_is_410(api: ApiClient, world: dict[str, Any], client: Any) -> None:
    # Ended four hours ago; the grace period is two hours.
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=6)
    case = await two_experts(api, world, start=start, hours=2, conference=False)
    path = path_of(case["inv"]["a"]["join_url"])
    for suffix in ("", "/join", "/calendar.ics"):
        status, body, _ = await get(client, path + suffix)
        assert status == 410, suffix
        assert_reveals_nothing(body)
    status, body, _ = await get(client, path, headers={"Accept-Language": "en"})
    assert "no longer valid" in body and "Forum secretariat" in body


async def test_the_join_url_is_given_by_create_and_reissue_only(api: ApiClient, world: dict[str, Any]) -> None:
    case = await two_experts(api, world, conference=False)
    a, b = case["inv"]["a"], case["inv"]["b"]
    for inv in (a, b):
        token = token_of(inv["join_url"])
        # At least 128 random bits: 43 characters of base64url carry 258.
        assert TOKEN_ALPHABET.match(token) and len(token) * 6 >= 128 and len(token) >= 22
    assert token_of(a["join_url"]) != token_of(b["join_url"])
    assert (await api.ok("GET", f"/api/v1/invitations/{a['id']}"))["join_url"] is None
    listed = await api.ok("GET", f"/api/v1/meetings/{case['meeting']['id']}/invitations")
    assert [i["join_url"] for i in listed["items"]] == [None, None]
    patched = await api.ok("PATCH", f"/api/v1/invitations/{a['id']}", {"rsvp": "tentative"})
    assert patched["join_url"] is None
    reissued = await api.ok("POST", f"/api/v1/invitations/{a['id']}/reissue", status=200)
    assert reissued["join_url"] and reissued["join_url"] != a["join_url"]
    assert (await api.ok("GET", f"/api/v1/invitations/{a['id']}"))["join_url"] is None
    # The audit log does not keep the link either.
    log = await api.ok("GET", "/api/v1/audit?limit=500")
    assert "/j/" not in json.dumps(log)


async def test_the_database_holds_no_plain_token(api: ApiClient, world: dict[str, Any], client: Any) -> None:
    case = await two_experts(api, world)
    await api.ok("POST", f"/api/v1/invitations/{case['inv']['b']['id']}/reissue", status=200)
    tokens = [token_of(inv["join_url"]) for inv in case["inv"].values()]
    seen = 0
    async with client.app[SERVICES].db.session(write=False) as s:
        for table in m.Base.metadata.sorted_tables:
            for row in (await s.execute(select(table))).all():
                seen += table.name in ("join_tokens", "invitations")
                for value in row:
                    text = json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
                    assert not any(t in text for t in tokens), (table.name, text)
    assert seen >= 5  # two invitations, three join token rows (one revoked)


async def test_the_personal_calendar_carries_the_link_and_the_shared_feed_does_not(
        api: ApiClient, world: dict[str, Any], client: Any) -> None:
    case = await two_experts(api, world)
    link = case["inv"]["a"]["join_url"]
    status, ics, headers = await get(client, path_of(link) + "/calendar.ics")
    assert status == 200 and headers["Content-Type"].startswith("text/calendar")
    [event] = Calendar.from_ical(ics).walk("VEVENT")
    assert str(event["UID"]) == case["meeting"]["uid"]
    assert str(event["LOCATION"]) == link
    assert str(event["DESCRIPTION"]).splitlines()[0] == link
    assert str(event["URL"]) == link
    conferences = event.get("CONFERENCE")
    conferences = conferences if isinstance(conferences, list) else [conferences]
    assert link in [str(c) for c in conferences]

    forum = await api.ok("GET", f"/api/v1/forums/{world['forum']['id']}")
    status, feed, _ = await get(client, path_of(forum["feed_url"]))
    assert status == 200 and case["meeting"]["uid"] in feed
    assert "/j/" not in feed
    assert all(token_of(inv["join_url"]) not in feed for inv in case["inv"].values())


async def test_a_cross_site_or_tokenless_rsvp_is_refused_and_changes_nothing(
        api: ApiClient, world: dict[str, Any], client: Any) -> None:
    case = await two_experts(api, world)
    path = path_of(case["inv"]["a"]["join_url"])
    _, page, _ = await get(client, path)
    good = form_token_in(page)
    refused = [
        (None, {}),
        ("", {}),
        ("forged", {}),
        (good, {"Origin": "https://evil.example"}),
        (good, {"Origin": "http://forum.test.evil.example"}),
        (good, {"Origin": "null"}),
        (good, {"Origin": "null", "Sec-Fetch-Site": "cross-site"}),
        (good, {"Sec-Fetch-Site": "cross-site"}),
        (good, {"Sec-Fetch-Site": "same-site", "Origin": "http://forum.test"}),
    ]
    for form_token, headers in refused:
        assert await rsvp(client, path, "declined", form_token, headers) == 403, (form_token, headers)
    assert await rsvps(api, case) == {"a": "needs-action", "b": "needs-action"}
    log = await api.ok("GET", f"/api/v1/audit?entity=invitation&entity_id={case['inv']['a']['id']}")
    assert "rsvp_from_link" not in [e["action"] for e in log["items"]]
    # What a browser sends from the page itself (Referrer-Policy no-referrer makes its Origin "null").
    assert await rsvp(client, path, "declined", good, {"Origin": "null", "Sec-Fetch-Site": "same-origin"}) == 303
    assert await rsvp(client, path, "tentative", good, {"Origin": "http://forum.test"}) == 303
    assert await rsvps(api, case) == {"a": "tentative", "b": "needs-action"}
    assert await rsvp(client, path, "maybe-later", good) == 400


def occupant(room: str, invitation_id: str, kind: str, at: datetime) -> str:
    field = "joined_at" if kind == "joined" else "left_at"
    return json.dumps({"event_name": f"muc-occupant-{kind}", "room_name": room, "is_breakout": False,
                       "occupant": {"occupant_jid": f"{room}@conference.meet.forum.test/abcd1234", "id": invitation_id,
                                    "name": "Märta Åkesson", "email": "marta@region.example", field: int(at.timestamp())}})


async def test_tampered_webhooks_are_401_and_repeated_ones_are_recorded_once(
        api: ApiClient, world: dict[str, Any], client: Any) -> None:
    case = await two_experts(api, world)
    meeting = await api.ok("GET", f"/api/v1/meetings/{case['meeting']['id']}")
    room = meeting["conference"]["host_url"].rsplit("/", 1)[1]
    inv = case["inv"]["a"]
    body = occupant(room, inv["id"], "joined", datetime(2027, 4, 5, 7, 5, tzinfo=timezone.utc))
    for headers in ({"Content-Type": "application/json"},
                    {**HOOK, "Authorization": "Bearer wrong"},
                    {**HOOK, "Authorization": f"Bearer {VIDEO['jitsi']['webhook_token']}x"},
                    {**HOOK, "Authorization": f"Basic {VIDEO['jitsi']['webhook_token']}"},
                    {**HOOK, "Authorization": VIDEO["jitsi"]["webhook_token"]}):
        async with client.post("/webhooks/jitsi/events/occupant/joined", data=body, headers=headers) as resp:
            assert resp.status == 401, headers
    assert await link_events(client) == 0

    answers = []
    for _ in range(3):
        async with client.post("/webhooks/jitsi/events/occupant/joined", data=body, headers=HOOK) as resp:
            assert resp.status == 200
            answers.append((await resp.json())["recorded"])
    assert answers == [1, 0, 0]
    async with client.app[SERVICES].db.session(write=False) as s:
        events = (await s.scalars(select(m.AttendanceEvent))).all()
    assert [(str(e.invitation_id), e.kind, e.source) for e in events] == [(inv["id"], "joined", "jitsi")]


class Records(logging.Handler):
    """The service's log records (the logging plugin may be off, so no caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def service_log() -> Iterator[Records]:
    logger = logging.getLogger("forumbridge")
    records, level = Records(), logger.level
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(records)
    logger.setLevel(level)


async def test_the_request_log_does_not_contain_the_token(
        api: ApiClient, world: dict[str, Any], client: Any, service_log: Records) -> None:
    case = await two_experts(api, world)
    link = case["inv"]["a"]["join_url"]
    token = token_of(link)
    _, page, _ = await get(client, path_of(link) + "?lang=en")
    await get(client, path_of(link) + "/join")
    await get(client, path_of(link) + "/calendar.ics")
    await rsvp(client, path_of(link), "accepted", form_token_in(page))
    await api.ok("POST", f"/api/v1/invitations/{case['inv']['a']['id']}/reissue", status=200)
    await get(client, path_of(link))  # now revoked: 410
    requests = [line for line in service_log.lines if "/j/" in line]
    assert len(requests) >= 5, "\n".join(l for l in service_log.lines if "api" not in l)
    assert not [line for line in service_log.lines if token in line]
    assert not [line for line in service_log.lines if token_of(case["inv"]["b"]["join_url"]) in line]
