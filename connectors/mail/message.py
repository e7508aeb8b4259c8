"""The MIME message for an OutgoingMail, built with the standard `email` package.

Structure, for a message with an iCalendar part (the CalConnect iMIP best practice, which is also
what Google Calendar and Thunderbird send)::

    multipart/mixed
        multipart/alternative
            text/plain; charset=utf-8                  quoted-printable
            text/html; charset=utf-8                   quoted-printable
            text/calendar; charset=utf-8; method=...   base64   (the iMIP part, RFC 6047)
        application/ics; name=invite.ics               base64, attachment

Outlook and Thunderbird act on the text/calendar part inside the alternative (Outlook looks for
iMIP data only in the first child of a multipart/mixed, which is where it is); some web mailers
only offer an attached .ics for import, hence the application/ics copy of the same bytes. The
calendar parts are base64 so that the stream's CRLF line ends and long lines arrive untouched.
The method parameter is written unquoted, as the big senders write it. Without an iCalendar
part the message is the multipart/alternative alone.

No Auto-Submitted header: a personal invitation is not a bulk notice, and "auto-generated"
makes some servers drop the automatic replies (out of office) that the secretariat wants to see.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from email import policy
from email.errors import MessageError
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime

from connectors.mail.base import OutgoingMail

# CRLF line ends, 78-character folding, RFC 2047 for non-ASCII header text. Not SMTPUTF8: every
# address is made ASCII (see parse_address), so the message needs no extension from the relay.
SMTP_POLICY = policy.SMTP
ATTACHMENT_NAME = "invite.ics"

# Every character that str.splitlines() (and so the email package's header folding) takes for a
# line end, and the other control characters, which have no business in a header either.
_LINE_BREAKS = re.compile(r"[ \t]*[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]+[ \t]*")


def one_line(value: str) -> str:
    """Header text with every line break and control character turned into one space."""
    return _LINE_BREAKS.sub(" ", value).strip()


def build_message(mail: OutgoingMail, now: datetime | None = None) -> EmailMessage:
    """The whole message for `mail`, headers and MIME tree; raises ValueError on a bad address."""
    message = EmailMessage(policy=SMTP_POLICY)
    message["Message-ID"] = mail.message_id
    message["Date"] = format_datetime(now or datetime.now(timezone.utc))
    message["From"] = parse_address(mail.sender)
    message["To"] = tuple(parse_address(address) for address in mail.to)
    message["Subject"] = one_line(mail.subject)
    for name, value in mail.headers:
        message[name] = one_line(value)

    message["MIME-Version"] = "1.0"
    if mail.ics is None or mail.ics_method is None:
        message.make_alternative()
        for part in _bodies(mail):
            message.attach(part)
        return message
    alternative = MIMEPart(policy=SMTP_POLICY)
    alternative.make_alternative()
    for part in (*_bodies(mail), _calendar_part(mail.ics, mail.ics_method)):
        alternative.attach(part)
    message.make_mixed()
    message.attach(alternative)
    message.attach(_ics_attachment(mail.ics))
    return message


def parse_address(text: str) -> Address:
    """One mailbox from ``addr`` or ``Display Name <addr>``; raises ValueError if it is not one.

    Split by hand rather than by the header parser: a display name is free text here, and the
    parser would read "Eva Bcc: evil@example.org <eva@example.se>" as an address group that
    smuggles in a second recipient. Whatever precedes the last <...> is the name (unquoted, or
    decoded when `email.utils.formataddr` encoded it); the builder quotes and encodes it again.
    """
    text = one_line(text)
    name, addr_spec = "", text
    if text.endswith(">") and "<" in text:
        start = text.rindex("<")
        name, addr_spec = text[:start].strip(), text[start + 1:-1].strip()
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = re.sub(r"\\(.)", r"\1", name[1:-1])
        elif "=?" in name:
            name = _decoded(name)
    try:
        address = Address(display_name=name, addr_spec=_ascii_domain(addr_spec))
    except (ValueError, IndexError, MessageError) as exc:
        raise ValueError(f"not an email address: {text!r} ({exc})") from None
    if not address.username or not address.domain or "@" not in addr_spec:
        raise ValueError(f"not an email address: {text!r}")
    return address


def _decoded(name: str) -> str:
    """A display name with its RFC 2047 encoded words decoded (email.utils.formataddr makes them)."""
    try:
        return one_line(str(make_header(decode_header(name))))
    except (ValueError, LookupError, MessageError):
        return name


def _ascii_domain(addr_spec: str) -> str:
    """The address with an internationalised domain in its ASCII (IDNA) form.

    So that every address travels without the SMTPUTF8 extension, which not every relay has; a
    local part that is not ASCII has no such form and the email package refuses it.
    """
    local, at, domain = addr_spec.rpartition("@")
    if not at or domain.isascii():
        return addr_spec
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError as exc:
        raise ValueError(f"not a valid domain: {domain!r} ({exc})") from None


def envelope(message: EmailMessage) -> tuple[str, list[str]]:
    """The SMTP envelope of a built message: the From address and every To address."""
    sender = _addresses(message, "From")[0].addr_spec
    return sender, [address.addr_spec for address in _addresses(message, "To")]


def serialise(message: EmailMessage) -> bytes:
    """The bytes to send: CRLF line ends, headers in ASCII (RFC 2047 for non-ASCII text)."""
    return message.as_bytes(policy=SMTP_POLICY)


def _bodies(mail: OutgoingMail) -> tuple[MIMEPart, MIMEPart]:
    """The plain and the HTML rendering, least preferred first (RFC 2046 section 5.1.4)."""
    return _text_part(mail.text, "plain"), _text_part(mail.html, "html")


def _text_part(text: str, subtype: str) -> MIMEPart:
    part = MIMEPart(policy=SMTP_POLICY)
    part.set_content(text, subtype=subtype, charset="utf-8", cte="quoted-printable")
    return part


def _calendar_part(ics: bytes, method: str) -> MIMEPart:
    part = MIMEPart(policy=SMTP_POLICY)
    part.set_content(ics, maintype="text", subtype="calendar", cte="base64")
    # Stored raw: the policy would write every parameter quoted (method="REQUEST"), which MIME
    # allows but which is not the spelling calendar clients are tested against.
    del part["Content-Type"]
    part.set_raw("Content-Type", f"text/calendar; charset=utf-8; method={method}")
    return part


def _ics_attachment(ics: bytes) -> MIMEPart:
    part = MIMEPart(policy=SMTP_POLICY)
    part.set_content(ics, maintype="application", subtype="ics", cte="base64",
                     disposition="attachment", filename=ATTACHMENT_NAME)
    part.set_param("name", ATTACHMENT_NAME)
    return part


def _addresses(message: EmailMessage, name: str) -> tuple[Address, ...]:
    header = message[name]
    return tuple(header.addresses) if header is not None else ()
