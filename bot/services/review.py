"""The review stage: prompts held before they run and images held after they render, shown to moderators.

* The submission pipeline holds a prompt (`prompts` / `flagged` mode) in its own transaction and then calls
  `prompt_held()`: the member is told, the item goes to the review channel.
* `JobService` asks `images_held()` after rendering and before posting (its `ImageGate`): in `images` mode a
  rendered job is held (still `done`, with a pending item) instead of being posted; in `auto` mode the image
  classifier's scores decide (post, hold, or refuse and keep for moderators: bot/services/image_policy.py), with
  the guild's own thresholds for jobs from age-restricted channels (a fact stored with the job at its command).
* Decisions are the moderation service's (bot/services/moderation.py). This stage keeps no job's listener: it
  uses the one it is handed (to say the job is held) and lets go; the job service keeps each job's Discord side.

It knows no Discord: the `ReviewNotifier` (bot.exts.moderation) shows items and tells members, and it never
calls the job service (the job service calls it), so the direction is one way.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.best_effort import quietly
from bot.services.image_policy import ImagePolicy, Judgement, Verdict
from bot.services.jobs import JobListener, files_of
from bot.services.policy import SettingsCache
from bot.services.records import JobRecord, ReviewItemRecord, SettingsRecord, record
from bot.store import jobs as job_store
from bot.store import moderation as mod_store
from bot.store.db import transaction
from bot.store.models import GuildSettings, ItemStatus, Job, ModerationItem, ModerationMode

log = logging.getLogger(__name__)


class ReviewNotifier(Protocol):
    """The Discord side of the review queue."""

    async def show(self, item: ReviewItemRecord, job: JobRecord, files: list[Path], channel_id: int) -> int | None: ...

    async def decided(self, item: ReviewItemRecord, job: JobRecord, channel_id: int) -> None: ...
    async def tell(self, job: JobRecord, text: str, listener: JobListener | None, notify_by: str) -> None: ...


@dataclass
class ImageReview:
    sessions: async_sessionmaker[AsyncSession]
    settings: SettingsCache
    notifier: ReviewNotifier
    image_policy: ImagePolicy | None = None  # None: no image classifier, so no `auto` mode

    async def prompt_held(
        self, job: Job, item: ModerationItem, listener: JobListener, settings: GuildSettings | None
    ) -> None:
        text = f"🕵️ Job #{job.id} waits for a moderator's review before it runs; you will be told when it is decided"
        await _quietly(listener.notice(job.id, text))
        await self.show(item, job, [], settings)

    async def images_held(self, job: JobRecord, listener: JobListener) -> bool:
        """True when the job's images are held for review (or refused) instead of posted."""
        if job.guild_id is None:
            return False
        settings = await self.settings.get(job.guild_id)
        if settings.moderation_mode == ModerationMode.AUTO.value:
            judgement = self._judge(job, settings)
            return judgement.verdict is not Verdict.POST and await self._hold(job, listener, settings, judgement)
        if settings.moderation_mode != ModerationMode.IMAGES.value:
            return False
        return await self._hold(
            job, listener, settings, Judgement(Verdict.HOLD, "images are reviewed before they are posted")
        )

    def _judge(self, job: JobRecord, settings: GuildSettings) -> Judgement:
        if self.image_policy is None:
            return Judgement(Verdict.HOLD, "the bot has no image classifier, so a moderator looks instead")
        thresholds = self.image_policy.thresholds_for(
            settings.nsfw_flag_above, settings.nsfw_block_above, job.age_restricted
        )
        return self.image_policy.judge(job.image_scores, thresholds)

    async def _hold(self, job: JobRecord, listener: JobListener, settings: GuildSettings, why: Judgement) -> bool:
        async def hold(s: AsyncSession) -> ModerationItem:
            existing = await mod_store.item_for_job(s, job.id)
            return existing or await mod_store.hold(s, job.id, reason=why.reason)

        item = await transaction(self.sessions, hold)
        if item.status != ItemStatus.PENDING.value:
            return False  # approved: post it
        text = (
            f"🚫 Job #{job.id}'s images were not posted ({why.reason}); moderators can still review them"
            if why.verdict is Verdict.BLOCK
            else f"🕵️ Job #{job.id} is ready and waits for a moderator's review before it is posted; you will be "
            "told when it is decided"
        )
        await _quietly(listener.notice(job.id, text))
        if item.review_message_id is None:
            await self.show(item, job, files_of(job), settings)
        return True

    async def show(
        self,
        item: ModerationItem | ReviewItemRecord,
        job: Job | JobRecord,
        files: list[Path],
        settings: GuildSettings | None,
    ) -> None:
        if settings is None or settings.review_channel_id is None:
            return  # no review channel: moderators find it with /mod queue
        try:
            message_id = await self.notifier.show(
                record(ReviewItemRecord, item), record(JobRecord, job), files, settings.review_channel_id
            )
        except Exception:
            log.warning("could not post review item %s", item.id, exc_info=True)
            return
        if message_id is not None:
            await transaction(self.sessions, mod_store.set_review_message, item.id, message_id)

    async def decided(self, item: ModerationItem, job: JobRecord, settings: SettingsRecord | None) -> None:
        if item.review_message_id is None or settings is None or settings.review_channel_id is None:
            return
        await _quietly(self.notifier.decided(record(ReviewItemRecord, item), job, settings.review_channel_id))

    async def tell(
        self, job: JobRecord, text: str, listener: JobListener | None, settings: SettingsRecord | None
    ) -> None:
        notify_by = settings.notify_by if settings is not None else "dm"
        await _quietly(self.notifier.tell(job, text, listener, notify_by))

    async def recover(self, serves: Callable[[int | None], bool] = lambda guild_id: True) -> int:
        """Show pending items whose review message was never posted (a crash in between); returns how many.

        Only for guilds this process `serves` (shards split over processes: each shows its own)."""
        items = await transaction(self.sessions, mod_store.unshown)
        shown = 0
        for item in items:
            job = await transaction(self.sessions, job_store.get, item.job_id)
            if job.guild_id is not None and serves(job.guild_id):
                await self.show(item, job, files_of(record(JobRecord, job)), await self.settings.get(job.guild_id))
                shown += 1
        return shown


_quietly = functools.partial(quietly, what="moderation notice")  # a failed message must not undo a decision
