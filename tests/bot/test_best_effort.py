"""bot.best_effort: a failed best-effort step is logged and goes no further; cancellation still propagates."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.best_effort import quietly


async def test_a_failure_is_logged_with_what_failed_and_goes_no_further(caplog):
    async def broken() -> None:
        raise ConnectionResetError("dropped")

    with caplog.at_level(logging.WARNING, logger="bot.best_effort"):
        await quietly(broken(), "progress edit")
    (entry,) = caplog.records
    assert entry.getMessage() == "progress edit failed" and entry.exc_info[0] is ConnectionResetError


async def test_a_success_logs_nothing(caplog):
    done = []

    async def works() -> None:
        done.append(True)

    with caplog.at_level(logging.WARNING, logger="bot.best_effort"):
        await quietly(works(), "notice")
    assert done == [True] and caplog.records == []


async def test_cancellation_is_not_swallowed():
    async def slow() -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(quietly(slow(), "progress edit"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
