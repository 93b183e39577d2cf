"""Database faults: a lock held by another process, a database that turns read-only, one that starts so.

The user gets one clear message, no job row is half-written (none at all, or a complete one), nothing is
queued on the worker for a job the database does not have, and the queue moves again once the fault ends.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest
from sqlalchemy import event

from bot.store.db import READ_ONLY_MESSAGE
from tests.bot.harness import running_bot
from tests.reliability._helpers import (
    DISCORD,
    ENGINE,
    FAST,
    assert_delivered_once,
    marker_of,
    recovered,
    wait_until,
)

BUSY = "the database is busy; please try again in a moment"


async def error_text(ix) -> str:
    """The ephemeral error after a public defer: the "thinking…" message is deleted, a follow-up explains."""
    followup = await ix.wait_for(lambda r: r.method == "POST" and r.route.startswith("/webhooks/"), timeout=30)
    assert followup.json["flags"] & 64, followup.json
    return followup.json["content"]


async def hold_lock(path) -> sqlite3.Connection:
    """Another process's write lock (a backup, `sqlite3` by hand): `BEGIN EXCLUSIVE`, taken in a thread (the
    bot shares this event loop: blocking it while the bot holds the lock mid-transaction would deadlock)."""

    def take() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        conn.execute("BEGIN EXCLUSIVE")
        return conn

    return await asyncio.to_thread(take)


def job_rows(path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT id, status, interaction_id FROM jobs ORDER BY id").fetchall()


@pytest.fixture
async def quick_busy(tmp_path, tiny_sd15):
    """The bot with a 100 ms busy timeout, so a held lock turns into "busy" within about a second."""
    async with running_bot(
        tmp_path, tiny_sd15, engine=ENGINE, discord=DISCORD, database={"busy_timeout_ms": 100}, faults=True
    ) as running:
        await recovered(running)
        yield running


async def test_a_locked_database_gives_a_clear_error_and_no_job(quick_busy):
    s = quick_busy.standin
    path = quick_busy.config_path.parent / "sdbot.db"
    lock = await hold_lock(path)
    try:
        ix = await s.send_interaction(s.slash("imagine", {"prompt": f"a cat {FAST}"}))
        assert BUSY in await error_text(ix)
    finally:
        lock.rollback()
        lock.close()
    assert job_rows(path) == []
    assert quick_busy.services.worker.queued() == [] and quick_busy.services.worker.running() == []
    again = await s.send_interaction(s.slash("imagine", {"prompt": f"a dog {FAST}"}))
    assert_delivered_once(
        s, marker_of(await again.wait_original_message(lambda m: bool(m.get("attachments")), timeout=30))
    )
    s.assert_no_invalid_requests()


def busy_retries(caplog) -> list[str]:
    """The job service's "database unavailable …; retrying transition" warnings (`JobService._write`)."""
    return [r.getMessage() for r in caplog.records if "retrying transition" in r.getMessage()]


async def test_a_lock_during_a_job_delays_it_and_loses_nothing(quick_busy, caplog):
    """The lock is taken while the job renders: its status writes wait and retry, then it is posted once."""
    s = quick_busy.standin
    path = quick_busy.config_path.parent / "sdbot.db"
    rendering, locked = threading.Event(), threading.Event()

    def hold_the_render(attempt) -> None:  # in the worker thread: wait until the test holds the lock
        rendering.set()
        locked.wait(10)

    quick_busy.faults.inject = hold_the_render
    ix = await s.send_interaction(s.slash("imagine", {"prompt": f"a cat {FAST}"}))
    await wait_until(rendering.is_set, 30, "the render to start")
    await wait_until(lambda: job_rows(path) and job_rows(path)[0][1] == "running", 10, "the job to be running")
    lock = await hold_lock(path)
    locked.set()
    try:
        await wait_until(lambda: quick_busy.services.worker.stats.jobs_finished == 1, 30, "the render to end")
        # the `done` write fails "busy" and is retried, more than once, while the lock is held
        await wait_until(lambda: len(busy_retries(caplog)) >= 2, 30, "the `done` write to be retried twice")
        assert job_rows(path)[0][1] == "running"
    finally:
        lock.rollback()
        lock.close()
    message = await ix.wait_original_message(lambda m: bool(m.get("attachments")), timeout=30)
    job_id = marker_of(message)
    assert_delivered_once(s, job_id)
    await wait_until(lambda: job_rows(path)[0][1] == "posted", 10, "the job to be recorded as posted")
    s.assert_no_invalid_requests()


async def test_a_database_turned_read_only_gives_a_clear_error_and_no_job(bot):
    s = bot.standin
    db = bot.services.db

    def read_only(dbapi_connection, _record) -> None:  # as if the file or its mount had become read-only
        dbapi_connection.execute("PRAGMA query_only = ON")

    event.listen(db.sync_engine, "connect", read_only)
    await db.dispose()  # new connections from now on
    try:
        ix = await s.send_interaction(s.slash("imagine", {"prompt": f"a cat {FAST}"}))
        assert READ_ONLY_MESSAGE in await error_text(ix)
    finally:
        event.remove(db.sync_engine, "connect", read_only)
        await db.dispose()
    assert job_rows(bot.config_path.parent / "sdbot.db") == []
    assert bot.services.worker.queued() == [] and bot.services.worker.running() == []
    again = await s.send_interaction(s.slash("imagine", {"prompt": f"a dog {FAST}"}))
    assert await again.wait_original_message(lambda m: bool(m.get("attachments")), timeout=30)
    s.assert_no_invalid_requests()


def test_a_read_only_database_stops_the_start_with_one_line(tmp_path, capsys):
    """`sdbot run` (here `--check`, the same opening) refuses a database it cannot write, in one line."""
    from bot.cli import main

    db = tmp_path / "sdbot.db"
    assert main(["db", "upgrade", "--config", str(_config(tmp_path, f"sqlite+aiosqlite:///{db}"))]) == 0
    capsys.readouterr()
    config = _config(tmp_path, f"sqlite+aiosqlite:///file:{db}?mode=ro&uri=true")
    assert main(["run", "--check", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"sdbot: error: {READ_ONLY_MESSAGE}"


def _config(root, url: str):
    path = root / "config.toml"
    path.write_text(f'[database]\nurl = "{url}"\n[engine]\nmodels_dir = "{root / "models"}"\n')
    (root / "models").mkdir(exist_ok=True)
    return path
