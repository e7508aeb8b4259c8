"""The group committer's contract (service/participation/joins.py), on SQLite and PostgreSQL.

Every awaited item is in the database, seen from another connection, as soon as its await
returns; a failed transaction reaches every waiter of its batch and writes none of it; an outcome
that is an exception reaches only its own waiter.
"""
from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any, Awaitable, Callable, Sequence

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db import models as m
from service.db.engine import Database, create_database
from service.participation.joins import GroupCommit

PEOPLE = m.Person.__table__


class Refused(Exception):
    """An outcome of one item alone."""


class Poisoned(Exception):
    """The batch writer gave up on the whole batch."""


@pytest.fixture
async def db(database_url: str) -> Any:
    database = create_database(database_url)
    yield database
    # A runner keeps its connection for a moment after its last batch: it returns it before the pool closes.
    await asyncio.gather(*(t for t in asyncio.all_tasks() if t.get_name() == "group-commit"), return_exceptions=True)
    await database.dispose()


async def write_people(conn: AsyncConnection, keys: Sequence[str]) -> list[Any]:
    """One person per key (the key is the email): a "poison" key fails the batch, a "refuse" key only itself."""
    if any(k.startswith("poison") for k in keys):
        await conn.execute(insert(PEOPLE), [person(k) for k in keys])  # written, then rolled back
        raise Poisoned("this batch may not be written")
    rows = [person(k) for k in keys if not k.startswith("refuse")]
    if rows:
        await conn.execute(insert(PEOPLE), rows)
    return [Refused(k) if k.startswith("refuse") else k.upper() for k in keys]


def person(key: str) -> dict[str, Any]:
    return {"id": uuid.uuid4(), "name": key, "email": f"{key}@x.example", "email_key": f"{key}@x.example"}


async def stored(db: Database, keys: Sequence[str]) -> set[str]:
    """The keys found in the database by a connection of its own (only committed rows are visible to it)."""
    async with db.reader.connect() as conn:
        found = await conn.scalars(select(PEOPLE.c.name).where(PEOPLE.c.name.in_(list(keys))))
        return set(found)


async def count_people(db: Database) -> int:
    async with db.reader.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(PEOPLE)))


def checked_submit(group: GroupCommit[str, str], db: Database,
                   missing: list[str]) -> Callable[[str], Awaitable[str]]:
    """`submit`, then at once (before anything else can run a commit for the item) whether it is stored;
    keys not stored yet go to `missing`."""
    async def one(key: str) -> str:
        outcome = await group.submit(key)
        if key not in await stored(db, [key]):
            missing.append(key)
        return outcome
    return one


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_every_awaited_item_is_committed_when_its_await_returns(db: Database, concurrency: int) -> None:
    group: GroupCommit[str, str] = GroupCommit(db.writer, write_people, concurrency=concurrency)
    missing: list[str] = []
    one = checked_submit(group, db, missing)

    keys = [f"p{i:03d}" for i in range(120)]
    outcomes = await asyncio.gather(*(one(k) for k in keys))
    assert outcomes == [k.upper() for k in keys]
    assert missing == []
    assert await stored(db, keys) == set(keys)
    # Concurrent items shared transactions.
    assert group.items == len(keys) and group.batches < len(keys) / 4


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_items_arriving_while_transactions_run_are_all_committed(db: Database, concurrency: int) -> None:
    in_flight, most = 0, 0

    async def counting(conn: AsyncConnection, keys: Sequence[str]) -> list[Any]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await write_people(conn, keys)
        finally:
            in_flight -= 1

    group: GroupCommit[str, str] = GroupCommit(db.writer, counting, concurrency=concurrency)
    rng = random.Random(4)

    async def one(key: str) -> bool:
        await asyncio.sleep(rng.random() * 0.2)
        await group.submit(key)
        return key in await stored(db, [key])

    keys = [f"w{i:03d}" for i in range(150)]
    assert all(await asyncio.gather(*(one(k) for k in keys)))
    assert await stored(db, keys) == set(keys)
    assert 1 <= most <= concurrency
    assert group.items == len(keys)


async def test_a_lone_item_is_not_kept_waiting_for_company(db: Database) -> None:
    group: GroupCommit[str, str] = GroupCommit(db.writer, write_people)
    assert await asyncio.wait_for(group.submit("alone"), 10) == "ALONE"
    assert await stored(db, ["alone"]) == {"alone"}
    assert (group.batches, group.items) == (1, 1)


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_a_failed_batch_reaches_every_waiter_and_writes_none_of_it(db: Database, concurrency: int) -> None:
    group: GroupCommit[str, str] = GroupCommit(db.writer, write_people, concurrency=concurrency)
    keys = [f"b{i:02d}" for i in range(19)] + ["poison"]
    # All are queued before the first transaction starts, so they form one batch.
    results = await asyncio.gather(*(group.submit(k) for k in keys), return_exceptions=True)
    assert group.batches == 1
    assert all(isinstance(r, Poisoned) for r in results), results
    assert await stored(db, keys) == set()
    # The committer goes on: later items are written.
    assert await group.submit("after") == "AFTER"
    assert await stored(db, ["after"]) == {"after"}


async def test_a_database_error_in_a_batch_reaches_every_waiter(db: Database) -> None:
    group: GroupCommit[str, str] = GroupCommit(db.writer, write_people)
    # Two people with the same email in one batch: the unique key fails the INSERT.
    keys = ["d1", "d2", "twin", "twin", "d3"]
    results = await asyncio.gather(*(group.submit(k) for k in keys), return_exceptions=True)
    assert all(isinstance(r, IntegrityError) for r in results), results
    assert await count_people(db) == 0


async def test_an_outcome_of_one_item_reaches_only_its_waiter(db: Database) -> None:
    group: GroupCommit[str, str] = GroupCommit(db.writer, write_people)
    keys = ["o1", "refuse-me", "o2", "o3"]
    results = await asyncio.gather(*(group.submit(k) for k in keys), return_exceptions=True)
    assert results[0] == "O1" and results[2:] == ["O2", "O3"]
    assert isinstance(results[1], Refused)
    assert await stored(db, keys) == {"o1", "o2", "o3"}


async def test_a_writer_that_loses_count_fails_its_batch(db: Database) -> None:
    async def short(conn: AsyncConnection, keys: Sequence[str]) -> list[str]:
        await conn.execute(insert(PEOPLE), [person(k) for k in keys])
        return ["only one"]

    group: GroupCommit[str, str] = GroupCommit(db.writer, short)
    results = await asyncio.gather(*(group.submit(k) for k in ("c1", "c2")), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert await count_people(db) == 0


async def test_a_waiter_released_with_success_never_precedes_the_commit(db: Database) -> None:
    """The writer is slow to finish; no waiter may be released before the transaction ends."""
    finished = asyncio.Event()

    async def slow(conn: AsyncConnection, keys: Sequence[str]) -> list[str]:
        await conn.execute(insert(PEOPLE), [person(k) for k in keys])
        await asyncio.sleep(0.2)
        finished.set()
        return list(keys)

    group: GroupCommit[str, str] = GroupCommit(db.writer, slow)

    async def one(key: str) -> bool:
        await group.submit(key)
        return finished.is_set() and key in await stored(db, [key])

    assert await asyncio.gather(*(one(f"s{i}") for i in range(5))) == [True] * 5


async def test_a_writer_with_its_own_transaction_commits_before_its_waiters_return(db: Database) -> None:
    async def own(conn: AsyncConnection, keys: Sequence[str]) -> list[Any]:
        assert not conn.in_transaction()
        async with conn.begin():
            return await write_people(conn, keys)

    group: GroupCommit[str, str] = GroupCommit(db.writer, own, own_transaction=True)
    missing: list[str] = []
    one = checked_submit(group, db, missing)

    keys = [f"o{i:02d}" for i in range(40)] + ["refuse-me"]
    outcomes = await asyncio.gather(*(one(k) for k in keys), return_exceptions=True)
    assert outcomes[:-1] == [k.upper() for k in keys[:-1]] and isinstance(outcomes[-1], Refused)
    assert missing == []
    poisoned = await asyncio.gather(*(group.submit(k) for k in ("q1", "q2", "poison")), return_exceptions=True)
    assert all(isinstance(r, Poisoned) for r in poisoned)
    assert await stored(db, ["q1", "q2", "poison"]) == set()


async def test_another_writer_gets_its_turn_while_items_keep_arriving(db: Database) -> None:
    group: GroupCommit[str, str] = GroupCommit(db.writer, write_people)
    other_done = asyncio.Event()
    submitted = 0

    async def keep_submitting(lane: int) -> None:
        nonlocal submitted
        # The cap only ends a starved run: on a loaded machine the other writer's first connection
        # may take a while to open, and 20,000 items were once written before it.
        while not other_done.is_set() and submitted < 100_000:
            submitted += 1
            await group.submit(f"k{lane}-{submitted}")

    async def other_writer() -> None:
        await asyncio.sleep(0.01)  # the joins' runner holds the connection by now
        async with db.writer.begin() as conn:
            await conn.execute(insert(PEOPLE), [person("other")])
        other_done.set()

    await asyncio.gather(*(keep_submitting(i) for i in range(20)), other_writer())
    assert await stored(db, ["other"]) == {"other"}
    # It was not left waiting until the items stopped coming.
    assert submitted < 100_000
    assert group.batches > 1
