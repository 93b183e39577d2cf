"""`ChannelEdits`: the pace of progress edits in one channel, shared by every job shown there; `ProgressEdits`:
every channel's, under the bot's cap on progress calls.

Progress is best effort and finals are not: a job's final message never passes through here, so it never waits
behind progress (Discord's own buckets and the bot's global cap are its only limits). Progress edits take at
most `rate` slots per `period` per channel; jobs with something new to show wait in line, oldest first, and
each one shows its newest state when its turn comes (older states are coalesced away, a job that ended in the
meantime is dropped). One timer per channel, not one polling task per job: 50 jobs waiting cost nothing.

Progress takes one path: a job's message (bot/exts/imagine/_delivery.py) asks for a turn with `want(key, show)`,
and its turn runs `show`, the edit it handed in; nothing here knows what a job or a message is.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Protocol

from bot.best_effort import quietly

Show = Callable[[], Awaitable[None]]  # shows the newest progress now (it may have none left to show)


class Slots(Protocol):
    """A cap shared by every channel's progress (the bot's, so results always find room for their calls)."""

    async def acquire(self) -> None: ...


class ChannelEdits:
    def __init__(self, rate: int, period_s: float, slots: Slots | None = None) -> None:
        self.rate = max(1, rate)
        self.period_s = period_s
        self.slots = slots
        self._waiting: dict[Hashable, Show] = {}  # ordered: oldest first
        self._sent: collections.deque[float] = collections.deque()
        self._pump: asyncio.Task | None = None
        self._edits: set[asyncio.Task] = set()

    def want(self, key: Hashable, show: Show) -> None:
        """`key` (a job's message) has new progress: it gets the next free slot after those already waiting, and
        `show` runs then (a newer `show` for a key still waiting replaces the older one)."""
        self._waiting[key] = show  # a key already waiting keeps its place in line
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run(), name="progress-edits")

    def forget(self, key: Hashable) -> None:
        """The job ended: drop its pending progress."""
        self._waiting.pop(key, None)

    async def _run(self) -> None:
        while self._waiting:
            now = time.monotonic()
            while self._sent and now - self._sent[0] >= self.period_s:
                self._sent.popleft()
            if len(self._sent) >= self.rate:
                await asyncio.sleep(self._sent[0] + self.period_s - now)
                continue
            key = next(iter(self._waiting))
            show = self._waiting.pop(key)
            self._sent.append(now)
            # Not awaited: one slow edit (a 429 being waited out) must not hold the channel's other jobs.
            task = asyncio.create_task(_quietly(self._edit(show)), name="progress-edit")
            self._edits.add(task)
            task.add_done_callback(self._edits.discard)

    async def _edit(self, show: Show) -> None:
        if self.slots is not None:
            await self.slots.acquire()
        await show()


class ProgressEdits:
    """Every channel's `ChannelEdits`, made on first use, all under one cap of progress calls (`slots`)."""

    def __init__(self, rate: int, period_s: float, slots: Slots | None = None) -> None:
        self.rate, self.period_s, self.slots = rate, period_s, slots
        self._channels: dict[int, ChannelEdits] = {}

    def channel(self, channel_id: int) -> ChannelEdits:
        if channel_id not in self._channels:
            self._channels[channel_id] = ChannelEdits(self.rate, self.period_s, self.slots)
        return self._channels[channel_id]


_quietly = functools.partial(quietly, what="progress edit")
