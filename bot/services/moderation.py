"""Moderation: who may do what, the decisions on held prompts and images, bans, and the guild's rules.

* One permission decision, `authorize()`, serves every "may this member do that": the owner of a job may cancel
  or delete it; a moderator (a member with the guild's moderator role, or with Manage Messages in its review
  channel) may do that to anyone's job and decide review items; configuration needs Manage Server. A refusal is
  written to the audit log.
* `approve()` / `reject()` decide an item once (the store locks it: of two moderators pressing at once, one wins
  and the other is told it was decided already), then queue the job or post its images, and tell the member.
  Calls go one way: moderation → jobs → the review stage (bot/services/review.py); nothing calls moderation back.
* What a submission must pass (banned and flagged words, caps) is `bot.services.policy`, consulted by the
  submission pipeline; bans are kept by `bot.services.bans`.

It knows no Discord: the review stage's `ReviewNotifier` shows items and tells members.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.best_effort import quietly
from bot.errors import UserError
from bot.services.bans import BanInfo, Bans
from bot.services.jobs import JobService
from bot.services.policy import SettingsCache
from bot.services.records import AuditRecord, BanRecord, JobRecord, ReviewItemRecord, SettingsRecord, record
from bot.services.review import ImageReview
from bot.store import bans as ban_store
from bot.store import guilds as guild_store
from bot.store import jobs as job_store
from bot.store import moderation as mod_store
from bot.store.db import transaction
from bot.store.guilds import WordKind
from bot.store.models import GuildSettings, JobStatus, ModerationMode, utcnow
from engine.config import Limits

log = logging.getLogger(__name__)

NOT_A_MODERATOR = (
    "only moderators can do that: members with Manage Messages in the review channel, or with "
    "the server's moderator role"
)
NOT_A_MANAGER = "only members with the Manage Server permission can change the bot's settings here"
# What an owner may do to their own job, and what everybody else is told when they are not a moderator.
OWN_JOB_ACTIONS = {
    "cancel": "only the job's owner or a moderator can cancel it",
    "delete": "only the person who made this image or a moderator can delete it",
}
Action = Literal["cancel", "delete", "approve", "reject", "ban", "unban", "queue", "history"]


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
class Decision:
    item: ReviewItemRecord
    job: JobRecord
    ban: BanInfo | None = None


@dataclass(frozen=True)
class History:
    entries: list[AuditRecord]
    bans: list[BanRecord]


@dataclass
class ModerationService:
    sessions: async_sessionmaker[AsyncSession]
    jobs: JobService
    review: ImageReview
    bans: Bans
    settings_cache: SettingsCache
    limits: Limits = Limits()
    _tasks: set[asyncio.Task] = field(default_factory=set)

    # --- permissions: the one decision -------------------------------------------------------------------
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

    async def authorize(
        self, actor: Actor, action: Action, *, job: JobRecord | None = None, item_id: int | None = None
    ) -> None:
        """May `actor` do `action` (to `job`)? Owners act on their own jobs; moderators on anyone's and on the
        review queue. Raise `UserError` otherwise; a refusal is audited, and so is a moderator acting on
        someone else's job."""
        if job is not None and job.user_id == actor.user_id and action in OWN_JOB_ACTIONS:
            return
        message = OWN_JOB_ACTIONS.get(action, NOT_A_MODERATOR)
        if actor.guild_id is None:
            raise UserError(
                message if action in OWN_JOB_ACTIONS else "moderation happens in a server, not in direct messages"
            )
        if not await self.is_moderator(actor):
            details = {"attempted": action, **({"item_id": item_id} if item_id is not None else {})}
            await transaction(self.sessions, _record, actor, "denied", job.id if job else None, None, details)
            raise UserError(message)
        if job is not None and action in OWN_JOB_ACTIONS:
            await transaction(self.sessions, _record, actor, action, job.id, job.user_id)

    async def require_moderator(self, actor: Actor, action: Action, item_id: int | None = None) -> None:
        await self.authorize(actor, action, item_id=item_id)

    async def require_manager(self, actor: Actor, action: str) -> None:
        if actor.guild_id is None:
            raise UserError("server settings are changed in the server, not in direct messages")
        if actor.manage_guild:
            return
        await transaction(self.sessions, _record, actor, "denied", None, None, {"attempted": action})
        raise UserError(NOT_A_MANAGER)

    # --- bans ---------------------------------------------------------------------------------------------
    async def ban(self, actor: Actor, user_id: int, duration: timedelta | None, reason: str = "") -> BanInfo:
        """Ban a user from the bot in the actor's guild for `duration` (None: for good)."""
        await self.require_moderator(actor, "ban")
        if user_id == actor.user_id:
            raise UserError("you cannot ban yourself")
        until = utcnow() + duration if duration is not None else None
        return await self.bans.ban(actor.user_id, user_id, self._guild(actor), until, reason)

    async def unban(self, actor: Actor, user_id: int) -> bool:
        """Lift the user's ban in the actor's guild; False when there was none."""
        await self.require_moderator(actor, "unban")
        return await self.bans.lift(actor.user_id, user_id, self._guild(actor))

    # --- decisions ---------------------------------------------------------------------------------------
    async def approve(self, actor: Actor, item_id: int, reason: str = "") -> Decision:
        """Approve a pending item: its prompt is queued, or its images posted; the user is told."""
        await self.require_moderator(actor, "approve", item_id)
        item = await transaction(self.sessions, mod_store.approve, item_id, actor.user_id, reason=reason)
        job = await self.jobs.get(item.job_id)
        listener = self.jobs.listener_of(job) or self.jobs.listener_for(job)
        what = _what(job)
        if job.status == JobStatus.QUEUED.value:
            await self.jobs.start_queued(job, listener)
        elif job.status == JobStatus.DONE.value:
            self._spawn(self.jobs.post(job, listener), f"post-approved-{job.id}")
        settings = await self.settings(job.guild_id) if job.guild_id is not None else None
        await self.review.decided(item, job, settings)
        await self.review.tell(job, f"✅ a moderator approved {what} (job #{job.id})", listener, settings)
        return Decision(record(ReviewItemRecord, item), job)

    async def reject(
        self, actor: Actor, item_id: int, reason: str = "", *, ban: bool = False, ban_for: timedelta | None = None
    ) -> Decision:
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
        listener = self.jobs.listener_of(job)  # None: its command's is gone, and the member is told below
        if listener is not None:
            await quietly(listener.notice(job.id, f"❌ Job #{job.id} was rejected by a moderator"), "moderation notice")
        await self.review.decided(item, job, settings)
        text = f"❌ a moderator rejected {_what(job)} (job #{job.id}): {item.decision_reason}"
        if info is not None:
            text += "\n" + info.message()
        await self.review.tell(job, text, listener, settings)
        return Decision(record(ReviewItemRecord, item), job, info)

    async def queue(self, actor: Actor, limit: int = 10) -> list[tuple[ReviewItemRecord, JobRecord]]:
        """The guild's pending items, oldest first, with their jobs."""
        await self.require_moderator(actor, "queue")

        async def load(s: AsyncSession):
            items = await mod_store.pending(s, self._guild(actor), limit=limit)
            return [
                (record(ReviewItemRecord, item), record(JobRecord, await job_store.get(s, item.job_id)))
                for item in items
            ]

        return await transaction(self.sessions, load)

    async def history(self, actor: Actor, user_id: int, limit: int = 15) -> History:
        """What moderators did about a user in the actor's guild, and the user's bans, newest first."""
        await self.require_moderator(actor, "history")
        guild_id = self._guild(actor)

        async def load(s: AsyncSession) -> History:
            entries = await mod_store.audit_log(s, guild_id, limit=limit, target_user_id=user_id)
            bans = await ban_store.history(s, user_id, guild_id=guild_id, limit=limit)
            return History([record(AuditRecord, e) for e in entries], [record(BanRecord, b) for b in bans])

        return await transaction(self.sessions, load)

    # --- settings ----------------------------------------------------------------------------------------
    async def settings(self, guild_id: int) -> SettingsRecord:
        """The guild's settings, read at most once per `SETTINGS_TTL_S` (changes made here are seen at once)."""
        return record(SettingsRecord, await self.settings_cache.get(guild_id))

    async def configure(self, actor: Actor, **changes: Any) -> SettingsRecord:
        """Change guild settings (names as `bot.store.guilds.SETTABLE`); needs Manage Server; audited."""
        await self.require_manager(actor, "config")
        guild_id = self._guild(actor)
        if changes.get("moderation_mode") == ModerationMode.AUTO.value and self.review.image_policy is None:
            raise UserError(
                "`auto` mode needs an image classifier and this bot has none: its admin names one in "
                "[moderation] image_classifier (see README)"
            )

        async def write(s: AsyncSession) -> GuildSettings:
            row = await guild_store.update(s, guild_id, limits=self.limits, **changes)
            await mod_store.record(
                s,
                actor_id=actor.user_id,
                action="config",
                guild_id=guild_id,
                details={k: getattr(row, k) for k in changes},
            )
            return row

        try:
            return record(SettingsRecord, await transaction(self.sessions, write))
        finally:
            self.settings_cache.forget(guild_id)  # also after: a read during the write kept the old row

    async def edit_words(self, actor: Actor, kind: WordKind, words: list[str], *, add: bool) -> list[str]:
        """Add words to (or remove them from) the banned or flagged list; returns those that changed."""
        await self.require_manager(actor, "words")
        guild_id = self._guild(actor)

        async def write(s: AsyncSession) -> list[str]:
            change = guild_store.add_words if add else guild_store.remove_words
            changed = await change(s, guild_id, kind, words)
            if changed:
                await mod_store.record(
                    s,
                    actor_id=actor.user_id,
                    action="words",
                    guild_id=guild_id,
                    details={"list": kind, "added" if add else "removed": changed},
                )
            return changed

        try:
            return await transaction(self.sessions, write)
        finally:
            self.settings_cache.forget(guild_id)  # also after: a read during the write kept the old row

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)

    # --- helpers -----------------------------------------------------------------------------------------
    def _guild(self, actor: Actor) -> int:
        if actor.guild_id is None:
            raise UserError("moderation happens in a server, not in direct messages")
        return actor.guild_id

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(_logged(coro, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _what(job: JobRecord) -> str:
    prompt = str(job.request.get("prompt", ""))
    shown = prompt if len(prompt) <= 80 else prompt[:79] + "…"
    kind = "images for" if job.result_paths else "prompt"
    return f"your {kind} “{shown}”"


async def _record(
    s: AsyncSession,
    actor: Actor,
    action: str,
    job_id: int | None,
    target: int | None,
    details: dict[str, Any] | None = None,
) -> None:
    await mod_store.record(
        s,
        actor_id=actor.user_id,
        action=action,
        guild_id=actor.guild_id,
        job_id=job_id,
        target_user_id=target,
        details=details,
    )


async def _logged(coro, name: str) -> None:
    try:
        await coro
    except Exception:
        log.exception("%s failed", name)
