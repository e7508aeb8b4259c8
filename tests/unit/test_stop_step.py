"""Stopping never hangs: a step that does not end is abandoned and reported with what is running."""
from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest

from service.calendar.sync import SyncLoop
from service.container import stop_step


async def test_a_step_that_hangs_is_abandoned_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    stuck = asyncio.Event()

    async def waits_for_ever() -> None:
        await stuck.wait()

    holder = asyncio.create_task(waits_for_ever(), name="holds-a-connection")
    caplog.set_level(logging.ERROR, logger="forumbridge")
    await stop_step("the test worker", holder, timeout=0.2)
    assert holder.cancelled()
    [record] = [r for r in caplog.records if "did not end" in r.getMessage()]
    assert "the test worker" in record.getMessage()


async def test_a_step_that_ends_is_awaited_to_its_end(caplog: pytest.LogCaptureFixture) -> None:
    done: list[int] = []

    async def ends() -> None:
        await asyncio.sleep(0.05)
        done.append(1)

    await stop_step("a quick step", ends(), timeout=5)
    assert done == [1]
    assert not [r for r in caplog.records if "did not end" in r.getMessage()]


class _Round:
    """The calendar sync as the loop sees it: one round, held until the test lets it end."""

    def __init__(self) -> None:
        self.started, self.gate, self.ended, self.cancelled = (asyncio.Event() for _ in range(4))

    async def sync_all(self) -> SimpleNamespace:
        self.started.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        self.ended.set()
        return SimpleNamespace(errors=[])


async def test_the_calendar_sync_loop_lets_a_round_under_way_end_before_it_stops() -> None:
    round_ = _Round()
    loop = SyncLoop(round_, interval_s=0, stop_grace_s=30)  # type: ignore[arg-type]
    loop.start()
    await round_.started.wait()
    stopping = asyncio.create_task(loop.stop())
    await asyncio.sleep(0.1)
    assert not stopping.done(), "stop() must wait for the round under way"
    round_.gate.set()
    await stopping
    assert round_.ended.is_set() and not round_.cancelled.is_set()


async def test_the_calendar_sync_loop_cancels_a_round_that_outlasts_the_grace() -> None:
    round_ = _Round()
    loop = SyncLoop(round_, interval_s=0, stop_grace_s=0.1)  # type: ignore[arg-type]
    loop.start()
    await round_.started.wait()
    await loop.stop()
    assert round_.cancelled.is_set() and not round_.ended.is_set()


async def test_the_calendar_sync_loop_waiting_for_its_next_round_stops_without_one() -> None:
    round_ = _Round()
    loop = SyncLoop(round_, interval_s=3600, stop_grace_s=30)  # type: ignore[arg-type]
    loop.start()
    await asyncio.sleep(0)
    await asyncio.wait_for(loop.stop(), 5)  # it does not wait out the hour
    assert not round_.started.is_set()
