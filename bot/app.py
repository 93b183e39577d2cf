"""`SdBot`: the discord.py client, its command tree's one error handler, and start-up wiring; `serve` runs it
(`sdbot run`) and `sync_commands` pushes its commands (`sdbot sync`).

The database, engine worker and journal (`bot.runner.Core`) are opened by `bot.runner.open_core` and handed in; the
bot builds the services on them with its Discord adapters. `setup_hook` runs after login and before the gateway
connects, so before any command arrives: it loads the bans, loads the feature areas (`bot.exts.*`), picks up
what a previous run left unfinished (jobs, review items, journaled commands) and syncs the commands when the
command tree changed since the last sync (a hash kept beside the journal) or when `sdbot sync` asks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import discord
from asyncio_throttle import Throttler
from discord import app_commands
from discord.ext import commands

from bot.channel_edits import ProgressEdits
from bot.config import Config
from bot.discord_endpoints import point_discord_at
from bot.exts.common.interactions import admit, reply_error
from bot.runner import Core, DiscordSide, build_services, open_core
from bot.services import Services

log = logging.getLogger(__name__)


@runtime_checkable
class _Recovers(Protocol):
    """A cog that replays what a killed process left (the imagine area: its journal's commands)."""

    async def recover(self) -> int: ...


EXTENSIONS = ("bot.exts.imagine", "bot.exts.presets", "bot.exts.info", "bot.exts.moderation")


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
        slots = Throttler(rate_limit=max(1, settings.api_calls_per_s // 2), period=1.0)
        self.progress = ProgressEdits(settings.edits_per_channel, settings.edit_period_s, slots)
        self.recovered: tuple[int, int] | None = None  # (re-run, re-posted), once `setup_hook` recovered

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
        grids = await self.services.grids.recover(self.serves)  # first: the jobs' recovery leaves grids alone
        if grids:
            log.info("recovered %d X/Y/Z grids", grids)
        self.recovered = rerun, posted = await self.services.jobs.recover(self.serves)
        if rerun or posted:
            log.info("recovered %d jobs to re-run and %d to post", rerun, posted)
        if await self.services.review.recover(self.serves):
            log.info("posted review items a previous run left unshown")
        imagine = self.get_cog("Imagine")
        if isinstance(imagine, _Recovers):
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
    from bot.exts.imagine import post_finder, recovery_grid_listener, recovery_listener
    from bot.exts.moderation import review_notifier

    side = DiscordSide(review_notifier(bot), recovery_listener(bot), post_finder(bot), recovery_grid_listener(bot))
    return build_services(core, side)


class _NoEngine:
    """The engine backend of `sdbot sync`, which renders nothing (only what the services' constructors and
    `open_core` use of a `Backend`)."""

    in_process = False

    def start(self) -> None:
        pass

    async def ready(self) -> None:
        pass

    async def close(self, timeout: float | None = None) -> None:
        pass

    def submit(self, request: Any, *, job_id: str, owner: str, priority: bool = False, group: str | None = None):
        raise RuntimeError("sdbot sync renders nothing")

    def cancel(self, job_id: str) -> bool:
        return False

    def position(self, job_id: str) -> int | None:
        return None


async def sync_commands(config: Config, token: str) -> None:
    """`sdbot sync`: log in, push the command tree to Discord whatever the stored hash says, and stop."""
    settings = config.settings.discord
    point_discord_at(settings.api_base_url, settings.gateway_url)
    async with (
        open_core(config, lambda engine_config: _NoEngine()) as core,
        make_bot(config, core, force_sync=True) as bot,
    ):
        await bot.login(token)  # runs `setup_hook`, which syncs


async def serve(
    config: Config,
    token: str,
    stop: asyncio.Event | None = None,
    started: asyncio.Future | None = None,
    make_worker: Callable[[Any], Any] | None = None,
) -> None:
    """Run the bot until `stop` is set (or forever); `started` receives the bot once it is ready."""
    settings = config.settings.discord
    point_discord_at(settings.api_base_url, settings.gateway_url)
    async with open_core(config, make_worker) as core:
        bot = make_bot(config, core)
        async with bot:
            runner = asyncio.create_task(bot.start(token), name="discord")
            if started is not None:
                ready = asyncio.create_task(bot.wait_until_ready())
                await asyncio.wait([runner, ready], return_when=asyncio.FIRST_COMPLETED)
                if runner.done():
                    ready.cancel()
                    runner.result()  # raises the login or connection error
                started.set_result(bot)
            waiters = [runner] + ([asyncio.create_task(stop.wait())] if stop is not None else [])
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if runner.done():
                runner.result()
            for task in waiters[1:]:
                task.cancel()
            # Still connected: the running job may finish and post; new commands hear "restarting".
            bot.services.grids.shutdown()
            await bot.services.jobs.shutdown(settings.shutdown_timeout_s)
        await bot.services.moderation.close()  # decisions' posts in flight
        log.info("bot stopped")
