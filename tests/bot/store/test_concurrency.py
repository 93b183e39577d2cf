"""Many asyncio tasks writing the same rows at once: no lost update, no "database is locked" for a user.

Each task is its own unit of work with its own session (one AsyncSession per task, as SQLAlchemy requires),
all on one engine, as the bot's interactions are. On SQLite every write transaction takes the write lock at
BEGIN (IMMEDIATE) and waits in busy_timeout; on PostgreSQL the store locks the row it reads before writing.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from bot.store import db, guilds, jobs, presets
from bot.store.errors import IllegalTransition, PresetLimit

TASKS = 50
GUILD, ALICE = 900, 111


async def test_no_lost_word_list_updates(any_sessions):
    """50 admins add a word each to the same guild row at once: all 50 words are there."""

    async def add(i: int) -> None:
        async with any_sessions.begin() as s:  # plain sessions: BEGIN IMMEDIATE + busy_timeout suffice
            await guilds.add_words(s, GUILD, "banned", [f"word{i}"])

    await asyncio.gather(*(add(i) for i in range(TASKS)))
    async with any_sessions.begin() as s:
        row = await guilds.get(s, GUILD)
    assert sorted(row.banned_words) == sorted(f"word{i}" for i in range(TASKS))


async def test_no_lost_read_modify_write(any_sessions):
    """50 tasks each read a preset's steps and write steps + 1: the end value counts every task."""
    async with any_sessions.begin() as s:
        await presets.save(s, ALICE, "counter", {"steps": 1})

    async def bump(s) -> None:
        preset = await presets.get(s, ALICE, "counter", for_update=True)
        await asyncio.sleep(0)  # let the other tasks run in between the read and the write
        await presets.save(s, ALICE, "counter", {"steps": preset.options["steps"] + 1})

    await asyncio.gather(*(db.transaction(any_sessions, bump) for _ in range(TASKS)))
    async with any_sessions.begin() as s:
        assert (await presets.get(s, ALICE, "counter")).options == {"steps": 1 + TASKS}


async def test_preset_limit_holds_under_concurrency(any_sessions):
    """50 new presets at once against a limit of 20: exactly 20 are created, 30 get the limit message."""

    async def create(i: int) -> str:
        try:
            await db.transaction(any_sessions, presets.save, ALICE, f"p{i}", {"steps": 5}, limit=20)
        except PresetLimit as exc:
            assert "the limit is 20" in str(exc)
            return "limit"
        return "created"

    outcomes = Counter(await asyncio.gather(*(create(i) for i in range(TASKS))))
    assert outcomes == {"created": 20, "limit": 30}
    async with any_sessions.begin() as s:
        assert await presets.count(s, ALICE) == 20


async def test_same_name_saved_by_many_tasks(any_sessions):
    """50 saves of one name (in different cases) at once: one creates it, 49 update it, one row remains."""

    async def save(i: int) -> bool:
        name = "Shared" if i % 2 else "shared"
        result = await db.transaction(any_sessions, presets.save, ALICE, name, {"steps": i + 1})
        return result.created

    created = await asyncio.gather(*(save(i) for i in range(TASKS)))
    assert created.count(True) == 1
    async with any_sessions.begin() as s:
        assert await presets.count(s, ALICE) == 1


async def test_one_worker_wins_a_job(any_sessions):
    """50 tasks try to start the same queued job: exactly one moves it to running."""
    async with any_sessions.begin() as s:
        job = await jobs.create(s, user_id=ALICE, request={"prompt": "x"})

    async def claim() -> bool:
        try:
            await db.transaction(any_sessions, jobs.transition, job.id, "running")
        except IllegalTransition:
            return False
        return True

    wins = await asyncio.gather(*(claim() for _ in range(TASKS)))
    assert wins.count(True) == 1


async def test_many_jobs_created_at_once(any_sessions):
    """50 users submitting at once: 50 jobs, distinct ids, every one queued."""

    async def submit(i: int) -> int:
        job = await db.transaction(any_sessions, jobs.create, user_id=1000 + i, request={"prompt": f"p{i}"})
        return job.id

    ids = await asyncio.gather(*(submit(i) for i in range(TASKS)))
    assert len(set(ids)) == TASKS
    async with any_sessions.begin() as s:
        assert len((await jobs.unfinished(s)).rerun) == TASKS
