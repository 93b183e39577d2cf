"""`ChannelEdits`: the pace of progress edits in one channel, shared by every job shown there.

Progress is best effort and finals are not: a job's final message never passes through here, so it never waits
behind progress (Discord's own buckets and the bot's global cap are its only limits). Progress edits take at
most `rate` slots per `period` per channel; jobs with something new to show wait in line, oldest first, and
each one shows its newest state when its turn comes (older states are coalesced away, a job that ended in the
meantime is dropped). One timer per channel, not one polling task per job: 50 jobs waiting cost nothing.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from collections.abc import Awaitable
from typing import Protocol

from bot.best_effort import quietly


class ShowsProgress(Protocol):
    def edit_progress(self) -> Awaitable[None]:
        """Show the newest progress now (it may have none left to show)."""


class ChannelEdits:
    def __init__(self, rate: int, period_s: float) -> None:
        self.rate = max(1, rate)
        self.period_s = period_s
        self._waiting: dict[ShowsProgress, None] = {}  # an ordered set: oldest first
        self._sent: collections.deque[float] = collections.deque()
        self._pump: asyncio.Task | None = None
        self._edits: set[asyncio.Task] = set()

    def want(self, job: ShowsProgress) -> None:
        """`job` has new progress: it gets the next free slot after the jobs already waiting."""
        self._waiting.setdefault(job, None)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run(), name="progress-edits")

    def forget(self, job: ShowsProgress) -> None:
        """The job ended: drop its pending progress."""
        self._waiting.pop(job, None)

    async def _run(self) -> None:
        while self._waiting:
            now = time.monotonic()
            while self._sent and now - self._sent[0] >= self.period_s:
                self._sent.popleft()
            if len(self._sent) >= self.rate:
                await asyncio.sleep(self._sent[0] + self.period_s - now)
                continue
            job = next(iter(self._waiting))
            del self._waiting[job]
            self._sent.append(now)
            # Not awaited: one slow edit (a 429 being waited out) must not hold the channel's other jobs.
            task = asyncio.create_task(_quietly(job.edit_progress()), name="progress-edit")
            self._edits.add(task)
            task.add_done_callback(self._edits.discard)


_quietly = functools.partial(quietly, what="progress edit")
