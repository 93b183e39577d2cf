"""Users: the row every preset and job hangs off, created on first use and used as a per-user lock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.models import User, utcnow


def dialect_name(s: AsyncSession) -> str:
    return s.get_bind().dialect.name


def upsert_ignore(s: AsyncSession, model: type[Any], values: dict[str, Any], key: list[str]) -> Any:
    """`INSERT ... ON CONFLICT (key) DO NOTHING` for SQLite and PostgreSQL, or None for other backends."""
    from sqlalchemy.dialects import postgresql, sqlite

    inserts: dict[str, Callable[[Any], sqlite.Insert | postgresql.Insert]] = {
        "sqlite": sqlite.insert,
        "postgresql": postgresql.insert,
    }
    insert = inserts.get(dialect_name(s))
    if insert is None:  # pragma: no cover - only SQLite and PostgreSQL are supported
        return None
    return insert(model).values(**values).on_conflict_do_nothing(index_elements=key)


async def ensure_user(s: AsyncSession, user_id: int, *, lock: bool = False) -> None:
    """Create the user's row if missing (race-free); with `lock`, hold it until the transaction ends.

    The lock is what serializes one user's preset writes on PostgreSQL (limit counting, the default preset);
    on SQLite every transaction already holds the write lock (`BEGIN IMMEDIATE`, see `bot.store.db`).
    """
    if isinstance(user_id, bool) or not isinstance(user_id, int) or user_id < 0:
        raise ValueError(f"a Discord user id must be a non-negative int, got {user_id!r}")
    stmt = upsert_ignore(s, User, {"id": user_id, "created_at": utcnow()}, ["id"])
    if stmt is not None:
        await s.execute(stmt)
    elif await s.get(User, user_id) is None:  # pragma: no cover
        s.add(User(id=user_id))
        await s.flush()
    if lock:
        await s.execute(select(User.id).where(User.id == user_id).with_for_update())
