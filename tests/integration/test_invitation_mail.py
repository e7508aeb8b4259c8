"""Invitation mail through the outbox to a real SMTP server (aiosmtpd on loopback), read as a mail client would.

Each message is parsed with the standard `email` package and its iMIP part with `icalendar`: the
invitation, the update after a reschedule, the cancellation, the withdrawal, the mail after a reissued
link; and with the server down, refusing with 451, or back up, every message arrives exactly once.
"""
from __future__ import annotations

import asyncio
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from icalendar import Calendar
from sqlalchemy import select

from service.db import models as m
from service.keys import SERVICES
from service.settings import Settings
from tests.conftest import VIDEO, meeting_body
from tests.support.http import ApiClient
from tests.support.smtp_server import SmtpServer

ORGANIZER = "forum@tillvaxt.example"


@pytest.fixture
def settings(database_url: str, tmp_path: Path, smtp_server: SmtpServer) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database={"url": database_url, "pool_size": 10},
        auth={"jwt_secret": secrets.token_urlsafe(32)},
        http={"public_url": "http://forum.test"},
        organizer={"name": "Forumsekretariatet", "email": ORGANIZER},
        video=VIDEO,
        mail={"host": smtp_server.host, "port": smtp_server.port,
              "sender": f"Forumsekretariatet på Tillväxtverket <{ORGANIZER}>"},
    )


@dataclass
class Mail:
    """One received message, taken apart."""

    message: EmailMessage
    rcpt_tos: tuple[str, ...]
    text: str
    html: str
    content_type_method: str
    method: str
    event: Any

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


def read(received: Any) -> Mail:
    message = received.message()
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    [part] = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    calendar = Calendar.from_ical(part.get_payload(decode=True))
    [event] = calendar.walk("VEVENT")
    return Mail(message, received.rcpt_tos, text, html, part.get_param("method"), str(calendar["METHOD"]), event)


def mails(server: SmtpServer) -> list[Mail]:
    return [read(r) for r in server.received]


async def settle(api: ApiClient, rounds: int = 200) -> None:
    """Run the outbox until no mail job is left (the background worker may hold one when a round runs)."""
    quiet = 0
    for _ in range(rounds):
        result = await api.ok("POST", "/api/v1/calendars/sync", status=200)
        jobs = (await api.ok("GET", "/api/v1/outbox?kind=mail"))["items"]
        assert not [j for j in jobs if j["status"] == "failed"], jobs
        if not jobs and result["jobs_run"] == 0:
            quiet += 1
            if quiet == 2:
                return
        else:
            quiet = 0
        await asyncio.sleep(0.05)
    raise AssertionError(f"the mail jobs did not finish: {jobs}")


async def until_waiting(api: ApiClient, count: int, rounds: int = 200) -> list[dict[str, Any]]:
    """Run the outbox until `count` mail jobs have each been tried and wait, with their last error."""
    for _ in range(rounds):
        await api.ok("POST", "/api/v1/calendars/sync", status=200)
        jobs = (await api.ok("GET", "/api/v1/outbox?kind=mail"))["items"]
        if len(jobs) == count and all(j["status"] == "pending" and j["attempts"] >= 1 and j["last_error"] for j in jobs):
            return jobs
        await asyncio.sleep(0.05)
    raise AssertionError(f"the mail jobs are not waiting as expected: {jobs}")


async def a_meeting(api: ApiClient, world: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = meeting_body(world, "Tillväxten", "Storsjön", title="Forummöte om hållbar tillväxt – å ä ö",
                        sessions=[{"title": "Kompetensförsörjning", "starts_at": "2027-04-05T09:00:00",
                                   "ends_at": "2027-04-05T10:30:00"},
                                  {"title": "Attraktiva livsmiljöer", "starts_at": "2027-04-05T10:30:00",
                                   "ends_at": "2027-04-05T12:00:00"}])
    body.update(extra)
    return await api.ok("POST", "/api/v1/meetings", body)


async def invite(api: ApiClient, meeting: dict[str, Any], name: str, email: str, **body: Any) -> dict[str, Any]:
    person = await api.ok("POST", "/api/v1/people", {"name": name, "email": email})
    return await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations",
                        {"person_id": person["id"], "mode": "remote", **body})


def attendees(event: Any) -> list[str]:
    value = event.get("ATTENDEE")
    values = value if isinstance(value, list) else [value]
    return [str(a).lower() for a in values if a is not None]


def conference_uris(event: Any) -> list[str]:
    value = event.get("CONFERENCE")
    values = value if isinstance(value, list) else [value]
    return [str(c) for c in values if c is not None]


async def test_an_invitation_sends_one_message_with_the_link_and_the_personal_calendar_copy(
        api: ApiClient, world: dict[str, Any], smtp_server: SmtpServer) -> None:
    meeting = await a_meeting(api, world)
    inv = await invite(api, meeting, "Märta Åkesson", "marta@region.example",
                       session_ids=[meeting["sessions"][0]["id"]])
    await settle(api)
    meeting = await api.ok("GET", f"/api/v1/meetings/{meeting['id']}")

    [mail] = mails(smtp_server)
    link = inv["join_url"]
    assert mail.rcpt_tos == ("marta@region.example",)
    assert "marta@region.example" in str(mail.message["To"]) and "Märta Åkesson" in str(mail.message["To"])
    assert ORGANIZER in str(mail.message["From"])
    assert "Forummöte om hållbar tillväxt – å ä ö" in str(mail.message["Subject"])
    assert mail.message_id.startswith("<") and mail.message_id.endswith(">")
    assert link in mail.text and f'href="{link}"' in mail.html
    assert "Kompetensförsörjning" in mail.text and "Attraktiva livsmiljöer" not in mail.text
    assert mail.content_type_method == mail.method == "REQUEST"

    event = mail.event
    assert str(event["UID"]) == meeting["uid"]
    assert int(event["SEQUENCE"]) == meeting["sequence"]
    assert "mailto:marta@region.example" in attendees(event)
    assert str(event["LOCATION"]) == link
    assert str(event["DESCRIPTION"]).splitlines()[0] == link
    assert str(event["URL"]) == link
    assert link in conference_uris(event)
    assert str(event["ORGANIZER"]).lower() == f"mailto:{ORGANIZER}"
    assert str(event["STATUS"]) == "CONFIRMED"
    # An attachment with the same calendar, for mailers that only import files.
    [attachment] = [p for p in mail.message.walk() if p.get_content_type() == "application/ics"]
    assert Calendar.from_ical(attachment.get_payload(decode=True)).walk("VEVENT")[0]["UID"] == event["UID"]

    # Nothing more comes on its own: the job converged.
    await settle(api)
    assert len(smtp_server.received) == 1


async def test_an_in_room_participant_gets_the_room_as_location_and_the_link_in_the_text(
        api: ApiClient, world: dict[str, Any], smtp_server: SmtpServer) -> None:
    meeting = await a_meeting(api, world)
    inv = await invite(api, meeting, "Jörgen Ångström", "jorgen@region.example", mode="in_room",
                       site_id=world["sites"]["Östersund"]["id"])
    await settle(api)
    [mail] = mails(smtp_server)
    assert inv["join_url"] in mail.text and inv["join_url"] in mail.html
    assert "Tillväxten" in str(mail.event["LOCATION"]) and "/j/" not in str(mail.event["LOCATION"])
    assert str(mail.event["DESCRIPTION"]).splitlines()[0] == inv["join_url"]


async def test_a_reschedule_sends_an_update_and_a_cancellation_sends_cancel_with_the_same_uid(
        api: ApiClient, world: dict[str, Any], smtp_server: SmtpServer) -> None:
    meeting = await a_meeting(api, world)
    inv = await invite(api, meeting, "Björn Sjöström", "bjorn@region.example")
    await settle(api)
    first = await api.ok("GET", f"/api/v1/meetings/{meeting['id']}")

    moved = await api.ok("PATCH", f"/api/v1/meetings/{meeting['id']}", {
        "starts_at": "2027-04-06T09:00:00", "ends_at": "2027-04-06T12:00:00",
        "sessions": [{"title": "Kompetensförsörjning", "starts_at": "2027-04-06T09:00:00", "ends_at": "2027-04-06T12:00:00"}]})
    assert moved["sequence"] > first["sequence"]
    await settle(api)
    moved = await api.ok("GET", f"/api/v1/meetings/{meeting['id']}")

    cancelled = await api.ok("DELETE", f"/api/v1/meetings/{meeting['id']}", status=200)
    assert cancelled["status"] == "cancelled"
    await settle(api)
    cancelled = await api.ok("GET", f"/api/v1/meetings/{meeting['id']}")

    invitation, update, cancel = mails(smtp_server)
    assert [m.method for m in (invitation, update, cancel)] == ["REQUEST", "REQUEST", "CANCEL"]
    assert [m.content_type_method for m in (invitation, update, cancel)] == ["REQUEST", "REQUEST", "CANCEL"]
    assert {str(m.event["UID"]) for m in (invitation, update, cancel)} == {meeting["uid"]}
    sequences = [int(m.event["SEQUENCE"]) for m in (invitation, update, cancel)]
    assert sequences == [first["sequence"], moved["sequence"], cancelled["sequence"]]
    assert sequences[0] < sequences[1] < sequences[2]
    assert update.event.decoded("DTSTART").date().isoformat() == "2027-04-06"
    assert inv["join_url"] in update.text and str(update.event["LOCATION"]) == inv["join_url"]
    assert str(cancel.event["STATUS"]) == "CANCELLED"
    assert attendees(cancel.event) == ["mailto:bjorn@region.example"]
    assert len({m.message_id for m in (invitation, update, cancel)}) == 3
    assert all(m.rcpt_tos == ("bjorn@region.example",) for m in (invitation, update, cancel))


async def test_withdrawing_an_invitation_sends_that_person_a_cancellation(
        api: ApiClient, world: dict[str, Any], smtp_server: SmtpServer) -> None:
    meeting = await a_meeting(api, world)
    stays = await invite(api, meeting, "Ingrid Lund", "ingrid@region.example")
    leaves = await invite(api, meeting, "Sören Ekdahl", "soren@region.example")
    await settle(api)
    assert sorted(m.rcpt_tos for m in mails(smtp_server)) == [("ingrid@region.example",), ("soren@region.example",)]

    await api.ok("DELETE", f"/api/v1/invitations/{leaves['id']}", status=204)
    await settle(api)
    later = mails(smtp_server)[2:]
    assert [(m.rcpt_tos, m.method) for m in later] == [(("soren@region.example",), "CANCEL")]
    [cancel] = later
    assert str(cancel.event["UID"]) == meeting["uid"]
    assert attendees(cancel.event) == ["mailto:soren@region.example"]
    assert leaves["join_url"] not in cancel.text and "återkallats" in cancel.text
    assert stays["join_url"] not in cancel.text + cancel.html


async def test_a_reissued_link_is_mailed_and_the_old_one_is_not(
        api: ApiClient, world: dict[str, Any], smtp_server: SmtpServer) -> None:
    meeting = await a_meeting(api, world)
    inv = await invite(api, meeting, "Åsa Öberg", "asa@region.example")
    await settle(api)
    fresh = await api.ok("POST", f"/api/v1/invitations/{inv['id']}/reissue", status=200)
    assert fresh["join_url"] != inv["join_url"]
    await settle(api)
    first, second = mails(smtp_server)
    assert inv["join_url"] in first.text
    assert fresh["join_url"] in second.text and fresh["join_url"] in second.html
    assert inv["join_url"] not in second.text + second.html
    assert str(second.event["LOCATION"]) == fresh["join_url"] and str(second.event["URL"]) == fresh["join_url"]
    assert second.method == "REQUEST" and str(second.event["UID"]) == meeting["uid"]


async def test_with_the_server_down_the_api_works_and_each_message_arrives_once_it_is_up(
        api: ApiClient, world: dict[str, Any], smtp_server: SmtpServer, client: Any) -> None:
    smtp_server.stop()
    meeting = await a_meeting(api, world)
    people = [await invite(api, meeting, name, f"{key}@region.example")
              for name, key in (("Märta Åkesson", "marta"), ("Björn Sjöström", "bjorn"), ("Ingrid Lund", "ingrid"))]
    jobs = await until_waiting(api, 3)
    assert {j["invitation_id"] for j in jobs} == {p["id"] for p in people}
    assert all(j["kind"] == "mail.invitation" and j["key"] == f"mail:{j['invitation_id']}" for j in jobs)
    assert all("unavailable" in j["last_error"] for j in jobs)
    # The same, as the rows of the outbox table hold it.
    async with client.app[SERVICES].db.session(write=False) as s:
        rows = (await s.scalars(select(m.OutboxJob).where(m.OutboxJob.kind.like("mail.%")))).all()
    assert len(rows) == 3 and all(r.status == "pending" and r.last_error and r.attempts >= 1 for r in rows)
    # A viewer may not read the outbox (it names people's invitations).
    assert (await api.as_token(None).get("/api/v1/outbox"))[0] == 401

    # Changes made while the server is down are folded into the one message each person gets.
    await api.ok("PATCH", f"/api/v1/meetings/{meeting['id']}", {"title": "Forummöte, nytt namn"})
    assert len(await until_waiting(api, 3)) == 3
    assert smtp_server.received == []

    smtp_server.start()
    await settle(api)
    received = mails(smtp_server)
    assert Counter(m.message_id for m in received).most_common(1)[0][1] == 1
    assert sorted(m.rcpt_tos[0] for m in received) == ["bjorn@region.example", "ingrid@region.example",
                                                       "marta@region.example"]
    final = await api.ok("GET", f"/api/v1/meetings/{meeting['id']}")
    assert all(int(m.event["SEQUENCE"]) == final["sequence"] and str(m.event["SUMMARY"]) == "Forummöte, nytt namn"
               for m in received)
    # Run again: nothing new.
    await settle(api)
    assert len(smtp_server.received) == 3


async def test_a_451_then_success_gives_exactly_one_message(
        api: ApiClient, world: dict[str, Any], smtp_server: SmtpServer) -> None:
    smtp_server.refuse("data", 451, times=1)
    meeting = await a_meeting(api, world)
    await invite(api, meeting, "Märta Åkesson", "marta@region.example")
    await settle(api)
    assert smtp_server.handler.refusals == []  # the 451 was given
    [mail] = mails(smtp_server)
    assert mail.rcpt_tos == ("marta@region.example",)
    log = await api.ok("GET", "/api/v1/audit?entity=invitation")
    assert [e["action"] for e in log["items"]].count("mail_sent") == 1


async def test_the_outbox_lists_unfinished_jobs_of_every_kind_page_by_page(
        api: ApiClient, world: dict[str, Any], smtp_server: SmtpServer, viewer: ApiClient) -> None:
    smtp_server.stop()
    meeting = await a_meeting(api, world)
    for i in range(3):
        await invite(api, meeting, f"Expert {i}", f"expert{i}@region.example")
    await until_waiting(api, 3)
    first = await api.ok("GET", "/api/v1/outbox?limit=2")
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = await api.ok("GET", f"/api/v1/outbox?limit=2&cursor={first['next_cursor']}")
    ids = [j["id"] for j in first["items"] + rest["items"]]
    assert len(ids) == len(set(ids)) >= 3
    assert {"id", "kind", "key", "status", "attempts", "next_attempt_at", "last_error"} <= set(first["items"][0])
    assert (await api.ok("GET", "/api/v1/outbox?status=failed"))["items"] == []
    assert (await api.ok("GET", "/api/v1/outbox?kind=calendar"))["items"] == []
    code, problem = await viewer.get("/api/v1/outbox")
    assert code == 403, problem
    code, problem = await api.get("/api/v1/outbox?status=lost")
    assert code == 422 and problem["errors"][0]["field"] == "status"


async def test_after_the_link_key_is_rotated_the_next_mail_carries_a_link_that_opens_and_the_old_one_is_revoked(
        api: ApiClient, world: dict[str, Any], smtp_server: SmtpServer, settings: Settings, client: Any,
        aiohttp_client: Any) -> None:
    from urllib.parse import urlsplit

    from service.app import create_app
    from tests.support.http import token_for

    meeting = await a_meeting(api, world)
    inv = await invite(api, meeting, "Åsa Öberg", "asa@region.example")
    await settle(api)
    await client.close()  # the service stops; the operator rotates the key (a link leaked) and starts it again

    rotated = settings.model_copy(update={"join": settings.join.model_copy(
        update={"link_secret": "roterad nyckel " + secrets.token_urlsafe(32)})})
    client2 = await aiohttp_client(create_app(rotated))
    api2 = ApiClient(client2, token_for(rotated, "secretariat", "sekretariatet"))
    await api2.ok("PATCH", f"/api/v1/meetings/{meeting['id']}", {"title": "Forummöte om hållbar tillväxt (ny titel)"})
    await settle(api2)
    first, second = mails(smtp_server)
    [new_url] = {word for word in second.text.split() if "/j/" in word}
    assert new_url != inv["join_url"] and inv["join_url"] in first.text
    async with client2.get(urlsplit(new_url).path) as page:
        assert page.status == 200
    async with client2.get(urlsplit(inv["join_url"]).path) as page:
        assert page.status == 410
