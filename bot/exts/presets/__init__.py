"""/preset: save, list, show, rename, delete, default, import and export option sets."""

from bot.exts.presets._cog import Presets


async def setup(bot) -> None:
    await bot.add_cog(Presets(bot))
