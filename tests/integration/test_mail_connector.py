"""The SMTP mail connector against a real aiosmtpd server on loopback."""
from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from email.message import EmailMessage
from typing import Any

import icalendar
import pytest

from connectors.mail import (
    MailAuthError,
    MailError,
    MailRejected,
    MailSender,
    MailUnavailable,
    OutgoingMail,
    SmtpSender,
    make_sender,
)
from tests.support.smtp_server import (  # noqa: F401 - fixtures
    HOST,
    SmtpServer,
    TlsCertificate,
    free_port,
    smtp_server,
    smtp_server_factory,
    tls_certificate,
)

SECRETARIAT = "Forumsekretariatet på Tillväxtverket <forum@example.org>"
EXPERT = "Åsa Öberg <asa.oberg@example.se>"
LINK = "https://forum.example.org/j/7yV0fQ"
USERNAME, PASSWORD = "forumbridge", "hemligt-lösenord"


def invitation_ics(method: str = "REQUEST", sequence: int = 0) -> bytes:
    """A personal copy as the service renders it: METHOD, SEQUENCE, the link, Swedish text."""
    calendar = icalendar.Calendar()
    calendar.add("prodid", "-//forumbridge//tests//EN")
    calendar.add("version", "2.0")
    calendar.add("method", method)
    event = icalendar.Event()
    event.add("uid", "meeting-42@forum.example.org")
    event.add("sequence", sequence)
    event.add("dtstamp", datetime(2027, 3, 1, 8, 0, tzinfo=timezone.utc))
    event.add("dtstart", datetime(2027, 4, 5, 7, 0, tzinfo=timezone.utc))
    event.add("dtend", datetime(2027, 4, 5, 10, 0, tzinfo=timezone.utc))
    event.add("summary", "Forummöte om hållbar tillväxt – Östersund följer på distans")
    event.add("location", LINK)
    event.add("description", f"{LINK}\nAnslut med din personliga länk.")
    event.add("status", "CANCELLED" if method == "CANCEL" else "CONFIRMED")
    event.add("organizer", "mailto:forum@example.org")
    event.add("attendee", "mailto:asa.oberg@example.se", parameters={"CN": "Åsa Öberg", "PARTSTAT": "NEEDS-ACTION"})
    calendar.add_component(event)
    return calendar.to_ical()


def mail(*, method: str | None = "REQUEST", subject: str = "Inbjudan: Forummöte i Tillväxten, 5 april",
         to: tuple[str, ...] = (EXPERT,), sender: str = SECRETARIAT, message_id: str | None = None,
         headers: tuple[tuple[str, str], ...] = ()) -> OutgoingMail:
    return OutgoingMail(
        message_id=message_id or f"<{uuid.uuid4()}@forum.example.org>",
        sender=sender,
        to=to,
        subject=subject,
        text=f"Hej Åsa!\n\nDu är inbjuden till forummötet i Tillväxten (Östersund följer på distans).\n{LINK}\n",
        html=f'<p>Hej Åsa!</p><p>Du är inbjuden till forummötet. <a href="{LINK}">Anslut här</a> – å ä ö.</p>',
        ics=invitation_ics(method) if method else None,
        ics_method=method,
        headers=headers,
    )


def parts(message: EmailMessage) -> dict[str, list[EmailMessage]]:
    """The message's leaf parts by content type."""
    found: dict[str, list[EmailMessage]] = {}
    for part in message.walk():
        if not part.is_multipart():
            found.setdefault(part.get_content_type(), []).append(part)  # type: ignore[arg-type]
    return found


@pytest.fixture
async def sender(smtp_server: SmtpServer) -> AsyncIterator[SmtpSender]:
    conn = SmtpSender(smtp_server.host, smtp_server.port, timeout=5, local_hostname="forumbridge.test")
    yield conn
    await conn.close()


async def test_an_invitation_arrives_with_text_html_and_the_imip_part(smtp_server: SmtpServer, sender: SmtpSender) -> None:
    sent = mail()
    await sender.send(sent)

    [received] = smtp_server.received
    assert received.mail_from == "forum@example.org"
    assert received.rcpt_tos == ("asa.oberg@example.se",)
    message = received.message()
    assert message.get_content_type() == "multipart/mixed"
    alternative = message.get_payload()[0]
    assert alternative.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain", "text/html", "text/calendar"]
    found = parts(message)
    assert found["text/plain"][0].get_content().replace("\r\n", "\n") == sent.text
    assert "Anslut här</a> – å ä ö." in found["text/html"][0].get_content()
    [calendar_part] = found["text/calendar"]
    assert calendar_part.get_param("method") == "REQUEST"
    assert calendar_part.get_content_charset() == "utf-8"
    assert calendar_part.get_payload(decode=True) == sent.ics
    calendar = icalendar.Calendar.from_ical(calendar_part.get_payload(decode=True))
    assert calendar["METHOD"] == "REQUEST"
    [event] = calendar.walk("VEVENT")
    assert event["SUMMARY"] == "Forummöte om hållbar tillväxt – Östersund följer på distans"
    assert event["SEQUENCE"] == 0 and str(event["LOCATION"]) == LINK
    [attachment] = found["application/ics"]
    assert attachment.get_filename() == "invite.ics"
    assert attachment.get_payload(decode=True) == sent.ics


async def test_the_message_id_is_exactly_the_one_given_on_every_send(smtp_server: SmtpServer, sender: SmtpSender) -> None:
    sent = mail(message_id="<inv-1.3f9a@forum.example.org>")
    await sender.send(sent)
    await sender.send(sent)
    assert [r.message()["Message-ID"] for r in smtp_server.received] == ["<inv-1.3f9a@forum.example.org>"] * 2


async def test_headers_are_ascii_and_decode_to_the_swedish_text(smtp_server: SmtpServer, sender: SmtpSender) -> None:
    await sender.send(mail(subject="Ändrat: Forummöte – å ä ö Å Ä Ö"))

    [received] = smtp_server.received
    head = received.data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and b"=?utf-8?" in head
    message = received.message()
    assert message["Subject"] == "Ändrat: Forummöte – å ä ö Å Ä Ö"
    assert message["From"].addresses[0].display_name == "Forumsekretariatet på Tillväxtverket"
    assert str(message["To"].addresses[0]) == EXPERT
    assert message["Date"].datetime.tzinfo is not None
    assert message["MIME-Version"] == "1.0"


@pytest.mark.parametrize("method", ["REQUEST", "CANCEL"])
async def test_the_calendar_part_carries_the_method_of_the_stream(
        smtp_server: SmtpServer, sender: SmtpSender, method: str) -> None:
    await sender.send(mail(method=method))

    [calendar_part] = parts(smtp_server.received[0].message())["text/calendar"]
    assert calendar_part["Content-Type"].params == {"charset": "utf-8", "method": method}
    assert icalendar.Calendar.from_ical(calendar_part.get_payload(decode=True))["METHOD"] == method


async def test_a_mail_without_calendar_is_text_and_html_alone(smtp_server: SmtpServer, sender: SmtpSender) -> None:
    await sender.send(mail(method=None))

    message = smtp_server.received[0].message()
    assert message.get_content_type() == "multipart/alternative"
    assert sorted(parts(message)) == ["text/html", "text/plain"]


async def test_a_name_encoded_by_formataddr_arrives_decoded_once(smtp_server: SmtpServer, sender: SmtpSender) -> None:
    from email.utils import formataddr

    await sender.send(mail(to=(formataddr(("Åsa Öberg", "asa.oberg@example.se")), '"Lund, Eva" <eva@example.se>')))

    [received] = smtp_server.received
    assert received.rcpt_tos == ("asa.oberg@example.se", "eva@example.se")
    names = [a.display_name for a in received.message()["To"].addresses]
    assert names == ["Åsa Öberg", "Lund, Eva"]


async def test_an_internationalised_domain_travels_in_its_ascii_form(smtp_server: SmtpServer, sender: SmtpSender) -> None:
    await sender.send(mail(to=("Åsa <asa@exempel.åäö.se>",)))
    assert smtp_server.received[0].rcpt_tos == ("asa@exempel.xn--4cab6c.se",)


INJECTIONS = ["\r\nBcc: evil@example.net", "\nBcc: evil@example.net", "\rBcc: evil@example.net",
              "\u2028Bcc: evil@example.net", "\x85Bcc: evil@example.net", "\r\n\r\nBcc: evil@example.net"]


@pytest.mark.parametrize("where", ["subject", "recipient name", "sender name", "extra header"])
@pytest.mark.parametrize("injection", INJECTIONS, ids=repr)
async def test_a_line_break_in_header_text_creates_no_header(
        smtp_server: SmtpServer, sender: SmtpSender, where: str, injection: str) -> None:
    subject, to, from_, headers = "Inbjudan", (EXPERT,), SECRETARIAT, ()
    if where == "subject":
        subject = "Inbjudan" + injection
    elif where == "recipient name":
        to = (f"Åsa Öberg{injection} <asa.oberg@example.se>",)
    elif where == "sender name":
        from_ = f"Forumsekretariatet{injection} <forum@example.org>"
    else:
        headers = (("Reply-To", f"forum@example.org{injection}"),)
    await sender.send(mail(subject=subject, to=to, sender=from_, headers=headers))

    [received] = smtp_server.received
    assert received.rcpt_tos == ("asa.oberg@example.se",)
    message = received.message()
    assert message["Bcc"] is None
    assert not message.defects
    assert [name for name, _ in message.items()] == [
        "Message-ID", "Date", "From", "To", "Subject", *(n for n, _ in headers), "MIME-Version", "Content-Type"]
    assert received.mail_from == "forum@example.org"


@pytest.mark.parametrize("bad", [
    {"message_id": "no-brackets@forum.example.org"},
    {"to": ()},
    {"ics_method": "PUBLISH"},
    {"ics_method": "CANCEL"},  # the stream says REQUEST
    {"ics_method": None},
    {"headers": (("Message-ID", "<x@y>"),)},
    {"headers": (("Bad Name", "x"),)},
])
def test_an_outgoing_mail_that_breaks_the_rules_is_refused_when_made(bad: dict[str, Any]) -> None:
    fields = {"message_id": "<a@b.c>", "sender": SECRETARIAT, "to": (EXPERT,), "subject": "s",
              "text": "t", "html": "h", "ics": invitation_ics("REQUEST"), "ics_method": "REQUEST"} | bad
    with pytest.raises(ValueError):
        OutgoingMail(**fields)


@pytest.mark.parametrize("to", ["not an address", "åsa@example.se", "a@b, c@d"])
async def test_an_address_that_cannot_be_sent_is_rejected(smtp_server: SmtpServer, sender: SmtpSender, to: str) -> None:
    with pytest.raises(MailRejected):
        await sender.send(mail(to=(to,)))
    assert smtp_server.received == []


# (stage, code) -> what the sender must raise
REFUSALS = [
    ("mail", 421, MailUnavailable),
    ("mail", 451, MailUnavailable),
    ("mail", 530, MailAuthError),   # authentication required
    ("mail", 553, MailAuthError),   # 5.7.1 not allowed to send as this address: fix the setting
    ("mail", 552, MailRejected),
    ("rcpt", 450, MailUnavailable),
    ("rcpt", 451, MailUnavailable),  # greylisting
    ("rcpt", 452, MailUnavailable),
    ("rcpt", 550, MailRejected),
    ("data", 451, MailUnavailable),
    ("data", 552, MailRejected),
    ("data", 554, MailRejected),
]


@pytest.mark.parametrize(("stage", "code", "expected"), REFUSALS)
async def test_a_refusal_maps_to_the_right_error(
        smtp_server: SmtpServer, sender: SmtpSender, stage: str, code: int, expected: type[MailError]) -> None:
    smtp_server.refuse(stage, code)  # type: ignore[arg-type]
    with pytest.raises(expected) as caught:
        await sender.send(mail())
    assert type(caught.value) is expected and caught.value.code == code
    assert smtp_server.received == []


async def test_a_transient_refusal_then_success_delivers_once(smtp_server: SmtpServer, sender: SmtpSender) -> None:
    smtp_server.refuse("rcpt", 451, times=1)
    sent = mail()
    with pytest.raises(MailUnavailable):
        await sender.send(sent)
    await sender.send(sent)
    assert [r.message()["Message-ID"] for r in smtp_server.received] == [sent.message_id]


async def test_a_partial_refusal_says_who_got_it(smtp_server: SmtpServer, sender: SmtpSender) -> None:
    smtp_server.refuse("rcpt", 550, address="eva@example.se")
    with pytest.raises(MailRejected) as caught:
        await sender.send(mail(to=(EXPERT, "Eva <eva@example.se>")))
    assert caught.value.accepted == ("asa.oberg@example.se",)
    assert set(caught.value.refused) == {"eva@example.se"} and caught.value.refused["eva@example.se"][0] == 550
    assert [r.rcpt_tos for r in smtp_server.received] == [("asa.oberg@example.se",)]


async def test_a_server_that_is_down_delays_the_mail_and_loses_none(smtp_server: SmtpServer, sender: SmtpSender) -> None:
    await sender.send(mail())  # a connection is open when the server goes away
    smtp_server.stop()
    sent = mail()
    for _ in range(2):
        with pytest.raises(MailUnavailable):
            await sender.send(sent)
    smtp_server.start()
    await sender.send(sent)
    assert [r.message()["Message-ID"] for r in smtp_server.received][1:] == [sent.message_id]


async def test_nothing_listening_is_unavailable() -> None:
    conn = SmtpSender(HOST, free_port(), timeout=2, local_hostname="forumbridge.test")
    with pytest.raises(MailUnavailable):
        await conn.send(mail())
    await conn.close()


async def test_a_server_that_never_greets_times_out_as_unavailable() -> None:
    with socket.socket() as listener:  # accepts connections (in the backlog) and never answers
        listener.bind((HOST, 0))
        listener.listen(5)
        conn = SmtpSender(HOST, listener.getsockname()[1], timeout=0.5, local_hostname="forumbridge.test")
        with pytest.raises(MailUnavailable):
            await asyncio.wait_for(conn.send(mail()), 10)
        await conn.close()


async def test_a_connection_dropped_during_data_is_unavailable_and_resent_with_the_same_message_id(
        smtp_server: SmtpServer, sender: SmtpSender) -> None:
    smtp_server.drop_during_data()
    sent = mail()
    with pytest.raises(MailUnavailable):
        await sender.send(sent)
    await sender.send(sent)
    # The server had the data when it dropped; the copy carries the same Message-ID.
    assert [r.message()["Message-ID"] for r in smtp_server.dropped + smtp_server.received] == [sent.message_id] * 2


async def test_messages_in_a_row_share_one_connection(smtp_server: SmtpServer, sender: SmtpSender) -> None:
    for _ in range(3):
        await sender.send(mail())
    assert len({r.peer for r in smtp_server.received}) == 1


async def test_a_connection_is_renewed_after_its_message_quota(smtp_server: SmtpServer) -> None:
    conn = SmtpSender(smtp_server.host, smtp_server.port, timeout=5, local_hostname="forumbridge.test",
                      max_messages_per_connection=2)
    for _ in range(5):
        await conn.send(mail())
    await conn.close()
    peers = [r.peer for r in smtp_server.received]
    assert len(set(peers)) == 3 and peers[0] == peers[1] != peers[2]


async def test_concurrent_sends_all_arrive(smtp_server: SmtpServer, sender: SmtpSender) -> None:
    sent = [mail() for _ in range(10)]
    await asyncio.gather(*(sender.send(m) for m in sent))
    assert sorted(r.message()["Message-ID"] for r in smtp_server.received) == sorted(m.message_id for m in sent)


@pytest.fixture
def auth_server(smtp_server_factory: Callable[..., SmtpServer]) -> SmtpServer:
    return smtp_server_factory(username=USERNAME, password=PASSWORD)


async def test_the_right_password_logs_in_and_delivers(auth_server: SmtpServer) -> None:
    conn = SmtpSender(auth_server.host, auth_server.port, "none", USERNAME, PASSWORD, timeout=5,
                      local_hostname="forumbridge.test")
    await conn.send(mail())
    await conn.close()
    assert [r.login for r in auth_server.received] == [USERNAME]


@pytest.mark.parametrize(("username", "password"), [(USERNAME, "fel-lösenord"), ("någon-annan", PASSWORD)])
async def test_a_wrong_login_is_mail_auth_error(auth_server: SmtpServer, username: str, password: str) -> None:
    conn = SmtpSender(auth_server.host, auth_server.port, "none", username, password, timeout=5,
                      local_hostname="forumbridge.test")
    with pytest.raises(MailAuthError) as caught:
        await conn.send(mail())
    await conn.close()
    assert caught.value.code == 535
    assert auth_server.received == []


async def test_a_login_where_the_server_offers_none_is_mail_auth_error(smtp_server: SmtpServer) -> None:
    conn = SmtpSender(smtp_server.host, smtp_server.port, "none", USERNAME, PASSWORD, timeout=5,
                      local_hostname="forumbridge.test")
    with pytest.raises(MailAuthError):
        await conn.send(mail())
    await conn.close()


async def test_starttls_with_the_servers_certificate_logs_in_and_delivers(
        smtp_server_factory: Callable[..., SmtpServer], tls_certificate: TlsCertificate) -> None:
    server = smtp_server_factory(username=USERNAME, password=PASSWORD, auth_require_tls=True,
                                 tls_context=tls_certificate.server_context(), require_starttls=True)
    conn = SmtpSender(server.host, server.port, "starttls", USERNAME, PASSWORD, timeout=5,
                      ca_file=str(tls_certificate.cert_file), local_hostname="forumbridge.test")
    await conn.send(mail())
    await conn.close()
    [received] = server.received
    assert received.tls and received.login == USERNAME


async def test_implicit_tls_delivers(smtp_server_factory: Callable[..., SmtpServer],
                                     tls_certificate: TlsCertificate) -> None:
    server = smtp_server_factory(tls_context=tls_certificate.server_context(), implicit_tls=True)
    conn = make_sender("smtp", host=server.host, port=server.port, security="tls", timeout=5,
                       ca_file=str(tls_certificate.cert_file), local_hostname="forumbridge.test")
    await conn.send(mail())
    await conn.close()
    assert [r.tls for r in server.received] == [True]


async def test_an_untrusted_certificate_is_unavailable(smtp_server_factory: Callable[..., SmtpServer],
                                                       tls_certificate: TlsCertificate) -> None:
    server = smtp_server_factory(tls_context=tls_certificate.server_context(), require_starttls=True)
    conn = SmtpSender(server.host, server.port, "starttls", timeout=5, local_hostname="forumbridge.test")
    with pytest.raises(MailUnavailable):
        await conn.send(mail())
    await conn.close()
    assert server.received == []


async def test_starttls_demanded_of_a_server_without_it_is_unavailable(smtp_server: SmtpServer) -> None:
    conn = SmtpSender(smtp_server.host, smtp_server.port, "starttls", timeout=5, local_hostname="forumbridge.test")
    with pytest.raises(MailUnavailable):
        await conn.send(mail())
    await conn.close()
    assert smtp_server.received == []


async def test_security_none_never_upgrades_even_when_offered(
        smtp_server_factory: Callable[..., SmtpServer], tls_certificate: TlsCertificate) -> None:
    server = smtp_server_factory(tls_context=tls_certificate.server_context())
    conn = SmtpSender(server.host, server.port, "none", timeout=5, local_hostname="forumbridge.test")
    await conn.send(mail())
    await conn.close()
    assert [r.tls for r in server.received] == [False]


def test_the_registry_knows_smtp_and_refuses_other_names() -> None:
    assert isinstance(make_sender("smtp", host="mail.example.org", port=587, security="starttls"), MailSender)
    with pytest.raises(ValueError, match="unknown mail sender"):
        make_sender("sendgrid")
    with pytest.raises(ValueError, match="security"):
        make_sender("smtp", security="ssl")
