"""`forumbridge serve` as a subprocess, as operators run it: started, killed with SIGKILL, started again;
or two of them side by side on one database (replicas).

Each process reads one TOML file (the test writes it: database, secrets, CalDAV account, SMTP) and
gets its own port and data folder from the environment, as separate machines would.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp

from tests.support.caldav_servers import free_port
from tests.support.http import ApiClient

FORUMBRIDGE = str(Path(sys.executable).with_name("forumbridge"))
READY_TIMEOUT_S = 60.0


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    raise TypeError(value)


def write_config(path: Path, sections: dict[str, Any]) -> Path:
    """A TOML file from {section: {option: value}}; a list of tables becomes [[section.name]]."""
    lines: list[str] = []
    for section, options in sections.items():
        lines.append(f"[{section}]")
        tables = {k: v for k, v in options.items() if isinstance(v, list)}
        lines += [f"{k} = {toml_value(v)}" for k, v in options.items() if k not in tables]
        for name, rows in tables.items():
            for row in rows:
                lines.append(f"[[{section}.{name}]]")
                lines += [f"{k} = {toml_value(v)}" for k, v in row.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


class ServiceProcess:
    """One `forumbridge serve` process: its port, data folder and log survive restarts."""

    def __init__(self, name: str, config: Path, folder: Path, extra_env: dict[str, str] | None = None) -> None:
        self.name = name
        self.config = config
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.data_dir = folder / f"data-{name}"
        self.log = folder / f"serve-{name}.log"
        self.extra_env = extra_env or {}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        assert not self.running
        env = {**os.environ, "FORUMBRIDGE_CONFIG": str(self.config), "FORUMBRIDGE_HTTP__PORT": str(self.port),
               "FORUMBRIDGE_DATA_DIR": str(self.data_dir), "FORUMBRIDGE_LOG_LEVEL": "INFO", **self.extra_env}
        with self.log.open("ab") as log:
            log.write(f"---- start {time.strftime('%H:%M:%S')}\n".encode())
            self._process = subprocess.Popen([FORUMBRIDGE, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with aiohttp.ClientSession() as session:
            while True:
                assert self.running, f"{self.name} exited:\n{self.tail()}"
                try:
                    async with session.get(self.base_url + "/readyz", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                assert time.monotonic() < deadline, f"{self.name} not ready in {READY_TIMEOUT_S} s:\n{self.tail()}"
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, whatever it was doing."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not ended in 30 s."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    @asynccontextmanager
    async def api(self, token: str) -> AsyncIterator[ApiClient]:
        """An ApiClient on this process (an aiohttp session with its base URL)."""
        async with aiohttp.ClientSession(base_url=self.base_url, timeout=aiohttp.ClientTimeout(total=60)) as session:
            yield ApiClient(session, token)  # type: ignore[arg-type]  # ClientSession.request takes a path here
