"""One suite for every backend (engine/backends/base.py): the thread worker, the engine in a child process, and Ray.

What the bot relies on, whichever renders: events in order and exactly one end, the fair order, positions, the
per-member cap, cancel of a waiting and of a running job, and close. Each backend takes one job at a time here
(`max_batch = 1`, one replica taking one request; the child holds the next job ready), so the queue the bot
keeps is the whole story; jobs of 100,000 steps hold every place out of that queue until they are cancelled, so
nothing depends on how fast the machine is. Ray is skipped when it is not installed.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import pytest_asyncio
import torch

from engine.backends.base import Backend
from engine.backends.dispatch import DispatchWorker
from engine.backends.factory import make_worker
from engine.config import EngineConfig, Limits, RayConfig
from engine.errors import JobCancelled
from engine.jobs import (
    SHUTDOWN_QUEUED,
    SHUTDOWN_RUNNING,
    Cancelled,
    Finished,
    JobHandle,
    Queued,
    QueueFull,
    Started,
    Step,
    member_cap_message,
)
from engine.request import GenerationRequest

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIMITS = Limits(max_steps=100_000, max_batch=1)
FAST = dict(steps=2, width=64, height=64, sampler="Euler", limits=LIMITS)
CAP = 3


@pytest.fixture(scope="module")
def config(tiny_sd15) -> EngineConfig:
    return EngineConfig(
        models_dir=tiny_sd15.parent,
        default_model=tiny_sd15.name,
        threads=1,
        job_timeout_s=0,
        preview_every=0,
        max_queued_per_user=CAP,
        limits=LIMITS,
        ray=RayConfig(
            app_name="sdbot-contract",
            replicas=1,
            num_gpus=0,
            num_cpus=1,
            max_ongoing_requests=1,
            max_retries=0,
            start_timeout_s=300,
        ),
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["thread", "process", "ray"])
async def backend(request, config: EngineConfig):
    if request.param == "ray":
        pytest.importorskip("ray")
        worker = make_worker(dataclasses.replace(config, backend="ray"))
    else:
        worker = make_worker(dataclasses.replace(config, backend="local", isolation=request.param))
    threads = torch.get_num_threads()
    worker.start()
    await asyncio.wait_for(worker.ready(), 300)
    yield worker
    await worker.close(cancel_running=True)
    torch.set_num_threads(threads)


def job(prompt: str, **settings) -> GenerationRequest:
    return GenerationRequest(prompt, seed=7, **{**FAST, **settings})


def places(worker: Backend) -> int:
    """How many jobs leave the bot's queue at once: one rendering, and, in the child, the next one, ready."""
    return worker.capacity if isinstance(worker, DispatchWorker) else 1


async def hold(worker: Backend) -> list[JobHandle]:
    """Jobs that take every place out of the queue until they are cancelled (the first is rendering)."""
    holders = [
        worker.submit(job("hold the engine", steps=100_000), owner=f"holder{i}", group="g0")
        for i in range(places(worker))
    ]
    # Any of them may render first: the child keeps its own fair order over the jobs it holds, and a holder that
    # only waited there in an earlier test (never served) goes ahead of one that rendered.
    steps = [asyncio.ensure_future(first(h, Step)) for h in holders]
    try:
        done, _ = await asyncio.wait(steps, timeout=300, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in steps:
            task.cancel()
    assert done, "no holder started rendering"
    next(iter(done)).result()  # a holder that ended without a step fails here
    for _ in range(3000):
        if all(worker.position(h.job_id) is None for h in holders):  # out (the handle shows Queued until Started)
            return holders
        await asyncio.sleep(0.01)
    raise AssertionError(f"the holders did not all leave the queue: {[worker.position(h.job_id) for h in holders]}")


async def first(handle: JobHandle, kind: type):
    async for event in handle:
        if isinstance(event, kind):
            return event
    raise AssertionError(f"{handle.job_id} ended without {kind.__name__}: {handle.last_event}")


async def ended(handle: JobHandle):
    async for _ in handle:
        pass
    return handle.last_event


async def test_a_job_streams_its_events_in_order_and_ends_once(backend: Backend):
    handle = backend.submit(job("a cat"), owner="a", group="g1")
    assert isinstance(handle.last_event, Queued) and handle.position == 1  # told at once
    result = await asyncio.wait_for(handle.wait(), 300)
    assert result.images and result.images[0].seed == 7
    kinds = [e.kind for e in handle.events]
    assert kinds == ["queued", "started", "step", "step", "finished"], kinds
    assert [e.step for e in handle.events if isinstance(e, Step)] == [1, 2]
    assert backend.handle(handle.job_id) is None and not backend.cancel(handle.job_id)


async def test_order_positions_cap_and_cancel_of_a_waiting_job(backend: Backend):
    holders = await hold(backend)
    assert {p.job_id for p in backend.running()} == {h.job_id for h in holders}
    # servers and members new to this backend: none has had a turn yet
    spec = [("a1", "a", "g3"), ("a2", "a", "g3"), ("a3", "a", "g3"), ("b1", "b", "g3"), ("c1", "c", "g4")]
    handles = {
        name: backend.submit(job(name), owner=owner, group=group, job_id=f"contract-{name}")
        for name, owner, group in spec
    }
    # round robin by server (g3, g4), then by member inside g3 (a, b)
    expect = {"a1": 1, "c1": 2, "b1": 3, "a2": 4, "a3": 5}
    assert {name: backend.position(h.job_id) for name, h in handles.items()} == expect
    assert {name: h.position for name, h in handles.items()} == expect
    assert [p.job_id for p in backend.queued()] == [f"contract-{n}" for n in sorted(expect, key=expect.get)]
    with pytest.raises(QueueFull) as full:  # a's fourth waiting job
        backend.submit(job("a4"), owner="a", group="g3")
    assert str(full.value) == member_cap_message(CAP, CAP)
    handles["urgent"] = backend.submit(job("a4"), owner="a", group="g3", priority=True)  # no cap, goes first
    assert handles["urgent"].position == 1 and handles["a1"].position == 2

    assert backend.cancel(handles["a2"].job_id)
    assert isinstance(handles["a2"].last_event, Cancelled)  # at once, on the loop
    assert not backend.cancel(handles["a2"].job_id)
    assert handles["a3"].position == 5 and isinstance(handles["a3"].last_event, Queued)  # was 6

    starts: list[str] = []

    async def note_start(name: str, handle: JobHandle) -> None:
        if await first(handle, Started):
            starts.append(name)

    watchers = [asyncio.create_task(note_start(n, h)) for n, h in handles.items() if n != "a2"]
    for holder in holders:  # a running job stops at its next step
        assert backend.cancel(holder.job_id)
    for holder in holders:
        with pytest.raises(JobCancelled):
            await asyncio.wait_for(holder.wait(), 300)
    for name in ["urgent", "a1", "c1", "b1", "a3"]:
        assert isinstance(await asyncio.wait_for(ended(handles[name]), 300), Finished)
    await asyncio.gather(*watchers)
    assert starts == ["urgent", "a1", "c1", "b1", "a3"]


async def test_close_returns_the_waiting_jobs_and_cancels_the_running_one(backend: Backend):
    """Last in the module: the backend takes no more jobs after it."""
    holders = await hold(backend)
    waiting = [backend.submit(job(f"w{i}"), owner=f"m{i}", group="g1") for i in range(2)]
    pending = await asyncio.wait_for(backend.close(cancel_running=True), 300)
    assert [p.job_id for p in pending] == [h.job_id for h in waiting]
    assert [h.last_event.reason for h in waiting] == [SHUTDOWN_QUEUED] * 2
    assert [h.last_event.reason for h in holders] == [SHUTDOWN_RUNNING] * len(holders)
    with pytest.raises(Exception, match="shutting down"):
        backend.submit(job("late"), owner="a")
