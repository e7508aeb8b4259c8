"""Stopping never hangs: a step that does not end is abandoned and reported with what is running."""
from __future__ import annotations

import asyncio
import logging

import pytest

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
