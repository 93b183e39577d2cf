"""Bans: kept in the database and, for the check on every interaction and every submission, in memory.

`load()` reads the bans in force at start; `ban_of` then costs no database work, so a banned member is answered
before anything else runs. Who may ban is the moderation service's decision; this module only keeps the list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.store import bans as ban_store
from bot.store import moderation as mod_store
from bot.store.db import transaction
from bot.store.models import Ban, utcnow


@dataclass(frozen=True)
class BanInfo:
    user_id: int
    guild_id: int | None  # None: everywhere
    until: datetime | None  # None: for good
    reason: str = ""

    def active(self, now: datetime) -> bool:
        return self.until is None or self.until > now

    def message(self) -> str:
        where = "this bot" if self.guild_id is None else "this bot on this server"
        until = "for good" if self.until is None else f"until <t:{int(self.until.timestamp())}:f>"
        reason = f" (reason: {self.reason})" if self.reason else ""
        return f"🚫 you are banned from using {where} {until}{reason}"


@dataclass
class Bans:
    sessions: async_sessionmaker[AsyncSession]
    global_bans: frozenset[int] = frozenset()  # `[moderation] banned_users`: everywhere, for good
    _bans: dict[tuple[int, int | None], BanInfo] = field(default_factory=dict)

    async def load(self) -> None:
        """Load the bans in force (checked in memory on every interaction)."""
        rows = await transaction(self.sessions, ban_store.in_force)
        self._bans = {(b.user_id, b.guild_id): _info(b) for b in rows}

    def ban_of(self, user_id: int, guild_id: int | None) -> BanInfo | None:
        """The ban keeping `user_id` from the bot in `guild_id` now, if any (no database work)."""
        if user_id in self.global_bans:
            return BanInfo(user_id, None, None, "on the bot's global ban list")
        now = utcnow()
        for key in ((user_id, None), (user_id, guild_id)):
            info = self._bans.get(key)
            if info is not None:
                if info.active(now):
                    return info
                self._bans.pop(key, None)
        return None

    async def ban(self, actor_id: int, user_id: int, guild_id: int, until: datetime | None, reason: str) -> BanInfo:
        """Record the ban (and its audit entry) and keep it in memory."""

        async def write(s: AsyncSession) -> Ban:
            row = await ban_store.ban(s, user_id, guild_id=guild_id, actor_id=actor_id, expires_at=until, reason=reason)
            await mod_store.record(
                s,
                actor_id=actor_id,
                action="ban",
                guild_id=guild_id,
                target_user_id=user_id,
                reason=reason,
                details={"until": until.isoformat() if until else None},
            )
            return row

        info = _info(await transaction(self.sessions, write))
        self._bans[(user_id, guild_id)] = info
        return info

    async def lift(self, actor_id: int, user_id: int, guild_id: int) -> bool:
        """Lift the user's ban in the guild (audited); False when there was none."""

        async def write(s: AsyncSession) -> Ban | None:
            lifted = await ban_store.lift(s, user_id, guild_id=guild_id, actor_id=actor_id)
            if lifted is not None:
                await mod_store.record(s, actor_id=actor_id, action="unban", guild_id=guild_id, target_user_id=user_id)
            return lifted

        lifted = await transaction(self.sessions, write)
        self._bans.pop((user_id, guild_id), None)
        return lifted is not None


def _info(row: Ban) -> BanInfo:
    return BanInfo(row.user_id, row.guild_id, row.expires_at, row.reason)
