"""Opening the database: SQLite settings, clear errors for bad URLs, busy handling and retried transactions."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import pytest
from sqlalchemy import text

from bot.store import db
from bot.store.errors import DatabaseBusy, DatabaseUnavailable


async def test_sqlite_pragmas(engine):
    """Every connection runs in WAL mode with foreign keys on and a busy timeout."""
    async with engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
        assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == db.DEFAULT_BUSY_TIMEOUT_MS


async def test_foreign_keys_are_enforced(any_sessions):
    """A preset for a user row that does not exist is refused by the database itself."""
    with pytest.raises(Exception, match="(?i)foreign key"):
        async with any_sessions.begin() as s:
            await s.execute(
                text(
                    "INSERT INTO presets (user_id, name, name_key, options, created_at, updated_at) "
                    "VALUES (404, 'x', 'x', '{}', '2026-01-01', '2026-01-01')"
                )
            )


async def test_write_transactions_begin_immediate(engine, db_url):
    """A write session holds SQLite's write lock from BEGIN on; a read-only session does not."""
    path = db.sqlite_path(db_url)
    for read_only, locked in ((False, True), (True, False)):
        sessions = db.make_sessions(engine, read_only=read_only)
        async with sessions.begin() as s:
            await s.execute(text("SELECT 1"))
            other = sqlite3.connect(path, timeout=0)
            try:
                if locked:
                    with pytest.raises(sqlite3.OperationalError, match="locked"):
                        other.execute("BEGIN IMMEDIATE")
                else:
                    other.execute("BEGIN IMMEDIATE")
                    other.rollback()
            finally:
                other.close()


@pytest.mark.parametrize(
    "url, message",
    [
        ("", "the database URL is empty"),
        ("not a url", "is not valid"),
        ("sqlite+aiosqlite:////no/such/dir/x.db", "directory /no/such/dir does not exist"),
        ("nosuchdb://h/x", "unknown database type"),
        ("sqlite+pysqlite:///x.db", "async driver"),
    ],
)
def test_bad_urls_are_one_clear_line(url, message):
    """URLs that cannot work stop with a StoreError naming the problem (and never a password)."""
    with pytest.raises(DatabaseUnavailable, match=message) as info:
        db.make_engine(url)
    assert "\n" not in str(info.value)


def test_sqlite_url_to_a_directory(tmp_path):
    with pytest.raises(DatabaseUnavailable, match="is a directory"):
        db.make_engine(f"sqlite+aiosqlite:///{tmp_path}")


async def test_unreachable_server_is_one_line():
    """A server that refuses the connection is reported by ping() without the password."""
    pytest.importorskip("asyncpg")
    engine = db.make_engine("postgresql+asyncpg://bot:hunter2@127.0.0.1:1/sdbot")
    try:
        with pytest.raises(DatabaseUnavailable, match=r"cannot open database .*bot:\*\*\*@") as info:
            await db.ping(engine)
        assert "hunter2" not in str(info.value)
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://bot:hunter2@db/sdbot", "postgresql+asyncpg://bot:***@db/sdbot"),
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("weird://bot:hunter2@host:not-a-port/x", "weird://bot:***@host:not-a-port/x"),
    ],
)
def test_hide_password(url, shown):
    assert db.hide_password(url) == shown


@contextlib.contextmanager
def _write_lock_held(path):
    """Another process (a plain sqlite3 connection) holds the database's write lock until the block ends."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield holder
    finally:
        holder.rollback()
        holder.close()


async def test_locked_database_becomes_database_busy(tmp_path):
    """A lock held past the busy timeout surfaces as DatabaseBusy, not as the driver's 'database is locked'."""
    engine = db.make_engine(f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}", busy_timeout_ms=50)
    try:
        with _write_lock_held(tmp_path / "busy.db"), pytest.raises(DatabaseBusy) as info:
            async with db.make_sessions(engine).begin() as s:
                await s.execute(text("SELECT 1"))
        assert str(info.value) == db.BUSY_MESSAGE
    finally:
        await engine.dispose()


async def test_transaction_retries_until_the_lock_is_gone(tmp_path):
    """`transaction()` re-runs the unit of work while another process holds the write lock."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'retry.db'}"
    engine = db.make_engine(url, busy_timeout_ms=20)
    sessions = db.make_sessions(engine)
    holder = sqlite3.connect(tmp_path / "retry.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    calls = 0

    async def work(s):
        nonlocal calls
        calls += 1
        return (await s.execute(text("SELECT 42"))).scalar()

    async def release_after_a_retry():  # the unit of work is re-run: its first run found the lock
        while calls < 2:
            await asyncio.sleep(0.005)
        holder.rollback()

    try:
        result, _ = await asyncio.wait_for(asyncio.gather(db.transaction(sessions, work), release_after_a_retry()), 30)
        assert result == 42 and calls >= 2
    finally:
        holder.close()
        await engine.dispose()


async def test_transaction_gives_up_with_a_clear_message(tmp_path, monkeypatch):
    """When the lock never goes away, the user gets 'the database is busy' after the last attempt."""
    monkeypatch.setattr(db, "TRANSACTION_ATTEMPTS", 2)
    engine = db.make_engine(f"sqlite+aiosqlite:///{tmp_path / 'stuck.db'}", busy_timeout_ms=10)
    holder = sqlite3.connect(tmp_path / "stuck.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")

    async def work(s):
        await s.execute(text("SELECT 1"))

    try:
        with pytest.raises(DatabaseBusy, match="busy"):
            await db.transaction(db.make_sessions(engine), work)
    finally:
        holder.rollback()
        holder.close()
        await engine.dispose()


def test_busy_error_detection():
    locked = sqlite3.OperationalError("database is locked")
    assert db.is_busy_error(locked)
    assert not db.is_busy_error(sqlite3.OperationalError("no such table: x"))

    class PgError(Exception):
        sqlstate = "40001"

    assert db.is_busy_error(PgError())
