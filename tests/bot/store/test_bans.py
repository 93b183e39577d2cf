"""Bans (one in force per user and guild, kept as history) and migration 0002 (moderation modes, bans)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from bot.store import bans, guilds, migrate
from bot.store.db import make_engine
from bot.store.models import utcnow

GUILD, ALICE, MOD = 900, 111, 777


async def test_ban_replace_lift_and_history(any_sessions):
    async with any_sessions.begin() as s:
        first = await bans.ban(
            s, ALICE, guild_id=GUILD, actor_id=MOD, expires_at=utcnow() + timedelta(days=1), reason="spam"
        )
        second = await bans.ban(s, ALICE, guild_id=GUILD, actor_id=MOD, expires_at=None, reason="again")
        await bans.ban(s, ALICE, guild_id=None, actor_id=MOD, expires_at=None)
    async with any_sessions.begin() as s:
        assert sorted((b.id, b.guild_id) for b in await bans.in_force(s)) == sorted(
            [(second.id, GUILD), (second.id + 1, None)]
        )
        lifted = await bans.lift(s, ALICE, guild_id=GUILD, actor_id=MOD)
        assert lifted.id == second.id and lifted.lifted_by == MOD
        assert await bans.lift(s, ALICE, guild_id=GUILD, actor_id=MOD) is None
    async with any_sessions.begin() as s:
        history = await bans.history(s, ALICE, guild_id=GUILD)
        assert [b.id for b in history] == [second.id + 1, second.id, first.id]
        assert all(b.lifted_at is not None for b in history[1:])
        with pytest.raises(ValueError, match="in the future"):
            await bans.ban(s, ALICE, guild_id=GUILD, actor_id=MOD, expires_at=utcnow() - timedelta(seconds=1))


async def test_new_settings_validate(any_sessions):
    async with any_sessions.begin() as s:
        row = await guilds.update(s, GUILD, moderation_mode="images", notify_by="channel", max_prompt_chars=100)
        assert (row.moderation_mode, row.notify_by, row.max_prompt_chars) == ("images", "channel", 100)
        with pytest.raises(Exception, match="notify by must be one of dm, channel"):
            await guilds.update(s, GUILD, notify_by="pigeon")


async def test_migration_0002_maps_the_old_all_mode(any_url):
    """A guild that held every job ('all') holds every prompt after the upgrade ('prompts'), and back."""
    engine = make_engine(any_url)
    try:
        await migrate.upgrade(engine, "0001")
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO guild_settings (guild_id, moderation_mode, banned_words, flagged_words, "
                    "forced_negative_prompt, defaults, allowed_models, allowed_vaes, nsfw_policy, updated_at) "
                    "VALUES (1, 'all', '[]', '[]', '', '{}', '[]', '[]', 'block', '2026-01-01 00:00:00'), "
                    "(2, 'flagged', '[]', '[]', '', '{}', '[]', '[]', 'block', '2026-01-01 00:00:00')"
                )
            )
        await migrate.upgrade(engine)
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text("SELECT guild_id, moderation_mode, notify_by FROM guild_settings ORDER BY guild_id")
                )
            ).all()
        assert [tuple(r) for r in rows] == [(1, "prompts", "dm"), (2, "flagged", "dm")]
        assert await migrate.check(engine) == []
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE guild_settings SET moderation_mode = 'images' WHERE guild_id = 2"))
        await migrate.downgrade(engine, "0001")
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT moderation_mode FROM guild_settings ORDER BY guild_id"))).all()
        assert [r[0] for r in rows] == ["all", "all"]
    finally:
        await engine.dispose()
