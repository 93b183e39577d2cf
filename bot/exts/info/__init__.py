"""/queue, /models, /info and the "Image info" message menu."""

from bot.exts.info._cog import CancelButton, Info


async def setup(bot) -> None:
    bot.add_dynamic_items(CancelButton)
    await bot.add_cog(Info(bot))
