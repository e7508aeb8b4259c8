"""The mail connector port: one message to send, and what a sender promises about it."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from connectors.mail.errors import MailAuthError, MailError, MailRejected, MailUnavailable

__all__ = [
    "OutgoingMail", "MailSender", "ITIP_METHODS", "RESERVED_HEADERS",
    "MailError", "MailAuthError", "MailUnavailable", "MailRejected",
]

# The iTIP methods an organiser's invitation mail carries (RFC 5546): an invitation or update,
# and a cancellation.
ITIP_METHODS = frozenset({"REQUEST", "CANCEL"})

# Headers the message builder writes itself; `OutgoingMail.headers` may not set them, so that a
# caller cannot end up with two Message-IDs, a second recipient list or a broken MIME structure.
RESERVED_HEADERS = frozenset({
    "message-id", "date", "from", "to", "cc", "bcc", "subject", "sender", "mime-version",
    "content-type", "content-transfer-encoding", "content-disposition",
})

# "<left@right>" as RFC 5322 section 3.6.4 writes msg-id, without white space or nested brackets.
_MESSAGE_ID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")
# RFC 5322 field names: printable ASCII except the colon.
_FIELD_NAME = re.compile(r"[!-9;-~]+")
# The METHOD line of an iCalendar stream (never folded: the longest value is 14 characters).
_ICS_METHOD = re.compile(rb"^METHOD:([A-Za-z-]+)\r?$", re.MULTILINE)


@dataclass(frozen=True)
class OutgoingMail:
    """One message, as the service wants it sent; building it is the connector's job.

    `message_id` is the whole Message-ID header value, brackets included (``<abc@forum.example>``).
    The caller derives it from what the message is (say, the outbox job), so that a message sent
    again after a crash carries the same Message-ID and mail systems can drop the copy.
    `sender` and each of `to` are an address, optionally with a display name (``Åsa Öberg
    <asa@example.se>``); non-ASCII names are encoded by the builder. Line breaks in any header text
    are turned into spaces, never into new header lines.
    `text` and `html` are the two renderings of the body. `ics` is an iCalendar stream (UTF-8, CRLF)
    whose METHOD is `ics_method`: it travels as the iMIP part (RFC 6047). Both are None for a
    message without one.
    `headers` are extra header fields such as Reply-To; the ones the builder writes are refused.
    Raises ValueError at construction when these rules are broken: that is a bug in the caller,
    not a condition to retry.
    """

    message_id: str
    sender: str
    to: tuple[str, ...]
    subject: str
    text: str
    html: str
    ics: bytes | None = None
    ics_method: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not _MESSAGE_ID.fullmatch(self.message_id):
            raise ValueError(f"message_id must look like <id@domain>, not {self.message_id!r}")
        if isinstance(self.to, str) or not self.to:
            raise ValueError("to must be a non-empty tuple of addresses")
        if (self.ics is None) != (self.ics_method is None):
            raise ValueError("ics and ics_method go together: give both or neither")
        if self.ics is not None:
            if self.ics_method not in ITIP_METHODS:
                raise ValueError(f"ics_method must be one of {sorted(ITIP_METHODS)}, not {self.ics_method!r}")
            # RFC 6047 section 2.4: the Content-Type's method MUST equal the stream's METHOD,
            # and Outlook believes the stream when they differ.
            found = _ICS_METHOD.search(self.ics)
            if found is None or found.group(1).decode().upper() != self.ics_method:
                raise ValueError(f"the ics has no METHOD:{self.ics_method} line")
        for name, _value in self.headers:
            if not _FIELD_NAME.fullmatch(name):
                raise ValueError(f"not a header field name: {name!r}")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is written by the message builder")


@runtime_checkable
class MailSender(Protocol):
    """Hands messages to a mail server for delivery.

    Every method raises only the `MailError` family: `MailAuthError` (fix the credentials or the
    security setting), `MailUnavailable` (retry later), `MailRejected` (this message cannot go as
    it is). A sender may be shared by concurrent tasks.
    """

    async def send(self, mail: OutgoingMail) -> None:
        """Hand `mail` to the server; return once the server has accepted it for every recipient.

        From then on, delivery is the mail system's business. Raises `MailUnavailable` when the
        server cannot be reached, does not answer in time, drops the connection, or answers with a
        transient 4xx (greylisting, 421, 451, 452): nothing was accepted, so send it again later,
        with the same Message-ID (if the connection dropped after the data went out, the server
        may in fact have kept it, and the same Message-ID lets mail systems drop the copy).
        Raises `MailAuthError` when the login is refused (535 and friends) or impossible as
        configured, and `MailRejected` when the server refuses the message or all its recipients
        for good (5xx), or accepted it for some recipients only (see `MailRejected.accepted`).
        """
        ...

    async def close(self) -> None:
        """Close any open connection. Closing twice is harmless; a later `send` connects anew."""
        ...
