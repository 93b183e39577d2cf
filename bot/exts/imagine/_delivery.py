"""`DiscordJobListener`: one message per job that shows the queue position, then `12/30`, then the images.

Progress is best effort: edits take turns in the channel's `ChannelEdits` (its configured edit rate) and coalesce
(while a job waits for its turn, newer progress replaces older; a job that ends meanwhile drops what it had). The
final message (images, failure, cancel) takes no turn: it goes out as soon as the job ends, limited only by
Discord's buckets (discord.py honours them; each interaction token is its own) and the bot's global API cap.
PNG work (previews, uploads) runs in a thread, off the event loop. The interaction's token lives 15 minutes:
later, results go to the channel with a mention.

For `JobService.post`'s retries: `retryable` says which failures may pass (Discord 5xx and 429, dropped
connections), and `already_posted` finds a post whose answer was lost, or that a crash kept from being recorded,
with Discord's own idempotency first (see its docstring): the job's message by its known id (the interaction's
original response, whose edits are idempotent by nature), a channel post repeated with the same `nonce` and
`enforce_nonce` (Discord answers a repeat within minutes with the first message), and only as the last resort,
bounded and logged, a scan of the channel's history for the job's buttons (`sdbot:job:<id>:…`).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import discord

from bot.exts.common.uploads import DEFAULT_UPLOAD_LIMIT, prepare_uploads
from bot.exts.imagine import _format
from bot.services.jobs import Delivered
from bot.services.records import JobRecord, utcnow

log = logging.getLogger(__name__)

# How far back `already_posted` starts (the deferred "thinking…" message is made just before the job row) and
# how many of the channel's messages after that it reads at most.
SEARCH_MARGIN = timedelta(minutes=5)
SEARCH_LIMIT = 1000
# How long after its first attempt a channel post may be repeated with the same nonce and trust Discord to answer
# with the first message ("the past few minutes", Discord says; kept well inside that).
NONCE_TRUST = timedelta(minutes=2)


def post_nonce(job_id: int, part: str) -> str:
    """The nonce of one of a job's channel posts (at most 25 characters, as Discord allows)."""
    return f"sdbot:{job_id}:{part}"


class DiscordJobListener:
    def __init__(
        self,
        bot,
        *,
        user_id: int,
        channel_id: int,
        guild_id: int | None,
        interaction: discord.Interaction | None = None,
        resumed: bool = False,
        previews: bool = False,
        age_s: float = 0.0,
    ) -> None:
        self.bot = bot
        self.user_id = user_id
        self.channel_id = channel_id
        self.guild_id = guild_id
        self.interaction = interaction
        self.created = time.monotonic() - age_s  # age_s: a command replayed from the journal after a restart
        self.resumed = resumed
        self.previews = previews
        self._message: discord.Message | discord.PartialMessage | None = None
        self._latest: dict[str, Any] | None = None
        self._editing = asyncio.Lock()  # held while a progress edit is in flight
        self._last_preview = 0.0
        self._preview: Any | None = None  # the newest preview not yet shown (kept when progress coalesces)
        self._closed = False
        self._told_position = False
        self._message_id: int | None = None  # the job's message (the interaction's original response), once known
        self._first_final: float | None = None  # time.monotonic() of the first attempt at the final post
        self._via_original = False  # a final attempt went through the interaction (not the channel)

    # --- JobListener -------------------------------------------------------------------------------------
    async def queued(self, job_id: int, position: int) -> None:
        content = self._prefix() + _format.progress_line(job_id, "queued", position=position)
        if self._told_position or self._closed:
            self._update(content=content)
            return
        # The first thing a member hears after "thinking…" is their place in the queue, at once: one request per
        # job, on the interaction's own bucket. Later changes of place are progress, paced by the channel.
        self._told_position = True
        async with self._editing:
            if not self._closed:
                await self._show(content=content)

    async def started(self, job_id: int) -> None:
        self._update(content=self._prefix() + _format.progress_line(job_id, "started"))

    async def step(self, job_id: int, step: int, total: int, preview: Any | None) -> None:
        update: dict[str, Any] = {
            "content": self._prefix() + _format.progress_line(job_id, "step", step=step, total=total)
        }
        period = self.bot.config.settings.discord.preview_period_s
        if self.previews and preview is not None and time.monotonic() - self._last_preview >= period:
            self._last_preview = time.monotonic()
            self._preview = preview
        self._update(**update)

    async def finished(self, job: JobRecord, files: list[Path]) -> Delivered:
        await self._stop_updates()
        limit = self._upload_limit()
        batches, note = await asyncio.to_thread(prepare_uploads, files, limit)
        notes = [f"⚠️ {n}" for n in job.notes or ()] + ([note] if note else [])
        text, embed, view = await self._result(job, files, notes)
        first: discord.Message | None = None
        for i, batch in enumerate(batches):
            attachments = [discord.File(io.BytesIO(u.data), filename=u.filename) for u in batch]
            last = i == len(batches) - 1
            kwargs: dict[str, Any] = dict(attachments=attachments)
            if last:
                kwargs.update(embed=embed, view=view)
            content = self._prefix() + text
            if i == 0:
                message = await self._show(content=content, final=True, nonce=post_nonce(job.id, "1"), **kwargs)
                first = message
            else:
                message = await self._send_channel(
                    content=f"Job #{job.id} (part {i + 1})",
                    files=kwargs.pop("attachments"),
                    nonce=post_nonce(job.id, str(i + 1)),
                    **kwargs,
                )
        return Delivered(first.id if first is not None else None)

    async def _result(
        self, job: JobRecord, files: list[Path], notes: list[str]
    ) -> tuple[str, discord.Embed, discord.ui.View]:
        """The final message's line, parameters embed and buttons."""
        from bot.exts.imagine._views import job_view

        embed = _format.parameters_embed(job.id, job.request, job.sources or {}, _seeds(job))
        return _format.final_content(job.id, None, notes, len(files)), embed, job_view(job.id, images=len(files))

    async def failed(self, job_id: int, message: str) -> None:
        await self._stop_updates()
        await self._show(
            content=_format.clip(f"❌ Job #{job_id} failed: {message}", 2000),
            final=True,
            nonce=post_nonce(job_id, "failed"),
        )

    async def cancelled(self, job_id: int) -> None:
        await self._stop_updates()
        await self._show(content=f"🚫 Job #{job_id} was cancelled", final=True)

    async def interrupted(self, job_id: int) -> None:
        await self._stop_updates()
        await self._show(content=f"⏸️ Job #{job_id}: the bot is restarting; your job will resume by itself")

    def retryable(self, error: BaseException) -> bool:
        """Whether a failed post may pass later: Discord's 5xx and 429s, timeouts and dropped connections."""
        if isinstance(error, discord.HTTPException):
            return error.status >= 500 or error.status == 429
        return isinstance(error, (discord.RateLimited, aiohttp.ClientError, OSError, asyncio.TimeoutError))

    async def already_posted(self, job: JobRecord) -> Delivered | None:
        """The job's final message, if it exists already; None: post it (again).

        1. The job's message by id (the interaction's original response, learnt from a progress edit, or stored
           on the job when it was rendered): one GET says whether the images are on it.
        2. A channel post needs no look: it is repeated with the same nonce, and Discord answers a repeat with the
           first message, while the first attempt is recent (`NONCE_TRUST`) and the original response (1) was
           checked or never used for this job.
        3. Otherwise (after a restart with no message id, or too late for the nonce): the channel's history,
           `SEARCH_LIMIT` messages at most, logged, as the last resort.
        """
        message_id = self._message_id or job.message_id
        checked = False
        if message_id is not None:
            found = await self._marked(job, message_id)
            if found is not None:
                return found
            checked = True
        own_attempts = not self.resumed and (self.interaction is None or self._first_final is not None)
        if (checked or (own_attempts and not self._via_original)) and self._nonce_covers(job):
            return None
        log.warning(
            "job %s: looking for its post in the channel's history (last resort, up to %d messages)",
            job.id,
            SEARCH_LIMIT,
        )
        return await self._scan_history(job)

    def _nonce_covers(self, job: JobRecord) -> bool:
        if self._first_final is not None:
            return time.monotonic() - self._first_final < NONCE_TRUST.total_seconds()
        finished = job.finished_at or job.updated_at  # after a restart: the first attempt followed `done`
        return finished is not None and utcnow() - finished < NONCE_TRUST

    async def _marked(self, job: JobRecord, message_id: int) -> Delivered | None:
        """The message, if it is the job's final one (carries its buttons)."""
        channel = self.bot.get_partial_messageable(self.channel_id, guild_id=self.guild_id)
        try:
            async with self.bot.api_throttle:
                message = await channel.fetch_message(message_id)
        except discord.NotFound:
            return None
        return Delivered(message.id) if self._is_final(job, message) else None

    def _is_final(self, job: JobRecord, message: discord.Message) -> bool:
        marker = f"sdbot:job:{job.id}:"
        me = self.bot.user.id if self.bot.user else None
        return message.author.id == me and any(
            str(getattr(item, "custom_id", "") or "").startswith(marker)
            for row in message.components
            for item in getattr(row, "children", [])
        )

    async def _scan_history(self, job: JobRecord) -> Delivered | None:
        channel = self.bot.get_partial_messageable(self.channel_id, guild_id=self.guild_id)
        after = discord.Object(discord.utils.time_snowflake(job.created_at - SEARCH_MARGIN))
        async with self.bot.api_throttle:
            async for message in channel.history(limit=SEARCH_LIMIT, after=after, oldest_first=True):
                if self._is_final(job, message):
                    return Delivered(message.id)
        return None

    @property
    def message_id(self) -> int | None:
        """The job's message on Discord once known (JobService stores it with the rendered job)."""
        return self._message_id

    # --- moderation (the review stage's part of JobListener) ---------------------------------------------
    async def notice(self, job_id: int, text: str) -> None:
        """A status line in place of the progress (held for review, rejected); progress may resume after it."""
        await self._stop_updates()
        await self._show(content=_format.clip(text, 2000), final=True)
        self._closed = False

    async def whisper(self, text: str) -> bool:
        """An ephemeral follow-up only the user sees, while the command's token lives; False when it cannot."""
        if self.interaction is None or not self._token_alive():
            return False
        try:
            await self.interaction.followup.send(_format.clip(text, 2000), ephemeral=True)
        except discord.HTTPException:
            return False
        return True

    # --- plumbing ----------------------------------------------------------------------------------------
    def _prefix(self) -> str:
        return "🔁 resumed after a restart · " if self.resumed else ""

    def _update(self, **state: Any) -> None:
        """Record the newest progress; it is shown when the channel's `ChannelEdits` gives this job a turn."""
        if self._closed:
            return
        self._latest = state
        self.bot.channel_edits(self.channel_id).want(self)

    async def edit_progress(self) -> None:
        """This job's turn in the channel: show its newest progress, unless the job ended meanwhile."""
        await self.bot.progress_throttle.acquire()  # before `_editing`: a final never waits for this slot
        async with self._editing:
            state, self._latest = self._latest, None
            preview, self._preview = self._preview, None
            if state is None or self._closed or self.bot.is_closed():
                return
            if preview is not None:
                state["attachments"] = [await asyncio.to_thread(_preview_file, preview)]
            if not self._closed:
                await self._show(**state)

    async def _stop_updates(self) -> None:
        """No more progress. An edit already on its way lands first: cut off mid-request, it could reach Discord
        after the final edit and put a stale preview back on the finished message. That is one request at
        most; nothing queued for a turn is waited for."""
        self._closed = True
        self.bot.channel_edits(self.channel_id).forget(self)
        async with self._editing:
            self._latest = self._preview = None

    def _token_alive(self) -> bool:
        lifetime = self.bot.config.settings.discord.token_lifetime_s
        return self.interaction is not None and time.monotonic() - self.created < lifetime

    def _upload_limit(self) -> int:
        limit = getattr(self.interaction, "filesize_limit", None) if self.interaction else None
        if not limit and self.guild_id is not None:
            guild = self.bot.get_guild(self.guild_id)
            limit = guild.filesize_limit if guild else None
        return int(limit or DEFAULT_UPLOAD_LIMIT)

    async def _show(self, final: bool = False, nonce: str | None = None, **kwargs: Any) -> discord.Message:
        """Edit the job's message: through the interaction while its token lives, else in the channel (a final
        one there is a new post, made idempotent by `nonce`)."""
        async with self.bot.api_throttle:
            if final and self._first_final is None:
                self._first_final = time.monotonic()
            if self.interaction is not None and self._token_alive():
                try:
                    self._via_original = self._via_original or final
                    message = await self.interaction.edit_original_response(**kwargs)
                    self._message_id = message.id
                    return message
                except discord.NotFound:
                    log.info("interaction token expired early; falling back to the channel")
                    self.interaction = None
            return await self._channel_message(final=final, nonce=nonce, **kwargs)

    async def _channel_message(self, final: bool, nonce: str | None = None, **kwargs: Any) -> discord.Message:
        mention = f"<@{self.user_id}> "
        if final:
            # A late result is a new message with a mention, so the user is notified.
            kwargs["content"] = mention + kwargs.get("content", "")
            files = kwargs.pop("attachments", None)
            return await self._send_channel(files=files, nonce=nonce, **kwargs)
        if self._message is None:
            files = kwargs.pop("attachments", None)
            self._message = await self._send_channel(files=files, **kwargs)
            return self._message
        return await self._message.edit(**kwargs)

    async def _send_channel(self, files=None, **kwargs: Any) -> discord.Message:
        channel = self.bot.get_partial_messageable(self.channel_id, guild_id=self.guild_id)
        kwargs["allowed_mentions"] = discord.AllowedMentions(users=[discord.Object(self.user_id)])
        return await channel.send(files=files or discord.utils.MISSING, **kwargs)


def _preview_file(preview: Any) -> discord.File:
    """A preview image as a PNG attachment (run in a thread: encoding is CPU work)."""
    buf = io.BytesIO()
    preview.save(buf, format="PNG")
    buf.seek(0)
    return discord.File(buf, filename="preview.png")


def _seeds(job: JobRecord) -> list[int] | None:
    if job.seed is None:
        return None
    return [job.seed + i for i in range(job.request.get("batch_size", 1))]
