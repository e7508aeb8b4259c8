"""Mail connectors: the port, its exceptions, the message builder, and the senders by short name."""
from __future__ import annotations

from connectors.mail.base import ITIP_METHODS, MailSender, OutgoingMail
from connectors.mail.errors import MailAuthError, MailError, MailRejected, MailUnavailable
from connectors.mail.message import build_message
from connectors.mail.smtp import SmtpSender

# The short names used in configuration.
SENDERS: dict[str, type[SmtpSender]] = {"smtp": SmtpSender}


def make_sender(name: str, **options: object) -> MailSender:
    """The sender registered as `name`; `options` go to its constructor.

    For "smtp": host, port, security ("none", "starttls", "tls"), username, password, timeout,
    and optionally ca_file, verify_tls, local_hostname, idle_timeout, max_messages_per_connection.
    The configured sender address is not an option here: it goes into each OutgoingMail.
    """
    try:
        sender_class = SENDERS[name]
    except KeyError:
        known = ", ".join(sorted(SENDERS))
        raise ValueError(f"unknown mail sender {name!r} (known: {known})") from None
    return sender_class(**options)  # type: ignore[arg-type]


__all__ = [
    "SENDERS", "make_sender", "build_message",
    "OutgoingMail", "MailSender", "ITIP_METHODS", "SmtpSender",
    "MailError", "MailAuthError", "MailUnavailable", "MailRejected",
]
