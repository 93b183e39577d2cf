"""Migrations from empty, up and down and up again, and `check` (models vs. migrations) from code."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from bot.store import migrate
from bot.store.db import make_engine
from bot.store.errors import NotMigrated
from bot.store.models import Base

TABLES = {t.name for t in Base.metadata.sorted_tables}


async def _tables(engine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_up_down_up_from_empty(any_engine):
    """Head creates every model table; base removes them all; head again works on the emptied database."""
    assert await migrate.current(any_engine) == migrate.head()
    assert await _tables(any_engine) >= TABLES
    await migrate.downgrade(any_engine, "base")
    assert await migrate.current(any_engine) is None
    assert not (TABLES & await _tables(any_engine))
    await migrate.upgrade(any_engine)
    assert await migrate.current(any_engine) == migrate.head()
    assert await _tables(any_engine) >= TABLES


async def test_upgrade_twice_is_a_no_op(any_engine):
    """Running upgrade at head changes nothing (what `sdbot run` does at every start)."""
    await migrate.upgrade(any_engine)
    assert await migrate.current(any_engine) == migrate.head()


async def test_check_is_clean(any_engine):
    """The models and the migrations agree (`alembic check`)."""
    assert await migrate.check(any_engine) == []


async def test_check_reports_a_difference(any_engine):
    """A table the models do not know is reported, one line per difference."""
    async with any_engine.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE stray (id INTEGER PRIMARY KEY)")
    assert await migrate.check(any_engine) == ["remove table stray"]


async def test_check_needs_head(any_url):
    """Like `alembic check`, a database that is not at head is refused with a hint."""
    eng = make_engine(any_url)
    try:
        with pytest.raises(NotMigrated, match="sdbot db upgrade"):
            await migrate.check(eng)
    finally:
        await eng.dispose()


async def test_migrations_need_no_ini_file():
    """The Alembic config is built in code and points at the installed migrations package."""
    cfg = migrate.alembic_config()
    assert cfg.config_file_name is None
    assert (migrate.migrations_dir() / "env.py").is_file()
    assert migrate.head() == "0007"
