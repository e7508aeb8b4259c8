"""Real databases for the tests: a migrated SQLite file per test, one PostgreSQL database per run."""
from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

import asyncpg
import pytest

from service.db.migrate import upgrade
from service.db.models import Base

PG_ADMIN_URL = os.environ.get("FORUMBRIDGE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
HOW_TO_ENABLE = (
    "PostgreSQL tests need a server at {url} (trust auth, a user that may create databases); "
    "start one or point FORUMBRIDGE_TEST_PG_URL at one. In CI (CI=true) they are mandatory."
)


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def asyncpg_url(url: str) -> str:
    return _plain(url).replace("postgresql://", "postgresql+asyncpg://", 1)


class SqliteTemplate:
    """Migrates once, then hands each test a fresh copy of the file."""

    def __init__(self, folder: Path) -> None:
        self.template = folder / "template.db"
        upgrade(f"sqlite+aiosqlite:///{self.template}")

    def fresh(self, folder: Path) -> str:
        target = folder / "forumbridge.db"
        shutil.copyfile(self.template, target)
        return f"sqlite+aiosqlite:///{target}"


class PostgresDatabase:
    """One database for the whole run, migrated once and emptied before each test."""

    def __init__(self) -> None:
        self.name = f"forumbridge_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        admin = _plain(PG_ADMIN_URL)
        asyncio.run(self._admin(admin, f'CREATE DATABASE "{self.name}"'))
        base = admin.rsplit("/", 1)[0]
        self.url = asyncpg_url(f"{base}/{self.name}")
        upgrade(self.url)
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        self._truncate = f"TRUNCATE {tables} CASCADE"

    @staticmethod
    async def _admin(url: str, sql: str) -> None:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def _empty(self) -> None:
        """TRUNCATE needs every table to itself. A connection an earlier test left behind
        (a worker still stopping, a killed child's backend not yet gone) would make it wait
        for ever; after a short wait those backends are ended and the TRUNCATE retried."""
        conn = await asyncpg.connect(_plain(self.url), timeout=5)
        try:
            for _ in range(5):
                try:
                    await conn.execute("SET lock_timeout = '3s'")
                    await conn.execute(self._truncate)
                    return
                except asyncpg.LockNotAvailableError:
                    await conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            await conn.execute("SET lock_timeout = 0")
            await conn.execute(self._truncate)
        finally:
            await conn.close()

    def fresh(self) -> str:
        asyncio.run(self._empty())
        return self.url

    def drop(self) -> None:
        asyncio.run(self._admin(_plain(PG_ADMIN_URL), f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


def connect_postgres() -> PostgresDatabase:
    """The run's PostgreSQL database; skips (fails in CI) when the server is not there."""
    try:
        return PostgresDatabase()
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        message = HOW_TO_ENABLE.format(url=PG_ADMIN_URL) + f" ({type(exc).__name__}: {exc})"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
