"""`DiscordReviewNotifier`: the review queue's Discord side, plugged into the moderation service.

It posts items to the review channel (held images attached as spoilers, nobody pinged), marks them decided, and
tells users of decisions: an ephemeral follow-up while their command's token lives, else a direct message or a
mention in their channel, as the guild chose (a DM that cannot be delivered falls back to the channel).
"""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path
from typing import Any

import discord

from bot.exts.common.uploads import DEFAULT_UPLOAD_LIMIT, prepare_uploads
from bot.exts.moderation import _format
from bot.exts.moderation._views import review_view
from bot.services.records import ItemStatus, JobRecord, NotifyBy, ReviewItemRecord

log = logging.getLogger(__name__)


class DiscordReviewNotifier:
    def __init__(self, bot) -> None:
        self.bot = bot

    def _channel(self, channel_id: int, guild_id: int | None):
        return self.bot.get_partial_messageable(channel_id, guild_id=guild_id)

    async def show(self, item: ReviewItemRecord, job: JobRecord, files: list[Path], channel_id: int) -> int | None:
        uploads: list[discord.File] = []
        if files:
            guild = self.bot.get_guild(job.guild_id) if job.guild_id else None
            limit = guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT
            batches, _ = await asyncio.to_thread(prepare_uploads, files, limit)
            uploads = [discord.File(io.BytesIO(u.data), filename=u.filename, spoiler=True) for u in batches[0]]
        start = Path(job.request.get("init_image") or "")
        if job.request.get("init_image") and start.is_file() and len(uploads) < 10:
            # img2img: the start image is part of what is reviewed, shown beside the prompt (and the results).
            uploads.append(discord.File(start, filename="start-image.png", spoiler=True))
        mask = Path(job.request.get("mask") or "")
        if job.request.get("mask") and mask.is_file() and len(uploads) < 10:  # inpainting: and its mask
            uploads.append(discord.File(mask, filename="mask.png", spoiler=True))
        for index, path in enumerate(_format.control_images(job), start=1):  # ControlNet images are reviewed too
            if len(uploads) < 10:
                uploads.append(discord.File(path, filename=f"control-image-{index}.png", spoiler=True))
        async with self.bot.api_throttle:
            message = await self._channel(channel_id, job.guild_id).send(
                embed=_format.review_embed(item, job),
                view=review_view([item.id]),
                files=uploads or discord.utils.MISSING,
                allowed_mentions=discord.AllowedMentions.none(),
            )
        return message.id

    async def decided(self, item: ReviewItemRecord, job: JobRecord, channel_id: int) -> None:
        message = self._channel(channel_id, job.guild_id).get_partial_message(item.review_message_id)
        kwargs: dict[str, Any] = {"embed": _format.review_embed(item, job), "view": None}
        if item.status == ItemStatus.REJECTED.value:
            kwargs["attachments"] = []  # rejected images leave the review channel too
        async with self.bot.api_throttle:
            await message.edit(**kwargs)

    async def tell(self, job: JobRecord, text: str, listener: Any | None, notify_by: str) -> None:
        if listener is not None and await listener.whisper(text):
            return
        if notify_by == NotifyBy.DM.value:
            try:
                dm = await self.bot.create_dm(discord.Object(id=job.user_id))
                await dm.send(text[:2000])
                return
            except discord.HTTPException:
                log.info("could not DM user %s; telling them in the channel instead", job.user_id)
        if job.channel_id is None:
            return
        await self._channel(job.channel_id, job.guild_id).send(
            f"<@{job.user_id}> {text}"[:2000],
            allowed_mentions=discord.AllowedMentions(users=[discord.Object(id=job.user_id)]),
        )
