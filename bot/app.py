"""`SdBot`: the discord.py client, its command tree's one error handler, and start-up wiring.

Long-lived resources (database sessions, the engine worker, the job service) are built by `bot.runner` and
handed in; `setup_hook` loads the feature areas (`bot.exts.*`), registers the persistent job buttons, syncs
commands where configured and picks up jobs a previous run left unfinished.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import discord
from asyncio_throttle import Throttler
from discord import app_commands
from discord.ext import commands

from bot.config import Config
from bot.errors import UserError
from bot.channel_edits import ChannelEdits
from bot.services import Services
from bot.store.errors import StoreError
from engine.errors import EngineError

log = logging.getLogger(__name__)

EXTENSIONS = ("bot.exts.imagine", "bot.exts.presets", "bot.exts.info", "bot.exts.moderation")
USER_ERRORS = (UserError, EngineError, StoreError)


def user_message(error: BaseException) -> str:
    """What the user sees for an error: ours verbatim, anything else as an id to quote (the input is kept)."""
    while isinstance(error, (app_commands.CommandInvokeError, app_commands.TransformerError)) and error.__cause__:
        error = error.__cause__
    if isinstance(error, USER_ERRORS):
        return f"⚠️ {error}"
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"⚠️ you're going fast: try again in {error.retry_after:.0f} s"
    if isinstance(error, app_commands.CheckFailure):
        return f"⚠️ {error}" if str(error) else "⚠️ you can't use this here"
    error_id = uuid.uuid4().hex[:8]
    log.error("unexpected error %s", error_id, exc_info=error)
    return f"something went wrong (error id {error_id}); nothing you typed was lost, please try again"


async def reply_error(interaction: discord.Interaction, error: BaseException) -> None:
    """Tell the user ephemerally, whether or not the interaction was answered already."""
    text = user_message(error)[:2000]
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException:
        log.warning("could not report an error to the user", exc_info=True)


async def admit(interaction: discord.Interaction) -> bool:
    """The one ban check, for commands and buttons alike: a banned user gets one clear message and nothing runs.

    In memory (the moderation service keeps the bans), so it adds no database work before the answer."""
    moderation = getattr(getattr(interaction.client, "services", None), "moderation", None)
    ban = moderation.ban_of(interaction.user.id, interaction.guild_id) if moderation is not None else None
    if ban is None:
        return True
    try:
        if interaction.type is discord.InteractionType.autocomplete:
            await interaction.response.autocomplete([])
        elif not interaction.response.is_done():
            await interaction.response.send_message(ban.message(), ephemeral=True)
    except discord.HTTPException:
        log.warning("could not tell a banned user", exc_info=True)
    return False


class SdTree(app_commands.CommandTree):
    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await admit(interaction)

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await reply_error(interaction, error)


class SdBot(commands.Bot):
    def __init__(self, config: Config, services: Services, **options: Any) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        settings = config.settings.discord
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, help_command=None,
                         tree_cls=SdTree, guild_ready_timeout=0.05,
                         allowed_mentions=discord.AllowedMentions(users=True, everyone=False, roles=False), **options)
        self.config = config
        self.services = services
        # discord.py already honours Discord's buckets; this caps our own REST calls beyond that.
        self.api_throttle = Throttler(rate_limit=settings.api_calls_per_s, period=1.0)
        # Progress edits (best effort) may use half of that at most, so results always find room.
        self.progress_throttle = Throttler(rate_limit=max(1, settings.api_calls_per_s // 2), period=1.0)
        self._channel_edits: dict[int, ChannelEdits] = {}
        self.recovered: tuple[int, int] | None = None

    def channel_edits(self, channel_id: int) -> ChannelEdits:
        """The pace of progress edits in a channel (finals do not take part: they never wait for progress)."""
        if channel_id not in self._channel_edits:
            s = self.config.settings.discord
            self._channel_edits[channel_id] = ChannelEdits(s.edits_per_channel, s.edit_period_s)
        return self._channel_edits[channel_id]

    async def setup_hook(self) -> None:
        for name in EXTENSIONS:
            await self.load_extension(name)
        settings = self.config.settings.discord
        if settings.command_sync:
            if settings.guild_ids:
                for guild_id in settings.guild_ids:
                    guild = discord.Object(id=guild_id)
                    self.tree.copy_global_to(guild=guild)
                    await self.tree.sync(guild=guild)
            else:
                await self.tree.sync()

    def serves(self, guild_id: int | None) -> bool:
        """Whether this process serves the guild (None: direct messages): always, unless sharded (below)."""
        return True

    async def on_ready(self) -> None:
        log.info("connected as %s (%s)", self.user, self.user.id if self.user else "?")
        if self.recovered is None:
            # Only this process's guilds: another process, on the other shards, picks up its own.
            self.recovered = await self.services.jobs.recover(self.serves)
            if any(self.recovered):
                log.info("recovered %d jobs to re-run and %d to post", *self.recovered)
            if self.services.moderation is not None and await self.services.moderation.recover(self.serves):
                log.info("posted review items a previous run left unshown")
            for cog in list(self.cogs.values()):  # e.g. the journal's acknowledged but unsaved commands
                if hasattr(cog, "recover"):
                    await cog.recover()


class ShardedSdBot(SdBot, commands.AutoShardedBot):
    """`[discord] shards` / `shard_ids`: discord.py's sharded client, one gateway connection per shard.

    Several processes may share the shards (each its `shard_ids`) and one database: everything a guild does comes
    on its shard, so it is served by one process; jobs are recovered at start only for this process's guilds."""

    def __init__(self, config: Config, services: Services) -> None:
        settings = config.settings.discord
        # "auto": discord.py asks GET /gateway/bot for Discord's recommended count; no shard_ids: all of them.
        super().__init__(config, services, shard_count=None if settings.shards == "auto" else settings.shards,
                         shard_ids=settings.shard_ids or None)

    def serves(self, guild_id: int | None) -> bool:
        shard = 0 if guild_id is None else (guild_id >> 22) % (self.shard_count or 1)  # Discord's rule; DMs: 0
        return self.shard_ids is None or shard in self.shard_ids


def make_bot(config: Config, services: Services) -> SdBot:
    """The bot for this config: sharded when `[discord] shards` or `shard_ids` say so."""
    return (ShardedSdBot if config.settings.discord.sharded else SdBot)(config, services)
