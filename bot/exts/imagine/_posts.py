"""`DiscordPosts`: where the job service looks for a job's post before it repeats one (bot/services/posting.py
decides when and in what order); facts only: is this message the job's post, and is the post in the channel.

A job's post is recognised by its author (the bot) and its buttons (`sdbot:job:<id>:…`). The channel's history is
the last resort: read from just before the job was made (the deferred "thinking…" message precedes the job row),
`SEARCH_LIMIT` messages at most.
"""

from __future__ import annotations

from datetime import timedelta

import discord

from bot.services.records import JobRecord

SEARCH_MARGIN = timedelta(minutes=5)
SEARCH_LIMIT = 1000


class DiscordPosts:
    def __init__(self, bot) -> None:
        self.bot = bot

    async def carries(self, job: JobRecord, message_id: int) -> bool:
        """Whether that message in the job's channel is the job's post (False: gone, or still its progress)."""
        try:
            async with self.bot.api_throttle:
                message = await self._channel(job).fetch_message(message_id)
        except discord.NotFound:
            return False
        return self._is_post(job, message)

    async def search(self, job: JobRecord) -> int | None:
        after = discord.Object(discord.utils.time_snowflake(job.created_at - SEARCH_MARGIN))
        async with self.bot.api_throttle:
            async for message in self._channel(job).history(limit=SEARCH_LIMIT, after=after, oldest_first=True):
                if self._is_post(job, message):
                    return message.id
        return None

    def _channel(self, job: JobRecord):
        return self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)

    def _is_post(self, job: JobRecord, message: discord.Message) -> bool:
        marker = f"sdbot:job:{job.id}:"
        me = self.bot.user.id if self.bot.user else None
        return message.author.id == me and any(
            str(getattr(item, "custom_id", "") or "").startswith(marker)
            for row in message.components
            for item in getattr(row, "children", [])
        )
