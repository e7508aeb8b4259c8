"""MailSender over SMTP, on aiosmtplib.

One connection is kept open and reused while it is busy: an invitation round to a few hundred
people then costs one TLS handshake and one login instead of hundreds, which relays with
per-minute connection limits (Microsoft 365, Gmail) count. Sends on one sender go one at a time
over that connection. Before a message goes over a connection that has already carried one, a
NOOP checks it is alive; if not, a new connection is made. A failure after MAIL FROM is never
retried here: the server may have kept the message, and the outbox decides when to send it again
(with the same Message-ID). The connection is dropped after any failure, after `idle_timeout`
seconds unused (servers give up on idle clients after some minutes, RFC 5321 section 4.5.3.2.7)
and after `max_messages_per_connection` messages (servers cap messages per session).
"""
from __future__ import annotations

import asyncio
import re
import time
from typing import Literal

import aiosmtplib
from aiosmtplib import (
    SMTPConnectError,
    SMTPException,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from connectors.mail.base import OutgoingMail
from connectors.mail.errors import MailAuthError, MailError, MailRejected, MailUnavailable
from connectors.mail.message import build_message, envelope, serialise

Security = Literal["none", "starttls", "tls"]
SECURITY_MODES: tuple[Security, ...] = ("none", "starttls", "tls")

# Replies that say the login is missing or not good enough, whatever command they answer:
# 530 authentication required, 534 mechanism too weak, 535 credentials invalid, 538 encryption
# required for the mechanism (RFC 4954).
_AUTH_CODES = frozenset({530, 534, 535, 538})
# Closing a connection politely must not hold up the caller for a whole timeout.
_QUIT_TIMEOUT_S = 5.0


# An enhanced status code (RFC 3463) at the start of a reply text: "5.7.1 ...".
_ENHANCED = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


def _security_policy(text: str) -> bool:
    """True when the reply's enhanced status is 5.7.x (security or policy)."""
    found = _ENHANCED.match(text)
    return found is not None and found.group(2) == "7"


def translate(exc: BaseException, what: str, stage: Literal["connect", "login", "send"]) -> MailError:
    """Map whatever aiosmtplib or the network raised during `what` to our family.

    `stage` matters for the refusals: only during "send" can a 5xx be about the message itself;
    before that it is about the server or our settings, and the message must be kept.
    """
    if isinstance(exc, MailError):
        return exc
    if isinstance(exc, SMTPRecipientsRefused):
        return _recipients_refused(exc, what)
    if isinstance(exc, SMTPResponseException):
        message = f"{what}: {exc.code} {exc.message}"
        if 400 <= exc.code < 500:
            # 421 (closing), 450/451 (greylisting, local error), 452 (no space), 454 (TLS or
            # auth not available now): the server asks us to come back.
            return MailUnavailable(message, code=exc.code)
        if stage == "login" or exc.code in _AUTH_CODES:
            return MailAuthError(message, code=exc.code)
        if stage == "connect":
            # Greeting, EHLO or STARTTLS refused: the server will not talk to us as configured.
            return MailUnavailable(message, code=exc.code)
        if isinstance(exc, SMTPSenderRefused) and _security_policy(exc.message):
            # "5.7.1 not allowed to send as ...": the configured sender, not this message.
            return MailAuthError(message, code=exc.code)
        return MailRejected(message, code=exc.code)
    if isinstance(exc, (SMTPServerDisconnected, SMTPConnectError, SMTPTimeoutError, TimeoutError, OSError)):
        # Refused, reset, timed out, TLS handshake or certificate failure (ssl.SSLError is an
        # OSError): nothing is wrong with the message, and an operator can fix the server.
        return MailUnavailable(f"{what}: {type(exc).__name__}: {exc}")
    if stage == "login" and isinstance(exc, SMTPException):
        # No AUTH offered (often: only after STARTTLS), or no mechanism we speak.
        return MailAuthError(f"{what}: {exc}")
    if isinstance(exc, ValueError) and stage == "send":
        return MailRejected(f"{what}: {exc}")
    # STARTTLS demanded but not offered, and anything else from the library: keep the message
    # and try again later.
    return MailUnavailable(f"{what}: {type(exc).__name__}: {exc}")


def _recipients_refused(exc: SMTPRecipientsRefused, what: str) -> MailError:
    refused = {r.recipient: (r.code, r.message) for r in exc.recipients}
    detail = "; ".join(f"{addr}: {code} {text}" for addr, (code, text) in refused.items())
    codes = {code for code, _ in refused.values()}
    if codes & _AUTH_CODES:
        return MailAuthError(f"{what}: recipients refused, login required ({detail})", code=min(codes))
    if all(400 <= code < 500 for code in codes):
        # Greylisting, a full mailbox, a rate limit: nothing was accepted, come back later.
        return MailUnavailable(f"{what}: recipients deferred ({detail})", code=min(codes))
    return MailRejected(f"{what}: every recipient refused ({detail})", code=max(codes), refused=refused)


class SmtpSender:
    """MailSender for any SMTP submission server or relay, through `aiosmtplib.SMTP`."""

    name = "smtp"

    def __init__(self, host: str = "localhost", port: int = 25, security: Security = "none",
                 username: str = "", password: str = "", timeout: float = 30.0, *,
                 ca_file: str | None = None, verify_tls: bool = True,
                 local_hostname: str | None = None, idle_timeout: float = 60.0,
                 max_messages_per_connection: int = 100) -> None:
        """`security`: "tls" connects with TLS (port 465), "starttls" upgrades a plain connection
        and refuses to go on without it (port 587), "none" never encrypts. `ca_file` trusts a
        private CA; `verify_tls` False trusts any certificate. `timeout` is per SMTP command.
        `local_hostname` is the EHLO name (default: this machine's FQDN)."""
        if security not in SECURITY_MODES:
            raise ValueError(f"security must be one of {', '.join(SECURITY_MODES)}, not {security!r}")
        if timeout <= 0 or idle_timeout < 0 or max_messages_per_connection < 1:
            raise ValueError("timeout must be positive, idle_timeout not negative, and "
                             "max_messages_per_connection at least 1")
        self.host, self.port, self.security = host, port, security
        self._username, self._password = username, password
        self._timeout = timeout
        self._ca_file, self._verify_tls = ca_file, verify_tls
        self._local_hostname = local_hostname
        self._idle_timeout = idle_timeout
        self._max_messages = max_messages_per_connection
        self._lock = asyncio.Lock()
        self._client: aiosmtplib.SMTP | None = None
        self._sent_on_client = 0
        self._last_used = 0.0

    def __repr__(self) -> str:
        return f"SmtpSender({self.host!r}, {self.port}, security={self.security!r}, username={self._username!r})"

    async def send(self, mail: OutgoingMail) -> None:
        """Hand `mail` to the server (see MailSender.send for the contract)."""
        try:
            message = build_message(mail)
            sender, recipients = envelope(message)
            data = serialise(message)
        except ValueError as exc:
            raise MailRejected(f"message {mail.message_id} cannot be built: {exc}") from exc
        async with self._lock:
            client = await self._connection()
            try:
                refused, _reply = await client.sendmail(sender, recipients, data)
            except BaseException as exc:  # noqa: BLE001 - the contract: nothing but our family leaves
                self._drop()  # half a transaction (or a cancelled one) leaves the session in doubt
                if not isinstance(exc, Exception):
                    raise
                raise translate(exc, f"sending {mail.message_id}", "send") from exc
            self._sent_on_client += 1
            self._last_used = time.monotonic()
        if refused:
            accepted = tuple(r for r in recipients if r not in refused)
            detail = "; ".join(f"{addr}: {code} {text}" for addr, (code, text) in refused.items())
            raise MailRejected(
                f"sending {mail.message_id}: accepted for {', '.join(accepted)} only ({detail})",
                code=max(code for code, _ in refused.values()),
                refused={addr: (r.code, r.message) for addr, r in refused.items()},
                accepted=accepted,
            )

    async def close(self) -> None:
        """Say QUIT and close the connection, if one is open."""
        async with self._lock:
            await self._quit()

    async def _connection(self) -> aiosmtplib.SMTP:
        """A connected, logged-in client: the open one if it still answers, else a new one."""
        client = self._client
        if client is not None:
            fresh_enough = time.monotonic() - self._last_used < self._idle_timeout
            if client.is_connected and fresh_enough and self._sent_on_client < self._max_messages:
                try:
                    await client.noop(timeout=min(self._timeout, 10.0))
                    return client
                except BaseException as exc:  # noqa: BLE001 - a dead connection: make a new one
                    self._drop()
                    if not isinstance(exc, Exception):
                        raise
            else:
                await self._quit()
        return await self._connect()

    async def _connect(self) -> aiosmtplib.SMTP:
        try:
            client = aiosmtplib.SMTP(
                hostname=self.host, port=self.port, timeout=self._timeout,
                use_tls=self.security == "tls",
                # "none" means none: left to itself the library upgrades whenever the server
                # offers STARTTLS, and then fails on a certificate nobody asked it to check.
                start_tls=self.security == "starttls",
                validate_certs=self._verify_tls, cert_bundle=self._ca_file,
                local_hostname=self._local_hostname,
            )
            await client.connect()
        except Exception as exc:  # noqa: BLE001 - connect() has closed the client already
            raise translate(exc, f"connecting to {self.host}:{self.port}", "connect") from exc
        # The library looks the FQDN up once per client (in a thread); once is enough.
        self._local_hostname = client.local_hostname
        if self._username:
            try:
                await client.login(self._username, self._password)
            except BaseException as exc:  # noqa: BLE001
                client.close()
                if not isinstance(exc, Exception):
                    raise
                raise translate(exc, f"login as {self._username!r}", "login") from exc
        self._client, self._sent_on_client, self._last_used = client, 0, time.monotonic()
        return client

    def _drop(self) -> None:
        """Forget the connection without a word to the server (it is broken or in doubt)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def _quit(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if client.is_connected:
                await client.quit(timeout=_QUIT_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
        finally:
            client.close()

