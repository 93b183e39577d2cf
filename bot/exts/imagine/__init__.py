"""/imagine and /xyz, their progress messages and the result buttons and menus."""

from collections.abc import Callable
from typing import Any

from bot.exts.imagine._cog import Imagine
from bot.exts.imagine._delivery import DiscordJobListener
from bot.exts.imagine._grid import CellSelect, DiscordGridListener
from bot.exts.imagine._posts import DiscordPosts
from bot.exts.imagine._views import ImageButton, ImageSelect, JobButton
from bot.exts.imagine._xyz import Xyz


def recovery_listener(bot) -> Callable[[Any], DiscordJobListener]:
    """Jobs a previous run left unfinished report to their channel, mentioning their owner."""
    return lambda job: DiscordJobListener(
        bot, user_id=job.user_id, channel_id=job.channel_id, guild_id=job.guild_id, resumed=True
    )


def recovery_grid_listener(bot) -> Callable[[Any], DiscordGridListener]:
    """The same for grids a previous run left unfinished."""
    return lambda job: DiscordGridListener(
        bot, user_id=job.user_id, channel_id=job.channel_id, guild_id=job.guild_id, resumed=True
    )


def post_finder(bot) -> DiscordPosts:
    """Where the job service looks for a job's post before repeating it (exactly-once posting)."""
    return DiscordPosts(bot)


async def setup(bot) -> None:
    bot.add_dynamic_items(JobButton, ImageButton, ImageSelect, CellSelect)
    await bot.add_cog(Imagine(bot))
    await bot.add_cog(Xyz(bot))
