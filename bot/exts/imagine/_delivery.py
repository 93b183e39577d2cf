"""`DiscordJobListener`: one message per job that shows the queue position, then `12/30`, then the images.

Edits go through the channel's throttle (asyncio-throttle) and coalesce: while an edit waits for its slot, newer
progress replaces older, so a channel never sees more than its configured edit rate and the last state always
arrives. The interaction's token lives 15 minutes: later, results go to the channel with a mention.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from pathlib import Path
from typing import Any

import discord

from bot.exts.imagine import _format
from bot.exts.imagine._files import DEFAULT_UPLOAD_LIMIT, prepare_uploads
from bot.services.jobs import Delivered
from bot.store.models import Job

log = logging.getLogger(__name__)


class DiscordJobListener:
    def __init__(self, bot, *, user_id: int, channel_id: int, guild_id: int | None,
                 interaction: discord.Interaction | None = None, resumed: bool = False,
                 previews: bool = False) -> None:
        self.bot = bot
        self.user_id = user_id
        self.channel_id = channel_id
        self.guild_id = guild_id
        self.interaction = interaction
        self.created = time.monotonic()
        self.resumed = resumed
        self.previews = previews
        self._message: discord.Message | discord.PartialMessage | None = None
        self._latest: dict[str, Any] | None = None
        self._wake = asyncio.Event()
        self._updater: asyncio.Task | None = None
        self._last_preview = 0.0
        self._closed = False

    # --- JobListener -------------------------------------------------------------------------------------
    async def queued(self, job_id: int, position: int) -> None:
        self._update(content=self._prefix() + _format.progress_line(job_id, "queued", position=position))

    async def started(self, job_id: int) -> None:
        self._update(content=self._prefix() + _format.progress_line(job_id, "started"))

    async def step(self, job_id: int, step: int, total: int, preview: Any | None) -> None:
        update: dict[str, Any] = {"content": self._prefix() + _format.progress_line(
            job_id, "step", step=step, total=total)}
        period = self.bot.config.settings.discord.preview_period_s
        if self.previews and preview is not None and time.monotonic() - self._last_preview >= period:
            self._last_preview = time.monotonic()
            update["preview"] = preview
        self._update(**update)

    async def finished(self, job: Job, files: list[Path]) -> Delivered:
        await self._stop_updates()
        limit = self._upload_limit()
        batches, note = await asyncio.to_thread(prepare_uploads, files, limit)
        from bot.exts.imagine._views import job_view

        embed = _format.parameters_embed(job.id, job.request, job.sources or {}, _seeds(job))
        view = job_view(job.id)
        first: discord.Message | None = None
        for i, batch in enumerate(batches):
            attachments = [discord.File(io.BytesIO(u.data), filename=u.filename) for u in batch]
            last = i == len(batches) - 1
            kwargs: dict[str, Any] = dict(attachments=attachments)
            if last:
                kwargs.update(embed=embed, view=view)
            content = _format.final_content(job.id, None, note, len(files))
            if i == 0:
                message = await self._show(content=content, final=True, **kwargs)
                first = message
            else:
                message = await self._send_channel(content=f"Job #{job.id} (part {i + 1})",
                                                   files=kwargs.pop("attachments"), **kwargs)
        return Delivered(first.id if first is not None else None)

    async def failed(self, job_id: int, message: str) -> None:
        await self._stop_updates()
        await self._show(content=_format.clip(f"❌ Job #{job_id} failed: {message}", 2000), final=True)

    async def cancelled(self, job_id: int) -> None:
        await self._stop_updates()
        await self._show(content=f"🚫 Job #{job_id} was cancelled", final=True)

    # --- plumbing ----------------------------------------------------------------------------------------
    def _prefix(self) -> str:
        return "🔁 resumed after a restart · " if self.resumed else ""

    def _update(self, **state: Any) -> None:
        """Record the newest progress; the updater task edits when the channel's throttle allows."""
        if self._closed:
            return
        self._latest = state
        self._wake.set()
        if self._updater is None:
            self._updater = asyncio.create_task(self._run_updates(), name=f"progress-{self.channel_id}")

    async def _run_updates(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            state, self._latest = self._latest, None
            if state is None:
                continue
            try:
                preview = state.pop("preview", None)
                if preview is not None:
                    buf = io.BytesIO()
                    preview.save(buf, format="PNG")
                    state["attachments"] = [discord.File(io.BytesIO(buf.getvalue()), filename="preview.png")]
                await self._show(**state)
            except discord.HTTPException:
                log.warning("progress edit failed", exc_info=True)

    async def _stop_updates(self) -> None:
        self._closed = True
        if self._updater is not None:
            self._updater.cancel()
            try:
                await self._updater
            except (asyncio.CancelledError, Exception):
                pass
            self._updater = None

    def _token_alive(self) -> bool:
        lifetime = self.bot.config.settings.discord.token_lifetime_s
        return self.interaction is not None and time.monotonic() - self.created < lifetime

    def _upload_limit(self) -> int:
        limit = getattr(self.interaction, "filesize_limit", None) if self.interaction else None
        if not limit and self.guild_id is not None:
            guild = self.bot.get_guild(self.guild_id)
            limit = guild.filesize_limit if guild else None
        return int(limit or DEFAULT_UPLOAD_LIMIT)

    async def _show(self, final: bool = False, **kwargs: Any) -> discord.Message:
        """Edit the job's message: through the interaction while its token lives, else in the channel."""
        async with self.bot.channel_throttle(self.channel_id), self.bot.api_throttle:
            if self._token_alive():
                try:
                    return await self.interaction.edit_original_response(**kwargs)
                except discord.NotFound:
                    log.info("interaction token expired early; falling back to the channel")
                    self.interaction = None
            return await self._channel_message(final=final, **kwargs)

    async def _channel_message(self, final: bool, **kwargs: Any) -> discord.Message:
        mention = f"<@{self.user_id}> "
        if final:
            # A late result is a new message with a mention, so the user is notified.
            kwargs["content"] = mention + kwargs.get("content", "")
            files = kwargs.pop("attachments", None)
            return await self._send_channel(files=files, **kwargs)
        if self._message is None:
            files = kwargs.pop("attachments", None)
            self._message = await self._send_channel(files=files, **kwargs)
            return self._message
        return await self._message.edit(**kwargs)

    async def _send_channel(self, files=None, **kwargs: Any) -> discord.Message:
        channel = self.bot.get_partial_messageable(self.channel_id, guild_id=self.guild_id)
        kwargs["allowed_mentions"] = discord.AllowedMentions(users=[discord.Object(self.user_id)])
        return await channel.send(files=files or discord.utils.MISSING, **kwargs)


def _seeds(job: Job) -> list[int] | None:
    if job.seed is None:
        return None
    return [job.seed + i for i in range(job.request.get("batch_size", 1))]
