"""Engines and the unit of work."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


@dataclass
class Database:
    """A writer and a reader engine. On PostgreSQL both are the same engine.

    On SQLite every writing transaction starts with BEGIN IMMEDIATE on the one
    writer connection, so a check and the insert that depends on it cannot be
    interleaved by another writer, in this process or another.
    """

    writer: AsyncEngine
    reader: AsyncEngine
    dialect: str
    # Called after a commit that wrote outbox jobs (wakes the worker).
    on_jobs: list[Callable[[], None]] = field(default_factory=list)

    def jobs_written(self) -> None:
        for listener in self.on_jobs:
            listener()

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def session(self, write: bool) -> AsyncSession:
        engine = self.writer if write else self.reader
        return AsyncSession(engine, expire_on_commit=False, autoflush=False)

    async def dispose(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()


def _sqlite_engine(url: str, *, writer: bool, echo: bool) -> AsyncEngine:
    engine = create_async_engine(
        url,
        echo=echo,
        pool_size=1 if writer else 4,
        max_overflow=0,
        pool_timeout=120,
        connect_args={"timeout": 30},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the driver so that BEGIN is ours.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


def create_database(url: str, *, pool_size: int = 10, echo: bool = False) -> Database:
    """Open the database named by `url` (sqlite+aiosqlite or postgresql+asyncpg)."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        writer = _sqlite_engine(url, writer=True, echo=echo)
        reader = _sqlite_engine(url, writer=False, echo=echo)
        return Database(writer, reader, "sqlite")
    engine = create_async_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_timeout=30
    )
    return Database(engine, engine, "postgresql")
