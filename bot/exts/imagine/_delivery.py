"""`DiscordJobListener`: one message per job that shows the queue position, then `12/30`, then the images.

Effects only: the job service decides what happens to a job and calls these to show it; the one fact they return
is where the job is shown (its message's id), and `post` raises `PostUnavailable` for a failure that may pass.
Posting exactly once is the service's (bot/services/posting.py): `post` sends with the nonce it is given, and
`DiscordPosts` (bot/exts/imagine/_posts.py) looks for a post that happened when the service asks.

Progress is best effort: edits take turns in the channel's `ChannelEdits` (its configured edit rate) and coalesce
(while a job waits for its turn, newer progress replaces older; a job that ends meanwhile drops what it had). The
final message (images, failure, cancel) takes no turn: it goes out as soon as the job ends, limited only by
Discord's buckets (discord.py honours them; each interaction token is its own) and the bot's global API cap.
PNG work (previews, uploads) runs in a thread, off the event loop. The interaction's token lives 15 minutes:
later, results go to the channel with a mention. Previews are shown when the engine makes them, which the
guild's settings decide.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import discord

from bot.exts.common.uploads import DEFAULT_UPLOAD_LIMIT, prepare_uploads
from bot.exts.imagine import _format
from bot.services.posting import PostUnavailable, post_nonce
from bot.services.records import JobRecord

log = logging.getLogger(__name__)

# A failed post that may pass later: Discord's 5xx and 429s, timeouts and dropped connections.
TRANSIENT = (discord.RateLimited, aiohttp.ClientError, OSError, asyncio.TimeoutError)


def transient(error: BaseException) -> bool:
    """Whether a failed post may pass if repeated (the job service decides whether and when)."""
    if isinstance(error, discord.HTTPException):
        return error.status >= 500 or error.status == 429
    return isinstance(error, TRANSIENT)


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
        age_s: float = 0.0,
    ) -> None:
        self.bot = bot
        self.user_id = user_id
        self.channel_id = channel_id
        self.guild_id = guild_id
        self.interaction = interaction
        self.created = time.monotonic() - age_s  # age_s: a command replayed from the journal after a restart
        self.resumed = resumed
        self._message: discord.Message | discord.PartialMessage | None = None
        self._latest: dict[str, Any] | None = None
        self._editing = asyncio.Lock()  # held while a progress edit is in flight
        self._last_preview = 0.0
        self._preview: Any | None = None  # the newest preview not yet shown (kept when progress coalesces)
        self._closed = False
        self._told_position = False
        # The message that shows the job once known: the interaction's original response, or the channel message
        # that took over when the token had expired.
        self._message_id: int | None = None

    # --- JobListener -------------------------------------------------------------------------------------
    async def queued(self, job_id: int, position: int) -> int | None:
        """Show the place in the queue; returns the message that shows the job, once known."""
        content = self._prefix() + _format.progress_line(job_id, "queued", position=position)
        if self._told_position or self._closed:
            self._update(content=content)
            return self._message_id
        # The first thing a member hears after "thinking…" is their place in the queue, at once: one request per
        # job, on the interaction's own bucket. Later changes of place are progress, paced by the channel.
        self._told_position = True
        async with self._editing:
            if not self._closed:
                await self._show(content=content)
        return self._message_id

    async def started(self, job_id: int) -> None:
        self._update(content=self._prefix() + _format.progress_line(job_id, "started"))

    async def step(self, job_id: int, step: int, total: int, preview: Any | None) -> None:
        update: dict[str, Any] = {
            "content": self._prefix() + _format.progress_line(job_id, "step", step=step, total=total)
        }
        period = self.bot.config.settings.discord.preview_period_s
        if preview is not None and time.monotonic() - self._last_preview >= period:
            self._last_preview = time.monotonic()
            self._preview = preview
        self._update(**update)

    async def post(self, job: JobRecord, files: list[Path], nonce: str) -> int | None:
        """The images, with the job's buttons; each message of the post carries `<nonce>:<n>`. A failure that
        may pass is raised as `PostUnavailable` (the job service retries it)."""
        try:
            return await self._post(job, files, nonce)
        except Exception as exc:
            if transient(exc):
                raise PostUnavailable(str(exc) or type(exc).__name__) from exc
            raise

    async def _post(self, job: JobRecord, files: list[Path], nonce: str) -> int | None:
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
                message = await self._show(content=content, final=True, nonce=f"{nonce}:1", **kwargs)
                first = message
            else:
                message = await self._send_channel(
                    content=f"Job #{job.id} (part {i + 1})",
                    files=kwargs.pop("attachments"),
                    nonce=f"{nonce}:{i + 1}",
                    **kwargs,
                )
        return first.id if first is not None else None

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
            nonce=f"{post_nonce(job_id)}:failed",
        )

    async def cancelled(self, job_id: int) -> None:
        await self._stop_updates()
        await self._show(content=f"🚫 Job #{job_id} was cancelled", final=True)

    async def interrupted(self, job_id: int) -> None:
        await self._stop_updates()
        await self._show(content=f"⏸️ Job #{job_id}: the bot is restarting; your job will resume by itself")

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
        self.bot.progress.channel(self.channel_id).want(self, self._edit_progress)

    async def _edit_progress(self) -> None:
        """This job's turn in the channel: show its newest progress, unless the job ended meanwhile."""
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
        self.bot.progress.channel(self.channel_id).forget(self)
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
            if self.interaction is not None and self._token_alive():
                try:
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
            self._message_id = self._message_id or self._message.id
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
