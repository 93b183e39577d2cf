"""Bot bans: a user barred from the bot in one guild (or everywhere) for a while or for good.

A ban row is never deleted: lifting it sets `lifted_at`, and an expired one simply stops counting, so the rows
are also the user's history. Banning a user who is banned already replaces the running ban (the old row is
lifted by the same moderator), so at most one ban per user and guild is in force.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.models import Ban, insert, utcnow

MAX_REASON_CHARS = 1000


def _in_force(now: datetime):
    return (Ban.lifted_at.is_(None), or_(Ban.expires_at.is_(None), Ban.expires_at > now))


async def ban(
    s: AsyncSession,
    user_id: int,
    *,
    guild_id: int | None,
    actor_id: int,
    expires_at: datetime | None,
    reason: str = "",
) -> Ban:
    """Ban `user_id` in `guild_id` (None: everywhere) until `expires_at` (None: for good)."""
    now = utcnow()
    if expires_at is not None and expires_at <= now:
        raise ValueError("a ban must end in the future")
    for old in await _current(s, user_id, guild_id, now):
        old.lifted_at, old.lifted_by = now, actor_id
    return await insert(
        s,
        Ban(
            user_id=user_id,
            guild_id=guild_id,
            actor_id=actor_id,
            reason=(reason or "").strip()[:MAX_REASON_CHARS],
            created_at=now,
            expires_at=expires_at,
        ),
    )


async def lift(s: AsyncSession, user_id: int, *, guild_id: int | None, actor_id: int) -> Ban | None:
    """End the user's ban in force in `guild_id`; None when there was none."""
    now = utcnow()
    current = await _current(s, user_id, guild_id, now)
    for row in current:
        row.lifted_at, row.lifted_by = now, actor_id
    await s.flush()
    return current[-1] if current else None


async def in_force(s: AsyncSession) -> list[Ban]:
    """Every ban in force now, in every guild (the bot keeps them in memory to check each interaction)."""
    stmt = select(Ban).where(*_in_force(utcnow())).order_by(Ban.id)
    return list((await s.execute(stmt)).scalars())


async def history(s: AsyncSession, user_id: int, *, guild_id: int | None, limit: int = 25) -> list[Ban]:
    """The user's bans in the guild (and the global ones), newest first, ended ones included."""
    stmt = (
        select(Ban)
        .where(Ban.user_id == user_id, or_(Ban.guild_id == guild_id, Ban.guild_id.is_(None)))
        .order_by(Ban.id.desc())
        .limit(limit)
    )
    return list((await s.execute(stmt)).scalars())


async def _current(s: AsyncSession, user_id: int, guild_id: int | None, now: datetime) -> list[Ban]:
    scope = Ban.guild_id.is_(None) if guild_id is None else Ban.guild_id == guild_id
    stmt = select(Ban).where(Ban.user_id == user_id, scope, *_in_force(now)).with_for_update().order_by(Ban.id)
    return list((await s.execute(stmt)).scalars())
