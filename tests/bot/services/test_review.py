"""`ImageReview`, the stage between rendering and posting, without Discord: which rendered jobs are held (by the
guild's moderation mode), what the member and the moderators are shown, and the start-up's showing of items a
crash left unshown (real SQLite through the real migrations; the notifier is a stand-in that records)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.services.records import JobRecord, record
from bot.store import guilds as guild_store
from bot.store import jobs as job_store
from bot.store import moderation as mod_store
from bot.store.db import transaction
from engine.request import GenerationRequest
from tests.bot.services.fakes import Listener, make_services

GUILD, REVIEW, CHANNEL, OTHER = 900, 901, 902, 905
ALICE, MOD = 111, 777


@pytest.fixture
async def world(engine, sessions, tmp_path: Path):
    services = make_services(engine, sessions, tmp_path)
    yield services
    services.journal.close()


async def mode(world, moderation_mode: str, guild_id: int = GUILD) -> None:
    await transaction(
        world.sessions, guild_store.update, guild_id, moderation_mode=moderation_mode, review_channel_id=REVIEW
    )
    world.review.settings.forget(guild_id)


async def rendered(world, tmp_path: Path, guild_id: int | None = GUILD) -> JobRecord:
    """A job rendered and saved (`done`, its file on disk), not posted yet."""
    job = await transaction(
        world.sessions,
        job_store.create,
        user_id=ALICE,
        request=GenerationRequest(prompt="a cat", width=64, height=64, steps=2),
        guild_id=guild_id,
        channel_id=CHANNEL,
    )
    png = tmp_path / f"{job.id}.png"
    png.write_bytes(b"png")
    await transaction(world.sessions, job_store.transition, job.id, "running")
    done = await transaction(world.sessions, job_store.transition, job.id, "done", result_paths=[str(png)])
    return record(JobRecord, done)


async def item_of(world, job_id: int):
    return await transaction(world.sessions, mod_store.item_for_job, job_id)


async def test_images_mode_holds_a_rendered_job_tells_the_member_and_shows_the_moderators(world, tmp_path):
    await mode(world, "images")
    job, listener = await rendered(world, tmp_path), Listener()
    assert await world.review.images_held(job, listener)
    item = await item_of(world, job.id)
    assert item.status == "pending" and item.reason == "images are reviewed before they are posted"
    assert "waits for a moderator's review before it is posted" in listener.notices[-1]
    assert world.review.notifier.shown == [item.id] and item.review_message_id == 5000 + item.id
    assert await world.review.images_held(job, listener)  # asked again (a restart): still held, shown once
    assert world.review.notifier.shown == [item.id]


@pytest.mark.parametrize("moderation_mode", ["off", "prompts", "flagged"])
async def test_other_modes_post_the_images(world, tmp_path, moderation_mode):
    await mode(world, moderation_mode)
    job, listener = await rendered(world, tmp_path), Listener()
    assert not await world.review.images_held(job, listener)
    assert await item_of(world, job.id) is None and listener.notices == []


async def test_direct_messages_are_not_reviewed(world, tmp_path):
    job = await rendered(world, tmp_path, guild_id=None)
    assert not await world.review.images_held(job, Listener())


async def test_auto_mode_without_a_classifier_holds_for_a_moderator(world, tmp_path):
    await mode(world, "auto")
    job, listener = await rendered(world, tmp_path), Listener()
    assert await world.review.images_held(job, listener)
    assert (await item_of(world, job.id)).reason == "the bot has no image classifier, so a moderator looks instead"


async def test_approved_images_are_posted(world, tmp_path):
    await mode(world, "images")
    job = await rendered(world, tmp_path)
    assert await world.review.images_held(job, Listener())
    item = await item_of(world, job.id)
    await transaction(world.sessions, mod_store.approve, item.id, MOD)
    assert not await world.review.images_held(job, Listener())  # what `JobService.post` asks after the approval


async def test_recovery_shows_the_items_a_crash_left_unshown_in_the_guilds_served(world, tmp_path):
    await mode(world, "images")
    await mode(world, "images", guild_id=OTHER)
    ours, theirs = await rendered(world, tmp_path), await rendered(world, tmp_path, guild_id=OTHER)
    for job in (ours, theirs):  # held, and the process died before the review message was posted
        await transaction(world.sessions, mod_store.hold, job.id, reason="images are reviewed")
    assert await world.review.recover(lambda guild_id: guild_id == GUILD) == 1
    assert world.review.notifier.shown == [(await item_of(world, ours.id)).id]
    assert (await item_of(world, theirs.id)).review_message_id is None
