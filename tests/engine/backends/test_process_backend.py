"""The engine in a child process: crashes of the child cost a restart and one re-run, never the bot.

Real children (spawned interpreters with torch and the tiny model), real deaths: SIGKILL from outside mid-job,
and os.abort() from inside (a test hook, `tests.engine.backends.child_hooks`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal

import pytest

from engine.backends.process import CRASHED_TWICE, HOOK_ENV, ProcessWorker
from engine.backends.worker import Failed, Finished, Started, Step
from engine.config import EngineConfig
from engine.request import GenerationRequest

FAST = dict(width=64, height=64, steps=2)
SLOW = dict(width=128, height=128, steps=60)  # long enough to be killed mid-job on one thread


@pytest.fixture
def config(tiny_sd15) -> EngineConfig:
    return EngineConfig(
        models_dir=tiny_sd15.parent, default_model=tiny_sd15.name, threads=1, job_timeout_s=0, isolation="process"
    )


async def wait_for(handle, kind, timeout: float = 120, after: int = 0):
    """The handle's first `kind` event from its `after`-th on (iterating a handle replays its events)."""

    async def seen():
        index = 0
        async for event in handle:
            if index >= after and isinstance(event, kind):
                return event
            index += 1
        raise AssertionError(f"{handle.job_id} ended without {kind.__name__}: {handle.last_event}")

    return await asyncio.wait_for(seen(), timeout)


async def test_sigkill_mid_job_restarts_the_child_and_runs_the_job_again_once(config):
    async with ProcessWorker(config) as worker:
        await worker.ready()
        first = worker.child_pid
        job = worker.submit(GenerationRequest("a cat", seed=5, **SLOW), owner=1, job_id="slow")
        behind = worker.submit(GenerationRequest("a dog", seed=6, **FAST), owner=2, job_id="behind")
        await wait_for(job, Step)
        os.kill(first, signal.SIGKILL)
        result = await asyncio.wait_for(job.wait(), 300)  # re-run in a new child, same seed
        assert result.images and result.images[0].seed == 5
        assert (await behind).images  # waiting in the dead child: run too, not charged a crash
        assert worker.child_pid not in (None, first) and worker.restarts == 1
        assert [type(e) for e in job.events].count(Started) == 1  # the user saw one start

        again = worker.submit(GenerationRequest("a cat", seed=5, **SLOW), owner=1, job_id="twice")
        for _ in range(2):  # killed on its first run and on its re-run: failed, clearly
            await wait_for(again, Step, after=len(again.events))  # a step of this run, not a replayed one
            pid = worker.child_pid
            os.kill(pid, signal.SIGKILL)
            async with asyncio.timeout(120):  # the restarted child, or the job's end; a hang fails, not stalls
                while worker.child_pid in (pid, None) and not again.done():
                    await asyncio.sleep(0.05)
            if again.done():
                break
        await asyncio.wait_for(_until_done(again), 300)
        assert isinstance(again.last_event, Failed) and again.last_event.message == CRASHED_TWICE
        assert (await worker.submit(GenerationRequest("after", **FAST), owner=3)).images  # still serving


async def _until_done(handle) -> None:
    async for _ in handle:
        pass


async def test_a_child_that_aborts_is_restarted_and_the_job_retried_once(config, monkeypatch, tmp_path):
    monkeypatch.setenv(HOOK_ENV, "tests.engine.backends.child_hooks:crash_on_prompt")
    monkeypatch.setenv("SDBOT_TEST_MARKERS", str(tmp_path))
    async with ProcessWorker(config) as worker:
        once = worker.submit(GenerationRequest("abort-once", seed=1, **FAST), owner=1, job_id="once")
        assert (await asyncio.wait_for(once.wait(), 300)).images  # crashed, restarted, rendered on the re-run
        assert (tmp_path / "aborted-once").exists() and worker.restarts == 1
        always = worker.submit(GenerationRequest("abort-always", **FAST), owner=1, job_id="always")
        await asyncio.wait_for(_until_done(always), 300)
        assert isinstance(always.last_event, Failed) and always.last_event.message == CRASHED_TWICE
        assert isinstance(
            await asyncio.wait_for(_last(worker.submit(GenerationRequest("fine", **FAST), owner=2)), 300), Finished
        )
        assert worker.restarts == 3


async def _last(handle):
    await _until_done(handle)
    return handle.last_event


async def test_the_next_job_waits_in_the_child_while_one_renders(config, monkeypatch, tmp_path):
    """The engine starts the next job the moment a render ends: it is in the child already, not in the bot waiting
    for the previous job's result to cross the pipe (even with one image per batch)."""
    monkeypatch.setenv(HOOK_ENV, "tests.engine.backends.child_hooks:probe_next_job")
    monkeypatch.setenv("SDBOT_TEST_MARKERS", str(tmp_path))
    one_per_batch = dataclasses.replace(config, limits=dataclasses.replace(config.limits, max_batch=1))
    async with ProcessWorker(one_per_batch) as worker:
        await worker.ready()
        first = worker.submit(GenerationRequest("wait-for-1", seed=1, **FAST), owner=1, job_id="first")
        second = worker.submit(GenerationRequest("a dog", seed=2, **FAST), owner=2, job_id="second")
        for handle in (first, second):
            assert (await asyncio.wait_for(handle.wait(), 300)).images
    assert (tmp_path / "next-job").read_text() == "ready"


async def test_the_bot_orders_the_batches_and_the_child_renders_them_in_that_order(config, monkeypatch, tmp_path):
    """One fair queue: a server that has had no turn goes before one that has had one, even when its job came
    last; the child renders the batches in the order the bot sent them (the one it holds, then the bot's next)."""
    monkeypatch.setenv(HOOK_ENV, "tests.engine.backends.child_hooks:probe_next_job")
    monkeypatch.setenv("SDBOT_TEST_MARKERS", str(tmp_path))
    two_per_batch = dataclasses.replace(config, limits=dataclasses.replace(config.limits, max_batch=2))
    sizes = iter((64, 72, 80, 88))  # no two jobs share a diffusers call

    def job(prompt: str, owner: int, server: str):
        request = GenerationRequest(prompt, seed=owner, **{**FAST, "width": next(sizes)})
        return worker.submit(request, owner=owner, job_id=f"{server}{owner}", group=server)

    started: list[str] = []

    async def follow(handle) -> None:
        async for event in handle:
            if isinstance(event, Started):
                started.append(handle.job_id)

    async with ProcessWorker(two_per_batch) as worker:
        await worker.ready()
        a1 = job("wait-for-1 hold", 1, "a")  # renders once a2 is held in the child, then until the test says go
        a2 = job("a cat", 2, "a")
        a3 = job("a cat", 3, "a")  # waits in the bot: two batches are out
        await wait_for(a1, Started)
        b4 = job("a dog", 4, "b")  # comes last, while a1 renders
        assert worker.queued()[0].job_id == "b4"
        (tmp_path / "go").write_text("")
        await asyncio.wait_for(asyncio.gather(*(follow(h) for h in (a1, a2, a3, b4))), 300)
    assert [h.result().images != [] for h in (a1, a2, a3, b4)] == [True] * 4
    assert (tmp_path / "next-job").read_text() == "ready"
    assert started == ["a1", "a2", "b4", "a3"]  # server b has had no turn yet; a has had one


async def test_a_burst_renders_as_full_batches_in_the_child(config):
    """8 compatible jobs one by one: the bot gathers them into 4 + 4 (its gather window), the child renders those."""
    window = dataclasses.replace(config, batch_window_ms=1000)
    async with ProcessWorker(window) as worker:
        await worker.ready()
        handles = []
        for i in range(8):
            handles.append(worker.submit(GenerationRequest(f"cat {i}", seed=i, **FAST), owner=i % 3, job_id=f"j{i}"))
            await asyncio.sleep(0)  # the dispatcher runs between two submits: it sees the jobs one by one
        await asyncio.wait_for(asyncio.gather(*(h.wait() for h in handles)), 300)
    assert [next(e.batch for e in h.events if isinstance(e, Started)) for h in handles] == [4] * 8
    assert worker.stats.batches == 2
