"""Helpers the benchmarks share: the service as a subprocess, PostgreSQL admin, small statistics."""
from __future__ import annotations

import asyncio
import json
import os
import platform
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
FORUMBRIDGE = str(VENV_BIN / "forumbridge") if (VENV_BIN / "forumbridge").exists() else "forumbridge"
PG_ADMIN_URL = os.environ.get(
    "FORUMBRIDGE_BENCH_PG_URL", os.environ.get("FORUMBRIDGE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
)
RESULTS_DIR = ROOT / "bench" / "results"


# -- small helpers ------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[int(rank) - 1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = raw.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def write_results(name: str, started_at: Any, quick: bool, elapsed: float, figures: dict[str, Any]) -> Path:
    """The run's figures as JSON in bench/results/NAME-DATE[-quick].json; prints where."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{name}-{started_at:%Y%m%dT%H%M%S}{'-quick' if quick else ''}.json"
    out.write_text(json.dumps({
        "date": started_at.isoformat(), "cores": os.cpu_count(), "quick": quick, "seconds": elapsed, **figures,
    }, indent=2, default=str))
    print(f"\nfigures also written to {out.relative_to(ROOT)}", flush=True)
    return out


async def server_version(kind: str) -> tuple[str, str]:
    """("PostgreSQL 15.x" or "SQLite 3.x", why it is skipped or "")."""
    if kind != "postgresql":
        return f"SQLite {sqlite3.sqlite_version}", ""
    try:
        return "PostgreSQL " + (await pg_admin("SHOW server_version")).split()[0], ""
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        return "", f"PostgreSQL not reachable at {PG_ADMIN_URL} ({type(exc).__name__}: {exc})"


class BenchError(Exception):
    """Something functional went wrong: reported, and the run exits non-zero."""


# -- the service ----------------------------------------------------------------------
class Service:
    """`forumbridge serve --migrate` as a subprocess, with its own environment and folder."""

    def __init__(self, url: str, folder: Path, extra_env: dict[str, str] | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.folder = folder
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORUMBRIDGE_")}
        env.update(
            FORUMBRIDGE_DATABASE__URL=url,
            FORUMBRIDGE_DATA_DIR=str(folder / "data"),
            FORUMBRIDGE_HTTP__HOST="127.0.0.1",
            FORUMBRIDGE_HTTP__PORT=str(self.port),
            FORUMBRIDGE_HTTP__PUBLIC_URL=self.base,
            FORUMBRIDGE_AUTH__JWT_SECRET=secrets.token_urlsafe(32),
            FORUMBRIDGE_LOG_LEVEL="WARNING",
        )
        env.update(extra_env or {})
        self.env = env
        self.log_path = folder / "service.log"
        self.proc: subprocess.Popen | None = None
        self._log: Any = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, http: aiohttp.ClientSession, timeout_s: float = 90) -> None:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [FORUMBRIDGE, "serve", "--migrate"], env=self.env, cwd=self.folder,
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the service exited with {self.proc.returncode} on start:\n{self.log_tail()}")
            try:
                async with http.get(self.base + "/readyz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.1)
        raise BenchError(f"the service was not ready within {timeout_s:.0f} s:\n{self.log_tail()}")

    async def token(self) -> str:
        proc = await asyncio.create_subprocess_exec(
            FORUMBRIDGE, "token", "--sub", "bench", "--role", "secretariat", env=self.env, cwd=self.folder,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        if proc.returncode != 0 or not out.strip():
            raise BenchError(f"forumbridge token failed ({proc.returncode}): {err.decode().strip()}")
        return out.decode().strip()

    async def stop(self, timeout_s: float = 30) -> tuple[int | None, float]:
        """SIGTERM, then wait: the exit code (None if it had to be killed) and the seconds it took."""
        assert self.proc is not None
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            while self.proc.poll() is None and time.monotonic() - started < timeout_s:
                await asyncio.sleep(0.05)
            if self.proc.poll() is None:
                self.kill()
                return None, time.monotonic() - started
        self._log.close()
        return self.proc.returncode, time.monotonic() - started

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._log is not None and not self._log.closed:
            self._log.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_errors(self) -> int:
        try:
            content = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return 0
        return sum(1 for line in content if " ERROR " in line or line.startswith("Traceback"))


def machine() -> str:
    """One line about the machine the figures come from."""
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return (f"machine: {cores} cores ({usable} usable), {platform.machine()}, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


# -- PostgreSQL ---------------------------------------------------------------------
async def pg_admin(sql: str) -> str:
    conn = await asyncpg.connect(PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
    try:
        if sql.startswith("SHOW"):
            return str(await conn.fetchval(sql))
        await conn.execute(sql)
        return ""
    finally:
        await conn.close()


def pg_url(name: str) -> str:
    plain = PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")
    return "postgresql+asyncpg://" + plain.split("://", 1)[1].rsplit("/", 1)[0] + f"/{name}"


# -- shared by the join and attendance benchmarks ----------------------------------------
async def new_database(kind: str, folder: Path, label: str) -> tuple[str, str]:
    """A fresh, empty database for one service: (SQLAlchemy URL, PostgreSQL database name or "")."""
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{folder / label / 'forumbridge.db'}", ""
    name = f"forumbridge_bench_{os.getpid()}_{label}_{secrets.token_hex(3)}"
    await pg_admin(f'CREATE DATABASE "{name}"')
    return pg_url(name), name


async def drop_database(name: str) -> None:
    """Drop a database that new_database made (nothing for SQLite); a failure is logged, not raised."""
    if not name:
        return
    try:
        await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        log(f"could not drop {name}: {exc}")


class SmtpSink:
    """An SMTP server on loopback that accepts and drops every message (aiosmtpd's Sink), as a subprocess.

    Services that invite people send mail through the outbox; with a sink the mail jobs finish
    instead of retrying in the background while something is being measured.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    async def start(self, timeout_s: float = 30) -> None:
        python = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
        self.proc = subprocess.Popen(
            [python, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink", "-l", f"127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the SMTP sink exited with {self.proc.returncode} on start")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise BenchError("the SMTP sink did not start")

    def env(self) -> dict[str, str]:
        """The service's mail settings for this sink."""
        return {"FORUMBRIDGE_MAIL__HOST": "127.0.0.1", "FORUMBRIDGE_MAIL__PORT": str(self.port),
                "FORUMBRIDGE_MAIL__SECURITY": "none"}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def table(columns: list[str], rows: list[tuple[str, list[str]]]) -> list[str]:
    """Lines of a plain-text table: a label column and one right-aligned column per entry of `columns`."""
    width0 = max(len(label) for label, _ in rows)
    widths = [max(len(columns[i]), *(len(values[i]) for _, values in rows)) for i in range(len(columns))]
    lines = ["  ".join(["".ljust(width0), *(c.rjust(w) for c, w in zip(columns, widths))])]
    lines.append("-" * len(lines[0]))
    for label, values in rows:
        lines.append("  ".join([label.ljust(width0), *(v.rjust(w) for v, w in zip(values, widths))]))
    return lines


class Profiler:
    """`py-spy record` of one process while a phase runs (--profile; py-spy must be in .venv/bin).

    The output is py-spy's raw (collapsed stacks) format: bench/results/PREFIX-PHASE.txt. With `gil`,
    only the thread holding the GIL is sampled: the Python CPU time, without the threads' waits.
    """

    def __init__(self, enabled: bool, prefix: str, gil: bool = False) -> None:
        self.exe = VENV_BIN / "py-spy"
        self.gil = gil
        self.enabled = enabled and self.exe.exists()
        if enabled and not self.enabled:
            log(f"--profile: {self.exe} not found (pip install py-spy into .venv); not profiling")
        self.prefix = prefix
        self.files: list[str] = []

    def start(self, pid: int, phase: str) -> subprocess.Popen | None:
        if not self.enabled:
            return None
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        out = RESULTS_DIR / f"{self.prefix}-{phase}.txt"
        self.files.append(str(out.relative_to(ROOT)))
        return subprocess.Popen(
            [str(self.exe), "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--output", str(out),
             *(["--gil"] if self.gil else [])],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def stop(self, proc: subprocess.Popen | None) -> None:
        if proc is None:
            return
        proc.send_signal(signal.SIGINT)
        for _ in range(600):
            if proc.poll() is not None:
                return
            await asyncio.sleep(0.1)
        proc.kill()


# -- the API as the benchmarks call it ----------------------------------------------------
class Api:
    def __init__(self, http: aiohttp.ClientSession, service: Service, token: str) -> None:
        self.http, self.service = http, service
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: Any = None, want: int | None = None) -> Any:
        async with self.http.request(method, self.service.base + path, json=body, headers=self.headers) as r:
            data = await r.json(content_type=None)
            if r.status != (want or (201 if method == "POST" else 200)):
                raise BenchError(f"{method} {path} -> {r.status}: {data}")
            return data
