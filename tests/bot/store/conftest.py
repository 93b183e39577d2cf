"""Fixtures for the store tests: a real database migrated through the real Alembic migrations.

Every test gets a fresh SQLite file in `tmp_path`: a copy of one file migrated to head once per run (the
migrations themselves are tested from empty in test_migrate.py). Tests that take `any_engine` (or `any_sessions`) run a second
time against PostgreSQL when `SDBOT_TEST_PG_URL` is set (e.g. postgresql+asyncpg://user@localhost/sdbot_test);
that database's public schema is wiped before each such test.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.store import migrate
from bot.store.db import make_engine, make_sessions

PG_URL = os.environ.get("SDBOT_TEST_PG_URL", "")


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


async def _wiped_pg(url: str) -> AsyncEngine:
    eng = make_engine(url)
    async with eng.begin() as conn:
        await conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        await conn.exec_driver_sql("CREATE SCHEMA public")
    return eng


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.skipif(not PG_URL, reason="SDBOT_TEST_PG_URL is not set")),
    ]
)
async def any_engine(request: pytest.FixtureRequest, db_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated database: SQLite, and PostgreSQL too when SDBOT_TEST_PG_URL is set."""
    if request.param == "sqlite":
        eng = await _sqlite_copy(db_url, request.getfixturevalue("migrated_template"))
    else:
        eng = await _wiped_pg(PG_URL)
        await migrate.upgrade(eng)
    yield eng
    await eng.dispose()


@pytest.fixture
def any_sessions(any_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessions(any_engine)


@pytest.fixture
def pg_url() -> str:
    if not PG_URL:
        pytest.skip("SDBOT_TEST_PG_URL is not set")
    return PG_URL
