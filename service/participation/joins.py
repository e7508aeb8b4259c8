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

A batch writer may run its own transaction on the connection's driver (`own_transaction=True`):
then it gets a connection with no transaction begun, and must commit before it returns and roll
back before it raises; the contract above is the same. Driver errors that mean the database is out
of reach become `Unavailable` as SQLAlchemy's do.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.db.engine import is_unavailable
from service.errors import Unavailable

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")
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
        self.batches = 0  # transactions begun, for tests and metrics
        self.items = 0

    async def submit(self, item: Item) -> Outcome:
        """Write `item` in the next transaction and wait for its commit (see the module's contract)."""
        waiter: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((item, waiter))
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
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            try:
                outcomes = await self._transaction([item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiter of the batch gets it
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_exception(exc)
                continue
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

    async def _transaction(self, items: list[Item]) -> Sequence[Outcome | BaseException]:
        self.batches += 1
        self.items += len(items)
        try:
            async with (self.engine.connect() if self.own_transaction else self.engine.begin()) as conn:
                outcomes = await self.write(conn, items)
                if len(outcomes) != len(items):
                    raise RuntimeError(f"the batch writer gave {len(outcomes)} outcomes for {len(items)} items")
            return outcomes
        except (OperationalError, InterfaceError, OSError) as exc:
            raise Unavailable("the database cannot be reached; try again shortly") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise Unavailable("the database connection was lost; try again shortly") from exc
            raise
        except Exception as exc:
            # What a driver raises directly (a writer of its own transaction): refused, reset, timed out.
            if is_unavailable(exc):
                raise Unavailable("the database cannot be reached; try again shortly") from exc
            raise
