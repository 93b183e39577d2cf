"""The one mechanism that paces new images: a per-user cooldown and per-user and per-guild rates (asyncio-throttle).

The cooldown (`[discord] cooldown_s`, 0: none) is the least time between two of a member's image commands: a
command inside it is refused at once, saying how long to wait.

Each key (a user, a guild) gets its own `Throttler` (N slots per period). A request waits for a slot at most
`wait_s` seconds, so a short burst is smoothed out rather than refused; past that it is refused with a
`UserError` that says what the limit is. The guild's slot is taken first: a request the guild refuses does not
use up the user's own allowance.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass

from asyncio_throttle import Throttler

from bot.errors import UserError

MAX_KEYS = 10_000  # throttlers kept (least recently used dropped): bounded memory whoever calls


@dataclass(frozen=True)
class Rate:
    count: int
    period_s: float

    def describe(self) -> str:
        period = f"{self.period_s:g} s" if self.period_s < 120 else f"{self.period_s / 60:g} min"
        return f"{self.count} image request{'s' if self.count != 1 else ''} per {period}"


class _Throttlers:
    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._by_key: OrderedDict[int, Throttler] = OrderedDict()

    def get(self, key: int) -> Throttler:
        throttler = self._by_key.pop(key, None) or Throttler(rate_limit=self.rate.count, period=self.rate.period_s)
        self._by_key[key] = throttler
        while len(self._by_key) > MAX_KEYS:
            self._by_key.popitem(last=False)
        return throttler


class RateLimits:
    def __init__(self, user: Rate, guild: Rate, wait_s: float = 2.0, cooldown_s: float = 0.0) -> None:
        self.wait_s = wait_s
        self.cooldown_s = cooldown_s
        self._users = _Throttlers(user)
        self._guilds = _Throttlers(guild)
        self._last: OrderedDict[int, float] = OrderedDict()  # user -> time.monotonic() of their last command

    def cooldown(self, user_id: int) -> None:
        """Refuse (`UserError`, at once) a member's command that comes within `cooldown_s` of their last one."""
        if self.cooldown_s <= 0:
            return
        now = time.monotonic()
        last = self._last.pop(user_id, None)
        if last is not None and now - last < self.cooldown_s:
            self._last[user_id] = last
            raise UserError(f"you're going fast: wait {self.cooldown_s - (now - last):.1f} s before the next image")
        self._last[user_id] = now
        while len(self._last) > MAX_KEYS:
            self._last.popitem(last=False)

    async def acquire(self, user_id: int, guild_id: int | None) -> None:
        """Take a slot for one request of `user_id` in `guild_id`, or raise `UserError` saying which limit."""
        if guild_id is not None:
            await self._take(self._guilds, guild_id, "this server is asking for a lot of images right now")
        await self._take(self._users, user_id, "you're going fast")

    async def _take(self, throttlers: _Throttlers, key: int, what: str) -> None:
        try:
            await asyncio.wait_for(throttlers.get(key).acquire(), timeout=max(self.wait_s, 0.001))
        except TimeoutError:
            raise UserError(
                f"{what}: the limit is {throttlers.rate.describe()}; please try again in a little while"
            ) from None
