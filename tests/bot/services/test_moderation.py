"""The moderation service without Discord: screening, permissions, the review queue, bans, caps and rates,
on a real SQLite database migrated by the real migrations, with a stand-in engine worker and notifier."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from bot.errors import UserError
from bot.services.moderation import Actor, ModerationService
from bot.services.policy import Caps, screen
from bot.services.ratelimit import Rate, RateLimits
from bot.services.submission import Command, Requester
from bot.store import bans as ban_store
from bot.store import guilds as guild_store
from bot.store import jobs as job_store
from bot.store import moderation as mod_store
from bot.store.db import transaction
from bot.store.errors import AlreadyDecided
from bot.store.models import utcnow
from engine.request import GenerationRequest
from tests.bot.services.fakes import Listener, make_services

GUILD, REVIEW, GENERAL, MODS = 900, 901, 902, 903
ALICE, BOB, MOD, OWNER = 111, 112, 777, 999


@pytest.fixture
async def world(engine, sessions, tmp_path: Path):
    services = make_services(engine, sessions, tmp_path)
    await services.bans.load()
    await _configure(services.moderation, review_channel_id=REVIEW, moderator_role_id=MODS)
    yield services
    services.journal.close()


@pytest.fixture
def service(world):
    return world.moderation


def owner() -> Actor:
    return Actor(OWNER, GUILD, GENERAL, manage_messages=True, manage_guild=True)


def member(user_id: int = ALICE, **kw) -> Actor:
    return Actor(user_id, GUILD, kw.pop("channel_id", GENERAL), **kw)


def mod() -> Actor:
    return member(MOD, role_ids=frozenset({MODS}))


async def _configure(service: ModerationService, **changes) -> None:
    await service.configure(owner(), **changes)


def request(prompt: str = "a cat") -> GenerationRequest:
    return GenerationRequest(prompt=prompt, width=64, height=64, steps=2)


async def submit(world, prompt="a cat", user=ALICE, listener=None):
    listener = listener or Listener()
    job = await world.submissions.submit(
        Command(Requester(user, GUILD, GENERAL), request=request(prompt)), lambda: listener
    )
    return job, listener


# --- screening ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "prompt", "hold"),
    [
        ("off", "a swimsuit", False),
        ("flagged", "a swimsuit", True),
        ("flagged", "a dog", False),
        ("prompts", "a dog", True),
        ("images", "a swimsuit", False),
    ],
)
def test_screening_by_mode(mode, prompt, hold):
    settings = guild_store.defaults_for(GUILD)
    settings.moderation_mode, settings.flagged_words, settings.banned_words = mode, ["swim*"], ["gore"]
    result = screen(settings, prompt)
    assert result.hold is hold
    if hold and mode == "flagged":
        assert result.reason == "flagged: swim*"
    with pytest.raises(UserError, match="this server bans the word “gore”"):
        screen(settings, "G O R E everywhere")


def test_prompt_length_cap():
    settings = guild_store.defaults_for(GUILD)
    settings.max_prompt_chars = 10
    with pytest.raises(UserError, match="prompts of up to 10 characters; yours has 11"):
        screen(settings, "x" * 11)


# --- permissions --------------------------------------------------------------------------------------------


async def test_who_is_a_moderator(service):
    """The moderator role, or Manage Messages in the review channel; Manage Messages elsewhere is not enough
    when the review channel's permissions are known."""
    assert await service.is_moderator(mod())
    assert await service.is_moderator(member(channel_id=REVIEW, manage_messages=True))
    assert not await service.is_moderator(member(manage_messages=True, manage_messages_in=lambda c: False))
    assert await service.is_moderator(member(manage_messages=False, manage_messages_in=lambda c: c == REVIEW))
    assert not await service.is_moderator(member())
    assert not await service.is_moderator(Actor(MOD, None, role_ids=frozenset({MODS})))


async def test_refusals_are_audited(service):
    with pytest.raises(UserError, match="only moderators"):
        await service.queue(member())
    with pytest.raises(UserError, match="Manage Server"):
        await service.configure(member(), moderation_mode="prompts")
    entries = await transaction(service.sessions, mod_store.audit_log, GUILD, action="denied")
    assert [(e.actor_id, e.details) for e in entries] == [
        (ALICE, {"attempted": "config"}),
        (ALICE, {"attempted": "queue"}),
    ]


@pytest.mark.parametrize("action", ["cancel", "delete"])
async def test_one_answer_for_cancel_delete_and_review(world, service, action):
    """Owners act on their own jobs; moderators (role, or Manage Messages in the review channel; not Manage
    Messages in some other channel) on anyone's, audited; everybody else is refused, audited, with one message."""
    job, _ = await submit(world, user=ALICE)
    await service.authorize(member(ALICE), action, job=job)  # the owner
    await service.authorize(mod(), action, job=job)
    await service.authorize(member(BOB, channel_id=REVIEW, manage_messages=True), action, job=job)
    with pytest.raises(UserError, match=f"only the .* or a moderator can {action} it"):
        await service.authorize(member(BOB, manage_messages=True, manage_messages_in=lambda c: False), action, job=job)
    with pytest.raises(UserError, match="only moderators can do that"):
        await service.authorize(member(ALICE), "approve", item_id=1)  # owning the job is no right to review it
    entries = await transaction(service.sessions, mod_store.audit_log, GUILD)
    assert [(e.action, e.actor_id) for e in reversed(entries) if e.action != "config"] == [
        (action, MOD),
        (action, BOB),
        ("denied", BOB),
        ("denied", ALICE),
    ]


# --- the review queue ---------------------------------------------------------------------------------------


async def test_held_prompt_is_queued_once_approved(world, service):
    await _configure(service, moderation_mode="prompts")
    job, listener = await submit(world)
    assert job.status == "awaiting_review" and "waits for a moderator" in listener.notices[0]
    assert world.worker.ids == []
    [(item, _)] = await service.queue(mod())
    assert item.review_message_id == 5000 + item.id and world.review.notifier.shown == [item.id]
    decision = await service.approve(mod(), item.id)
    assert decision.job.status == "queued" and world.worker.ids == [str(job.id)]
    assert world.review.notifier.decisions == [(item.id, "approved")]
    assert world.review.notifier.told[-1][:2] == (ALICE, f"✅ a moderator approved your prompt “a cat” (job #{job.id})")
    with pytest.raises(AlreadyDecided):
        await service.approve(mod(), item.id)


async def test_two_approvals_at_once_make_one_decision(world, service):
    await _configure(service, moderation_mode="prompts")
    await submit(world)
    [(item, _)] = await service.queue(mod())
    results = await asyncio.gather(
        service.approve(mod(), item.id), service.approve(owner(), item.id), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["AlreadyDecided", "Decision"]
    assert len(world.worker.ids) == 1
    assert len(await transaction(service.sessions, mod_store.audit_log, GUILD, action="approve")) == 1


async def test_reject_needs_a_reason_and_can_ban(world, service):
    await _configure(service, moderation_mode="prompts", notify_by="channel")
    job, listener = await submit(world)
    [(item, _)] = await service.queue(mod())
    with pytest.raises(UserError, match="say why"):
        await service.reject(mod(), item.id, "  ")
    decision = await service.reject(mod(), item.id, "spam", ban=True, ban_for=timedelta(hours=2))
    assert decision.job.status == "rejected" and "rejected by a moderator" in listener.notices[-1]
    user, text, notify_by = world.review.notifier.told[-1]
    assert (user, notify_by) == (ALICE, "channel") and "spam" in text and "banned" in text
    ban = world.bans.ban_of(ALICE, GUILD)
    assert ban is not None and ban.until is not None and timedelta(hours=1) < ban.until - utcnow() <= timedelta(hours=2)
    assert world.bans.ban_of(ALICE, GUILD + 1) is None
    history = await service.history(mod(), ALICE)
    assert [e.action for e in history.entries] == ["ban", "reject"] and len(history.bans) == 1


async def test_images_are_held_until_approved(world, service, tmp_path):
    await _configure(service, moderation_mode="images")
    job, _ = await submit(world)
    assert job.status == "queued"
    png = tmp_path / "outputs" / str(job.id) / "1.png"
    png.parent.mkdir(parents=True)
    png.write_bytes(b"png")
    for status in ("running", "done"):
        job = await transaction(
            service.sessions,
            job_store.transition,
            job.id,
            status,
            result_paths=[str(png)] if status == "done" else None,
        )
    poster = Listener()
    await service.jobs.post(job, poster)
    assert poster.posts == [] and (await service.jobs.get(job.id)).status == "done"
    unfinished = await transaction(service.sessions, job_store.unfinished)
    assert unfinished.to_post == []  # a restart does not post held images
    [(item, _)] = await service.queue(mod())
    await service.approve(mod(), item.id)
    await service.close()
    assert (await service.jobs.get(job.id)).status == "posted"
    assert poster.posts == [job.id]  # once, through the command's own listener, which the job service kept


# --- bans, caps, rates ----------------------------------------------------------------------------------------


async def test_bans_come_back_after_a_restart_and_end(world, service, monkeypatch):
    await service.ban(mod(), BOB, timedelta(minutes=5), "spam")
    async with service.sessions.begin() as s:
        await ban_store.ban(s, ALICE, guild_id=GUILD, actor_id=MOD, expires_at=utcnow() + timedelta(minutes=1))
    await world.bans.load()  # what a restart does
    assert world.bans.ban_of(BOB, GUILD).reason == "spam"
    assert world.bans.ban_of(ALICE, GUILD) is not None
    later = utcnow() + timedelta(minutes=2)
    monkeypatch.setattr("bot.services.bans.utcnow", lambda: later)  # the clock, not a sleep
    assert world.bans.ban_of(ALICE, GUILD) is None  # expired
    assert world.bans.ban_of(BOB, GUILD) is not None
    monkeypatch.undo()
    assert await service.unban(mod(), BOB) and world.bans.ban_of(BOB, GUILD) is None
    assert not await service.unban(mod(), BOB)
    with pytest.raises(UserError, match="cannot ban yourself"):
        await service.ban(mod(), MOD, None)
    world.bans.global_bans = frozenset({BOB})
    assert world.bans.ban_of(BOB, None).guild_id is None


async def test_guild_caps(world, service):
    await _configure(service, max_jobs_per_user=1)
    await submit(world)
    with pytest.raises(UserError, match="allows 1 waiting jobs per member and you have 1"):
        await submit(world)
    world.submissions.caps = Caps(max_queued_per_guild=2)
    await submit(world, user=BOB)
    with pytest.raises(UserError, match=r"this server has 2 jobs waiting, the most the bot allows a server \(2\)"):
        await submit(world, user=OWNER)
    world.submissions.caps = Caps()  # the default: no server cap
    await submit(world, user=OWNER)


async def test_rate_limits():
    rates = RateLimits(Rate(2, 60), Rate(3, 60), wait_s=0.01)
    await rates.acquire(ALICE, GUILD)
    await rates.acquire(ALICE, GUILD)
    with pytest.raises(UserError, match="you're going fast: the limit is 2 image requests per 60 s"):
        await rates.acquire(ALICE, GUILD)
    with pytest.raises(UserError, match="this server is asking for a lot"):
        await rates.acquire(BOB, GUILD)
    await rates.acquire(BOB, None)  # direct messages: only the user's own limit
    quick = RateLimits(Rate(1, 0.05), Rate(10, 60), wait_s=0.2)
    await quick.acquire(ALICE, GUILD)
    await quick.acquire(ALICE, GUILD)  # waits for the next slot instead of refusing
