"""The rules a submission is held to: screening a prompt (length, banned and flagged words, review modes), previews,
the pixel cap, the queue caps counted in the database, and the guild-settings cache."""

from __future__ import annotations

import pytest

from bot.errors import UserError
from bot.services import policy
from bot.services.policy import RUN, Caps, Screening, SettingsCache, check_caps, check_pixels, previews_allowed, screen
from bot.store import guilds as guild_store
from bot.store import jobs as job_store
from bot.store.models import GuildSettings, JobStatus, ModerationMode

GUILD, OTHER_GUILD = 900, 901
ALICE, BOB = 111, 112


def settings(**changes) -> GuildSettings:
    row = guild_store.defaults_for(GUILD)
    for key, value in changes.items():
        setattr(row, key, value)
    return row


# --- screen -------------------------------------------------------------------------------------------------


def test_no_settings_and_default_settings_run_everything():
    assert screen(None, "anything at all") is RUN
    assert screen(settings(), "a cat " * 500) is RUN


def test_a_prompt_over_the_servers_length_cap_is_refused_with_both_numbers():
    assert screen(settings(max_prompt_chars=10), "a" * 10) is RUN
    with pytest.raises(UserError, match="up to 10 characters; yours has 11"):
        screen(settings(max_prompt_chars=10), "a" * 11)


def test_a_banned_word_refuses_the_prompt_and_names_the_word_however_it_is_spelled():
    banned = settings(banned_words=["cat"])
    with pytest.raises(UserError, match="bans the word “cat”"):
        screen(banned, "a c.a.t on a mat")
    assert screen(banned, "concatenate these") is RUN  # on word boundaries only


@pytest.mark.parametrize(
    ("mode", "prompt", "expected"),
    [
        (ModerationMode.OFF, "a cat", RUN),
        (ModerationMode.PROMPTS, "a cat", Screening(True, "every prompt is reviewed on this server")),
        (ModerationMode.FLAGGED, "a dog", RUN),
        (ModerationMode.FLAGGED, "a CAT and a dog", Screening(True, "flagged: cat")),
        (ModerationMode.IMAGES, "a cat", RUN),  # the prompt runs; the images wait
        (ModerationMode.AUTO, "a cat", RUN),
    ],
)
def test_the_moderation_mode_decides_what_waits_for_review(mode, prompt, expected):
    assert screen(settings(moderation_mode=mode.value, flagged_words=["cat"]), prompt) == expected


def test_banned_words_are_checked_before_the_review_mode():
    with pytest.raises(UserError, match="bans the word"):
        screen(settings(moderation_mode=ModerationMode.PROMPTS.value, banned_words=["cat"]), "a cat")


# --- previews and pixels ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "previews", "allowed"),
    [
        (ModerationMode.OFF, True, True),
        (ModerationMode.OFF, False, False),
        (ModerationMode.PROMPTS, True, True),  # the prompt was approved: the picture is not judged
        (ModerationMode.IMAGES, True, False),  # a preview would show the picture before a moderator sees it
        (ModerationMode.AUTO, True, False),  # ... or before the classifier scored it
    ],
)
def test_previews_only_where_turned_on_and_images_are_not_moderated(mode, previews, allowed):
    assert previews_allowed(settings(moderation_mode=mode.value, previews=previews)) is allowed
    assert previews_allowed(None) is False


def test_the_pixel_cap_names_the_size_and_the_cap():
    check_pixels(None, 4096, 4096, "the upscale")
    check_pixels(settings(max_pixels=512 * 512), 512, 512, "the upscale")
    with pytest.raises(UserError, match=r"the upscale would be 1024x512 = 524288 pixels; this server's cap is 262144"):
        check_pixels(settings(max_pixels=512 * 512), 1024, 512, "the upscale")


# --- check_caps ---------------------------------------------------------------------------------------------


async def add_jobs(sessions, user_id: int, count: int, guild_id: int = GUILD, status=JobStatus.QUEUED) -> None:
    async with sessions.begin() as s:
        for _ in range(count):
            await job_store.create(s, user_id=user_id, guild_id=guild_id, request={"prompt": "x"}, status=status)


async def caps_error(sessions, user_id: int, row: GuildSettings | None, caps: Caps) -> str | None:
    async with sessions.begin() as s:
        try:
            await check_caps(s, user_id, row, caps)
        except UserError as exc:
            return str(exc)
    return None


async def test_the_members_bot_wide_cap_counts_their_active_jobs_in_every_server(any_sessions):
    caps = Caps(max_active_per_user=3)
    await add_jobs(any_sessions, ALICE, 1, guild_id=GUILD)
    await add_jobs(any_sessions, ALICE, 1, guild_id=OTHER_GUILD)
    await add_jobs(any_sessions, ALICE, 1, guild_id=GUILD, status=JobStatus.AWAITING_REVIEW)
    assert await caps_error(any_sessions, BOB, None, caps) is None
    message = await caps_error(any_sessions, ALICE, None, caps)
    assert message is not None and "3" in message and "cancel one with /queue" in message


async def test_finished_jobs_do_not_count(any_sessions):
    await add_jobs(any_sessions, ALICE, 2)
    async with any_sessions.begin() as s:
        for job in await job_store.list_for_user(s, ALICE):
            await job_store.transition(s, job.id, JobStatus.CANCELLED)
    assert await caps_error(any_sessions, ALICE, None, Caps(max_active_per_user=1)) is None


async def test_the_servers_per_member_cap_counts_only_this_servers_jobs(any_sessions):
    row = settings(max_jobs_per_user=1)
    await add_jobs(any_sessions, ALICE, 1, guild_id=OTHER_GUILD)
    assert await caps_error(any_sessions, ALICE, row, Caps()) is None
    await add_jobs(any_sessions, ALICE, 1, guild_id=GUILD)
    message = await caps_error(any_sessions, ALICE, row, Caps())
    assert message == (
        "this server allows 1 waiting jobs per member and you have 1. Wait for one to finish, or cancel one with /queue"
    )


async def test_the_bots_per_server_cap_counts_every_members_jobs(any_sessions):
    caps = Caps(max_queued_per_guild=2)
    await add_jobs(any_sessions, ALICE, 1)
    assert await caps_error(any_sessions, BOB, settings(), caps) is None
    await add_jobs(any_sessions, BOB, 1)
    message = await caps_error(any_sessions, ALICE, settings(), caps)
    assert message is not None and message.startswith(
        "this server has 2 jobs waiting, the most the bot allows a server"
    )
    assert await caps_error(any_sessions, ALICE, settings(), Caps(max_queued_per_guild=0)) is None  # 0: no cap


# --- SettingsCache ------------------------------------------------------------------------------------------


async def test_the_cache_keeps_a_servers_settings_until_forgotten_or_stale(any_sessions, monkeypatch):
    cache = SettingsCache(any_sessions)
    assert (await cache.get(GUILD)).moderation_mode == ModerationMode.OFF.value  # a server that never changed any
    async with any_sessions.begin() as s:
        await guild_store.update(s, GUILD, moderation_mode=ModerationMode.PROMPTS.value)
    assert (await cache.get(GUILD)).moderation_mode == ModerationMode.OFF.value  # kept: a few seconds stale
    cache.forget(GUILD)
    assert (await cache.get(GUILD)).moderation_mode == ModerationMode.PROMPTS.value

    async with any_sessions.begin() as s:
        await guild_store.update(s, GUILD, moderation_mode=ModerationMode.IMAGES.value)
    monkeypatch.setattr(policy, "SETTINGS_TTL_S", 0.0)  # every read is stale
    assert (await cache.get(GUILD)).moderation_mode == ModerationMode.IMAGES.value
