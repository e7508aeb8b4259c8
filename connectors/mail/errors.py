"""The mail connectors' exception family: the only exceptions that leave connectors/mail/."""
from __future__ import annotations

from collections.abc import Mapping


class MailError(Exception):
    """Base of every mail connector error; `code` is the SMTP reply code when there was one."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class MailAuthError(MailError):
    """The server refused our credentials, or offers no way to log in as configured
    (535 and friends, no AUTH offered, authentication required): fix the settings."""


class MailUnavailable(MailError):
    """No verdict on the message: the server could not be reached, timed out, dropped the
    connection, or answered with a transient 4xx. Nothing was delivered; send it again later."""


class MailRejected(MailError):
    """The server permanently refused this message or its recipients (5xx); sending it again
    unchanged will fail again.

    `refused` maps each refused recipient address to the server's (code, text). `accepted` names
    the recipients the server took the message for before refusing others: when it is not empty,
    the message is on its way to them, and a re-send must leave them out.
    """

    def __init__(self, message: str, *, code: int | None = None,
                 refused: Mapping[str, tuple[int, str]] | None = None,
                 accepted: tuple[str, ...] = ()) -> None:
        super().__init__(message, code=code)
        self.refused = dict(refused or {})
        self.accepted = accepted
