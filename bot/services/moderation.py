"""Moderation: what may be generated and what gets posted, and who decides.

* `submit()` stands in front of `JobService.submit` for /imagine, re-roll and edit: the guild's prompt-length cap
  and banned words refuse at once (a `UserError` naming the rule), the rate limits and queue caps apply, and in
  `flagged` / `prompts` mode the job is created `awaiting_review` with a review item instead of being queued.
* `gate_images()` is `JobService.image_gate`: in `images` mode a rendered job is held (still `done`, with a
  pending item) instead of being posted; in `auto` mode the image classifier's scores decide (post, hold, or
  refuse and keep for moderators: bot/services/image_policy.py), with the guild's own thresholds in
  age-restricted channels.
* `approve()` / `reject()` decide an item once (the store locks it: of two moderators pressing at once, one
  wins and the other is told it was decided already), then queue the job or post its images, and tell the user.
* Who may act is decided here, for buttons and commands alike: a moderator is a member with Manage Messages in
  the guild's review channel or with its moderator role; configuration needs Manage Server. A refused attempt is
  written to the audit log.
* Bans live in the database and, for the check on every interaction, in memory (loaded by `start()`), together
  with the config's global ban list, so checking one costs no database work before an interaction is answered.

It knows no Discord: `bot.exts.moderation` plugs in a `ReviewNotifier` that shows items in the review channel
and tells users of decisions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.errors import UserError
from bot.services.image_policy import ImagePolicy, Judgement, Verdict
from bot.services.jobs import JobListener, JobService, Requester
from bot.services.ratelimit import RateLimits
from bot.services.wordfilter import find_words
from bot.store import bans as ban_store
from bot.store import guilds as guild_store
from bot.store import jobs as job_store
from bot.store import moderation as mod_store
from bot.store.db import transaction
from bot.store.models import (
    AuditEntry,
    Ban,
    GuildSettings,
    ItemStatus,
    Job,
    JobStatus,
    ModerationItem,
    ModerationMode,
    utcnow,
)
from engine.config import Limits
from engine.request import GenerationRequest

log = logging.getLogger(__name__)

NOT_A_MODERATOR = ("only moderators can do that: members with Manage Messages in the review channel, or with "
                   "the server's moderator role")
NOT_A_MANAGER = "only members with the Manage Server permission can change the bot's settings here"
# A server's settings are read several times per /imagine; they are kept this long (a change made through this
# process is seen at once; one made by another process, within this time).
SETTINGS_TTL_S = 5.0


@dataclass(frozen=True)
class Actor:
    """Who pressed or typed, and what Discord says they may do (resolved by the Discord side)."""

    user_id: int
    guild_id: int | None
    channel_id: int | None = None
    role_ids: frozenset[int] = frozenset()
    manage_messages: bool = False  # in `channel_id`
    manage_guild: bool = False
    # Manage Messages in another channel of the guild (the review channel); None when that cannot be told.
    manage_messages_in: Callable[[int], bool | None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class BanInfo:
    user_id: int
    guild_id: int | None  # None: everywhere
    until: datetime | None  # None: for good
    reason: str = ""

    def active(self, now: datetime) -> bool:
        return self.until is None or self.until > now

    def message(self) -> str:
        where = "this bot" if self.guild_id is None else "this bot on this server"
        until = "for good" if self.until is None else f"until <t:{int(self.until.timestamp())}:f>"
        reason = f" (reason: {self.reason})" if self.reason else ""
        return f"🚫 you are banned from using {where} {until}{reason}"


@dataclass(frozen=True)
class Screening:
    hold: bool
    reason: str = ""


RUN = Screening(False)


@dataclass(frozen=True)
class Decision:
    item: ModerationItem
    job: Job
    ban: BanInfo | None = None


@dataclass(frozen=True)
class History:
    entries: list[AuditEntry]
    bans: list[Ban]


class ReviewListener(JobListener, Protocol):
    """A job listener that can also show a status line (held, rejected) and whisper to the user."""

    async def notice(self, job_id: int, text: str) -> None: ...
    async def whisper(self, text: str) -> bool: ...


class ReviewNotifier(Protocol):
    """The Discord side of the review queue."""

    async def show(self, item: ModerationItem, job: Job, files: list[Path], channel_id: int) -> int | None: ...
    async def decided(self, item: ModerationItem, job: Job, channel_id: int) -> None: ...
    async def tell(self, job: Job, text: str, listener: Any | None, notify_by: str) -> None: ...
    def listener_for(self, job: Job) -> JobListener: ...
    def is_nsfw(self, job: Job) -> bool: ...  # asked in an age-restricted channel


@dataclass
class ModerationService:
    sessions: async_sessionmaker[AsyncSession]
    jobs: JobService
    rates: RateLimits
    limits: Limits = Limits()
    max_queued_per_guild: int = 0  # 0: no cap (the queue is fair across servers without one)
    global_bans: frozenset[int] = frozenset()
    notifier: ReviewNotifier | None = None
    image_policy: ImagePolicy | None = None  # None: no image classifier, so no `auto` mode
    _bans: dict[tuple[int, int | None], BanInfo] = field(default_factory=dict)
    _waiting: dict[int, Any] = field(default_factory=dict)  # job id -> its listener, while this process lives
    _tasks: set[asyncio.Task] = field(default_factory=set)
    _settings: dict[int, tuple[float, GuildSettings]] = field(default_factory=dict)

    async def start(self) -> None:
        """Load the bans in force (checked in memory on every interaction)."""
        rows = await transaction(self.sessions, ban_store.in_force)
        self._bans = {(b.user_id, b.guild_id): _info(b) for b in rows}

    # --- bans -------------------------------------------------------------------------------------------
    def ban_of(self, user_id: int, guild_id: int | None) -> BanInfo | None:
        """The ban keeping `user_id` from the bot in `guild_id` now, if any (no database work)."""
        if user_id in self.global_bans:
            return BanInfo(user_id, None, None, "on the bot's global ban list")
        now = utcnow()
        for key in ((user_id, None), (user_id, guild_id)):
            info = self._bans.get(key)
            if info is not None:
                if info.active(now):
                    return info
                self._bans.pop(key, None)
        return None

    async def ban(self, actor: Actor, user_id: int, duration: timedelta | None, reason: str = "") -> BanInfo:
        """Ban a user from the bot in the actor's guild for `duration` (None: for good)."""
        await self.require_moderator(actor, "ban")
        guild_id = self._guild(actor)
        if user_id == actor.user_id:
            raise UserError("you cannot ban yourself")
        until = utcnow() + duration if duration is not None else None

        async def write(s: AsyncSession) -> Ban:
            row = await ban_store.ban(s, user_id, guild_id=guild_id, actor_id=actor.user_id, expires_at=until,
                                      reason=reason)
            await mod_store.record(s, actor_id=actor.user_id, action="ban", guild_id=guild_id,
                                   target_user_id=user_id, reason=reason,
                                   details={"until": until.isoformat() if until else None})
            return row

        info = _info(await transaction(self.sessions, write))
        self._bans[(user_id, guild_id)] = info
        return info

    async def unban(self, actor: Actor, user_id: int) -> bool:
        """Lift the user's ban in the actor's guild; False when there was none."""
        await self.require_moderator(actor, "unban")
        guild_id = self._guild(actor)

        async def write(s: AsyncSession) -> Ban | None:
            lifted = await ban_store.lift(s, user_id, guild_id=guild_id, actor_id=actor.user_id)
            if lifted is not None:
                await mod_store.record(s, actor_id=actor.user_id, action="unban", guild_id=guild_id,
                                       target_user_id=user_id)
            return lifted

        lifted = await transaction(self.sessions, write)
        self._bans.pop((user_id, guild_id), None)
        return lifted is not None

    # --- screening and submitting ----------------------------------------------------------------------
    def screen(self, settings: GuildSettings | None, prompt: str) -> Screening:
        """Run, or hold for review; a `UserError` naming the rule when the prompt may not run at all."""
        if settings is None:
            return RUN
        cap = settings.max_prompt_chars
        if cap is not None and len(prompt) > cap:
            raise UserError(f"this server allows prompts of up to {cap} characters; yours has {len(prompt)}")
        banned = find_words(prompt, settings.banned_words or [])
        if banned:
            raise UserError(
                f"your prompt was not run: this server bans the word “{banned[0]}” (however it is spelled). "
                "Rephrase the prompt without it"
            )
        mode = settings.moderation_mode
        if mode == ModerationMode.PROMPTS.value:
            return Screening(True, "every prompt is reviewed on this server")
        if mode == ModerationMode.FLAGGED.value:
            flagged = find_words(prompt, settings.flagged_words or [])
            if flagged:
                return Screening(True, "flagged: " + ", ".join(flagged))
        return RUN

    async def submit(self, who: Requester, request: GenerationRequest, listener: ReviewListener, *,
                     sources: dict[str, str] | None = None, priority: bool = False) -> Job:
        """Screen, rate-limit and cap a request, then queue it (`JobService.submit`) or hold it for review."""
        settings = await self.settings(who.guild_id) if who.guild_id is not None else None
        screening = self.screen(settings, request.prompt)
        await self.rates.acquire(who.user_id, who.guild_id)
        if not screening.hold:
            if settings is not None and (settings.max_jobs_per_user is not None or self.max_queued_per_guild):
                await transaction(self.sessions, self._check_caps, who.user_id, settings)
            return await self.jobs.submit(who, request, listener, sources=sources, priority=priority)

        async def persist(s: AsyncSession) -> tuple[Job, ModerationItem]:
            await self._check_caps(s, who.user_id, settings)
            active = await job_store.count_active(s, who.user_id)
            if active >= self.jobs.max_active_per_user:
                raise UserError(f"you have {active} jobs queued; the limit is {self.jobs.max_active_per_user}. "
                                "Wait for one to finish, or cancel one with /queue")
            job = await job_store.create(
                s, user_id=who.user_id, request=request, guild_id=who.guild_id, channel_id=who.channel_id,
                interaction_id=who.interaction_id, sources=sources, status=JobStatus.AWAITING_REVIEW)
            return job, await mod_store.hold(s, job.id, reason=screening.reason)

        job, item = await transaction(self.sessions, persist)
        self._waiting[job.id] = listener
        text = f"🕵️ Job #{job.id} waits for a moderator's review before it runs; you will be told when it is decided"
        await _quietly(_notice(listener, job.id, text))
        await self._show(item, job, [], settings)
        return job

    async def _check_caps(self, s: AsyncSession, user_id: int, settings: GuildSettings) -> None:
        guild_id = settings.guild_id
        if settings.max_jobs_per_user is not None:
            mine = await job_store.count_active(s, user_id, guild_id=guild_id)
            if mine >= settings.max_jobs_per_user:
                raise UserError(f"this server allows {settings.max_jobs_per_user} waiting jobs per member and you "
                                f"have {mine}. Wait for one to finish, or cancel one with /queue")
        if not self.max_queued_per_guild:
            return
        waiting = await job_store.count_active_in_guild(s, guild_id)
        if waiting >= self.max_queued_per_guild:
            raise UserError(f"this server has {waiting} jobs waiting, the most the bot allows a server "
                            f"({self.max_queued_per_guild}); try again when some have finished")

    async def gate_images(self, job: Job, listener: Any) -> bool:
        """`JobService.image_gate`: True when the job's images are held for review (or refused) instead of posted."""
        if job.guild_id is None:
            return False
        settings = await self.settings(job.guild_id)
        if settings.moderation_mode == ModerationMode.AUTO.value:
            judgement = self._judge(job, settings)
            return judgement.verdict is not Verdict.POST and await self._hold_images(job, listener, settings, judgement)
        if settings.moderation_mode != ModerationMode.IMAGES.value:
            return False
        return await self._hold_images(job, listener, settings,
                                       Judgement(Verdict.HOLD, "images are reviewed before they are posted"))

    def _judge(self, job: Job, settings: GuildSettings) -> Judgement:
        if self.image_policy is None:
            return Judgement(Verdict.HOLD, "the bot has no image classifier, so a moderator looks instead")
        nsfw = self.notifier is not None and self.notifier.is_nsfw(job)
        thresholds = self.image_policy.thresholds_for(settings.nsfw_flag_above, settings.nsfw_block_above, nsfw)
        return self.image_policy.judge(job.image_scores, thresholds)

    async def _hold_images(self, job: Job, listener: Any, settings: GuildSettings, why: Judgement) -> bool:
        async def hold(s: AsyncSession) -> ModerationItem:
            existing = await mod_store.item_for_job(s, job.id)
            return existing or await mod_store.hold(s, job.id, reason=why.reason)

        item = await transaction(self.sessions, hold)
        if item.status != ItemStatus.PENDING.value:
            return False  # approved: post it
        self._waiting[job.id] = listener
        text = (f"🚫 Job #{job.id}'s images were not posted ({why.reason}); moderators can still review them"
                if why.verdict is Verdict.BLOCK else
                f"🕵️ Job #{job.id} is ready and waits for a moderator's review before it is posted; you will be "
                "told when it is decided")
        await _quietly(_notice(listener, job.id, text))
        if item.review_message_id is None:
            await self._show(item, job, self.jobs.files_of(job), settings)
        return True

    # --- decisions ---------------------------------------------------------------------------------------
    async def approve(self, actor: Actor, item_id: int, reason: str = "") -> Decision:
        """Approve a pending item: its prompt is queued, or its images posted; the user is told."""
        await self.require_moderator(actor, "approve", item_id)
        item = await transaction(self.sessions, mod_store.approve, item_id, actor.user_id, reason=reason)
        job = await self.jobs.get(item.job_id)
        listener = self._waiting.pop(job.id, None) or self._notifier().listener_for(job)
        what = _what(job)
        if job.status == JobStatus.QUEUED.value:
            self.jobs.start_queued(job, listener)
        elif job.status == JobStatus.DONE.value:
            self._spawn(self.jobs.post(job, listener), f"post-approved-{job.id}")
        settings = await self.settings(job.guild_id) if job.guild_id is not None else None
        await self._decided(item, job, settings)
        await self._tell(job, f"✅ a moderator approved {what} (job #{job.id})", listener, settings)
        return Decision(item, job)

    async def reject(self, actor: Actor, item_id: int, reason: str = "", *, ban: bool = False,
                     ban_for: timedelta | None = None) -> Decision:
        """Reject a pending item with a reason; `ban`: also ban its author for `ban_for` (None: for good)."""
        await self.require_moderator(actor, "ban" if ban else "reject", item_id)
        if not reason.strip():
            raise UserError("say why: the reason is shown to the person who asked")
        item = await transaction(self.sessions, mod_store.reject, item_id, actor.user_id, reason=reason)
        job = await self.jobs.get(item.job_id)
        info = None
        if ban:
            info = await self.ban(actor, job.user_id, ban_for, reason)
        await self.jobs.delete_files(job)  # rejected images are not kept
        settings = await self.settings(job.guild_id) if job.guild_id is not None else None
        listener = self._waiting.pop(job.id, None)
        if listener is not None:
            await _quietly(_notice(listener, job.id, f"❌ Job #{job.id} was rejected by a moderator"))
        await self._decided(item, job, settings)
        text = f"❌ a moderator rejected {_what(job)} (job #{job.id}): {item.decision_reason}"
        if info is not None:
            text += "\n" + info.message()
        await self._tell(job, text, listener, settings)
        return Decision(item, job, info)

    async def queue(self, actor: Actor, limit: int = 10) -> list[tuple[ModerationItem, Job]]:
        """The guild's pending items, oldest first, with their jobs."""
        await self.require_moderator(actor, "queue")

        async def load(s: AsyncSession):
            items = await mod_store.pending(s, self._guild(actor), limit=limit)
            return [(item, await job_store.get(s, item.job_id)) for item in items]

        return await transaction(self.sessions, load)

    async def history(self, actor: Actor, user_id: int, limit: int = 15) -> History:
        """What moderators did about a user in the actor's guild, and the user's bans, newest first."""
        await self.require_moderator(actor, "history")
        guild_id = self._guild(actor)

        async def load(s: AsyncSession) -> History:
            entries = await mod_store.audit_log(s, guild_id, limit=limit, target_user_id=user_id)
            return History(entries, await ban_store.history(s, user_id, guild_id=guild_id, limit=limit))

        return await transaction(self.sessions, load)

    async def authorize_delete(self, actor: Actor, job: Job) -> None:
        """Owners delete their own images, moderators anyone's (audited); `UserError` for everybody else."""
        if job.user_id == actor.user_id:
            return
        message = "only the person who made this image or a moderator can delete it"
        if actor.guild_id is None:
            raise UserError(message)
        await self.require_moderator(actor, "delete", job_id=job.id, message=message)
        await transaction(self.sessions, _record, actor, "delete", job.id, job.user_id)

    # --- permissions -------------------------------------------------------------------------------------
    async def is_moderator(self, actor: Actor) -> bool:
        if actor.guild_id is None:
            return False
        settings = await self.settings(actor.guild_id)
        if settings.moderator_role_id is not None and settings.moderator_role_id in actor.role_ids:
            return True
        review = settings.review_channel_id
        if review is None or review == actor.channel_id or actor.manage_messages_in is None:
            return actor.manage_messages
        allowed = actor.manage_messages_in(review)
        return actor.manage_messages if allowed is None else allowed

    async def require_moderator(self, actor: Actor, action: str, item_id: int | None = None, *,
                                job_id: int | None = None, message: str = NOT_A_MODERATOR) -> None:
        """Raise `UserError` unless the actor is a moderator; a refusal is written to the audit log."""
        if actor.guild_id is None:
            raise UserError("moderation happens in a server, not in direct messages")
        if await self.is_moderator(actor):
            return
        await transaction(self.sessions, _record, actor, "denied", job_id, None,
                          {"attempted": action, **({"item_id": item_id} if item_id is not None else {})})
        raise UserError(message)

    async def require_manager(self, actor: Actor, action: str) -> None:
        if actor.guild_id is None:
            raise UserError("server settings are changed in the server, not in direct messages")
        if actor.manage_guild:
            return
        await transaction(self.sessions, _record, actor, "denied", None, None, {"attempted": action})
        raise UserError(NOT_A_MANAGER)

    # --- settings ----------------------------------------------------------------------------------------
    async def settings(self, guild_id: int) -> GuildSettings:
        """The guild's settings, read at most once per `SETTINGS_TTL_S` (changes made here are seen at once)."""
        kept = self._settings.get(guild_id)
        if kept is not None and time.monotonic() - kept[0] < SETTINGS_TTL_S:
            return kept[1]
        row = await transaction(self.sessions, guild_store.get, guild_id)
        if len(self._settings) >= 10_000:
            self._settings.clear()
        self._settings[guild_id] = (time.monotonic(), row)
        return row

    async def configure(self, actor: Actor, **changes: Any) -> GuildSettings:
        """Change guild settings (names as `bot.store.guilds.SETTABLE`); needs Manage Server; audited."""
        await self.require_manager(actor, "config")
        guild_id = self._guild(actor)
        if changes.get("moderation_mode") == ModerationMode.AUTO.value and self.image_policy is None:
            raise UserError("`auto` mode needs an image classifier and this bot has none: its admin names one in "
                            "[moderation] image_classifier (see README)")

        async def write(s: AsyncSession) -> GuildSettings:
            row = await guild_store.update(s, guild_id, limits=self.limits, **changes)
            await mod_store.record(s, actor_id=actor.user_id, action="config", guild_id=guild_id,
                                   details={k: getattr(row, k) for k in changes})
            return row

        try:
            return await transaction(self.sessions, write)
        finally:
            self._settings.pop(guild_id, None)  # also after: a read during the write kept the old row

    async def edit_words(self, actor: Actor, kind: str, words: list[str], *, add: bool) -> list[str]:
        """Add words to (or remove them from) the banned or flagged list; returns those that changed."""
        await self.require_manager(actor, "words")
        guild_id = self._guild(actor)

        async def write(s: AsyncSession) -> list[str]:
            change = guild_store.add_words if add else guild_store.remove_words
            changed = await change(s, guild_id, kind, words)  # type: ignore[arg-type]
            if changed:
                await mod_store.record(s, actor_id=actor.user_id, action="words", guild_id=guild_id,
                                       details={"list": kind, "added" if add else "removed": changed})
            return changed

        try:
            return await transaction(self.sessions, write)
        finally:
            self._settings.pop(guild_id, None)  # also after: a read during the write kept the old row

    # --- start-up ----------------------------------------------------------------------------------------
    async def recover(self, serves: Callable[[int | None], bool] = lambda guild_id: True) -> int:
        """Show pending items whose review message was never posted (a crash in between); returns how many.

        Only for guilds this process `serves` (shards split over processes: each shows its own)."""
        items = await transaction(self.sessions, mod_store.unshown)
        shown = 0
        for item in items:
            job = await self.jobs.get(item.job_id)
            if job.guild_id is not None and serves(job.guild_id):
                await self._show(item, job, self.jobs.files_of(job), await self.settings(job.guild_id))
                shown += 1
        return shown

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)

    # --- helpers -----------------------------------------------------------------------------------------
    def _notifier(self) -> ReviewNotifier:
        if self.notifier is None:
            raise RuntimeError("the moderation service has no notifier (bot.exts.moderation is not loaded)")
        return self.notifier

    def _guild(self, actor: Actor) -> int:
        if actor.guild_id is None:
            raise UserError("moderation happens in a server, not in direct messages")
        return actor.guild_id

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(_logged(coro, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _show(self, item: ModerationItem, job: Job, files: list[Path], settings: GuildSettings | None) -> None:
        if self.notifier is None or settings is None or settings.review_channel_id is None:
            return  # no review channel: moderators find it with /mod queue
        try:
            message_id = await self.notifier.show(item, job, files, settings.review_channel_id)
        except Exception:
            log.warning("could not post review item %s", item.id, exc_info=True)
            return
        if message_id is not None:
            await transaction(self.sessions, mod_store.set_review_message, item.id, message_id)

    async def _decided(self, item: ModerationItem, job: Job, settings: GuildSettings | None) -> None:
        if self.notifier is None or item.review_message_id is None or settings is None:
            return
        channel = settings.review_channel_id
        if channel is not None:
            await _quietly(self.notifier.decided(item, job, channel))

    async def _tell(self, job: Job, text: str, listener: Any | None, settings: GuildSettings | None) -> None:
        if self.notifier is not None:
            notify_by = settings.notify_by if settings is not None else "dm"
            await _quietly(self.notifier.tell(job, text, listener, notify_by))


def _info(row: Ban) -> BanInfo:
    return BanInfo(row.user_id, row.guild_id, row.expires_at, row.reason)


def _what(job: Job) -> str:
    prompt = str(job.request.get("prompt", ""))
    shown = prompt if len(prompt) <= 80 else prompt[:79] + "…"
    kind = "images for" if job.result_paths else "prompt"
    return f"your {kind} “{shown}”"


async def _record(s: AsyncSession, actor: Actor, action: str, job_id: int | None, target: int | None,
                  details: dict[str, Any] | None = None) -> None:
    await mod_store.record(s, actor_id=actor.user_id, action=action, guild_id=actor.guild_id, job_id=job_id,
                           target_user_id=target, details=details)


async def _notice(listener: Any, job_id: int, text: str) -> None:
    notice = getattr(listener, "notice", None)
    if notice is not None:
        await notice(job_id, text)


async def _quietly(coro) -> None:
    """Telling people is best effort: a failed message must not undo a decision."""
    try:
        await coro
    except Exception:
        log.warning("moderation notice failed", exc_info=True)


async def _logged(coro, name: str) -> None:
    try:
        await coro
    except Exception:
        log.exception("%s failed", name)
