"""Server moderation: /config for the guild's rules, /mod and the review queue's buttons."""

from bot.exts.moderation._actor import actor_of

__all__ = ["actor_of", "setup"]


async def setup(bot) -> None:
    # Imported here: the imagine area imports `actor_of` from this package, and the notifier imports imagine's
    # job listener, so the cog's modules load only once both packages exist.
    from bot.exts.moderation._cog import Moderation
    from bot.exts.moderation._notify import DiscordReviewNotifier
    from bot.exts.moderation._views import ModButton

    if bot.services.moderation is None:
        return
    bot.add_dynamic_items(ModButton)
    bot.services.moderation.notifier = DiscordReviewNotifier(bot)
    await bot.add_cog(Moderation(bot))
