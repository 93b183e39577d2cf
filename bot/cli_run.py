"""`sdbot run`: start the bot (or, with --check, validate config, database and models and exit)."""

from __future__ import annotations

import argparse
import os

from bot.config import load_config
from bot.errors import UserError


def add_parsers(sub) -> None:
    p = sub.add_parser("run", help="run the Discord bot")
    p.add_argument("--config", metavar="F")
    p.add_argument("--check", action="store_true", help="validate config, database and models, then exit")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.check:
        from engine.models import ModelLibrary

        library = ModelLibrary(config.engine_config())
        checkpoint = library.checkpoint("")
        print(f"config ok ({config.source or 'embedded defaults'}); default model: {checkpoint.name}")
        return 0
    token_env = config.settings.discord.token_env
    if not os.environ.get(token_env):
        raise UserError(
            f"no Discord bot token: set the {token_env} environment variable "
            f"(Discord Developer Portal > your application > Bot > Reset Token)"
        )
    raise UserError("the Discord front end is not built yet; try `sdbot render` meanwhile")
