"""The submission pipeline: one `/imagine` is one transaction and one read of the guild's settings; two
commands racing for the last cap slot cannot both get in (SQLite and PostgreSQL); refusals leave nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event

from bot.errors import UserError
from bot.services.policy import Caps
from bot.services.ratelimit import Rate, RateLimits
from bot.services.submission import Command, Requester
from bot.store import guilds as guild_store
from bot.store import jobs as job_store
from bot.store import presets as preset_store
from bot.store.db import transaction
from bot.store.users import ensure_user
from engine.request import GenerationRequest
from tests.bot.services.fakes import Listener, make_services

GUILD, REVIEW, GENERAL = 900, 901, 902
ALICE, BOB = 111, 112


@pytest.fixture
async def world(any_engine, any_sessions, tmp_path: Path):
    services = make_services(any_engine, any_sessions, tmp_path)
    await services.bans.load()
    yield services
    services.journal.close()


@contextmanager
def counted(engine):
    """Transactions begun, and SELECTs of the guild settings, on `engine` while the block runs."""
    counts: Counter[str] = Counter()

    def begun(conn) -> None:
        counts["transactions"] += 1

    def executed(conn, cursor, statement, parameters, context, executemany) -> None:
        text = " ".join(statement.split()).lower()
        if text.startswith("select") and "from guild_settings" in text:
            counts["settings reads"] += 1

    event.listen(engine.sync_engine, "begin", begun)
    event.listen(engine.sync_engine, "before_cursor_execute", executed)
    try:
        yield counts
    finally:
        event.remove(engine.sync_engine, "begin", begun)
        event.remove(engine.sync_engine, "before_cursor_execute", executed)


def imagine(user: int = ALICE, prompt: str = "a cat in a hat", presets=(), **options) -> Command:
    return Command(
        Requester(user, GUILD, GENERAL, interaction_id=None),
        {"prompt": prompt, "width": 64, "height": 64, "steps": 2, **options},
        presets,
    )


async def submit(world, command: Command) -> tuple:
    listener = Listener()
    return await world.submissions.submit(command, lambda: listener), listener


async def test_one_imagine_is_one_transaction_and_one_settings_read(world):
    await transaction(world.sessions, guild_store.update, GUILD, max_steps=50, forced_negative_prompt="blurry")
    await transaction(world.sessions, preset_store.save, ALICE, "wide", {"width": 128, "cfg_scale": 5.0})
    await transaction(world.sessions, preset_store.save, ALICE, "mine", {"sampler": "Euler a"})
    await transaction(world.sessions, preset_store.set_default, ALICE, "mine")
    with counted(world.db) as counts:
        job, _ = await submit(
            world, Command(Requester(ALICE, GUILD, GENERAL), {"prompt": "a cat", "steps": 2}, ["wide"])
        )
    assert counts == {"transactions": 1, "settings reads": 1}
    assert job.status == "queued" and world.worker.ids == [str(job.id)]
    assert (job.request["width"], job.request["sampler"], job.request["negative_prompt"]) == (128, "Euler a", "blurry")
    assert job.sources["width"] == "preset wide"


async def test_a_held_prompt_is_inserted_with_its_review_item_in_the_same_transaction(world):
    await transaction(world.sessions, guild_store.update, GUILD, moderation_mode="prompts")
    with counted(world.db) as counts:
        job, listener = await submit(world, imagine())
    assert counts == {"transactions": 1, "settings reads": 1}  # no review channel: nothing to show
    assert job.status == "awaiting_review" and world.worker.ids == []
    assert "waits for a moderator's review" in listener.notices[0]


async def test_refusals_insert_nothing(world):
    await transaction(world.sessions, guild_store.add_words, GUILD, "banned", ["gore"])
    with counted(world.db) as counts, pytest.raises(UserError, match="bans the word “gore”"):
        await submit(world, imagine(prompt="gore"))
    assert counts == {"transactions": 1, "settings reads": 1}
    with pytest.raises(UserError, match="the prompt is empty"):
        await submit(world, imagine(prompt=""))
    assert await transaction(world.sessions, job_store.count_active, ALICE) == 0


@pytest.mark.parametrize("cap", ["member", "server"])
async def test_two_commands_racing_for_the_last_slot_cannot_both_get_in(world, monkeypatch, cap):
    """Each transaction pauses after counting; were the count not under a lock, both would see a free slot."""
    if cap == "member":
        world.submissions.caps = Caps(max_active_per_user=1)
        users = (ALICE, ALICE)
    else:
        world.submissions.caps = Caps(max_queued_per_guild=1)
        users = (ALICE, BOB)
    counts = {"count_active": job_store.count_active, "count_active_in_guild": job_store.count_active_in_guild}

    def slowed(name):
        async def count(*args, **kwargs) -> int:
            found = await counts[name](*args, **kwargs)
            await asyncio.sleep(0.3)  # room for the other command to count too, if nothing stops it
            return found

        return count

    for user in users:  # members the bot knows already: creating their row would serialize them by itself
        await transaction(world.sessions, ensure_user, user)
    for name in counts:
        monkeypatch.setattr(job_store, name, slowed(name))
    results = await asyncio.gather(*(submit(world, imagine(user)) for user in users), return_exceptions=True)
    refused = [r for r in results if isinstance(r, UserError)]
    assert len(refused) == 1, results
    assert "the limit is 1" in str(refused[0]) or "the most the bot allows a server (1)" in str(refused[0])
    assert len(world.worker.ids) == 1


async def test_bans_and_the_cooldown_refuse_before_any_database_work(world):
    world.bans.global_bans = frozenset({BOB})
    world.submissions.rates = RateLimits(Rate(100, 60), Rate(100, 60), cooldown_s=60)
    with counted(world.db) as counts:
        with pytest.raises(UserError, match="banned from using this bot"):
            await submit(world, imagine(BOB))
        await submit(world, imagine())
        with pytest.raises(UserError, match=r"you're going fast: wait \d+\.\d s before the next image"):
            await submit(world, imagine())
    assert counts["transactions"] == 1
    replayed = Command(
        Requester(ALICE, GUILD, GENERAL),
        request=GenerationRequest(prompt="a dog", width=64, height=64, steps=2),
        paced=False,
    )
    await submit(world, replayed)  # a command replayed after a restart was paced when it was typed


async def test_a_request_from_an_earlier_job_meets_the_pixel_cap(world):
    await transaction(world.sessions, guild_store.update, GUILD, max_pixels=64 * 64)
    big = GenerationRequest(prompt="a cat", width=128, height=128, steps=2)
    with pytest.raises(
        UserError,
        match=r"Upscale ×2 of job #1, image 1 would be 128x128 = 16384 pixels; this "
        r"server's cap is 4096",
    ):
        await submit(
            world, Command(Requester(ALICE, GUILD, GENERAL), request=big, what="Upscale ×2 of job #1, image 1")
        )


def test_the_cooldown_keeps_bounded_memory(monkeypatch):
    from bot.services import ratelimit

    monkeypatch.setattr(ratelimit, "MAX_KEYS", 3)
    rates = RateLimits(Rate(1, 1), Rate(1, 1), cooldown_s=60)
    for user in range(10):
        rates.cooldown(user)
    assert len(rates._last) == 3
