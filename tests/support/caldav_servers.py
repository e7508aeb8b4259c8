"""Real CalDAV servers for the tests: Radicale and Xandikos as subprocesses on loopback ports.

Registered as a pytest plugin from tests/conftest.py. `caldav_server` runs a test once per server;
`calendar_url` gives it a fresh, empty calendar collection there. A server can be stopped and
started again on the same port and folder, for "server down, then up" tests.
"""
from __future__ import annotations

import base64
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.calendar import CalendarAccount

# The fault-injecting proxy in front of these servers comes with them.
pytest_plugins = ["tests.support.caldav_proxy"]

USERNAME = "forumbridge"
PASSWORD = "hemligt-lösenord"
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CaldavServer:
    """One server process with its folder and port; stop() and start() keep both."""

    kind = ""
    username: str | None = None
    password: str | None = None

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    # What each kind must say.
    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def calendars_url(self) -> str:
        """The folder under which the tests make their calendars."""
        raise NotImplementedError

    @property
    def accounts(self) -> list[CalendarAccount]:
        """The accounts the connector needs for this server."""
        if self.username is None:
            return []
        return [CalendarAccount(f"{self.origin}/", self.username, self.password or "")]

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the process and wait until it answers HTTP."""
        if self.running:
            return
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, cwd=self.folder)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self._process.returncode}:\n{self.log.read_text()}")
            if self._answers():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.kind} did not answer on {self.origin} within {START_TIMEOUT_S}s:\n{self.log.read_text()}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
            self.request("OPTIONS", self.origin + "/")
            return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the process (the folder and port stay for start())."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL the process, whatever it is doing: no clean shutdown (start() brings it back)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def clear_stale_locks(self) -> list[Path]:
        """Remove the lock files a killed process left behind (what its operator does after a crash)."""
        return []

    def request(self, method: str, url: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """A plain HTTP request as this server's user, outside the code under test."""
        headers = dict(headers or {})
        if self.username is not None:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def new_calendar(self) -> str:
        """A fresh, empty calendar collection; its URL ends in "/"."""
        url = f"{self.calendars_url}{uuid.uuid4().hex[:12]}/"
        status, _, body = self.request("MKCALENDAR", url)
        if status != 201:
            raise RuntimeError(f"MKCALENDAR {url} on {self.kind}: {status} {body[:300]!r}")
        return url


class RadicaleServer(CaldavServer):
    """Radicale with htpasswd (plain) auth for one user, storage in the folder."""

    kind = "radicale"
    username = USERNAME
    password = PASSWORD

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        (folder / "users").write_text(f"{self.username}:{self.password}\n", encoding="utf-8")
        (folder / "config").write_text(
            "[server]\n"
            f"hosts = 127.0.0.1:{self.port}\n"
            "[auth]\n"
            "type = htpasswd\n"
            f"htpasswd_filename = {folder / 'users'}\n"
            "htpasswd_encryption = plain\n"
            # Radicale sleeps after a failed login; the wrong-password test need not wait.
            "delay = 0\n"
            "[rights]\n"
            "type = owner_only\n"
            "[storage]\n"
            f"filesystem_folder = {folder / 'collections'}\n"
            "[logging]\n"
            "level = warning\n",
            encoding="utf-8",
        )

    def command(self) -> list[str]:
        return [sys.executable, "-m", "radicale", "--config", str(self.folder / "config")]

    @property
    def calendars_url(self) -> str:
        return f"{self.origin}/{self.username}/"


class XandikosServer(CaldavServer):
    """Xandikos without auth (its Basic auth needs TLS), autocreating the user's folders."""

    kind = "xandikos"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "xandikos", "serve", "-d", str(self.folder / "data"), "--autocreate",
                "-l", "127.0.0.1", "-p", str(self.port), "--state-dir", str(self.folder / "state"),
                "--no-detect-systemd"]

    @property
    def calendars_url(self) -> str:
        return f"{self.origin}/user/calendars/"

    def clear_stale_locks(self) -> list[Path]:
        """A SIGKILL in the middle of a commit leaves the collection's git index.lock (or a ref's
        lock) behind, and Xandikos then answers 423 Locked to every write there until someone
        removes it. Only while the server is stopped: a running one holds live locks."""
        assert not self.running, "stop the server first"
        locks = sorted((self.folder / "data").glob("**/.git/**/*.lock"))
        for lock in locks:
            lock.unlink(missing_ok=True)
        return locks


SERVER_KINDS: dict[str, type[CaldavServer]] = {"radicale": RadicaleServer, "xandikos": XandikosServer}


def _run(kind: str, factory: pytest.TempPathFactory) -> Iterator[CaldavServer]:
    server = SERVER_KINDS[kind](factory.mktemp(kind))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def radicale_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaldavServer]:
    """Radicale for the whole run."""
    yield from _run("radicale", tmp_path_factory)


@pytest.fixture(scope="session")
def xandikos_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaldavServer]:
    """Xandikos for the whole run."""
    yield from _run("xandikos", tmp_path_factory)


@pytest.fixture(params=list(SERVER_KINDS))
def caldav_server(request: pytest.FixtureRequest) -> Iterator[CaldavServer]:
    """Each CalDAV server in turn, running; restarted afterwards if the test left it stopped."""
    server: CaldavServer = request.getfixturevalue(f"{request.param}_server")
    server.start()
    yield server
    server.start()


@pytest.fixture
def calendar_url(caldav_server: CaldavServer) -> str:
    """A fresh, empty calendar collection on the server under test."""
    return caldav_server.new_calendar()
