"""Jobs: persisted before queueing, a checked state machine, idempotent posting, restart recovery."""

from __future__ import annotations

import itertools
from datetime import UTC

import pytest

from bot.store import jobs, migrate
from bot.store.db import make_engine, make_sessions
from bot.store.errors import IllegalTransition, InvalidOptions, JobNotFound
from bot.store.models import JobStatus
from engine.request import GenerationRequest

S = JobStatus
ALICE = 111
REQUEST = GenerationRequest(prompt="a cat", steps=12, seed=7)


async def _create(sessions, **kw):
    kw.setdefault("user_id", ALICE)
    kw.setdefault("request", REQUEST)
    async with sessions.begin() as s:
        return await jobs.create(s, **kw)


async def _move(sessions, job_id, to, **kw):
    async with sessions.begin() as s:
        return await jobs.transition(s, job_id, to, **kw)


async def test_create_persists_everything(any_sessions):
    job = await _create(any_sessions, guild_id=1, channel_id=2, interaction_id=3, sources={"steps": "command"})
    async with any_sessions.begin() as s:
        got = await jobs.get(s, job.id)
    assert got.status == "queued" and got.user_id == ALICE
    assert (got.guild_id, got.channel_id, got.interaction_id) == (1, 2, 3)
    assert got.request == REQUEST.options() and got.sources == {"steps": "command"}
    assert got.seed == 7 and got.result_paths == [] and got.error is None
    assert got.created_at.tzinfo is UTC


async def test_create_from_a_dict_and_awaiting_review(any_sessions):
    job = await _create(any_sessions, request={"prompt": "x", "seed": -1}, status="awaiting_review")
    assert job.status == "awaiting_review" and job.seed is None  # a random seed is drawn when it runs


@pytest.mark.parametrize("status", ["running", "done", "posted", "bogus"])
async def test_create_refuses_other_initial_states(any_sessions, status):
    with pytest.raises(IllegalTransition):
        await _create(any_sessions, status=status)


@pytest.mark.parametrize("request_", [{"prompt": "x", "tiling": 2}, {"steps": 3}, {"prompt": "x", "seed": object()}])
async def test_create_refuses_bad_requests(any_sessions, request_):
    with pytest.raises(InvalidOptions):
        await _create(any_sessions, request=request_)


async def test_the_happy_path(any_sessions):
    """queued -> running -> done -> posted, with seed, files, message id and timestamps recorded."""
    job = await _create(any_sessions)
    running = await _move(any_sessions, job.id, "running", seed=99)
    assert running.started_at is not None and running.seed == 99
    done = await _move(any_sessions, job.id, "done", result_paths=["out/1.png", "out/2.png"])
    assert done.finished_at is not None and done.result_paths == ["out/1.png", "out/2.png"]
    async with any_sessions.begin() as s:
        posted = await jobs.mark_posted(s, job.id, message_id=555)
    assert posted.status == "posted" and posted.posted_at is not None and posted.message_id == 555


# Every (from, to) pair: allowed exactly when TRANSITIONS says so.
_PAIRS = list(itertools.product(list(S), list(S)))


async def _job_in(sessions, status: JobStatus):
    path = {
        S.AWAITING_REVIEW: [],
        S.QUEUED: [],
        S.RUNNING: ["running"],
        S.DONE: ["running", "done"],
        S.POSTED: ["running", "done", "posted"],
        S.FAILED: ["failed"],
        S.CANCELLED: ["cancelled"],
        S.REJECTED: ["rejected"],
    }[status]
    start = "awaiting_review" if status in (S.AWAITING_REVIEW, S.REJECTED) else "queued"
    job = await _create(sessions, status=start)
    for step in path:
        job = await _move(sessions, job.id, step)
    assert job.status == status.value
    return job


@pytest.mark.parametrize("current, target", _PAIRS, ids=[f"{a.value}->{b.value}" for a, b in _PAIRS])
async def test_state_machine(any_sessions, current, target):
    job = await _job_in(any_sessions, current)
    if target in jobs.TRANSITIONS[current]:
        assert (await _move(any_sessions, job.id, target, error="boom")).status == target.value
    else:
        with pytest.raises(IllegalTransition, match=f"job #{job.id} is"):
            await _move(any_sessions, job.id, target)
        async with any_sessions.begin() as s:
            assert (await jobs.get(s, job.id)).status == current.value  # unchanged


async def test_failed_keeps_the_error_and_requeue_clears_it(any_sessions):
    job = await _create(any_sessions)
    await _move(any_sessions, job.id, "running")
    await _move(any_sessions, job.id, "queued")
    again = await _move(any_sessions, job.id, "running")
    assert again.error is None
    failed = await _move(any_sessions, job.id, "failed", error="CUDA out of memory")
    assert failed.error == "CUDA out of memory" and failed.finished_at is not None


async def test_mark_posted_is_idempotent(any_sessions):
    job = await _job_in(any_sessions, S.DONE)
    for _ in range(3):
        async with any_sessions.begin() as s:
            posted = await jobs.mark_posted(s, job.id, message_id=42)
        assert posted.status == "posted" and posted.message_id == 42
    queued = await _create(any_sessions)
    async with any_sessions.begin() as s:
        with pytest.raises(IllegalTransition, match="not posted"):
            await jobs.mark_posted(s, queued.id)


async def test_missing_job(any_sessions):
    async with any_sessions.begin() as s:
        with pytest.raises(JobNotFound, match="no job #404"):
            await jobs.transition(s, 404, "running")
        with pytest.raises(JobNotFound, match="no job #404"):
            await jobs.get(s, 404)


async def test_list_for_user_and_count_active(any_sessions):
    a = await _create(any_sessions, guild_id=1)
    b = await _create(any_sessions, guild_id=2, status="awaiting_review")
    c = await _job_in(any_sessions, S.POSTED)
    other = await _create(any_sessions, user_id=222)
    async with any_sessions.begin() as s:
        assert [j.id for j in await jobs.list_for_user(s, ALICE)] == [c.id, b.id, a.id]
        assert [j.id for j in await jobs.list_for_user(s, ALICE, ["queued", S.AWAITING_REVIEW])] == [b.id, a.id]
        assert [j.id for j in await jobs.list_for_user(s, ALICE, guild_id=1)] == [a.id]
        assert [j.id for j in await jobs.list_for_user(s, ALICE, limit=1)] == [c.id]
        assert await jobs.count_active(s, ALICE) == 2
        assert await jobs.count_active(s, ALICE, guild_id=2) == 1
        assert [j.id for j in await jobs.list_for_user(s, 222)] == [other.id]


async def test_unfinished(any_sessions):
    """queued and running jobs are to be re-run, done ones to be posted; nothing else comes back."""
    queued = await _create(any_sessions)
    running = await _job_in(any_sessions, S.RUNNING)
    done = await _job_in(any_sessions, S.DONE)
    for status in (S.POSTED, S.FAILED, S.CANCELLED, S.REJECTED, S.AWAITING_REVIEW):
        await _job_in(any_sessions, status)
    async with any_sessions.begin() as s:
        found = await jobs.unfinished(s)
        assert [j.id for j in found.rerun] == [queued.id, running.id]
        assert [j.id for j in found.to_post] == [done.id]


async def test_crash_between_persist_and_queue(any_url):
    """A job committed but never handed to the worker (the process died) is found by the next start."""
    first = make_engine(any_url)
    await migrate.upgrade(first)
    async with make_sessions(first).begin() as s:
        job = await jobs.create(s, user_id=ALICE, request=REQUEST, channel_id=5)
    # ... the process dies here: the worker never heard of the job; nothing else is written.
    await first.dispose()

    second = make_engine(any_url)  # the next start
    try:
        await migrate.upgrade(second)
        async with make_sessions(second).begin() as s:
            found = await jobs.unfinished(s)
        assert [(j.id, j.status, j.request, j.channel_id) for j in found.rerun] == [
            (job.id, "queued", REQUEST.options(), 5)
        ]
    finally:
        await second.dispose()


async def test_crash_while_running_and_after_rendering(any_url):
    """A render cut short is re-run; finished-but-unposted images are posted from their files."""
    first = make_engine(any_url)
    await migrate.upgrade(first)
    sessions = make_sessions(first)
    running = await _job_in(sessions, S.RUNNING)
    rendered = await _job_in(sessions, S.DONE)
    await first.dispose()  # the process dies: the render of `running` is lost, `rendered` was never posted

    second = make_engine(any_url)
    try:
        async with make_sessions(second).begin() as s:
            found = await jobs.unfinished(s)
            assert [j.id for j in found.rerun] == [running.id]
            assert [j.id for j in found.to_post] == [rendered.id]
    finally:
        await second.dispose()
