"""Alembic environment for sdbot: the async template plus batch mode and our models' metadata.

Two ways in:
- in-process (the app, `sdbot db ...`, the tests): `bot.store.migrate` opens the connection itself and passes it
  in `config.attributes["connection"]` (Alembic cookbook, "connection sharing"); nothing else is opened here;
- the `alembic` command line: the URL is `sqlalchemy.url` when the Alembic config sets one, else the one sdbot
  uses (`SDBOT_DATABASE_URL`, else `[database] url` in ./config.toml, else sdbot.db beside it).

`render_as_batch=True` from the first migration on: SQLite can barely ALTER, so autogenerate must emit
`batch_alter_table` (copy-and-move) operations. Note for future migrations that rebuild a table other tables
reference: SQLite's `PRAGMA foreign_keys` cannot be switched off inside a transaction, so such a migration
must not rely on ON DELETE actions firing while the old table is dropped.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection

from bot.store.models import Base, UTCDateTime

config = context.config

if config.config_file_name is not None:
    fileConfig(config.config_file_name)

target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from bot.config import load_config

    return load_config().database_url


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render our `UTCDateTime` as the plain column type, so migrations never import the app's models."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        render_item=render_item,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout (`alembic upgrade --sql`) without connecting."""
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    from bot.store.db import make_engine

    engine = make_engine(_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        asyncio.run(run_async_migrations())
    else:
        do_run_migrations(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
