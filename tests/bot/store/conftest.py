"""Fixtures for the store tests: a real database migrated through the real Alembic migrations.

Every test gets a fresh SQLite file in `tmp_path`: a copy of one file migrated to head once per run (the
migrations themselves are tested from empty in test_migrate.py). Tests that take `any_engine`, `any_sessions` or
`any_url` run twice: on SQLite, then on a real PostgreSQL: the server `SDBOT_TEST_PG_URL` names (e.g.
postgresql+asyncpg://user@localhost/sdbot_test), else a throwaway one the run starts itself (tests/postgres.py).
Each PostgreSQL test starts on emptied tables (or a wiped schema, for `any_url` and after a test that changed it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.store import migrate
from bot.store.db import make_engine, make_sessions
from bot.store.models import Base
from tests.postgres import wiped

MODEL_TABLES = {t.name for t in Base.metadata.sorted_tables}


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path / "sdbot.db")


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file taken to head by the real migrations, once per run; tests get copies of it."""
    path = tmp_path_factory.mktemp("template") / "head.db"

    async def build() -> None:
        eng = make_engine(sqlite_url(path))
        await migrate.upgrade(eng)
        await eng.dispose()  # the last connection to close checkpoints the WAL into the file

    # In a thread of its own: this may be set up while a test's event loop is already running.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, build()).result()
    return path


@pytest.fixture
async def engine(db_url: str, migrated_template: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated SQLite file of its own (a copy of the migrated template, checked to be at head)."""
    eng = await _sqlite_copy(db_url, migrated_template)
    yield eng
    await eng.dispose()


async def _sqlite_copy(db_url: str, template: Path) -> AsyncEngine:
    path = Path(db_url.removeprefix("sqlite+aiosqlite:///"))
    shutil.copyfile(template, path)
    eng = make_engine(db_url)
    await migrate.upgrade(eng)  # a no-op at head; cheap insurance that the copy is what it should be
    return eng


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessions(engine)


async def migrated_pg(url: str) -> AsyncEngine:
    """An engine on `url` at head with every table empty and every id counter back at 1.

    Emptying the tables of a database already at head (TRUNCATE) takes a few milliseconds where dropping the
    schema and migrating again takes a fifth of a second; a database in any other shape (a test migrated down,
    or left a table of its own) is wiped and migrated from empty.
    """
    eng = make_engine(url)
    async with eng.connect() as conn:
        found = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    if found == MODEL_TABLES | {"alembic_version"} and await migrate.current(eng) == migrate.head():
        async with eng.begin() as conn:
            await conn.exec_driver_sql(f"TRUNCATE {', '.join(sorted(MODEL_TABLES))} RESTART IDENTITY CASCADE")
        return eng
    await eng.dispose()
    eng = await wiped(url)
    await migrate.upgrade(eng)
    return eng


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_engine(request: pytest.FixtureRequest, db_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated database: a SQLite file, then a real PostgreSQL one (the test runs once on each)."""
    if request.param == "sqlite":
        eng = await _sqlite_copy(db_url, request.getfixturevalue("migrated_template"))
    else:
        eng = await migrated_pg(request.getfixturevalue("pg_server_url"))
    yield eng
    await eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_url(request: pytest.FixtureRequest, db_url: str) -> str:
    """The URL of an empty, never migrated database: a new SQLite file, then a wiped PostgreSQL one."""
    if request.param == "sqlite":
        return db_url
    url = request.getfixturevalue("pg_server_url")
    await (await wiped(url)).dispose()
    return url


@pytest.fixture
def any_sessions(any_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessions(any_engine)
