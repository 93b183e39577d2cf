"""The Ray Serve backend on a local Ray instance: 2 CPU replicas of the tiny model.

One Ray instance and one deployment serve the whole module (starting them takes most of its time); the tests
that kill a replica come last. Every result is compared with the local backend, pixel for pixel.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time

import numpy as np
import pytest
import pytest_asyncio

ray = pytest.importorskip("ray")

import torch  # noqa: E402

from engine.backends.ray_backend import REPLICA_LOST, RayWorker  # noqa: E402
from engine.backends.worker import Cancelled, Failed, Finished, Queued, QueueFull, Started, Step, Worker  # noqa: E402
from engine.config import EngineConfig, Limits, RayConfig  # noqa: E402
from engine.errors import EngineError, JobCancelled  # noqa: E402
from engine.request import GenerationRequest  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")

FAST = dict(steps=4, width=64, height=64, sampler="Euler")
SLOW = dict(steps=40, width=128, height=128, sampler="Euler")  # about a second or two per job on one thread


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> EngineConfig:
    from engine.tiny.models import write_tiny_model

    root = tmp_path_factory.mktemp("ray-models")
    write_tiny_model(root / "tiny-sd15")
    # A generous batch window: jobs sent together must meet on a replica even on a loaded CI machine.
    ray_config = RayConfig(
        replicas=2, num_gpus=0, num_cpus=1, max_retries=2, max_ongoing_requests=2, start_timeout_s=180
    )
    return EngineConfig(
        models_dir=root,
        default_model="tiny-sd15",
        threads=1,
        job_timeout_s=0,
        max_queued_per_user=3,
        batch_window_ms=200,
        backend="ray",
        ray=ray_config,
    )


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def worker(ray_instance, config: EngineConfig):
    worker = RayWorker(config)
    await worker.ready()
    yield worker
    await worker.close(cancel_running=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def local(config: EngineConfig):
    """The local backend on the same config: the reference every Ray result must equal."""
    threads = torch.get_num_threads()
    worker = Worker(dataclasses.replace(config, backend="local", max_queued_per_user=0))
    worker.start()
    yield worker
    await worker.close()
    torch.set_num_threads(threads)


def request(i: int, **settings) -> GenerationRequest:
    prompts = ["a photo of a cat", "a dog in the city", "portrait of a woman, best quality", "red sky at night"]
    return GenerationRequest(prompts[i % len(prompts)], negative_prompt="blurry", seed=1000 + i, **{**FAST, **settings})


def pixels(result) -> list[np.ndarray]:
    return [np.asarray(image.image.convert("RGB")) for image in result.images]


async def assert_same_as_local(local: Worker, requests: list[GenerationRequest], results: list) -> None:
    for req, result in zip(requests, results):
        expected = await local.submit(req, owner="ref")
        assert [i.seed for i in result.images] == [i.seed for i in expected.images]
        assert [i.infotext for i in result.images] == [i.infotext for i in expected.images]
        for got, want in zip(pixels(result), pixels(expected)):
            assert np.array_equal(got, want)
        assert [i.png() for i in result.images] == [i.png() for i in expected.images]


async def until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def first_step(handle) -> None:
    async for event in handle:
        if isinstance(event, Step) or event.terminal:
            return


def one_terminal_and_steps_in_order(handle) -> None:
    events = handle.events
    assert sum(1 for e in events if e.terminal) == 1 and events[-1].terminal
    assert sum(1 for e in events if isinstance(e, Started)) == 1
    steps = [e.step for e in events if isinstance(e, Step)]
    assert steps == sorted(set(steps))


async def test_jobs_spread_over_both_replicas_and_equal_the_local_backend(worker, local):
    """Jobs go to both replicas, and every image equals the local backend's, pixel for pixel."""
    requests = [request(i, width=64 if i % 2 else 96) for i in range(7)] + [request(7, batch_size=2)]
    handles = [worker.submit(r, owner=f"user{i % 3}") for i, r in enumerate(requests)]
    results = [await h for h in handles]
    assert len(worker.stats.by_replica) == 2, worker.stats
    await assert_same_as_local(local, requests, results)
    for handle in handles:
        one_terminal_and_steps_in_order(handle)


async def test_compatible_jobs_are_batched_on_their_replica(worker, local):
    """Jobs that reach a replica together share one render there (Serve's batching), and still equal solo runs."""
    requests = [request(70 + i) for i in range(4)]  # the same settings: one batch key
    handles = [worker.submit(r, owner=f"user{i}") for i, r in enumerate(requests)]
    results = [await h for h in handles]
    batches = [e.batch for h in handles for e in h.events if isinstance(e, Started)]
    assert max(batches) >= 2, batches
    await assert_same_as_local(local, requests, results)


async def test_the_start_image_travels_with_the_job(worker, local, tmp_path):
    """img2img on a replica: the start image goes as bytes in the request (the bot's paths mean nothing on a
    replica's machine); here the file is moved away once submitted, and the pixels still equal the local run."""
    from PIL import Image

    path = tmp_path / "start.png"
    Image.new("RGB", (80, 64), (200, 90, 30)).save(path)
    job = request(90, init_image=str(path), strength=0.6, width=80, height=64)
    expected = await local.submit(job, owner="ref")
    handle = worker.submit(job, owner="user0")
    path.rename(tmp_path / "moved.png")
    result = await handle
    assert result.request.init_image == str(path) and result.request.init_image_data == b""  # not sent back
    assert [np.asarray(i.image) for i in result.images][0].tolist() == np.asarray(expected.images[0].image).tolist()


async def test_events_are_those_of_the_local_backend(worker, local):
    """Queued, Started, every Step in order, one Finished: the same stream as the local worker's."""
    remote = worker.submit(request(1), owner="u")
    assert isinstance(remote.events[0], Queued)  # shown at once, as the local worker does
    await remote
    here = local.submit(request(1), owner="u")
    await here

    def kinds(handle) -> list[str]:
        return [e.kind for e in handle.events if not isinstance(e, Queued)]

    assert kinds(remote) == kinds(here) == ["started"] + ["step"] * FAST["steps"] + ["finished"]


async def test_the_bot_keeps_the_queue_positions_and_the_per_user_cap(worker):
    """Past the replicas' capacity jobs wait in the bot, with positions, round-robin order and the cap."""
    assert worker.capacity == 4
    busy = [worker.submit(request(i, **SLOW), owner="a") for i in range(3)]
    busy.append(worker.submit(request(3, **SLOW), owner="d"))
    await until(lambda: len(worker.running()) == 4)
    waiting = [worker.submit(request(10 + i), owner="b") for i in range(3)]
    late = worker.submit(request(20), owner="c")
    assert [worker.position(h.job_id) for h in busy] == [None] * 4
    assert [worker.position(h.job_id) for h in waiting + [late]] == [1, 3, 4, 2]  # c's first job goes before b's
    with pytest.raises(QueueFull):
        worker.submit(request(30), owner="b")
    assert worker.cancel(waiting[0].job_id)
    assert isinstance(waiting[0].last_event, Cancelled)
    # b and c have had no turn yet: b, who sent first, goes first (round robin by server, then member)
    assert worker.position(waiting[1].job_id) == 1 and late.position == 2
    for handle in busy + waiting[1:] + [late]:
        await handle
    assert not worker.cancel(late.job_id)


async def test_cancel_a_running_job_stops_it_on_its_replica(worker):
    """A cancelled job ends Cancelled and its replica stops rendering it: quick jobs after it are not held up.
    The long jobs would render for hours: a replica that went on with one could never run its share of the
    quick jobs, which must all end (no wall-clock figure: the deadline only turns a hang into a failure)."""
    endless = dict(steps=100_000, width=256, height=256, limits=Limits(max_steps=100_000))
    long = [worker.submit(request(40 + i, **endless), owner=f"u{i}") for i in range(2)]
    for handle in long:
        await first_step(handle)
    for handle in long:
        assert worker.cancel(handle.job_id)
        with pytest.raises(JobCancelled):
            await asyncio.wait_for(handle.wait(), 30)
        assert isinstance(handle.last_event, Cancelled)
    quick = [worker.submit(request(42 + i), owner=f"v{i}") for i in range(4)]
    for handle in quick:
        await asyncio.wait_for(handle.wait(), 120)


async def test_sdbot_worker_status(worker, capsys):
    """`sdbot worker --status` shows the application and its replicas."""
    from bot.cli import main

    assert await asyncio.to_thread(main, ["worker", "--ray-address", "auto", "--status"]) == 0
    out = capsys.readouterr().out
    assert "application sdbot: RUNNING" in out and "engine: HEALTHY, replicas: 2 RUNNING" in out


async def test_a_replica_killed_mid_job_loses_nothing(worker, local):
    """Kill the replica under a running job: every job still ends once, finished, equal to the local render."""
    requests = [request(50 + i, **SLOW) for i in range(4)]
    handles = [worker.submit(r, owner=f"user{i}") for i, r in enumerate(requests)]
    await first_step(handles[0])
    victim = worker.where(handles[0].job_id)
    retries = worker.stats.retries
    os.kill(victim.pid, signal.SIGKILL)
    results = [await asyncio.wait_for(h.wait(), 120) for h in handles]
    assert worker.stats.retries > retries
    for handle in handles:
        one_terminal_and_steps_in_order(handle)
        assert isinstance(handle.last_event, Finished)
    await assert_same_as_local(local, requests, results)


async def test_a_running_application_is_reused_and_retries_are_capped(worker, config):
    """A second bot attaches to the deployed replicas; with no retries left a lost job fails readably."""
    strict = dataclasses.replace(config, ray=dataclasses.replace(config.ray, max_retries=0))
    other = RayWorker(strict)
    await other.ready()
    try:
        handle = other.submit(request(60, **SLOW), owner="u")
        await first_step(handle)
        os.kill(other.where(handle.job_id).pid, signal.SIGKILL)
        with pytest.raises(EngineError) as err:
            await asyncio.wait_for(handle.wait(), 60)
        assert str(err.value) == REPLICA_LOST.format(n=1)
        assert isinstance(handle.last_event, Failed)
    finally:
        await other.close()
    # The first bot's application is still there (the second one did not own it).
    assert (await asyncio.wait_for(worker.submit(request(61), owner="u").wait(), 120)).images
