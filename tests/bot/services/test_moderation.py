"""The moderation service without Discord: screening, permissions, the review queue, bans, caps and rates,
on a real SQLite database migrated by the real migrations, with a stand-in engine worker and notifier."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from bot.errors import UserError
from bot.services.jobs import JobService, Requester
from bot.services.moderation import Actor, ModerationService
from bot.services.ratelimit import Rate, RateLimits
from bot.store import bans as ban_store
from bot.store import guilds as guild_store
from bot.store import jobs as job_store
from bot.store import migrate
from bot.store import moderation as mod_store
from bot.store.db import make_engine, make_sessions, transaction
from bot.store.errors import AlreadyDecided
from bot.store.models import utcnow
from engine.request import GenerationRequest

GUILD, REVIEW, GENERAL, MODS = 900, 901, 902, 903
ALICE, BOB, MOD, OWNER = 111, 112, 777, 999


class Handle:
    def __aiter__(self):
        return self

    async def __anext__(self):
        raise StopAsyncIteration


class Worker:
    def __init__(self) -> None:
        self.submitted: list[str] = []

    def submit(self, request, *, job_id: str, owner: str, priority: bool = False, group: str | None = None) -> Handle:
        self.submitted.append(job_id)
        return Handle()

    def position(self, job_id: str) -> None:
        return None


class Notifier:
    def __init__(self) -> None:
        self.shown: list[int] = []
        self.decisions: list[tuple[int, str]] = []
        self.told: list[tuple[int, str, str]] = []

    async def show(self, item, job, files, channel_id):
        self.shown.append(item.id)
        return 5000 + item.id

    async def decided(self, item, job, channel_id):
        self.decisions.append((item.id, item.status))

    async def tell(self, job, text, listener, notify_by):
        self.told.append((job.user_id, text, notify_by))

    def listener_for(self, job):
        return Listener()


class Listener:
    def __init__(self) -> None:
        self.notices: list[str] = []

    async def notice(self, job_id, text):
        self.notices.append(text)

    async def queued(self, *a): ...
    async def started(self, *a): ...
    async def step(self, *a): ...
    async def failed(self, *a): ...
    async def cancelled(self, *a): ...


@pytest.fixture
async def service(tmp_path: Path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'sdbot.db'}")
    await migrate.upgrade(engine)
    sessions = make_sessions(engine)
    jobs = JobService(sessions, Worker(), tmp_path / "outputs")
    rates = RateLimits(Rate(100, 60), Rate(100, 60), wait_s=0.01)
    moderation = ModerationService(sessions, jobs, rates, notifier=Notifier())
    jobs.image_gate = moderation.gate_images
    await moderation.start()
    await _configure(moderation, review_channel_id=REVIEW, moderator_role_id=MODS)
    yield moderation
    await engine.dispose()


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


async def submit(service, prompt="a cat", user=ALICE, listener=None):
    listener = listener or Listener()
    job = await service.submit(Requester(user, GUILD, GENERAL), request(prompt), listener)
    return job, listener


# --- screening ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "prompt", "hold"), [
    ("off", "a swimsuit", False), ("flagged", "a swimsuit", True), ("flagged", "a dog", False),
    ("prompts", "a dog", True), ("images", "a swimsuit", False),
])
def test_screening_by_mode(mode, prompt, hold):
    settings = guild_store.defaults_for(GUILD)
    settings.moderation_mode, settings.flagged_words, settings.banned_words = mode, ["swim*"], ["gore"]
    result = ModerationService.screen(None, settings, prompt)  # type: ignore[arg-type]
    assert result.hold is hold
    if hold and mode == "flagged":
        assert result.reason == "flagged: swim*"
    with pytest.raises(UserError, match="this server bans the word “gore”"):
        ModerationService.screen(None, settings, "G O R E everywhere")  # type: ignore[arg-type]


def test_prompt_length_cap():
    settings = guild_store.defaults_for(GUILD)
    settings.max_prompt_chars = 10
    with pytest.raises(UserError, match="prompts of up to 10 characters; yours has 11"):
        ModerationService.screen(None, settings, "x" * 11)  # type: ignore[arg-type]


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
        (ALICE, {"attempted": "config"}), (ALICE, {"attempted": "queue"})]


# --- the review queue ---------------------------------------------------------------------------------------


async def test_held_prompt_is_queued_once_approved(service):
    await _configure(service, moderation_mode="prompts")
    job, listener = await submit(service)
    assert job.status == "awaiting_review" and "waits for a moderator" in listener.notices[0]
    assert service.jobs.worker.submitted == []
    [(item, _)] = await service.queue(mod())
    assert item.review_message_id == 5000 + item.id and service.notifier.shown == [item.id]
    decision = await service.approve(mod(), item.id)
    assert decision.job.status == "queued" and service.jobs.worker.submitted == [str(job.id)]
    assert service.notifier.decisions == [(item.id, "approved")]
    assert service.notifier.told[-1][:2] == (ALICE, f"✅ a moderator approved your prompt “a cat” (job #{job.id})")
    with pytest.raises(AlreadyDecided):
        await service.approve(mod(), item.id)


async def test_two_approvals_at_once_make_one_decision(service):
    await _configure(service, moderation_mode="prompts")
    await submit(service)
    [(item, _)] = await service.queue(mod())
    results = await asyncio.gather(service.approve(mod(), item.id), service.approve(owner(), item.id),
                                   return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["AlreadyDecided", "Decision"]
    assert len(service.jobs.worker.submitted) == 1
    assert len(await transaction(service.sessions, mod_store.audit_log, GUILD, action="approve")) == 1


async def test_reject_needs_a_reason_and_can_ban(service):
    await _configure(service, moderation_mode="prompts", notify_by="channel")
    job, listener = await submit(service)
    [(item, _)] = await service.queue(mod())
    with pytest.raises(UserError, match="say why"):
        await service.reject(mod(), item.id, "  ")
    decision = await service.reject(mod(), item.id, "spam", ban=True, ban_for=timedelta(hours=2))
    assert decision.job.status == "rejected" and "rejected by a moderator" in listener.notices[-1]
    user, text, notify_by = service.notifier.told[-1]
    assert (user, notify_by) == (ALICE, "channel") and "spam" in text and "banned" in text
    ban = service.ban_of(ALICE, GUILD)
    assert ban is not None and ban.until is not None and timedelta(hours=1) < ban.until - utcnow() <= timedelta(hours=2)
    assert service.ban_of(ALICE, GUILD + 1) is None
    history = await service.history(mod(), ALICE)
    assert [e.action for e in history.entries] == ["ban", "reject"] and len(history.bans) == 1


async def test_images_are_held_until_approved(service, tmp_path):
    await _configure(service, moderation_mode="images")
    job, _ = await submit(service)
    assert job.status == "queued"
    png = tmp_path / "outputs" / str(job.id) / "1.png"
    png.parent.mkdir(parents=True)
    png.write_bytes(b"png")
    for status in ("running", "done"):
        job = await transaction(service.sessions, job_store.transition, job.id, status,
                                result_paths=[str(png)] if status == "done" else None)
    posted: list[int] = []

    class Poster(Listener):
        async def finished(self, job, files):
            posted.append(job.id)
            from bot.services.jobs import Delivered
            return Delivered(1234)

    await service.jobs.post(job, Poster())
    assert posted == [] and (await service.jobs.get(job.id)).status == "done"
    unfinished = await transaction(service.sessions, job_store.unfinished)
    assert unfinished.to_post == []  # a restart does not post held images
    [(item, _)] = await service.queue(mod())
    await service.approve(mod(), item.id)
    await service.close()
    assert (await service.jobs.get(job.id)).status == "posted"


# --- bans, caps, rates ----------------------------------------------------------------------------------------


async def test_bans_come_back_after_a_restart_and_end(service):
    await service.ban(mod(), BOB, timedelta(minutes=5), "spam")
    async with service.sessions.begin() as s:
        await ban_store.ban(s, ALICE, guild_id=GUILD, actor_id=MOD, expires_at=utcnow() + timedelta(seconds=0.3))
    await service.start()  # what a restart does
    assert service.ban_of(BOB, GUILD).reason == "spam"
    assert service.ban_of(ALICE, GUILD) is not None
    await asyncio.sleep(0.35)
    assert service.ban_of(ALICE, GUILD) is None  # expired
    assert await service.unban(mod(), BOB) and service.ban_of(BOB, GUILD) is None
    assert not await service.unban(mod(), BOB)
    with pytest.raises(UserError, match="cannot ban yourself"):
        await service.ban(mod(), MOD, None)
    service.global_bans = frozenset({BOB})
    assert service.ban_of(BOB, None).guild_id is None


async def test_guild_caps(service):
    await _configure(service, max_jobs_per_user=1)
    await submit(service)
    with pytest.raises(UserError, match="allows 1 waiting jobs per member and you have 1"):
        await submit(service)
    service.max_queued_per_guild = 2
    await submit(service, user=BOB)
    with pytest.raises(UserError, match=r"this server has 2 jobs waiting, the most the bot allows a server \(2\)"):
        await submit(service, user=OWNER)
    service.max_queued_per_guild = 0  # the default: no server cap
    await submit(service, user=OWNER)


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
