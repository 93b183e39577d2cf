"""`sdbot run`: start the bot (or, with --check, validate config, database and models and exit)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from bot.config import Config, load_config
from bot.errors import UserError


def add_parsers(sub) -> None:
    p = sub.add_parser("run", help="run the Discord bot")
    p.add_argument("--config", metavar="F")
    p.add_argument("--check", action="store_true", help="validate config, database and models, then exit")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("sync", help="push the slash commands to Discord now (`run` pushes them only when changed)")
    p.add_argument("--config", metavar="F")
    p.set_defaults(func=cmd_sync)


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.check:
        return asyncio.run(_check(config))
    asyncio.run(_run(config, _token(config)))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from bot.app import sync_commands

    config = load_config(args.config)
    asyncio.run(_refusals(config, sync_commands(config, _token(config))))
    print("commands synced")
    return 0


def _token(config: Config) -> str:
    token_env = config.settings.discord.token_env
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise UserError(
            f"no Discord bot token: set the {token_env} environment variable "
            f"(Discord Developer Portal > your application > Bot > Reset Token); see README.md"
        )
    return token


async def _run(config: Config, token: str) -> None:
    from bot.app import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await _refusals(config, serve(config, token, stop))


async def _refusals(config: Config, work) -> None:
    """Discord's refusals as one line."""
    import discord

    try:
        await work
    except discord.LoginFailure:
        raise UserError(
            f"Discord refused the token in {config.settings.discord.token_env}; reset it in "
            "the Developer Portal and try again"
        ) from None
    except discord.PrivilegedIntentsRequired:
        raise UserError("Discord refused a privileged intent; sdbot needs none, check the application") from None


async def _check(config: Config) -> int:
    from bot.runner import load_classifier
    from bot.store import migrate
    from bot.store.db import check_writable, make_engine, ping
    from engine.models.loader import ModelLibrary
    from engine.tiny.models import ensure_demo_model

    db = make_engine(config.database_url)
    try:
        await ping(db)
        await migrate.upgrade(db)
        await check_writable(db)
        pending = await migrate.check(db)
    finally:
        await db.dispose()
    ensure_demo_model(config.engine_config())
    library = ModelLibrary(config.engine_config())
    checkpoint = library.checkpoint("")
    classifier = await load_classifier(config)
    print(f"config ok ({config.source or 'embedded defaults'})")
    print(f"database ok ({len(pending)} differences between models and migrations)")
    print(f"models ok: default {checkpoint.name}, {len(library.checkpoints())} checkpoints, {len(library.vaes())} VAEs")
    if classifier is not None:
        print(
            f"image classifier ok: {config.image_classifier} (labels {', '.join(classifier.labels)}; unsafe: "
            f"{', '.join(config.settings.moderation.unsafe_labels)})"
        )
    return 0
