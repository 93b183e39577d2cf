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
    """`run --check`: one line per part, and nothing written (no database file, no migration, no journal, no demo
    model): a check reports what `sdbot run` would find."""
    from bot.runner import load_classifier

    print(f"config: ok ({config.source or 'embedded defaults'})")
    print(f"database: {await _database_state(config.database_url)}")
    print(f"models: {_models_state(config)}")
    print(f"engine: {_engine_state(config)}")
    classifier = await load_classifier(config)
    if classifier is not None:
        print(
            f"image classifier: ok: {config.image_classifier} (labels {', '.join(classifier.labels)}; unsafe: "
            f"{', '.join(config.settings.moderation.unsafe_labels)})"
        )
    return 0


async def _database_state(url: str) -> str:
    from bot.store import migrate
    from bot.store.db import check_writable, make_engine, ping, sqlite_path

    db = make_engine(url)  # a URL that cannot work (bad syntax, no such folder) stops here, as one line
    path = sqlite_path(url)
    if path is not None and not path.expanduser().exists():  # opening it would create it
        await db.dispose()
        return f"not created yet: {_pending(migrate.pending(None))}"
    try:
        await ping(db)
        todo = migrate.pending(await migrate.current(db))
        if todo:
            return _pending(todo)
        await check_writable(db)
        differences = await migrate.check(db)
    finally:
        await db.dispose()
    if differences:
        return f"up to date, but the models and the migrations differ: {'; '.join(differences)}"
    return "up to date"


def _pending(revisions: list[str]) -> str:
    n = len(revisions)
    return f"{n} migration{'s' * (n != 1)} pending (sdbot db upgrade applies {'them' if n != 1 else 'it'})"


def _models_state(config: Config) -> str:
    from engine.models.loader import ModelLibrary
    from engine.render.refusals import refused_files

    library = ModelLibrary(config.engine_config())
    checkpoints = library.checkpoints()
    refused = refused_files(config.engine_config())
    also = f", {len(refused)} files refused (sdbot models names them)" if refused else ""
    if not checkpoints and not config.engine_config().default_model:
        return f"no checkpoint in {library.root} (the tiny demo model is written there at the first start){also}"
    default = library.checkpoint("")  # the configured one must exist
    return f"default {default.name}, {len(checkpoints)} checkpoints, {len(library.vaes())} VAEs{also}"


def _engine_state(config: Config) -> str:
    """The engine `sdbot run` would start, and where (not started here)."""
    from engine.models.loader import resolve_device, resolve_dtype

    engine = config.engine_config()
    if engine.backend == "ray":
        ray = engine.ray
        return (
            f"ray at {ray.address or 'a local Ray'}, {ray.replicas} replica(s) of {ray.num_gpus:g} GPU "
            f"and {ray.num_cpus:g} CPU each"
        )
    device = resolve_device(engine.device)
    dtype = str(resolve_dtype(engine.dtype, device)).removeprefix("torch.")
    where = "a child process" if engine.isolation == "process" else "the bot's process"
    return f"local, in {where}, on {device.type} ({dtype})"
