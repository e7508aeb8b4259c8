"""The participant's page in a real browser: headless Chromium (Debian package `chromium`) driven by Playwright.

The app listens on a real loopback port and its public URL is that address, so the join links the API
hands out are the ones the browser opens. The Jitsi deployment is not on the network: Chromium resolves
meet.forum.test to a stand-in HTTPS server on loopback, which keeps the URL each request was sent to,
and every other name to nothing. (page.route cannot do this: Playwright does not route the target of a
redirect, microsoft/playwright#33882, and /j/{token}/join answers with a 302.)
Without Chromium or Playwright these tests skip, naming the package; with CI=true they fail instead.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from sqlalchemy import select

from service.app import create_app
from service.db import models as m
from service.keys import SERVICES
from service.settings import Settings
from tests.conftest import VIDEO, meeting_body
from tests.support.http import ApiClient, token_for
from tests.support.jitsi_verifier import JitsiTokenVerifier
from tests.support.smtp_server import make_certificate

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-default-apps"]
PHONE = {"width": 375, "height": 812}
SCREENSHOT = Path("/tmp/landing.png")


def _missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        return f"Chromium is not installed ({CHROMIUM}); install the Debian package `chromium` (apt-get install chromium)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is missing (pip install -e '.[test]'); the browser is the Debian package `chromium`"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def settings(database_url: str, tmp_path: Path, port: int) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database={"url": database_url, "pool_size": 10},
        auth={"jwt_secret": secrets.token_urlsafe(32)},
        http={"public_url": f"http://127.0.0.1:{port}"},
        organizer={"name": "Forumsekretariatet", "email": "forum@tillvaxt.example"},
        video=VIDEO,
        mail={"host": "127.0.0.1", "port": 9},
    )


@pytest.fixture
async def server(aiohttp_server: Any, settings: Settings, port: int) -> Any:
    """The app on 127.0.0.1:port, the address its join links name."""
    return await aiohttp_server(create_app(settings), host="127.0.0.1", port=port)


@pytest.fixture
async def client(aiohttp_client: Any, server: Any) -> Any:
    return await aiohttp_client(server)


@pytest.fixture
def api(client: Any, settings: Settings) -> ApiClient:
    return ApiClient(client, token_for(settings, "secretariat", "sekretariatet"))


class Jitsi:
    """Stands in for https://meet.forum.test: answers every GET and keeps the URL it was sent to."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        if request.path != "/favicon.ico":
            self.urls.append(str(request.url))
        return web.Response(text="<!doctype html><title>Jitsi Meet</title><p>Jitsi stand-in</p>",
                            content_type="text/html")


@pytest.fixture
async def jitsi(tmp_path: Path) -> AsyncIterator[Jitsi]:
    stand_in = Jitsi()
    app = web.Application()
    app.router.add_get("/{tail:.*}", stand_in.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stand_in.port = free_port()
    certificate = make_certificate(tmp_path)
    await web.TCPSite(runner, "127.0.0.1", stand_in.port, ssl_context=certificate.server_context()).start()
    yield stand_in
    await runner.cleanup()


@pytest.fixture
async def browser(jitsi: Jitsi) -> AsyncIterator[Any]:
    why = _missing()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests are mandatory in CI: {why}")
        pytest.skip(why)
    from playwright.async_api import async_playwright

    # meet.forum.test is the stand-in; no other name resolves, so nothing leaves the machine.
    rules = f"--host-resolver-rules=MAP meet.forum.test 127.0.0.1:{jitsi.port}, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
    async with async_playwright() as pw:
        executable = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
        chromium = await pw.chromium.launch(executable_path=executable, args=[*LAUNCH_ARGS, rules], headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_page(browser: Any, language: str) -> tuple[Any, Any, list[str]]:
    """A phone-sized page with `language` first in Accept-Language; the dialogs it opens are collected."""
    context = await browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True,
                                        extra_http_headers={"Accept-Language": language}, ignore_https_errors=True,
                                        locale="sv-SE" if language.startswith("sv") else "en-GB")
    page = await context.new_page()
    dialogs: list[str] = []

    async def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    return context, page, dialogs


async def conference_ready(api: ApiClient, meeting_id: str) -> dict[str, Any]:
    """Run the outbox until the meeting's conference is active (the background worker may hold the job)."""
    for _ in range(100):
        await api.ok("POST", "/api/v1/calendars/sync", status=200)
        meeting = await api.ok("GET", f"/api/v1/meetings/{meeting_id}")
        if meeting["conference"]["status"] == "active":
            return meeting
        await asyncio.sleep(0.05)
    raise AssertionError(f"the conference did not become active: {meeting['conference']}")


async def book(api: ApiClient, world: dict[str, Any], title: str, name: str, email: str) -> dict[str, Any]:
    """A meeting that runs now, with a Jitsi conference, two sessions, and one remote expert invited to both."""
    start = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=10)
    end = start + timedelta(hours=3)
    sessions = [
        {"title": "Kompetensförsörjning i norr", "topic": "Hur når vi unga?",
         "starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=1, minutes=30)).isoformat()},
        {"title": "Attraktiva livsmiljöer", "starts_at": (start + timedelta(hours=1, minutes=30)).isoformat(),
         "ends_at": end.isoformat()},
    ]
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Tillväxten", "Storsjön", start=start.isoformat(), end=end.isoformat(), title=title,
        conference={"provider": "jitsi"}, sessions=sessions))
    meeting = await conference_ready(api, meeting["id"])
    person = await api.ok("POST", "/api/v1/people", {"name": name, "email": email, "organisation": "Region Jämtland Härjedalen"})
    inv = await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations", {"person_id": person["id"], "mode": "remote"})
    return {"meeting": meeting, "person": person, "invitation": inv}


async def link_opens(server: Any, invitation_id: str) -> list[m.AttendanceEvent]:
    async with server.app[SERVICES].db.session(write=False) as s:
        return list((await s.scalars(select(m.AttendanceEvent).where(
            m.AttendanceEvent.invitation_id == uuid.UUID(invitation_id),
            m.AttendanceEvent.kind == "link_opened"))).all())


async def test_the_landing_page_in_swedish_joins_the_personal_jitsi_room_and_records_it(
        api: ApiClient, world: dict[str, Any], browser: Any, server: Any, jitsi: Jitsi) -> None:
    booked = await book(api, world, "Forummöte om tillväxt – å ä ö i Östersund", "Märta Åkesson", "marta@region.example")
    meeting, inv = booked["meeting"], booked["invitation"]
    join_url = inv["join_url"]
    assert join_url.startswith(f"http://127.0.0.1:{server.port}/j/")
    room = meeting["conference"]["host_url"].rsplit("/", 1)[1]

    context, page, dialogs = await open_page(browser, "sv-SE,sv;q=0.9,en;q=0.5")
    try:
        response = await page.goto(join_url)
        assert response is not None and response.status == 200
        assert await page.get_attribute("html", "lang") == "sv"
        text = await page.inner_text("body")
        assert "Anslut till mötet" in text
        assert "Hej Märta Åkesson" in text
        assert await page.inner_text("h1") == "Forummöte om tillväxt – å ä ö i Östersund"
        assert "Kompetensförsörjning i norr" in text and "Attraktiva livsmiljöer" in text
        assert "Hur når vi unga?" in text
        assert "På distans" in text and "Lägg till i kalendern" in text
        assert await page.title() == "Forummöte om tillväxt – å ä ö i Östersund"

        # Usable on a phone: nothing wider than the screen, the buttons big enough to tap.
        assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        join_box = await page.locator("#join").bounding_box()
        assert join_box is not None and join_box["height"] >= 44 and join_box["x"] + join_box["width"] <= PHONE["width"]
        await page.screenshot(path=str(SCREENSHOT), full_page=True)

        # Join: the link open is recorded, and the browser lands on the personal Jitsi URL.
        assert await link_opens(server, inv["id"]) == []
        async with page.expect_navigation(url=lambda url: url.startswith("https://meet.forum.test/")):
            await page.get_by_role("link", name="Anslut till mötet").click()
        assert page.url.startswith(f"https://meet.forum.test/{room}?jwt=")
        assert jitsi.urls == [page.url]
        assert "Jitsi stand-in" in await page.inner_text("body")
        token = parse_qs(urlsplit(page.url).query)["jwt"][0]
        cfg = VIDEO["jitsi"]
        verifier = JitsiTokenVerifier(app_id=cfg["app_id"], app_secret=cfg["app_secret"], domain=cfg["subject"],
                                      accepted_audiences=[cfg["audience"]])
        claims = verifier.admit(token, room)
        assert claims["context"]["user"]["id"] == inv["id"]
        assert claims["context"]["user"]["name"] == "Märta Åkesson"
        assert claims["context"]["user"]["moderator"] is False
        opened = await link_opens(server, inv["id"])
        assert [(e.kind, e.source) for e in opened] == [("link_opened", "link")]
        assert dialogs == []
    finally:
        await context.close()


async def test_the_rsvp_buttons_save_the_answer(api: ApiClient, world: dict[str, Any], browser: Any) -> None:
    booked = await book(api, world, "Forummöte i Tillväxten", "Björn Sjöström", "bjorn@region.example")
    inv = booked["invitation"]
    context, page, dialogs = await open_page(browser, "sv")
    try:
        await page.goto(inv["join_url"])
        assert "Inte svarat än" in await page.inner_text("body")
        for label, answer in (("Jag kommer", "accepted"), ("Jag kommer inte", "declined")):
            async with page.expect_navigation():
                await page.get_by_role("button", name=label, exact=True).click()
            status = page.locator("[role=status]")
            assert await status.inner_text() == "Tack, ditt svar är sparat."
            assert await page.get_by_role("button", name=label, exact=True).get_attribute("aria-pressed") == "true"
            assert urlsplit(page.url).path == urlsplit(inv["join_url"]).path
            assert (await api.ok("GET", f"/api/v1/invitations/{inv['id']}"))["rsvp"] == answer
        assert "Ditt svar just nu: Jag kommer inte" in await page.inner_text("body")
        log = await api.ok("GET", f"/api/v1/audit?entity=invitation&entity_id={inv['id']}")
        assert [e["details"]["to"] for e in log["items"] if e["action"] == "rsvp_from_link"] == ["accepted", "declined"]
        assert dialogs == []
    finally:
        await context.close()


async def test_an_english_browser_gets_the_page_in_english(api: ApiClient, world: dict[str, Any], browser: Any) -> None:
    booked = await book(api, world, "Forum meeting on growth", "Ingrid Lund", "ingrid@region.example")
    context, page, _ = await open_page(browser, "en-GB,en;q=0.9")
    try:
        await page.goto(booked["invitation"]["join_url"])
        assert await page.get_attribute("html", "lang") == "en"
        text = await page.inner_text("body")
        assert "Join the meeting" in text and "Hello Ingrid Lund" in text and "Your sessions" in text
        assert "Anslut till mötet" not in text
        async with page.expect_navigation():
            await page.get_by_role("button", name="Maybe", exact=True).click()
        assert "Thank you, your answer is saved." in await page.inner_text("body")
        assert (await api.ok("GET", f"/api/v1/invitations/{booked['invitation']['id']}"))["rsvp"] == "tentative"
    finally:
        await context.close()


async def test_html_in_the_title_and_the_name_is_shown_as_text_and_never_run(
        api: ApiClient, world: dict[str, Any], browser: Any) -> None:
    title = "<script>alert(1)</script> Forummöte"
    name = "<img src=x onerror=alert(1)> Åsa"
    booked = await book(api, world, title, name, "asa@region.example")
    context, page, dialogs = await open_page(browser, "sv")
    try:
        await page.goto(booked["invitation"]["join_url"])
        assert await page.inner_text("h1") == title
        assert name in await page.inner_text("body")
        assert await page.title() == title
        assert await page.locator("main script").count() == 0
        assert await page.locator("main img").count() == 0
        # The RSVP round trip renders the page again, with the same text.
        async with page.expect_navigation():
            await page.get_by_role("button", name="Kanske", exact=True).click()
        assert await page.inner_text("h1") == title
        await page.wait_for_timeout(200)
        assert dialogs == []
    finally:
        await context.close()
