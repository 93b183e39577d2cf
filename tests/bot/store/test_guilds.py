"""Guild settings: defaults without a row, validated updates, word lists."""

from __future__ import annotations

import pytest

from bot.store import guilds
from bot.store.errors import InvalidGuildSetting
from engine.config import Limits

GUILD = 900


async def test_defaults_without_a_row(any_sessions):
    async with any_sessions.begin() as s:
        row = await guilds.get(s, GUILD)
    assert row.moderation_mode == "off" and row.nsfw_policy == "nsfw_channels"
    assert row.banned_words == [] and row.defaults == {} and row.max_steps is None
    assert row.forced_negative_prompt == "" and row.allowed_models == []


async def test_update_and_read_back(any_sessions):
    async with any_sessions.begin() as s:
        await guilds.update(
            s,
            GUILD,
            moderation_mode="flagged",
            review_channel_id=5,
            moderator_role_id=6,
            forced_negative_prompt=" nsfw, gore ",
            max_steps=40,
            max_pixels=512 * 512,
            max_batch=2,
            max_jobs_per_user=3,
            allowed_models=["sd15", " sdxl ", "sd15"],
            allowed_vaes=["vae-ft-mse"],
            nsfw_policy="block",
            defaults={"sampler": "DPM++ 2M Karras", "steps": 25},
            banned_words=["Bad  Word", "bad word", ""],
        )
    async with any_sessions.begin() as s:
        row = await guilds.get(s, GUILD)
    assert (row.moderation_mode, row.review_channel_id, row.moderator_role_id) == ("flagged", 5, 6)
    assert row.forced_negative_prompt == "nsfw, gore"
    assert (row.max_steps, row.max_pixels, row.max_batch, row.max_jobs_per_user) == (40, 262144, 2, 3)
    assert row.allowed_models == ["sd15", "sdxl"] and row.allowed_vaes == ["vae-ft-mse"]
    assert row.nsfw_policy == "block"
    assert row.defaults == {"sampler": "DPM++ 2M", "schedule": "Karras", "steps": 25}
    assert row.banned_words == ["bad word"]
    async with any_sessions.begin() as s:
        await guilds.update(s, GUILD, max_steps=None, review_channel_id=None)
        row = await guilds.get(s, GUILD)
    assert row.max_steps is None and row.review_channel_id is None and row.max_batch == 2


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"moderation_mode": "strict"}, "moderation mode must be one of off, flagged, prompts, images"),
        ({"nsfw_policy": "maybe"}, "nsfw policy must be one of allow, nsfw_channels, block"),
        ({"max_steps": 0}, "max steps must be a whole number of at least 1"),
        ({"max_pixels": 100}, "max pixels must be a whole number of at least 4096"),
        ({"max_batch": "2"}, "max batch must be a whole number"),
        ({"review_channel_id": -1}, "review channel id must be a Discord id"),
        ({"allowed_models": "sd15"}, "allowed models must be a list of names"),
        ({"allowed_vaes": ["", 3]}, "allowed vaes must be up to 200 non-empty names"),
        ({"banned_words": "word"}, "banned words must be a list of words"),
        ({"flagged_words": ["x" * 101]}, "at most 100 characters"),
        ({"forced_negative_prompt": "x" * 4001}, "the limit is 4000"),
        ({"defaults": {"steps": 999}}, "invalid guild default steps"),
        ({"defaults": {"upscale": 2}}, "unknown guild default 'upscale'"),
        ({"color": "red"}, "unknown guild setting 'color'"),
    ],
)
async def test_invalid_settings_are_refused(any_sessions, changes, message):
    async with any_sessions.begin() as s:
        with pytest.raises(InvalidGuildSetting) as info:
            await guilds.update(s, GUILD, **changes)
    assert message in str(info.value)


async def test_defaults_use_the_configured_limits(any_sessions):
    async with any_sessions.begin() as s:
        row = await guilds.update(s, GUILD, defaults={"steps": 400}, limits=Limits(max_steps=500))
    assert row.defaults == {"steps": 400}


async def test_word_lists(any_sessions):
    async with any_sessions.begin() as s:
        assert await guilds.add_words(s, GUILD, "banned", ["Gore", "blood", "gore"]) == ["gore", "blood"]
        assert await guilds.add_words(s, GUILD, "banned", ["BLOOD", "knife"]) == ["knife"]
        assert await guilds.add_words(s, GUILD, "flagged", ["swimsuit"]) == ["swimsuit"]
    async with any_sessions.begin() as s:
        assert await guilds.remove_words(s, GUILD, "banned", ["blood", "absent"]) == ["blood"]
        row = await guilds.get(s, GUILD)
    assert row.banned_words == ["gore", "knife"] and row.flagged_words == ["swimsuit"]
    async with any_sessions.begin() as s:
        with pytest.raises(InvalidGuildSetting, match="'banned' or 'flagged'"):
            await guilds.add_words(s, GUILD, "naughty", ["x"])


async def test_word_list_size_limit(any_sessions, monkeypatch):
    monkeypatch.setattr(guilds, "MAX_WORDS", 3)
    async with any_sessions.begin() as s:
        await guilds.add_words(s, GUILD, "flagged", ["a", "b", "c"])
        with pytest.raises(InvalidGuildSetting, match="at most 3 entries"):
            await guilds.add_words(s, GUILD, "flagged", ["d"])


async def test_reset(any_sessions):
    async with any_sessions.begin() as s:
        assert await guilds.reset(s, GUILD) is False
        await guilds.update(s, GUILD, max_batch=1)
        assert await guilds.reset(s, GUILD) is True
        assert (await guilds.get(s, GUILD)).max_batch is None


async def test_auto_mode_and_age_restricted_thresholds(any_sessions):
    """Mode `auto` passes the database's check; the NSFW-channel scores are set together, in order."""
    async with any_sessions.begin() as s:
        await guilds.update(s, GUILD, moderation_mode="auto", nsfw_flag_above=0.8, nsfw_block_above=1)
    async with any_sessions.begin() as s:
        row = await guilds.get(s, GUILD)
    assert (row.moderation_mode, row.nsfw_flag_above, row.nsfw_block_above) == ("auto", 0.8, 1.0)
    for bad in (
        {"nsfw_flag_above": 1.5, "nsfw_block_above": 2},
        {"nsfw_flag_above": True, "nsfw_block_above": 1},
        {"nsfw_flag_above": 0.9, "nsfw_block_above": 0.5},
        {"nsfw_flag_above": None},
    ):
        with pytest.raises(InvalidGuildSetting):
            async with any_sessions.begin() as s:
                await guilds.update(s, GUILD, **bad)
    async with any_sessions.begin() as s:
        row = await guilds.update(s, GUILD, nsfw_flag_above=None, nsfw_block_above=None)
    assert (row.nsfw_flag_above, row.nsfw_block_above) == (None, None)
