"""Server moderation: /config for the guild's rules, /mod and the review queue's buttons."""

from bot.exts.moderation._notify import DiscordReviewNotifier

__all__ = ["review_notifier", "setup"]


def review_notifier(bot):
    """The review queue's Discord side, which the bot builds its services with."""
    return DiscordReviewNotifier(bot)


async def setup(bot) -> None:
    from bot.exts.moderation._cog import Moderation
    from bot.exts.moderation._views import ModButton

    bot.add_dynamic_items(ModButton)
    await bot.add_cog(Moderation(bot))
