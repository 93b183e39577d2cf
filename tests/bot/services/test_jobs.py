"""`JobService` with a scripted engine backend: the path from a committed job to exactly one post, the post's
retries, refusals, shutdown, and the recovery of what a previous run left (real SQLite through the real
migrations; the backend and the Discord side are stand-ins that record what they were asked)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.services.jobs import Delivered
from bot.store import jobs as job_store
from bot.store.db import transaction
from bot.store.models import JobStatus
from engine import jobs as w
from engine.errors import EngineError
from engine.request import GenerationRequest
from tests.bot.services.fakes import Listener, ScriptedBackend, make_services

USER, GUILD, CHANNEL = 111, 900, 902


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
async def world(engine, sessions, tmp_path: Path, backend: ScriptedBackend):
    recovery: list[Listener] = []

    def listener_for(job) -> Listener:
        recovery.append(listener := Listener())
        return listener

    services = make_services(engine, sessions, tmp_path, backend, listener_for=listener_for)
    services.jobs.post_backoff_s = 0.001
    yield World(services, recovery)
    services.journal.close()


class World:
    """The services, and the listeners `listener_for` made for recovered jobs."""

    def __init__(self, services, recovery: list[Listener]) -> None:
        self.services, self.recovery = services, recovery

    def __getattr__(self, name: str):
        return getattr(self.services, name)


def request(prompt: str = "a cat") -> GenerationRequest:
    return GenerationRequest(prompt=prompt, width=64, height=64, steps=2)


async def queued(world, guild_id: int | None = GUILD, status: JobStatus = JobStatus.QUEUED):
    return await transaction(
        world.sessions,
        job_store.create,
        user_id=USER,
        request=request(),
        guild_id=guild_id,
        channel_id=CHANNEL,
        status=status,
    )


async def status_of(world, job_id: int) -> str:
    return (await world.jobs.get(job_id)).status


async def until(condition, what: str, timeout: float = 10.0) -> None:
    """Wait for a condition (no fixed sleeps: the job service works in tasks of its own)."""
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.005)


async def run_to_the_end(world, backend, listener: Listener, images: int = 1) -> int:
    job = await queued(world)
    await world.jobs.start(job, request(), listener)
    backend.render(job.id, request(), images)
    await until(lambda: _settled(world, job.id), f"job {job.id} to settle")
    return job.id


async def _settled(world, job_id: int) -> bool:
    return job_id not in world.jobs._jobs and await status_of(world, job_id) in ("posted", "failed")


async def rendered(world, tmp_path: Path, *, posted: bool = False):
    """A job a previous run rendered (its file on disk) and, with `posted`, posted too."""
    job = await queued(world)
    png = tmp_path / f"{job.id}.png"
    png.write_bytes(b"png")
    for status in ("running", "done", "posted") if posted else ("running", "done"):
        await transaction(
            world.sessions, job_store.transition, job.id, status, result_paths=[str(png)] if status == "done" else None
        )
    return job


# --- the way through --------------------------------------------------------------------------------------------


async def test_a_rendered_job_is_saved_then_posted_once(world, backend):
    listener = Listener()
    job_id = await run_to_the_end(world, backend, listener, images=2)
    job = await world.jobs.get(job_id)
    assert job.status == "posted" and job.message_id == 1000 + job_id and job.seed == 5
    assert listener.posts == [job_id] and listener.calls == ["started", "finished"]
    assert [p.name for p in world.jobs.files_of(job)] == [f"{job_id}-1.png", f"{job_id}-2.png"]
    assert listener.asked == 0  # a first attempt in this process needs no look for an earlier post


async def test_the_engine_makes_previews_only_for_jobs_whose_previews_are_shown(world, backend):
    for shown in (False, True):
        job = await queued(world)
        await world.jobs.start(job, request(), Listener(previews=shown))
        assert backend.requests[str(job.id)].previews is shown


async def test_a_post_whose_answer_was_lost_is_not_made_twice(world, backend):
    listener = Listener(fail_posts=[ConnectionError("reset by peer")])
    listener.lost_post = True  # the post reached the channel; its answer did not reach us
    job_id = await run_to_the_end(world, backend, listener)
    assert listener.posts == [job_id] and listener.asked == 1
    assert (await world.jobs.get(job_id)).message_id == 4242  # the post that was found


async def test_failed_posts_are_retried_until_one_goes_through(world, backend):
    listener = Listener(fail_posts=[ConnectionError("502"), ConnectionError("502")])
    job_id = await run_to_the_end(world, backend, listener)
    assert listener.posts == [job_id] and listener.asked == 2  # each retry looked first
    assert await status_of(world, job_id) == "posted"


async def test_a_post_that_cannot_succeed_fails_the_job_with_the_reason(world, backend):
    listener = Listener(fail_posts=[PermissionError("Missing Access")])
    job_id = await run_to_the_end(world, backend, listener)
    job = await world.jobs.get(job_id)
    assert job.status == "failed" and job.error == "the images could not be posted (Missing Access)"
    assert listener.posts == [] and listener.calls[-1] == f"failed: {job.error}"


async def test_posting_the_same_job_twice_at_once_posts_once(world, backend, tmp_path):
    listener = Listener()
    job = await world.jobs.get((await rendered(world, tmp_path)).id)
    await asyncio.gather(world.jobs.post(job, listener), world.jobs.post(job, listener))
    assert listener.posts == [job.id] and await status_of(world, job.id) == "posted"


async def test_engine_failure_and_cancel_are_recorded(world, backend):
    failing, cancelled = Listener(), Listener()
    first, second = await queued(world), await queued(world)
    await world.jobs.start(first, request(), failing)
    await world.jobs.start(second, request(), cancelled)
    backend.emit(first.id, w.Failed(job_id=str(first.id), message="out of memory"))
    assert world.jobs.cancel(second.id)
    await until(lambda: _all_final(world, first.id, second.id), "both jobs to end")
    assert (await world.jobs.get(first.id)).error == "out of memory"
    assert failing.calls == ["failed: out of memory"] and cancelled.calls == ["cancelled"]
    assert not world.jobs.cancel(second.id)  # no longer active


async def _all_final(world, *ids: int) -> bool:
    return all([await status_of(world, i) in ("failed", "cancelled") for i in ids]) and not world.jobs._jobs


async def test_a_job_the_engine_refuses_is_failed_not_left_queued(world, backend):
    backend.refuse = EngineError("the engine is shutting down")
    job = await queued(world)
    with pytest.raises(EngineError):
        await world.jobs.start(job, request(), Listener())
    job = await world.jobs.get(job.id)
    assert job.status == "failed" and job.error == "the engine is shutting down"


async def test_held_images_are_not_posted(world, backend):
    await transaction(world.sessions, _images_mode)
    listener = Listener()
    job = await queued(world)
    await world.jobs.start(job, request(), listener)
    backend.render(job.id, request())
    await until(lambda: _left(world, job.id), "the job to be held")
    assert await status_of(world, job.id) == "done" and listener.posts == []
    assert "waits for a moderator's review" in listener.notices[-1] and world.review.notifier.shown


async def _images_mode(s):
    from bot.store import guilds as guild_store

    await guild_store.update(s, GUILD, moderation_mode="images", review_channel_id=901)


async def _left(world, job_id: int) -> bool:
    return job_id not in world.jobs._jobs


async def test_shutdown_puts_unfinished_jobs_back_in_the_queue(world, backend):
    listener = Listener()
    job = await queued(world)
    await world.jobs.start(job, request(), listener)
    backend.emit(job.id, w.Started(job_id=str(job.id)))
    await until(lambda: _is(world, job.id, "running"), "the job to run")
    backend.handles[str(job.id)].events.put_nowait(w.Cancelled(job_id=str(job.id), reason=w.SHUTDOWN_RUNNING))
    world.jobs._stopping = True  # what `shutdown()` sets before it closes the engine
    await until(lambda: _is(world, job.id, "queued"), "the job to go back")
    await until(lambda: _left(world, job.id), "the job's task to end")
    assert listener.calls == ["started", "interrupted"]


async def _is(world, job_id: int, status: str) -> bool:
    return await status_of(world, job_id) == status


# --- recovery -----------------------------------------------------------------------------------------------------


async def test_recovery_reruns_unfinished_jobs_and_posts_rendered_ones_once(world, backend, tmp_path):
    first, running = await queued(world), await queued(world)
    await transaction(world.sessions, job_store.transition, running.id, JobStatus.RUNNING)
    done = await rendered(world, tmp_path)
    await rendered(world, tmp_path, posted=True)
    await queued(world, status=JobStatus.AWAITING_REVIEW)  # its moderators decide

    assert await world.jobs.recover() == (2, 1)
    assert backend.submitted == [(str(first.id), True), (str(running.id), True)]  # before anything newer
    assert await status_of(world, running.id) == "queued"  # its render died with the last process
    await until(lambda: _is(world, done.id, "posted"), "the rendered job to be posted")
    [*_, poster] = world.recovery
    assert poster.asked == 1 and poster.posts == [done.id]  # looked for an earlier post first


async def test_recovery_does_not_repost_a_post_that_happened_before_the_crash(world, backend, tmp_path):
    done = await rendered(world, tmp_path)

    def found(job) -> Listener:
        world.recovery.append(listener := Listener(posted=Delivered(777)))
        return listener

    world.jobs.listener_for = found
    assert await world.jobs.recover() == (0, 1)
    await until(lambda: _is(world, done.id, "posted"), "the job to be marked posted")
    assert world.recovery[-1].posts == [] and (await world.jobs.get(done.id)).message_id == 777


async def test_recovery_takes_only_the_guilds_this_process_serves(world, backend):
    ours, theirs, direct = await queued(world, GUILD), await queued(world, GUILD + 1), await queued(world, None)
    assert await world.jobs.recover(lambda guild_id: guild_id in (GUILD, None)) == (2, 0)
    assert backend.ids == [str(ours.id), str(direct.id)] and await status_of(world, theirs.id) == "queued"
