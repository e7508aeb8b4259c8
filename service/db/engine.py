"""Engines and the unit of work."""
from __future__ import annotations

import errno
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

# Socket errors that say the database server is out of reach, not that our code is wrong.
_NETWORK_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT,
                             errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTDOWN})
# PostgreSQL SQLSTATEs of the same kind: class 08 (connection exception), the server shutting down
# or starting (57P01-57P03), too many connections (53300).
_UNAVAILABLE_STATES = ("08", "57P01", "57P02", "57P03", "53300")


def is_unavailable(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) means the database cannot be reached right now.

    Covers what the drivers raise when a connection is refused, reset or lost, whether from a
    query, a pool checkout or a connect (asyncpg's errors there reach us unwrapped or as a plain
    DBAPIError), timeouts, and SQLAlchemy's pool timeout. A retry later can succeed: a 503.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
            return True
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            return True
        if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
            return True
        if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
            return True
        state = getattr(exc, "sqlstate", None)
        if isinstance(state, str) and state.startswith(_UNAVAILABLE_STATES):
            return True
        exc = exc.__cause__ or getattr(exc, "orig", None)
    return False


def sqlstate(exc: sa_exc.DBAPIError) -> str | None:
    """PostgreSQL's SQLSTATE of a driver error, as asyncpg gives it (on the error or its cause);
    None on SQLite."""
    orig = exc.orig
    return getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)


def upsert_insert(dialect: str) -> Any:
    """The dialect's INSERT construct, the one with ON CONFLICT (PostgreSQL's or SQLite's)."""
    return pg_insert if dialect == "postgresql" else sqlite_insert


@dataclass
class Database:
    """A writer and a reader engine.

    On PostgreSQL both share one pool; the reader's connections run in autocommit, so a read
    costs its statements and no BEGIN and ROLLBACK round trips. Each statement then reads its own
    snapshot, as it does inside a READ COMMITTED transaction anyway.

    On SQLite every writing transaction starts with BEGIN IMMEDIATE on the one
    writer connection, so a check and the insert that depends on it cannot be
    interleaved by another writer, in this process or another.
    """

    writer: AsyncEngine
    reader: AsyncEngine
    dialect: str
    # Whether the reader has its own connections (SQLite) or shares the writer's pool (PostgreSQL).
    separate_reader: bool = True
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
        if self.separate_reader:
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


def create_database(url: str, *, pool_size: int = 10, echo: bool = False, connect_timeout: float = 10.0,
                    command_timeout: float = 30.0) -> Database:
    """Open the database named by `url` (sqlite+aiosqlite or postgresql+asyncpg).

    On PostgreSQL every connect and every statement has a time limit (`connect_timeout`,
    `command_timeout`, seconds), so that a database out of reach makes requests fail (503) in
    bounded time instead of hanging; pre-ping replaces pooled connections that died meanwhile.
    """
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        writer = _sqlite_engine(url, writer=True, echo=echo)
        reader = _sqlite_engine(url, writer=False, echo=echo)
        return Database(writer, reader, "sqlite")
    engine = create_async_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_timeout=30,
        connect_args={"timeout": connect_timeout, "command_timeout": command_timeout},
    )
    _ping_when_idle(engine)
    reader = engine.execution_options(isolation_level="AUTOCOMMIT")
    return Database(engine, reader, "postgresql", separate_reader=False)


# A pooled connection unused for longer than this is pinged before it is handed out.
IDLE_PING_S = 5.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Pre-ping, but only for connections that sat idle in the pool.

    A connection in steady use proves itself with every statement (one that breaks is
    invalidated with the rest of the pool by SQLAlchemy's disconnect handling); one that sat
    idle while the server restarted or the network dropped it is found out here and replaced,
    instead of failing the request that takes it. Pinging every checkout would cost a round trip
    per request.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < IDLE_PING_S:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # noqa: BLE001 - any failure means: use another connection
            raise sa_exc.DisconnectionError(f"pooled connection failed its ping: {exc}") from exc
        if alive is False:
            raise sa_exc.DisconnectionError("pooled connection failed its ping")
