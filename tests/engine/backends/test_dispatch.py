"""The bot side of the engine elsewhere (engine/backends/dispatch.py), against a scripted engine: the bot's one fair
queue chooses the batches (after the gather window) and sends them in its order; lost attempts run again, refused
ones go back to their place. The child process and Ray replicas behind it are tested in test_process_backend.py and
test_ray_backend.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from engine.backends.dispatch import DispatchedJob, DispatchWorker, Outcome
from engine.config import EngineConfig, Limits
from engine.jobs import Failed, Finished
from engine.request import GenerationRequest

FAST = dict(width=64, height=64, steps=2)


class Scripted(DispatchWorker):
    """A `DispatchWorker` whose engine is the test: every batch sent is recorded in `sent`; `answer(jobs)` gives
    each job's outcome (by default: each job started in its batch, then finished)."""

    def __init__(self, config: EngineConfig, *, max_batches: int = 2, max_retries: int = 1) -> None:
        super().__init__(config)
        self._max_batches, self._max_retries = max_batches, max_retries
        self.sent: list[list[str]] = []
        self.answer: Callable[[list[DispatchedJob]], Awaitable[list[Outcome]]] = self.finish

    @property
    def capacity(self) -> int:
        return self._max_batches * self.config.limits.max_batch

    @property
    def max_batches(self) -> int:
        return self._max_batches

    @property
    def max_retries(self) -> int:
        return self._max_retries

    async def _attempt(self, jobs: list[DispatchedJob]) -> list[Outcome]:
        for job in jobs:
            job.attempts += 1
        self.sent.append([job.id for job in jobs])
        return await self.answer(jobs)

    async def finish(self, jobs: list[DispatchedJob]) -> list[Outcome]:
        for job in jobs:
            self._on_message(job, ("started", len(jobs)))
            result = dict(request=job.request, images=[], model="m", vae=None, seconds=0.0, notes=())
            self._on_message(job, ("finished", result))
        return ["done"] * len(jobs)


def config(window_ms: int, max_batch: int = 4) -> EngineConfig:
    return EngineConfig(batch_window_ms=window_ms, limits=Limits(max_batch=max_batch), max_queued_per_user=50)


def req(prompt: str = "a cat", **settings) -> GenerationRequest:
    return GenerationRequest(prompt, **{**FAST, "seed": 1, **settings})


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(30):
        while not condition():
            await asyncio.sleep(0)


@pytest.fixture
async def scripted():
    made: list[Scripted] = []

    def make(*args, **kwargs) -> Scripted:
        worker = Scripted(*args, **kwargs)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.close(cancel_running=True)


async def test_a_burst_arriving_one_by_one_is_sent_as_full_batches(scripted):
    worker = scripted(config(window_ms=10_000))
    handles = []
    for i in range(8):
        handles.append(worker.submit(req(f"cat {i}", seed=i), owner=f"m{i % 3}", job_id=f"j{i}"))
        await asyncio.sleep(0)  # the dispatcher runs between submits: it sees the jobs one by one
    await asyncio.wait_for(asyncio.gather(*(h.wait() for h in handles)), 30)
    assert [len(batch) for batch in worker.sent] == [4, 4] and worker.stats.batches == 2
    assert all(e.batch == 4 for h in handles for e in h.events if e.kind == "started")


async def test_without_a_window_the_first_job_of_a_burst_goes_alone(scripted):
    worker = scripted(config(window_ms=0))
    handles = []
    for i in range(8):
        handles.append(worker.submit(req(f"cat {i}", seed=i), owner="a", job_id=f"j{i}"))
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*(h.wait() for h in handles)), 30)
    assert worker.sent[0] == ["j0"]  # sent the moment it came


async def test_a_job_alone_is_sent_after_the_window(scripted):
    worker = scripted(config(window_ms=20))
    handle = worker.submit(req(), owner="a", job_id="alone")
    await asyncio.wait_for(handle.wait(), 30)  # no companion came: it went alone, it did not wait for one
    assert worker.sent == [["alone"]]


async def test_the_fair_order_chooses_each_batch_and_its_companions(scripted):
    worker = scripted(config(window_ms=0, max_batch=2), max_batches=1)
    engine_free = asyncio.Event()

    async def held(jobs):
        await engine_free.wait()
        return await worker.finish(jobs)

    worker.answer = held
    first = worker.submit(req("x"), owner="a", job_id="a1")
    await until(lambda: worker.sent == [["a1"]])  # on the engine; everything else waits in the bot's queue
    handles = [first]
    handles.append(worker.submit(req("a2"), owner="a", job_id="a2"))
    handles.append(worker.submit(req("a3"), owner="a", job_id="a3"))
    handles.append(worker.submit(req("b1"), owner="b", job_id="b1"))
    handles.append(worker.submit(req("c1", width=96), owner="c", job_id="c1"))
    assert [p.job_id for p in worker.queued()] == ["b1", "c1", "a2", "a3"]  # a has had its turn
    engine_free.set()
    await asyncio.wait_for(asyncio.gather(*(h.wait() for h in handles)), 30)
    assert worker.sent == [["a1"], ["b1", "a2"], ["c1"], ["a3"]]  # b1 takes a2 along: same settings, next in line


async def test_lost_jobs_run_again_together_and_fail_after_their_retries(scripted):
    worker = scripted(config(window_ms=0), max_retries=1)

    async def crash_on_boom(jobs):
        if any("boom" in job.request.prompt for job in jobs):
            return ["lost"] * len(jobs)
        return await worker.finish(jobs)

    worker.answer = crash_on_boom
    boom = worker.submit(req("boom"), owner="a", job_id="boom")
    await asyncio.wait_for(_ended(boom), 30)
    assert worker.sent == [["boom"], ["boom"]] and worker.stats.retries == 1
    assert isinstance(boom.last_event, Failed) and boom.last_event.message == worker.lost_message(2)
    assert isinstance((await _last(worker.submit(req("fine"), owner="a"))), Finished)  # still serving


async def test_a_refused_job_goes_back_to_its_place_and_is_sent_again(scripted):
    worker = scripted(config(window_ms=0))
    refusals = [True]

    async def refuse_once(jobs):
        if refusals:
            refusals.pop()
            for job in jobs:
                job.attempts -= 1
            return ["requeue"] * len(jobs)
        return await worker.finish(jobs)

    worker.answer = refuse_once
    handle = worker.submit(req(), owner="a", job_id="j")
    await asyncio.wait_for(handle.wait(), 30)
    assert worker.sent == [["j"], ["j"]] and [e.kind for e in handle.events].count("started") == 1


async def _ended(handle) -> None:
    async for _ in handle:
        pass


async def _last(handle):
    await _ended(handle)
    return handle.last_event


def test_the_gather_window_is_waited_here_only_where_the_engine_does_not_wait_it():
    assert Scripted(config(window_ms=50)).gather.window_s == 0.05
    ray_like = type("RayLike", (Scripted,), {"gathers": False})
    assert ray_like(config(window_ms=50)).gather.window_s == 0.0
