"""Bans kept in memory over the database: answered with no query, audited when made or lifted, loaded again at
start, forgotten when they end, and the config's global list everywhere."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from bot.services import bans as bans_module
from bot.services.bans import BanInfo, Bans
from bot.store import bans as ban_store
from bot.store import moderation as mod_store

GUILD, OTHER_GUILD = 900, 901
MOD, ALICE, BOB = 100, 111, 112


def later(**delta) -> datetime:
    return datetime.now(UTC) + timedelta(**delta)


def test_the_message_says_where_until_when_and_why():
    until = datetime(2030, 1, 2, 3, 4, tzinfo=UTC)
    assert BanInfo(ALICE, GUILD, until, "spam").message() == (
        f"🚫 you are banned from using this bot on this server until <t:{int(until.timestamp())}:f> (reason: spam)"
    )
    assert BanInfo(ALICE, None, None).message() == "🚫 you are banned from using this bot for good"


async def test_a_ban_applies_in_its_server_only_and_is_audited(any_sessions):
    bans = Bans(any_sessions)
    info = await bans.ban(MOD, ALICE, GUILD, later(days=1), "spam")
    assert bans.ban_of(ALICE, GUILD) == info
    assert bans.ban_of(ALICE, OTHER_GUILD) is None and bans.ban_of(ALICE, None) is None
    assert bans.ban_of(BOB, GUILD) is None
    async with any_sessions.begin() as s:
        (entry,) = await mod_store.audit_log(s, GUILD)
    assert (entry.action, entry.actor_id, entry.target_user_id, entry.reason) == ("ban", MOD, ALICE, "spam")


async def test_ban_of_asks_the_database_nothing(any_engine, any_sessions):
    bans = Bans(any_sessions)
    await bans.ban(MOD, ALICE, GUILD, None, "")
    queries: list[str] = []

    def executed(conn, cursor, statement, *args) -> None:
        queries.append(statement)

    event.listen(any_engine.sync_engine, "before_cursor_execute", executed)
    try:
        for _ in range(100):
            assert bans.ban_of(ALICE, GUILD) is not None
            assert bans.ban_of(BOB, GUILD) is None
    finally:
        event.remove(any_engine.sync_engine, "before_cursor_execute", executed)
    assert queries == []


async def test_a_lifted_ban_is_gone_and_lifting_again_says_there_was_none(any_sessions):
    bans = Bans(any_sessions)
    await bans.ban(MOD, ALICE, GUILD, None, "")
    assert await bans.lift(MOD, ALICE, GUILD) is True
    assert bans.ban_of(ALICE, GUILD) is None
    assert await bans.lift(MOD, ALICE, GUILD) is False
    async with any_sessions.begin() as s:
        actions = [entry.action for entry in await mod_store.audit_log(s, GUILD)]
    assert actions == ["unban", "ban"]  # newest first; the second lift changed nothing, so it is not audited


async def test_load_reads_the_bans_in_force_at_start(any_sessions):
    async with any_sessions.begin() as s:
        await ban_store.ban(s, ALICE, guild_id=GUILD, actor_id=MOD, expires_at=later(hours=1))
        await ban_store.ban(s, BOB, guild_id=None, actor_id=MOD, expires_at=None)  # everywhere
        await ban_store.ban(s, MOD, guild_id=GUILD, actor_id=ALICE, expires_at=None)
        await ban_store.lift(s, MOD, guild_id=GUILD, actor_id=ALICE)
    bans = Bans(any_sessions)
    assert bans.ban_of(ALICE, GUILD) is None  # nothing in memory before `load`
    await bans.load()
    assert bans.ban_of(ALICE, GUILD) is not None
    assert bans.ban_of(BOB, OTHER_GUILD) is not None and bans.ban_of(BOB, None) is not None
    assert bans.ban_of(MOD, GUILD) is None


async def test_an_ended_ban_stops_applying_and_is_dropped(any_sessions, monkeypatch):
    bans = Bans(any_sessions)
    ends = later(minutes=5)
    await bans.ban(MOD, ALICE, GUILD, ends, "")
    monkeypatch.setattr(bans_module, "utcnow", lambda: ends + timedelta(seconds=1))
    assert bans.ban_of(ALICE, GUILD) is None
    assert (ALICE, GUILD) not in bans._bans


async def test_the_global_list_bans_everywhere_for_good(any_sessions):
    bans = Bans(any_sessions, global_bans=frozenset({ALICE}))
    for guild in (GUILD, OTHER_GUILD, None):
        info = bans.ban_of(ALICE, guild)
        assert info is not None and info.until is None and "global ban list" in info.reason


async def test_a_ban_cannot_end_in_the_past(any_sessions):
    with pytest.raises(ValueError, match="must end in the future"):
        await Bans(any_sessions).ban(MOD, ALICE, GUILD, later(minutes=-1), "")
