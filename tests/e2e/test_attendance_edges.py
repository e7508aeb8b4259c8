"""Who took part, where the only sign is a link opened: a meeting on a static video room (no provider
reports who joined), yesterday 09:00 to 12:00 in Stockholm, two sessions, one remote expert."""
from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from connectors.video.static import VirtualRoom
from service.db import models as m
from service.keys import SERVICES
from service.participation import links as links_module
from service.settings import Settings
from tests.conftest import VIDEO
from tests.support.http import ApiClient

STHLM = ZoneInfo("Europe/Stockholm")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", database={"url": database_url, "pool_size": 10},
        auth={"jwt_secret": secrets.token_urlsafe(32)}, http={"public_url": "http://forum.test"},
        video={**VIDEO, "static": {}}, mail={"host": "127.0.0.1", "port": 9})


async def _yesterdays_meeting(api: ApiClient, world: dict[str, Any], client: Any, web_url: str | None) -> dict[str, Any]:
    """The meeting, its conference active; with `web_url` the forum's virtual room has a web link,
    without one the host room is reached by SIP only."""
    day = (datetime.now(STHLM) - timedelta(days=1)).date()

    def t(hour: int, minute: int = 0) -> str:
        return datetime(day.year, day.month, day.day, hour, minute, tzinfo=STHLM).isoformat()

    room = await api.ok("POST", "/api/v1/rooms", {"site_id": world["sites"]["Stockholm"]["id"], "name": "Videorummet",
                                                   "capacity": 8, "video_endpoint": "sip:videorummet@video.example.org"})
    if web_url:
        client.app[SERVICES].video.providers["static"]._rooms[world["forum"]["id"]] = VirtualRoom(web_url=web_url)
    meeting = await api.ok("POST", "/api/v1/meetings", {
        "forum_id": world["forum"]["id"], "title": "Forummöte i Östersund", "starts_at": t(9), "ends_at": t(12),
        "room_ids": [room["id"]], "conference": {"provider": "static"},
        "sessions": [{"title": "Pass 1", "starts_at": t(9), "ends_at": t(10, 30)},
                     {"title": "Pass 2", "starts_at": t(10, 30), "ends_at": t(12)}]})
    for _ in range(20):
        await api.ok("POST", "/api/v1/calendars/sync", status=200)
        if (await api.ok("GET", f"/api/v1/meetings/{meeting['id']}"))["conference"]["status"] == "active":
            break
    person = await api.ok("POST", "/api/v1/people", {"name": "Märta Öhman", "email": "marta@region.example"})
    inv = await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations", {"person_id": person["id"], "mode": "remote"})
    return {"meeting": meeting, "inv": inv, "start": datetime.fromisoformat(t(9))}


async def _join_at(client: Any, monkeypatch: pytest.MonkeyPatch, join_url: str, when: datetime) -> int:
    with monkeypatch.context() as patch:
        patch.setattr(links_module, "now", lambda: when)
        async with client.get(urlsplit(join_url).path + "/join", allow_redirects=False) as resp:
            await resp.read()
            return resp.status


async def _sessions(api: ApiClient, meeting_id: str) -> dict[str, tuple[bool, float]]:
    report = await api.ok("GET", f"/api/v1/meetings/{meeting_id}/attendance")
    return {r["session"]: (r["present"], r["minutes"]) for r in report["rows"]}


async def test_a_link_tried_days_before_is_no_presence_and_one_opened_during_the_meeting_is(
        api: ApiClient, world: dict[str, Any], client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    case = await _yesterdays_meeting(api, world, client, "https://video.example.org/forum")
    assert await _join_at(client, monkeypatch, case["inv"]["join_url"], case["start"] - timedelta(days=3)) == 302
    assert await _sessions(api, case["meeting"]["id"]) == {"Pass 1": (False, 0.0), "Pass 2": (False, 0.0)}
    assert await _join_at(client, monkeypatch, case["inv"]["join_url"], case["start"] + timedelta(minutes=40)) == 302
    assert await _sessions(api, case["meeting"]["id"]) == {"Pass 1": (True, 50.0), "Pass 2": (True, 90.0)}


async def test_a_join_refused_for_want_of_a_video_link_leaves_no_presence(
        api: ApiClient, world: dict[str, Any], client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    case = await _yesterdays_meeting(api, world, client, None)
    assert await _join_at(client, monkeypatch, case["inv"]["join_url"], case["start"] + timedelta(minutes=5)) == 409
    assert await _sessions(api, case["meeting"]["id"]) == {"Pass 1": (False, 0.0), "Pass 2": (False, 0.0)}
    async with client.app[SERVICES].db.session(write=False) as s:
        assert await s.scalar(select(func.count()).select_from(m.AttendanceEvent)) == 0


async def test_a_leave_recorded_by_hand_ends_the_presence_a_link_open_began(
        api: ApiClient, world: dict[str, Any], client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    case = await _yesterdays_meeting(api, world, client, "https://video.example.org/forum")
    assert await _join_at(client, monkeypatch, case["inv"]["join_url"], case["start"]) == 302
    assert await _sessions(api, case["meeting"]["id"]) == {"Pass 1": (True, 90.0), "Pass 2": (True, 90.0)}
    await api.ok("POST", f"/api/v1/meetings/{case['meeting']['id']}/attendance",
                 {"invitation_id": case["inv"]["id"], "kind": "left",
                  "at": (case["start"] + timedelta(minutes=60)).isoformat()}, status=201)
    assert await _sessions(api, case["meeting"]["id"]) == {"Pass 1": (True, 60.0), "Pass 2": (False, 0.0)}


async def test_an_invitation_with_attendance_on_record_cannot_be_withdrawn_once_the_meeting_has_begun(
        api: ApiClient, world: dict[str, Any], client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    case = await _yesterdays_meeting(api, world, client, "https://video.example.org/forum")
    assert await _join_at(client, monkeypatch, case["inv"]["join_url"], case["start"] + timedelta(minutes=5)) == 302
    status, body = await api.delete(f"/api/v1/invitations/{case['inv']['id']}")
    assert status == 409 and "attendance" in body["detail"], body
    assert await _sessions(api, case["meeting"]["id"]) == {"Pass 1": (True, 85.0), "Pass 2": (True, 90.0)}
    # Without attendance, an invitation can still be withdrawn.
    other = await api.ok("POST", "/api/v1/people", {"name": "Björn Sjöström", "email": "bjorn@region.example"})
    invitation = await api.ok("POST", f"/api/v1/meetings/{case['meeting']['id']}/invitations",
                              {"person_id": other["id"], "mode": "remote"})
    status, _ = await api.delete(f"/api/v1/invitations/{invitation['id']}")
    assert status == 204


async def test_an_invitation_whose_person_joined_early_cannot_be_withdrawn_and_one_tried_days_before_can(
        api: ApiClient, world: dict[str, Any], client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    case = await _yesterdays_meeting(api, world, client, "https://video.example.org/forum")
    # Ten minutes before the start: within the video's early opening, so it counts.
    assert await _join_at(client, monkeypatch, case["inv"]["join_url"], case["start"] - timedelta(minutes=10)) == 302
    status, _ = await api.delete(f"/api/v1/invitations/{case['inv']['id']}")
    assert status == 409
    other = await api.ok("POST", "/api/v1/people", {"name": "Ingrid Åkesson", "email": "ingrid@region.example"})
    invitation = await api.ok("POST", f"/api/v1/meetings/{case['meeting']['id']}/invitations",
                              {"person_id": other["id"], "mode": "remote"})
    assert await _join_at(client, monkeypatch, invitation["join_url"], case["start"] - timedelta(days=3)) == 302
    status, _ = await api.delete(f"/api/v1/invitations/{invitation['id']}")
    assert status == 204
