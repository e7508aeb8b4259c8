"""A BigBlueButton conference through the service: made via the outbox, joined by link, presence by webhook."""
from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import pytest

from service.app import create_app
from service.settings import Settings
from tests.conftest import meeting_body
from tests.support.bbb_standin import BbbStandIn, mapped_event, webhook_post


@pytest.fixture
async def standin() -> AsyncIterator[BbbStandIn]:
    server = BbbStandIn()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def settings(database_url: str, tmp_path: Path, standin: BbbStandIn) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", database={"url": database_url}, auth={"jwt_secret": secrets.token_urlsafe(32)},
        http={"public_url": "http://forum.test"}, mail={"host": "127.0.0.1", "port": 9},
        video={"bigbluebutton": {"url": standin.url, "secret": standin.secret, "checksum": "sha256", "timeout_s": 2}},
    )


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> Any:
    return await aiohttp_client(create_app(settings))


async def active_conference(api: Any, meeting_id: str) -> dict[str, Any]:
    for _ in range(50):
        await api.ok("POST", "/api/v1/calendars/sync", status=200)
        conference = (await api.ok("GET", f"/api/v1/meetings/{meeting_id}"))["conference"]
        if conference["status"] == "active":
            return conference
        await asyncio.sleep(0.1)
    raise AssertionError(f"conference not active: {conference}")


async def test_a_bigbluebutton_meeting_is_joined_by_link_and_attended_by_webhook(api, world, client, standin) -> None:
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=5)
    start = end - timedelta(hours=2)
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Tillväxten", start=start.isoformat(), end=end.isoformat(), title="Möte på BigBlueButton",
        conference={"provider": "bigbluebutton"}))
    await active_conference(api, meeting["id"])
    assert [call for call, _ in standin.calls] == ["create"]
    person = await api.ok("POST", "/api/v1/people", {"name": "Björn Sjöström", "email": "bjorn@region.example"})
    inv = await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations", {"person_id": person["id"], "mode": "remote"})

    async with client.get(urlsplit(inv["join_url"]).path + "/join", allow_redirects=False) as resp:
        assert resp.status == 302
        join = resp.headers["Location"]
    assert join.startswith(standin.url + "/join?")
    async with aiohttp.ClientSession() as http, http.get(join, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()  # the stand-in checked the checksum and found the meeting

    meeting_ref = next(iter(standin.meetings))
    stamps = [("user-joined", 10), ("user-left", 70)]
    for kind, minute in stamps + stamps[:1]:  # the plugin retries: one event twice
        url, body = webhook_post("http://forum.test/webhooks/bigbluebutton",
                                 [mapped_event(kind, inv["id"], meeting_ref, int((start + timedelta(minutes=minute)).timestamp() * 1000))],
                                 standin.secret, "sha256")
        resp = await client.post(urlsplit(url).path + "?" + urlsplit(url).query, data=body,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert resp.status == 200, await resp.text()
    tampered_url, body = webhook_post("http://forum.test/webhooks/bigbluebutton",
                                      [mapped_event("user-joined", inv["id"], meeting_ref, 1)], standin.secret)
    resp = await client.post(urlsplit(tampered_url).path + "?" + urlsplit(tampered_url).query,
                             data=body.replace(b"user-joined", b"user-left"),
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 401
    [row] = (await api.ok("GET", f"/api/v1/meetings/{meeting['id']}/attendance"))["rows"]
    assert (row["present"], row["minutes"], row["source"]) == (True, 60.0, "bigbluebutton")

    await api.ok("DELETE", f"/api/v1/meetings/{meeting['id']}")
    for _ in range(50):
        await api.ok("POST", "/api/v1/calendars/sync", status=200)
        if "end" in [call for call, _ in standin.calls]:
            break
        await asyncio.sleep(0.1)
    assert [call for call, _ in standin.calls if call != "join"] == ["create", "end"]


async def test_a_bigbluebutton_server_that_is_down_leaves_the_conference_pending(api, world, standin) -> None:
    await standin.stop()
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", conference={"provider": "bigbluebutton"}))
    await api.ok("POST", "/api/v1/calendars/sync", status=200)
    assert (await api.ok("GET", f"/api/v1/meetings/{meeting['id']}"))["conference"]["status"] == "pending"
