"""`JobService` with a scripted engine backend: the path from a committed job to exactly one post, the post's
retries, refusals, shutdown, and the recovery of what a previous run left (real SQLite through the real
migrations; the backend and the Discord side are stand-ins that record what they were asked)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.services.posting import PostUnavailable
from bot.store import jobs as job_store
from bot.store.db import transaction
from bot.store.models import JobStatus
from engine import jobs as w
from engine.errors import EngineError
from engine.request import GenerationRequest
from tests.bot.services.fakes import Listener, Posts, ScriptedBackend, make_services

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

    services = make_services(engine, sessions, tmp_path, backend, listener_for=listener_for, posts=Posts())
    services.jobs.posts.backoff_s = 0.001
    yield World(services, recovery, services.jobs.posts.finder)
    services.journal.close()


class World:
    """The services, the listeners `listener_for` made for recovered jobs, and the posts Discord holds."""

    def __init__(self, services, recovery: list[Listener], posts: Posts) -> None:
        self.services, self.recovery, self.posts = services, recovery, posts

    def __getattr__(self, name: str):
        return getattr(self.services, name)


def request(prompt: str = "a cat") -> GenerationRequest:
    return GenerationRequest(prompt=prompt, width=64, height=64, steps=2)


async def queued(
    world, guild_id: int | None = GUILD, status: JobStatus = JobStatus.QUEUED, interaction_id: int | None = None
):
    return await transaction(
        world.sessions,
        job_store.create,
        user_id=USER,
        request=request(),
        guild_id=guild_id,
        channel_id=CHANNEL,
        interaction_id=interaction_id,
        status=status,
    )


async def status_of(world, job_id: int) -> str:
    return (await world.jobs.get(job_id)).status


async def until(condition, what: str, timeout: float = 10.0) -> None:
    """Wait for a condition (no fixed sleeps: the job service works in tasks of its own)."""
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.005)


async def run_to_the_end(world, backend, listener: Listener, images: int = 1, interaction_id: int | None = None) -> int:
    job = await queued(world, interaction_id=interaction_id)
    await world.jobs.start(job, request(), listener)
    if listener.message_id is not None:
        backend.emit(job.id, w.Queued(job_id=str(job.id), position=1))
    backend.render(job.id, request(), images)
    await until(lambda: _settled(world, job.id), f"job {job.id} to settle")
    return job.id


async def _settled(world, job_id: int) -> bool:
    return job_id not in world.jobs._jobs and await status_of(world, job_id) in ("posted", "failed")


async def rendered(world, tmp_path: Path, *, posted: bool = False, message_id: int | None = None, **job):
    """A job a previous run rendered (its file on disk, and the message that showed it) and, with `posted`,
    posted too."""
    made = await queued(world, **job)
    png = tmp_path / f"{made.id}.png"
    png.write_bytes(b"png")
    for status in ("running", "done", "posted") if posted else ("running", "done"):
        done = status == "done"
        await transaction(
            world.sessions,
            job_store.transition,
            made.id,
            status,
            result_paths=[str(png)] if done else None,
            message_id=message_id if done else None,
        )
    return made


# --- the way through --------------------------------------------------------------------------------------------


async def test_a_rendered_job_is_saved_then_posted_once(world, backend):
    listener = Listener()
    job_id = await run_to_the_end(world, backend, listener, images=2)
    job = await world.jobs.get(job_id)
    assert job.status == "posted" and job.message_id == 1000 + job_id and job.seed == 5
    assert listener.posts == [job_id] and listener.calls == ["started", "finished"]
    assert [p.name for p in world.jobs.files_of(job)] == [f"{job_id}-1.png", f"{job_id}-2.png"]
    assert world.posts.asked == []  # a first attempt in this process needs no look for an earlier post


async def test_the_message_that_showed_the_job_is_stored_with_it_before_the_post(world, backend):
    listener = Listener(message_id=555, fail_posts=[PermissionError("Missing Access")])
    job_id = await run_to_the_end(world, backend, listener)
    assert (await world.jobs.get(job_id)).message_id == 555  # recorded with `done`: a restart checks that one


async def test_a_post_whose_answer_was_lost_is_repeated_with_its_nonce(world, backend):
    listener = Listener(fail_posts=[PostUnavailable("reset by peer")])
    listener.lost_post = True  # the post reached the channel; its answer did not reach us
    job_id = await run_to_the_end(world, backend, listener)
    assert listener.posts == [job_id] and world.posts.asked == []  # Discord answered the repeat with the first
    assert (await world.jobs.get(job_id)).message_id == 4242  # the post that was made


async def test_a_lost_post_on_the_jobs_own_message_is_found_there(world, backend):
    listener = Listener(message_id=4242, fail_posts=[PostUnavailable("reset by peer")], board=world.posts)
    listener.lost_post = True
    job_id = await run_to_the_end(world, backend, listener, interaction_id=77)
    assert listener.posts == [job_id] and world.posts.asked == ["message 4242"]


async def test_a_lost_post_of_a_command_whose_message_is_unknown_is_looked_for_in_the_channel(world, backend):
    listener = Listener(fail_posts=[PostUnavailable("reset by peer")], board=world.posts)
    listener.lost_post = True
    job_id = await run_to_the_end(world, backend, listener, interaction_id=77)  # no nonce covers an edit
    assert listener.posts == [job_id] and world.posts.asked == ["history"]
    assert (await world.jobs.get(job_id)).message_id == 4242


async def test_failed_posts_are_retried_until_one_goes_through(world, backend):
    listener = Listener(fail_posts=[PostUnavailable("502"), PostUnavailable("502")])
    job_id = await run_to_the_end(world, backend, listener, interaction_id=77)
    assert listener.posts == [job_id] and world.posts.asked == ["history", "history"]  # each retry looked first
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
    assert poster.posts == [done.id]


@pytest.mark.parametrize("shown", [True, False])
async def test_recovery_does_not_repost_a_post_that_happened_before_the_crash(world, backend, tmp_path, shown):
    """`shown`: the job's message is known (checked by id); else its channel's history is searched."""
    done = await rendered(world, tmp_path, message_id=777 if shown else None, interaction_id=77)
    world.posts.made[done.id] = 777
    assert await world.jobs.recover() == (0, 1)
    await until(lambda: _is(world, done.id, "posted"), "the job to be marked posted")
    assert world.recovery[-1].posts == [] and (await world.jobs.get(done.id)).message_id == 777
    assert world.posts.asked == (["message 777"] if shown else ["history"])


async def test_a_restarted_job_makes_previews_as_its_guild_says(world, backend):
    for previews in (True, False):
        await transaction(world.sessions, _previews, previews)
        world.moderation.settings_cache.forget(GUILD)
        job = await queued(world)
        await world.jobs.recover()
        assert backend.requests[str(job.id)].previews is previews
        backend.emit(job.id, w.Cancelled(job_id=str(job.id), reason=w.CANCELLED))
        await until(lambda job_id=job.id: _left(world, job_id), "the job to end")


async def _previews(s, on: bool) -> None:
    from bot.store import guilds as guild_store

    await guild_store.update(s, GUILD, previews=on)


async def test_recovery_takes_only_the_guilds_this_process_serves(world, backend):
    ours, theirs, direct = await queued(world, GUILD), await queued(world, GUILD + 1), await queued(world, None)
    assert await world.jobs.recover(lambda guild_id: guild_id in (GUILD, None)) == (2, 0)
    assert backend.ids == [str(ours.id), str(direct.id)] and await status_of(world, theirs.id) == "queued"
