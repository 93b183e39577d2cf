"""/imagine, its progress message and the result buttons."""

from collections.abc import Callable
from typing import Any

from bot.exts.imagine._cog import Imagine
from bot.exts.imagine._delivery import DiscordJobListener
from bot.exts.imagine._views import ImageButton, ImageSelect, JobButton


def recovery_listener(bot) -> Callable[[Any], DiscordJobListener]:
    """Jobs a previous run left unfinished report to their channel, mentioning their owner."""
    return lambda job: DiscordJobListener(
        bot, user_id=job.user_id, channel_id=job.channel_id, guild_id=job.guild_id, resumed=True
    )


async def setup(bot) -> None:
    bot.add_dynamic_items(JobButton, ImageButton, ImageSelect)
    await bot.add_cog(Imagine(bot))
