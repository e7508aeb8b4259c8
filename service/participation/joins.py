"""Group commit: concurrent writes share one transaction, and each waits for its commit.

Opening a join link writes one attendance event, and the redirect may only be sent once that
event is durable. One transaction per request makes the commit (and, on SQLite, the one writer
connection) the bottleneck. `GroupCommit` instead collects the items of concurrent requests:
while one batch's transaction runs, the items that arrive queue up, and the next transaction
takes all of them at once. A lone request is not delayed (its batch starts at once); under load
the batches grow by themselves.

Durability contract
-------------------
- `await group.submit(item)` returns only after the transaction that wrote `item` has
  committed. What it returns is `item`'s own outcome from the batch function; an exception the
  batch function returned for `item` alone is raised to its caller only, and the rest of the
  batch is still written and committed.
- If the batch's transaction fails (the batch function raises, or BEGIN or COMMIT does),
  every waiter of that batch gets that exception and none of its items may be taken as written.
  A lost connection becomes `Unavailable` (503), as in `UnitOfWork`. Only when the connection
  breaks during COMMIT itself is the outcome unknown: then the items may be written although
  their waiters got an error, never the other way round.
- Nothing is written behind a caller's back: an item is either in a transaction that its
  caller is still waiting for, or committed before the caller was released. A crash loses only
  items whose callers had not been answered yet.
- A caller that is cancelled while it waits does not take its item back: it may still be written.

A runner keeps its connection for the batches that follow one another (each within `IDLE_S` of
the last), for at most `HOLD_S`: no check-out, check-in and reset (on SQLite a hand-over to the
driver's thread) per batch. Then it returns the connection and lets whatever waits for the pool go
first (on SQLite the one writer connection is shared with every other writing transaction).

A batch writer may run its own transaction on the connection's driver (`own_transaction=True`):
then it gets a connection with no transaction begun, and must commit before it returns and roll
back before it raises; the contract above is the same. Driver errors that mean the database is out
of reach become `Unavailable` as SQLAlchemy's do.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Generic, Sequence, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.db.engine import is_unavailable
from service.errors import Unavailable

log = logging.getLogger(__name__)
Item = TypeVar("Item")
Outcome = TypeVar("Outcome")
# How long a runner keeps one connection for consecutive batches before it lets others have a turn.
HOLD_S = 0.05
# How long it keeps it when no item is waiting, for the next ones to arrive.
IDLE_S = 0.005
# Writes a batch inside an open transaction; returns one outcome (or an exception) per item, in order.
BatchWriter = Callable[[AsyncConnection, Sequence[Item]], Awaitable[Sequence["Outcome | BaseException"]]]


class GroupCommit(Generic[Item, Outcome]):
    """Transactions on `engine`, each holding every item submitted since the last one began.

    At most `concurrency` transactions run at once: 1 where there is one writer anyway (SQLite);
    more lets a server that flushes its log per commit (PostgreSQL) overlap the flushes.
    """

    def __init__(self, engine: AsyncEngine, write: BatchWriter, *, concurrency: int = 1, max_batch: int = 256,
                 own_transaction: bool = False) -> None:
        if concurrency < 1 or max_batch < 1:
            raise ValueError("concurrency and max_batch must be at least 1")
        self.engine = engine
        self.write = write
        self.own_transaction = own_transaction
        self.concurrency = concurrency
        self.max_batch = max_batch
        self._queue: list[tuple[Item, asyncio.Future[Outcome]]] = []
        self._running = 0  # runners that have not returned; counted down in the same step as they see no work
        self._tasks: set[asyncio.Task[None]] = set()  # references, so that running tasks are not collected
        self._arrived: asyncio.Future[None] | None = None  # what a runner that waits for items awaits
        self.batches = 0  # transactions begun, for tests and metrics
        self.items = 0

    async def submit(self, item: Item) -> Outcome:
        """Write `item` in the next transaction and wait for its commit (see the module's contract)."""
        waiter: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((item, waiter))
        if self._arrived is not None:
            _release(self._arrived)
        if self._running < self.concurrency:
            self._running += 1
            runner = asyncio.create_task(self._run(), name="group-commit")
            self._tasks.add(runner)
            runner.add_done_callback(self._tasks.discard)
        return await waiter

    async def close(self) -> None:
        """Let the transactions in flight end (their waiters get their answers), then return."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _run(self) -> None:
        try:
            await self._drain()
        finally:
            # No await between the runner seeing an empty queue and this: an item queued later
            # finds the runner gone and starts a new one.
            self._running -= 1

    async def _drain(self) -> None:
        while self._queue:
            try:
                conn = await self.engine.connect()
            except Exception as exc:  # noqa: BLE001 - no connection: the next batch cannot be written
                self._fail(self._take(), _unavailable(exc))
                continue
            try:
                await self._batches(conn)
            finally:
                try:
                    await conn.close()
                except Exception:  # noqa: BLE001 - its batches are answered; the pool drops a broken connection
                    log.warning("a group commit connection could not be returned to the pool", exc_info=True)
            if self._queue:
                # Another task may be waiting for the pool (on SQLite, for the one writer connection):
                # the connection just returned is its turn before this runner takes one again.
                await asyncio.sleep(0)

    async def _batches(self, conn: AsyncConnection) -> None:
        """Consecutive batches on one connection: no checkout, check-in and reset between them,
        while items keep arriving, for at most `HOLD_S`."""
        until = time.monotonic() + HOLD_S
        while self._queue:
            batch = self._take()
            try:
                outcomes = await self._transaction(conn, [item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiter of the batch gets it
                self._fail(batch, exc)
                if isinstance(exc, Unavailable) and not conn.invalidated:
                    # The connection may be what failed: it is not handed out again.
                    try:
                        await conn.invalidate()
                    except Exception:  # noqa: BLE001 - it is being dropped either way
                        log.debug("invalidating a failed group commit connection", exc_info=True)
                return
            except BaseException:  # cancelled (the loop is closing): the batch's fate is unknown
                for _, waiter in batch:
                    waiter.cancel()
                raise
            for (_, waiter), outcome in zip(batch, outcomes):
                if waiter.done():
                    continue
                if isinstance(outcome, BaseException):
                    waiter.set_exception(outcome)
                else:
                    waiter.set_result(outcome)
            if time.monotonic() >= until:
                return
            if not self._queue:
                # The joins just answered are usually followed by more within a millisecond or two:
                # waiting that long keeps the connection for them instead of returning it.
                await self._arrival(IDLE_S)

    async def _arrival(self, timeout: float) -> None:
        """Until an item is submitted or `timeout` seconds have passed."""
        loop = asyncio.get_running_loop()
        self._arrived = arrived = loop.create_future()
        timer = loop.call_later(timeout, _release, arrived)
        try:
            await arrived
        finally:
            timer.cancel()
            self._arrived = None

    def _take(self) -> list[tuple[Item, asyncio.Future[Outcome]]]:
        batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
        return batch

    @staticmethod
    def _fail(batch: list[tuple[Item, asyncio.Future[Outcome]]], exc: BaseException) -> None:
        for _, waiter in batch:
            if not waiter.done():
                waiter.set_exception(exc)

    async def _transaction(self, conn: AsyncConnection, items: list[Item]) -> Sequence[Outcome | BaseException]:
        self.batches += 1
        self.items += len(items)
        try:
            if self.own_transaction:
                outcomes = await self.write(conn, items)
                _check_count(outcomes, items)
            else:
                async with conn.begin():
                    outcomes = await self.write(conn, items)
                    _check_count(outcomes, items)  # before the commit: the batch is rolled back
            return outcomes
        except Exception as exc:
            mapped = _unavailable(exc)
            if mapped is exc:
                raise
            raise mapped from exc


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _check_count(outcomes: Sequence[Any], items: Sequence[Any]) -> None:
    if len(outcomes) != len(items):
        raise RuntimeError(f"the batch writer gave {len(outcomes)} outcomes for {len(items)} items")


def _unavailable(exc: Exception) -> Exception:
    """`exc`, or `Unavailable` when it means the database is out of reach."""
    if isinstance(exc, Unavailable):
        return exc
    if isinstance(exc, (OperationalError, InterfaceError, OSError)):
        return Unavailable("the database cannot be reached; try again shortly")
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return Unavailable("the database connection was lost; try again shortly")
        return exc
    # What a driver raises directly (a writer of its own transaction): refused, reset, timed out.
    if is_unavailable(exc):
        return Unavailable("the database cannot be reached; try again shortly")
    return exc
