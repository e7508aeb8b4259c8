"""A real SMTP server for the tests: aiosmtpd on a loopback port, with faults on request.

`smtp_server` gives a test a running server that keeps what it receives; `smtp_server_factory`
makes servers with login, STARTTLS or TLS. A server can be stopped and started again on the same
port, for "server down, then up" tests, and told to refuse a command with a given reply or to
drop the connection in the middle of DATA. `tls_certificate` makes a self-signed certificate for
127.0.0.1 and localhost.

Import the fixtures into a test module, or list this module in a conftest's `pytest_plugins`.
"""
from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

HOST = "127.0.0.1"
Stage = Literal["mail", "rcpt", "data"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Received:
    """One message the server accepted: the envelope and the bytes as they came."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    peer: tuple[str, int]  # the client's address and port: one per connection
    login: str | None  # the user the client logged in as, if it did
    tls: bool  # whether the session was encrypted (TLS or STARTTLS)

    def message(self) -> EmailMessage:
        """The message parsed by the standard library, as a mail client would see it."""
        return BytesParser(policy=policy.default).parsebytes(self.data)  # type: ignore[return-value]


@dataclass
class _Refusal:
    stage: Stage
    reply: str
    address: str | None  # only this recipient (stage "rcpt"), else every one
    times: int | None  # how many more times; None: until healed


@dataclass
class Handler:
    """The aiosmtpd handler: stores messages and injects the faults it is told to."""

    received: list[Received] = field(default_factory=list)
    # Messages whose connection was dropped after the data arrived: the server "had" them.
    dropped: list[Received] = field(default_factory=list)
    refusals: list[_Refusal] = field(default_factory=list)
    drops_left: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _refusal(self, stage: Stage, address: str | None = None) -> str | None:
        with self._lock:
            for refusal in self.refusals:
                if refusal.stage != stage or (refusal.address not in (None, address)):
                    continue
                if refusal.times is not None:
                    refusal.times -= 1
                    if refusal.times <= 0:
                        self.refusals.remove(refusal)
                return refusal.reply
        return None

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        return responses

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        reply = self._refusal("mail")
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        reply = self._refusal("rcpt", address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        received = Received(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.original_content),
                            tuple(session.peer[:2]), login,
                            session.ssl is not None or server.transport.get_extra_info("sslcontext") is not None)
        with self._lock:
            drop = self.drops_left > 0
            self.drops_left -= drop
        if drop:
            # The data has arrived whole; the reply never leaves. The sender cannot tell whether
            # the message was kept: the one case in which mail may be sent twice.
            self.dropped.append(received)
            server.transport.abort()
            return "250 never sent"
        reply = self._refusal("data")
        if reply:
            return reply
        self.received.append(received)
        return "250 Message accepted for delivery"


class Authenticator:
    """Accepts exactly one user and password (any mechanism aiosmtpd offers)."""

    def __init__(self, username: str, password: str) -> None:
        self.username, self.password = username, password

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword)
              and auth_data.login.decode() == self.username and auth_data.password.decode() == self.password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class SmtpServer:
    """aiosmtpd in a thread on a fixed loopback port; stop() and start() keep the port and what
    was received."""

    def __init__(self, *, username: str | None = None, password: str | None = None,
                 tls_context: ssl.SSLContext | None = None, implicit_tls: bool = False,
                 require_starttls: bool = False, auth_require_tls: bool = False) -> None:
        self.host = HOST
        self.port = free_port()
        self.handler = Handler()
        self._username, self._password = username, password
        self._tls_context, self._implicit_tls = tls_context, implicit_tls
        self._require_starttls, self._auth_require_tls = require_starttls, auth_require_tls
        self._controller: Controller | None = None

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    @property
    def dropped(self) -> list[Received]:
        return self.handler.dropped

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        """Listen again (a fresh controller: a stopped one has closed its event loop)."""
        if self._controller is not None:
            return
        options: dict[str, Any] = {"hostname": self.host, "port": self.port}
        if self._username is not None:
            options["authenticator"] = Authenticator(self._username, self._password or "")
            options["auth_require_tls"] = self._auth_require_tls
        if self._implicit_tls:
            options["ssl_context"] = self._tls_context
        elif self._tls_context is not None:
            options["tls_context"] = self._tls_context
            options["require_starttls"] = self._require_starttls
        controller = Controller(self.handler, **options)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Stop listening and cut every open connection."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def refuse(self, stage: Stage, code: int, text: str = "", *, address: str | None = None,
               times: int | None = None) -> None:
        """Answer MAIL, RCPT (for `address`, or every one) or the end of DATA with `code`,
        `times` times or until heal()."""
        reply = f"{code} {text or _DEFAULT_TEXT.get(code, 'Refused by the test')}"
        with self.handler._lock:
            self.handler.refusals.append(_Refusal(stage, reply, address, times))

    def drop_during_data(self, times: int = 1) -> None:
        """Close the connection after the message data arrives, before replying, `times` times."""
        with self.handler._lock:
            self.handler.drops_left = times

    def heal(self) -> None:
        """Forget every refusal and drop still pending."""
        with self.handler._lock:
            self.handler.refusals.clear()
            self.handler.drops_left = 0


_DEFAULT_TEXT = {
    421: "4.3.2 Service shutting down",
    450: "4.2.0 Mailbox busy",
    451: "4.7.1 Greylisted, try again later",
    452: "4.3.1 Insufficient system storage",
    550: "5.1.1 No such user here",
    552: "5.3.4 Message too big",
    553: "5.7.1 Sender address not owned by user",
    554: "5.7.1 Message refused",
}


@dataclass(frozen=True)
class TlsCertificate:
    """A self-signed server certificate: its files, and a server context that uses them."""

    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_certificate(folder: Path) -> TlsCertificate:
    """A fresh key and a self-signed certificate for 127.0.0.1 and localhost, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forumbridge test SMTP")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return TlsCertificate(cert_file, key_file)


@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory: pytest.TempPathFactory) -> TlsCertificate:
    return make_certificate(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def smtp_server_factory() -> Iterator[Any]:
    """Make started SmtpServers (keyword arguments as SmtpServer takes them); all stop at the end."""
    servers: list[SmtpServer] = []

    def make(**options: Any) -> SmtpServer:
        server = SmtpServer(**options)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def smtp_server(smtp_server_factory: Any) -> SmtpServer:
    """A running server without login or TLS, keeping every message it accepts."""
    return smtp_server_factory()
