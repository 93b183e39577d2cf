"""A real PostgreSQL server for the tests: the one `SDBOT_TEST_PG_URL` names, or a throwaway one started here.

The throwaway server comes from the `pgserver` wheel (in the `dev` extra): PostgreSQL's own binaries inside a
Python package, so `git clone && make test` needs no system package and no running service. Its data folder is a
fresh temporary directory, it listens on a Unix socket only, and it is stopped and deleted when the test run
ends. PostgreSQL refuses to run as root; as root (CI), pgserver runs it as a system user `pgserver` that it creates
with `useradd`. Durability is switched off (`fsync`, `synchronous_commit`): a crash only loses test data.

`start()` returns the URL, or raises `NoPostgres` with a sentence saying why none could be had, which the
fixtures turn into the skip message. `wiped(url)` empties that database for a test.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.store.db import make_engine

ENV_URL = "SDBOT_TEST_PG_URL"


class NoPostgres(RuntimeError):
    """Neither `SDBOT_TEST_PG_URL` nor a local server: the PostgreSQL tests are skipped with this message."""


def start() -> str:
    """A `postgresql+asyncpg://` URL of a server that accepts connections now (its `postgres` database)."""
    given = os.environ.get(ENV_URL, "").strip()
    if given:
        return given
    try:
        import asyncpg  # noqa: F401  (the driver the bot uses; without it nothing below is worth starting)

        with warnings.catch_warnings():  # platformdirs warns at import when XDG_RUNTIME_DIR is not set (CI)
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError as exc:
        raise NoPostgres(
            f"no PostgreSQL for the tests: {exc.name} is not installed (`pip install -e .[dev]` installs it) "
            f"and {ENV_URL} is not set"
        ) from None
    # Not under pytest's basetemp: pgserver opens every parent folder to its system user, and pytest wants its
    # own folders private. A short path also keeps the Unix socket's path under its 107-byte limit.
    folder = Path(tempfile.mkdtemp(prefix="sdbot-pg-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # runs after pgserver's own stop-and-delete
    data = folder / "data"
    try:
        server = pgserver.get_server(data, cleanup_mode="delete")
        server.psql(
            "ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET synchronous_commit = off; "
            "ALTER SYSTEM SET full_page_writes = off; SELECT pg_reload_conf();"
        )
    except Exception as exc:  # noqa: BLE001  (any reason at all is a reason to skip, shown in the message)
        raise NoPostgres(
            f"no PostgreSQL for the tests: pgserver could not start one ({exc!r}); "
            f"set {ENV_URL} to a server's URL instead"
        ) from None
    # pgserver's URI is postgresql://postgres:@/postgres?host=/socket/dir
    return server.get_uri().replace("postgresql://", "postgresql+asyncpg://", 1)


async def wiped(url: str) -> AsyncEngine:
    """An engine on `url` whose public schema was just dropped and made again: an empty database."""
    eng = make_engine(url)
    async with eng.begin() as conn:
        await conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        await conn.exec_driver_sql("CREATE SCHEMA public")
    return eng
