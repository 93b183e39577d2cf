"""`SdBot`: the discord.py client, its command tree's one error handler, and start-up wiring.

The database, engine worker and journal (`bot.runner.Core`) are opened by `bot.runner` and handed in; the bot
builds the services on them with its Discord adapters. `setup_hook` runs after login and before the gateway
connects, so before any command arrives: it loads the bans, loads the feature areas (`bot.exts.*`), picks up
what a previous run left unfinished (jobs, review items, journaled commands) and syncs the commands when the
command tree changed since the last sync (a hash kept beside the journal) or when `sdbot sync` asks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from asyncio_throttle import Throttler
from discord import app_commands
from discord.ext import commands

from bot.channel_edits import ChannelEdits
from bot.config import Config
from bot.errors import UserError
from bot.services import Services
from bot.store.errors import StoreError
from engine.errors import EngineError

if TYPE_CHECKING:
    from bot.runner import Core

log = logging.getLogger(__name__)

EXTENSIONS = ("bot.exts.imagine", "bot.exts.presets", "bot.exts.info", "bot.exts.moderation")
USER_ERRORS = (UserError, EngineError, StoreError)


def user_message(error: BaseException) -> str:
    """What the user sees for an error: ours verbatim, anything else as an id to quote (the input is kept)."""
    while isinstance(error, (app_commands.CommandInvokeError, app_commands.TransformerError)) and error.__cause__:
        error = error.__cause__
    if isinstance(error, USER_ERRORS):
        return f"⚠️ {error}"
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

    In memory (`bot.services.bans`), so it adds no database work before the answer."""
    client = interaction.client
    if not isinstance(client, SdBot):
        return True
    ban = client.services.bans.ban_of(interaction.user.id, interaction.guild_id)
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
    def __init__(self, config: Config, core: Core, *, force_sync: bool = False, **options: Any) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        settings = config.settings.discord
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            tree_cls=SdTree,
            guild_ready_timeout=0.05,
            allowed_mentions=discord.AllowedMentions(users=True, everyone=False, roles=False),
            **options,
        )
        self.config = config
        self.force_sync = force_sync
        self.services: Services = _services(core, self)
        # discord.py already honours Discord's buckets; this caps our own REST calls beyond that.
        self.api_throttle = Throttler(rate_limit=settings.api_calls_per_s, period=1.0)
        # Progress edits (best effort) may use half of that at most, so results always find room.
        self.progress_throttle = Throttler(rate_limit=max(1, settings.api_calls_per_s // 2), period=1.0)
        self._channel_edits: dict[int, ChannelEdits] = {}
        self.recovered: tuple[int, int] | None = None  # (re-run, re-posted), once `setup_hook` recovered

    def channel_edits(self, channel_id: int) -> ChannelEdits:
        """The pace of progress edits in a channel (finals do not take part: they never wait for progress)."""
        if channel_id not in self._channel_edits:
            s = self.config.settings.discord
            self._channel_edits[channel_id] = ChannelEdits(s.edits_per_channel, s.edit_period_s)
        return self._channel_edits[channel_id]

    async def setup_hook(self) -> None:
        for name in EXTENSIONS:
            await self.load_extension(name)
        if self.force_sync:  # `sdbot sync`: push the commands, nothing else
            await self.sync_commands()
            return
        await self.services.bans.load()
        await self.recover()
        await self.sync_commands()

    async def recover(self) -> None:
        """What a previous run left: jobs to re-run or post, review items never shown, journaled commands.

        Before any command is taken, so every unfinished job is the previous run's; only this process's guilds
        (another process, on the other shards, picks up its own)."""
        self.recovered = rerun, posted = await self.services.jobs.recover(self.serves)
        if rerun or posted:
            log.info("recovered %d jobs to re-run and %d to post", rerun, posted)
        if await self.services.review.recover(self.serves):
            log.info("posted review items a previous run left unshown")
        imagine = self.get_cog("Imagine")
        if imagine is not None:
            await imagine.recover()  # the journal's acknowledged but unsaved commands

    async def sync_commands(self) -> bool:
        """Push the command tree to Discord when it changed since the last push (or `force_sync`); returns
        whether it did. The tree's hash is kept in a file beside the journal."""
        settings = self.config.settings.discord
        if not (settings.command_sync or self.force_sync):
            return False
        scopes: list[discord.Object | None] = [discord.Object(id=g) for g in settings.guild_ids] or [None]
        for guild in scopes:
            if guild is not None:
                self.tree.copy_global_to(guild=guild)
        digest = self.tree_hash(scopes)
        path = command_hash_path(self.config)
        if not self.force_sync and path.is_file() and path.read_text().strip() == digest:
            log.info("commands unchanged since the last sync; not syncing (sdbot sync forces it)")
            return False
        for guild in scopes:
            await self.tree.sync(guild=guild)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(digest + "\n")
        log.info("commands synced (%s)", ", ".join(str(g.id) for g in scopes if g) or "global")
        return True

    def tree_hash(self, scopes: list[discord.Object | None]) -> str:
        payload = {
            str(g.id) if g else "global": sorted(
                (c.to_dict(self.tree) for c in self.tree.get_commands(guild=g)),
                key=lambda d: (d.get("type", 1), d["name"]),
            )
            for g in scopes
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def serves(self, guild_id: int | None) -> bool:
        """Whether this process serves the guild (None: direct messages): always, unless sharded (below)."""
        return True

    async def on_ready(self) -> None:
        log.info("connected as %s (%s)", self.user, self.user.id if self.user else "?")


class ShardedSdBot(SdBot, commands.AutoShardedBot):
    """`[discord] shards` / `shard_ids`: discord.py's sharded client, one gateway connection per shard.

    Several processes may share the shards (each its `shard_ids`) and one database: everything a guild does comes
    on its shard, so it is served by one process; jobs are recovered at start only for this process's guilds."""

    def __init__(self, config: Config, core: Core, *, force_sync: bool = False) -> None:
        settings = config.settings.discord
        # "auto": discord.py asks GET /gateway/bot for Discord's recommended count; no shard_ids: all of them.
        super().__init__(
            config,
            core,
            force_sync=force_sync,
            shard_count=None if settings.shards == "auto" else settings.shards,
            shard_ids=settings.shard_ids or None,
        )

    async def setup_hook(self) -> None:
        if self.shard_count is None:  # "auto": recovery must know the count before the shards are launched
            self.shard_count, _, _ = await self.http.get_bot_gateway()
        await super().setup_hook()

    def serves(self, guild_id: int | None) -> bool:
        shard = 0 if guild_id is None else (guild_id >> 22) % (self.shard_count or 1)  # Discord's rule; DMs: 0
        return self.shard_ids is None or shard in self.shard_ids


def make_bot(config: Config, core: Core, *, force_sync: bool = False) -> SdBot:
    """The bot for this config: sharded when `[discord] shards` or `shard_ids` say so."""
    return (ShardedSdBot if config.settings.discord.sharded else SdBot)(config, core, force_sync=force_sync)


def command_hash_path(config: Config) -> Path:
    """Where the hash of the last synced command tree is kept: beside the journal (one per bot's data)."""
    return config.journal_path.with_name("sdbot-commands.sha256")


def _services(core: Core, bot: SdBot) -> Services:
    """The services on `core`, built with this bot's Discord adapters (the review channel, job messages)."""
    from bot.exts.imagine import recovery_listener
    from bot.exts.moderation import review_notifier
    from bot.runner import DiscordSide, build_services

    return build_services(core, DiscordSide(review_notifier(bot), recovery_listener(bot)))
