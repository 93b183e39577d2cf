"""`sdbot db upgrade | check | url`: the database's schema from the command line.

The URL is the config's (`SDBOT_DATABASE_URL` wins over `[database] url`; default sdbot.db beside the config).
A URL that cannot be opened is a `StoreError`, which `bot.cli` prints as one line (exit 2). `db check` exits 1,
as `alembic check` does, when the models and the migrations differ (or the database is not at head).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import load_config
from bot.store import migrate
from bot.store.db import hide_password, make_engine, parse_url, sqlite_path
from bot.store.errors import NotMigrated


def add_parsers(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="database schema: upgrade, check, url", description=__doc__.splitlines()[0])
    actions = db.add_subparsers(dest="db_command", metavar="ACTION")
    actions.required = True
    for name, func, text in (
        ("upgrade", cmd_upgrade, "migrate the database to the newest schema (also done by `sdbot run`)"),
        ("check", cmd_check, "exit 1 when the models and the migrations differ, as `alembic check` does"),
        ("url", cmd_url, "print the database URL in use, password hidden"),
    ):
        parser = actions.add_parser(name, help=text, description=text)
        parser.add_argument("--config", metavar="FILE", help="config file (default: ./config.toml if present)")
        parser.set_defaults(func=func)


def _url(args: argparse.Namespace) -> str:
    url = load_config(args.config).database_url
    parse_url(url)  # a malformed URL stops here, as one line
    return url


def cmd_upgrade(args: argparse.Namespace) -> int:
    url = _url(args)
    before = asyncio.run(migrate.upgrade_url(url))
    head = migrate.head()
    if before == head:
        print(f"{hide_password(url)}: already at revision {head}")
    else:
        print(f"{hide_password(url)}: upgraded from {before or 'an empty database'} to revision {head}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    url = _url(args)
    engine = make_engine(url)  # a URL that cannot work stops here (exit 2), before anything else
    path = sqlite_path(url)
    if path is not None and not path.exists():  # do not create an empty file just to find it empty
        print(f"sdbot: db check: database file {path} does not exist; run `sdbot db upgrade`", file=sys.stderr)
        return 1
    try:
        diffs = asyncio.run(_check(engine))
    except NotMigrated as exc:
        print(f"sdbot: db check: {exc}", file=sys.stderr)
        return 1
    if diffs:
        shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
        print(f"sdbot: db check: models and migrations differ ({len(diffs)}): {shown}", file=sys.stderr)
        return 1
    print(f"{hide_password(url)}: models and migrations match (revision {migrate.head()})")
    return 0


async def _check(engine: AsyncEngine) -> list[str]:
    try:
        return await migrate.check(engine)
    finally:
        await engine.dispose()


def cmd_url(args: argparse.Namespace) -> int:
    print(hide_password(_url(args)))
    return 0
