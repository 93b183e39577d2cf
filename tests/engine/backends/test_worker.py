"""The engine's worker on tiny models: serialization, order, cancel, batching, faults, caches, shutdown.

Tests hold the worker busy with `worker.call(gate)` (a function run in the worker thread before any queued job)
instead of sleeping, so queue states are exact and nothing depends on timing, except where a test is about
time (the job timeout, the event loop's responsiveness), and there generously.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.backends.worker import (
    OOM_MESSAGE,
    Cancelled,
    Failed,
    Finished,
    PendingJob,
    Queued,
    QueueFull,
    Started,
    Step,
    Worker,
    WorkerClosed,
)
from engine.config import EngineConfig
from engine.errors import EngineError, JobCancelled
from engine.render.pipeline import Engine
from engine.request import GenerationRequest
from tests.paced_engine import PacedEngine

FAST = dict(steps=3, width=64, height=64)


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir: the tiny SD 1.x checkpoint, a copy under another name, three VAEs and a broken one."""
    from engine.tiny.models import build_tiny_pipeline, perturbed_vae, write_diffusers_vae_file, write_ldm_vae

    root = tmp_path_factory.mktemp("worker-models")
    pipe = build_tiny_pipeline("sd15")
    pipe.save_pretrained(root / "tiny-sd15", safe_serialization=True)
    shutil.copytree(root / "tiny-sd15", root / "tiny-copy")
    (root / "VAE").mkdir()
    write_ldm_vae(perturbed_vae(pipe.vae, 1), root / "VAE" / "va.safetensors")
    write_diffusers_vae_file(perturbed_vae(pipe.vae, 2), root / "VAE" / "vb.safetensors")
    write_ldm_vae(perturbed_vae(pipe.vae, 3), root / "VAE" / "vc.safetensors")
    (root / "VAE" / "broken.safetensors").write_bytes(b"this is not a safetensors file")
    return root


@pytest.fixture(scope="module")
def config(models_root: Path) -> EngineConfig:
    # One intra-op thread: on a small shared CPU, two OpenMP threads stall whenever a core is busy elsewhere.
    return EngineConfig(
        models_dir=models_root,
        default_model="tiny-sd15",
        max_queued_per_user=50,
        round_robin=True,
        job_timeout_s=0,
        threads=1,
    )


@pytest.fixture(scope="module")
def engine(config: EngineConfig):
    """One engine for the module (models stay warm); each test's worker owns it while the test runs."""
    threads = torch.get_num_threads()
    yield Engine(config)
    torch.set_num_threads(threads)  # Engine(threads=1) set it for the process; other modules get theirs back


@pytest.fixture
async def make_worker(config: EngineConfig, engine: Engine):
    workers: list[Worker] = []

    def make(engine_: Engine | None = None, **options) -> Worker:
        settings = {k: options.pop(k) for k in list(options) if hasattr(config, k)}
        worker = Worker(dataclasses.replace(config, **settings), engine=engine_ or engine, **options)
        worker.start()
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        await worker.close(cancel_running=True)


class Gate:
    """Holds the worker thread (inside `worker.call`) until `open()`: queued jobs wait, positions are exact."""

    def __init__(self, worker: Worker) -> None:
        self.event = threading.Event()
        self.done = worker.call(lambda engine: self.event.wait(30))

    async def open(self) -> None:
        self.event.set()
        await self.done


def req(prompt: str = "a photo of a cat", **kw) -> GenerationRequest:
    return GenerationRequest(prompt, **{**FAST, "seed": 1, **kw})


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


async def events_of(handle) -> list:
    return [event async for event in handle]


def check_stream(events: list, total: int) -> None:
    """Queued(p) with p falling, Started, Step 1..total in order, one terminal event last."""
    kinds = [e.kind for e in events]
    assert kinds[0] == "queued" and kinds[-1] == "finished", kinds
    started = kinds.index("started")
    assert set(kinds[:started]) == {"queued"}
    positions = [e.position for e in events[:started]]
    assert positions == sorted(positions, reverse=True) and len(set(positions)) == len(positions)
    assert [e.step for e in events if isinstance(e, Step)] == list(range(1, total + 1))
    assert kinds[started + 1 : -1] == ["step"] * total


class RenderSpy:
    """Wraps `engine.render_batch`: counts concurrent entries (must never exceed 1) and records the calls."""

    def __init__(self, engine: Engine, monkeypatch: pytest.MonkeyPatch, on_step_hook=None) -> None:
        self.inside = 0
        self.max_inside = 0
        self.calls: list[list[GenerationRequest]] = []
        self.threads: set[int] = set()
        self.lock = threading.Lock()
        self.on_step_hook = on_step_hook
        original = engine.render_batch

        def render_batch(requests, on_step=None, should_stop=None):
            with self.lock:
                self.inside += 1
                self.max_inside = max(self.max_inside, self.inside)
                self.calls.append(list(requests))
                self.threads.add(threading.get_ident())
            try:
                time.sleep(0.002)  # widen any window two renders could share
                step = on_step
                if self.on_step_hook is not None and on_step is not None:

                    def step(i, n, latents):
                        on_step(i, n, latents)
                        self.on_step_hook(i, n)

                return original(requests, step, should_stop)
            finally:
                with self.lock:
                    self.inside -= 1

        monkeypatch.setattr(engine, "render_batch", render_batch)


# --- the basics -----------------------------------------------------------------------------------------------


async def test_submit_acknowledges_at_once_and_streams_events_in_order(make_worker):
    worker = make_worker()
    handle = worker.submit(req(steps=4), owner="u1", job_id="job-1")
    assert handle.job_id == "job-1" and handle.owner == "u1"
    assert handle.status == "queued" and handle.position == 1  # already delivered when submit returns
    events = await events_of(handle)
    check_stream(events, total=4)
    assert events[0] == Queued(job_id="job-1", position=1)
    assert isinstance(events[-1], Finished) and handle.status == "finished"
    result = await handle
    assert result is events[-1].result and len(result.images) == 1
    # Not encoded by the worker: the engine goes on to the next job while the caller encodes (in a thread).
    assert "png_data" not in vars(result.images[0])
    assert result.request.seed == 1 and result.images[0].png().startswith(b"\x89PNG")
    assert [e.kind for e in await events_of(handle)] == [e.kind for e in events]  # a late iterator replays


async def test_random_seed_is_resolved_once(make_worker):
    worker = make_worker()
    result = await worker.submit(req(seed=-1), owner="u")
    assert 0 <= result.request.seed < 2**32 - 1
    assert str(result.request.seed) in result.images[0].infotext


async def test_strict_serialization_with_many_submitters(make_worker, engine, monkeypatch):
    spy = RenderSpy(engine, monkeypatch)
    worker = make_worker(max_batch=3)
    loop_thread = threading.get_ident()

    async def user(n: int) -> list:
        handles = []
        for i in range(4):
            await asyncio.sleep(0.001 * ((n * 7 + i) % 5))
            kind = (n + i) % 3  # three incompatible settings, so some jobs batch and others cannot
            handles.append(worker.submit(req(f"cat {n} {i}", seed=n * 10 + i, steps=2 + kind), owner=n))
        return [await h for h in handles]

    results = await asyncio.gather(*(user(n) for n in range(6)))
    assert sum(len(r) for r in results) == 24
    assert spy.max_inside == 1 and worker.stats.max_in_pipeline == 1
    assert loop_thread not in spy.threads and len(spy.threads) == 1  # always the one worker thread
    assert worker.stats.jobs_finished == 24
    assert all(len({r.batch_key() for r in call}) == 1 for call in spy.calls)


async def test_event_loop_stays_responsive_while_a_job_runs(make_worker):
    worker = make_worker()
    handle = worker.submit(req(steps=30, width=128, height=128), owner="u")
    async for event in handle:
        if isinstance(event, Step):
            break
    turns = 0  # the loop's turns while the render goes on (how late they come: benchmarks/worker_measures.py)
    while not handle.done():
        await asyncio.sleep(0.005)
        extra = worker.submit(req(), owner="other")  # a slash command's acknowledgement...
        assert worker.cancel(extra.job_id)  # ...and its cancel button, answered while the job renders
        turns += 1
    await handle
    assert turns > 5  # a render holding the loop (or a submit waiting for it) leaves it a turn or two at most


# --- order, positions, caps --------------------------------------------------------------------------------


async def test_positions_update_when_a_job_leaves_the_queue(make_worker):
    worker = make_worker(batching=False, round_robin=False)
    gate = Gate(worker)
    handles = [worker.submit(req(f"cat {i}", seed=i), owner=f"u{i}", job_id=f"j{i}") for i in range(4)]
    assert [h.position for h in handles] == [1, 2, 3, 4]
    assert worker.cancel("j1") is True
    assert handles[1].status == "cancelled"  # removed at once
    assert [h.position for h in handles] == [1, None, 2, 3]
    assert worker.position("j3") == 3 and [p.job_id for p in worker.queued()] == ["j0", "j2", "j3"]
    await gate.open()
    streams = [await events_of(h) for h in handles]
    assert [e.position for e in streams[3] if isinstance(e, Queued)] == [4, 3, 2, 1]
    assert [e.position for e in streams[2] if isinstance(e, Queued)] == [3, 2, 1]
    for i in (0, 2, 3):
        check_stream(streams[i], total=3)
    assert [e.kind for e in streams[1]] == ["queued", "cancelled"]
    assert worker.cancel("j1") is False and worker.cancel("nope") is False


async def _renders_in_turn(make_worker, engine, monkeypatch, backlog, expected):
    """Queue `backlog` ((owner, server, count): jobs `owner-0`...) behind a closed gate, round robin: the queue
    lists `expected` with positions 1, 2, ... and the jobs render in that order."""
    spy = RenderSpy(engine, monkeypatch)
    worker = make_worker(batching=False, round_robin=True)
    gate = Gate(worker)
    for owner, group, count in backlog:
        for i in range(count):
            worker.submit(req(f"{owner}-{i}"), owner=owner, group=group, job_id=f"{owner}-{i}")
    assert [p.job_id for p in worker.queued()] == expected
    assert [worker.position(j) for j in expected] == list(range(1, len(expected) + 1))
    await gate.open()
    await asyncio.gather(*(worker.handle(j) for j in expected))
    assert [call[0].prompt for call in spy.calls] == expected


async def test_round_robin_interleaves_users(make_worker, engine, monkeypatch):
    await _renders_in_turn(
        make_worker,
        engine,
        monkeypatch,
        (("A", None, 4), ("B", None, 2), ("C", None, 1)),
        ["A-0", "B-0", "C-0", "A-1", "B-1", "A-2", "A-3"],
    )


async def test_round_robin_newcomer_goes_ahead_of_a_backlog(make_worker):
    worker = make_worker(batching=False, round_robin=True)
    gate = Gate(worker)
    backlog = [worker.submit(req(f"A{i}"), owner="A", job_id=f"A{i}") for i in range(5)]
    newcomer = worker.submit(req("B0"), owner="B", job_id="B0")
    assert newcomer.position == 2 and [h.position for h in backlog] == [1, 3, 4, 5, 6]
    # the jobs it passed were told their new place
    assert [e.position for e in backlog[1].events] == [2, 3]
    await gate.open()
    await asyncio.gather(newcomer, *backlog)


async def test_two_servers_alternate_then_members_take_turns(make_worker, engine, monkeypatch):
    """Server G1 sends six jobs (a1 four, a2 two) before server G2 sends two: G2 is not starved behind G1's
    backlog, the two servers alternate, and inside G1 its members take turns."""
    await _renders_in_turn(
        make_worker,
        engine,
        monkeypatch,
        (("a1", "G1", 4), ("a2", "G1", 2), ("b1", "G2", 2)),
        ["a1-0", "b1-0", "a2-0", "b1-1", "a1-1", "a2-1", "a1-2", "a1-3"],
    )


async def test_fifo_when_round_robin_is_off(make_worker):
    worker = make_worker(batching=False, round_robin=False)
    gate = Gate(worker)
    for owner, count in (("A", 3), ("B", 2)):
        for i in range(count):
            worker.submit(req(f"{owner}{i}"), owner=owner, job_id=f"{owner}{i}")
    assert [p.job_id for p in worker.queued()] == ["A0", "A1", "A2", "B0", "B1"]
    await gate.open()


async def test_priority_jobs_go_first(make_worker):
    worker = make_worker(batching=False)
    gate = Gate(worker)
    worker.submit(req("A0"), owner="A", job_id="A0")
    worker.submit(req("B0"), owner="B", job_id="B0")
    rerun = worker.submit(req("re-run"), owner="mod", job_id="M0", priority=True)
    assert rerun.position == 1 and worker.position("A0") == 2 and worker.position("B0") == 3
    await gate.open()
    await rerun


async def test_per_user_cap(make_worker):
    worker = make_worker(max_queued_per_user=2, batching=False)
    gate = Gate(worker)
    worker.submit(req(), owner=42, job_id="a")
    worker.submit(req(), owner="42", job_id="b")  # the same owner, as int or str
    with pytest.raises(QueueFull, match=r"^you have 2 jobs queued; the limit is 2$") as info:
        worker.submit(req(), owner=42)
    assert isinstance(info.value, EngineError)
    worker.submit(req(), owner=7)  # other users are not affected
    worker.submit(req(), owner=42, priority=True)  # a moderator's re-run is not capped
    with pytest.raises(EngineError, match="already queued"):
        worker.submit(req(), owner=1, job_id="a")
    worker.cancel("a")
    worker.submit(req(), owner=42, job_id="c")  # room again
    await gate.open()
    await worker.handle("c")


# --- cancel ------------------------------------------------------------------------------------------------


async def test_cancel_queued_job_never_renders(make_worker, engine, monkeypatch):
    spy = RenderSpy(engine, monkeypatch)
    worker = make_worker()
    gate = Gate(worker)
    keep = worker.submit(req("keep"), owner="u")
    drop = worker.submit(req("drop"), owner="u")
    assert drop.cancel() is True
    assert drop.done() and isinstance(drop.last_event, Cancelled)
    with pytest.raises(JobCancelled):
        await drop
    await gate.open()
    await keep
    assert [r.prompt for call in spy.calls for r in call] == ["keep"]


async def test_cancel_running_job_stops_at_its_next_step(make_worker, engine, monkeypatch):
    worker = make_worker()
    seen: list[int] = []

    def hook(step: int, total: int) -> None:  # runs in the worker thread, right after the step's callback
        seen.append(step)
        if step == 3:
            worker.cancel("long")

    RenderSpy(engine, monkeypatch, on_step_hook=hook)
    gate = Gate(worker)
    long = worker.submit(req(steps=40), owner="u", job_id="long")
    after = worker.submit(req("next", steps=2, seed=5), owner="v", job_id="after")
    await gate.open()
    events = await events_of(long)
    assert [e.step for e in events if isinstance(e, Step)] == [1, 2, 3]
    assert isinstance(events[-1], Cancelled) and events[-1].reason == "cancelled"
    assert len((await after).images) == 1  # the worker went on with the next job
    assert seen == [1, 2, 3, 1, 2]  # the long job ran no step after the cancel, then "after" ran
    assert worker.stats.max_steps_after_cancel == 0


async def test_cancel_running_job_from_the_loop(make_worker):
    worker = make_worker()
    handle = worker.submit(req(steps=150), owner="u")
    nxt = worker.submit(req("next", steps=2, width=128), owner="v")  # not batchable with it
    async for event in handle:
        if isinstance(event, Step) and event.step == 2:
            assert handle.cancel() is True
    assert handle.status == "cancelled"
    assert max(e.step for e in handle.events if isinstance(e, Step)) < 150
    assert worker.stats.max_steps_after_cancel <= 1
    await nxt


async def test_cancel_one_job_of_a_batch_keeps_the_others(make_worker):
    worker = make_worker()
    gate = Gate(worker)
    handles = [worker.submit(req(f"cat {i}", seed=i, steps=30), owner=i, job_id=f"b{i}") for i in range(3)]
    await gate.open()
    async for event in handles[1]:
        if isinstance(event, Step) and event.step == 2:
            worker.cancel("b1")
    assert handles[1].status == "cancelled"
    for h in (handles[0], handles[2]):
        events = await events_of(h)
        assert events[[e.kind for e in events].index("started")].batch == 3
        check_stream(events, total=30)


async def test_job_timeout_cancels_and_the_worker_goes_on(make_worker, config):
    worker = make_worker(PacedEngine(config, step_s=0.1), job_timeout_s=1.0)
    slow = worker.submit(req(steps=30), owner="u")  # 3 s at least, on any machine
    quick = worker.submit(req(steps=1), owner="v")
    with pytest.raises(JobCancelled, match="1 s time limit"):
        await slow
    assert slow.status == "cancelled"
    await quick


# --- batching ----------------------------------------------------------------------------------------------

PROMPTS = [
    dict(prompt="a photo of a cat", seed=11),
    dict(prompt="a dog in the city, (masterpiece:1.3)", negative_prompt="blurry", seed=22, batch_size=2),
    dict(prompt="portrait of a woman, [red] hair", seed=33),
    dict(prompt="landscape painting, sea", negative_prompt="text", seed=4_000_000_000),
]


async def batch_then_solo(worker: Worker, requests: list[GenerationRequest]):
    gate = Gate(worker)
    handles = [worker.submit(r, owner=i) for i, r in enumerate(requests)]
    await gate.open()
    batched = [await h for h in handles]
    assert {e.batch for h in handles for e in h.events if isinstance(e, Started)} == {len(requests)}
    solo = []
    for i, r in enumerate(requests):  # the worker is idle: each runs alone
        h = worker.submit(r, owner=i)
        solo.append(await h)
        assert [e.batch for e in h.events if isinstance(e, Started)] == [1]
    return batched, solo


def assert_same_pixels(batched, solo) -> None:
    for b, s in zip(batched, solo):
        assert b.request == s.request and len(b.images) == len(s.images)
        for bi, si in zip(b.images, s.images):
            assert bi.seed == si.seed and bi.infotext == si.infotext
            assert np.array_equal(pixels(bi.png()), pixels(si.png()))
            assert bi.png() == si.png()


@pytest.mark.parametrize("sampler", ["DPM++ 2M Karras", "Euler a"])
async def test_batched_images_are_pixel_identical_to_solo(make_worker, sampler):
    worker = make_worker(max_batch=8)
    requests = [req(**p, sampler=sampler) for p in PROMPTS]
    batched, solo = await batch_then_solo(worker, requests)
    assert_same_pixels(batched, solo)
    assert len({bytes(pixels(r.images[0].png()).tobytes()) for r in batched}) == len(batched)  # really differ


async def test_batched_sdxl_images_are_pixel_identical_to_solo(make_worker, tmp_path_factory, config):
    from engine.tiny.models import write_tiny_model

    root = tmp_path_factory.mktemp("xl")
    write_tiny_model(root / "tiny-xl", family="sdxl")
    xl_config = dataclasses.replace(config, models_dir=root, default_model="tiny-xl")
    worker = make_worker(Engine(xl_config), models_dir=root, default_model="tiny-xl", max_batch=8)
    batched, solo = await batch_then_solo(worker, [req(**p, clip_skip=2) for p in PROMPTS[:3]])
    assert_same_pixels(batched, solo)


async def test_only_compatible_jobs_share_a_call(make_worker, engine, monkeypatch):
    spy = RenderSpy(engine, monkeypatch)
    worker = make_worker(max_batch=4)
    gate = Gate(worker)
    long_prompt = ", ".join(["a photo of a cat"] * 30)  # two 75-token chunks
    jobs = [
        req("a", seed=1),
        req("b", seed=2, steps=4),
        req("c", seed=3),
        req(long_prompt, seed=4),
        req("d", seed=5, vae="va.safetensors"),
        req("e", seed=6, batch_size=2),
        req("f", seed=7),
        req("g", seed=8, cfg_scale=5.0),
    ]
    handles = [worker.submit(r, owner=i) for i, r in enumerate(jobs)]
    await gate.open()
    await asyncio.gather(*handles)
    groups = [sorted(r.prompt[:1] for r in call) for call in spy.calls]
    assert groups[0] == ["a", "c", "e"]  # a + c + e (2 images) = 4 images: f waits for the next call
    assert sorted(map(tuple, groups)) == sorted(map(tuple, [["a", "c", "e"], ["b"], ["a"], ["d"], ["f"], ["g"]]))
    assert worker.stats.batched_renders == 1


# --- the gather window and given batches ------------------------------------------------------------------


def started_batches(handles) -> list[int]:
    return [next(e.batch for e in h.events if e.kind == "started") for h in handles]


async def test_a_burst_renders_as_full_batches(make_worker):
    """8 compatible jobs submitted one by one to an idle engine: 4 + 4, not 1 + 4 + 3 (the window gathers)."""
    worker = make_worker(batch_window_ms=1000, max_batch=4)
    handles = []
    for i in range(8):
        handles.append(worker.submit(req(f"cat {i}", seed=i), owner=f"m{i % 3}"))
        await worker.call(lambda engine: None)  # the worker thread looks at the queue between two submits
    await asyncio.gather(*handles)
    assert started_batches(handles) == [4] * 8 and worker.stats.renders == 2


async def test_a_job_alone_starts_after_the_window(make_worker):
    worker = make_worker(batch_window_ms=100, max_batch=4)
    handle = worker.submit(req(), owner="a")
    await asyncio.wait_for(handle, 60)  # it did not wait for companions that never came
    assert started_batches([handle]) == [1] and worker.stats.renders == 1


async def test_given_batches_render_as_given_in_order(make_worker):
    calls: list[tuple[str, ...]] = []
    worker = make_worker(order="given", max_batch=4, on_render=lambda attempt: calls.append(attempt.job_ids))
    gate = Gate(worker)
    first = worker.submit_batch([("a", req("a", seed=1)), ("b", req("b", seed=2)), ("c", req("c", width=96))])
    second = worker.submit_batch([("d", req("d", seed=3)), ("a", req("again"))])  # "a" is in use: refused
    assert second[1] == "a job with id 'a' is already queued or running"
    await gate.open()
    await asyncio.gather(*first, second[0])
    assert calls == [("a", "b"), ("c",), ("d",)]  # the given order; c's size splits it off a's and b's call


# --- faults ------------------------------------------------------------------------------------------------


async def test_injected_failure_fails_only_that_job(make_worker):
    def inject(attempt):
        if "bad" in attempt.job_ids:
            raise RuntimeError("boom")

    worker = make_worker(on_render=inject)
    gate = Gate(worker)
    good1 = worker.submit(req("one", seed=1), owner="a")
    bad = worker.submit(req("two", seed=2), owner="b", job_id="bad")
    good2 = worker.submit(req("three", seed=3), owner="c")
    await gate.open()
    with pytest.raises(EngineError, match=r"internal error \(RuntimeError: boom\)"):
        await bad
    assert isinstance(bad.last_event, Failed)
    await good1, await good2  # the batch was re-run job by job
    assert worker.stats.isolated_retries == 1
    assert len((await worker.submit(req("after"), owner="a")).images) == 1


async def test_engine_error_message_reaches_the_user(make_worker):
    nan = "the image came out as NaN (not a number) even in 32-bit; try another VAE"

    def inject(attempt):
        if any(r.prompt == "nan" for r in attempt.requests):
            raise EngineError(nan)

    worker = make_worker(on_render=inject)
    failed = worker.submit(req("nan"), owner="a")
    with pytest.raises(EngineError) as info:
        await failed
    assert str(info.value) == nan and failed.last_event == Failed(job_id=failed.job_id, message=nan)
    await worker.submit(req("fine"), owner="a")


async def test_broken_vae_file_fails_the_job_not_the_worker(make_worker):
    worker = make_worker()
    broken = worker.submit(req(vae="broken.safetensors"), owner="a")
    with pytest.raises(EngineError, match="not a readable safetensors file"):
        await broken
    await worker.submit(req(vae="va.safetensors"), owner="a")


def oom_above(limit: int):
    calls = []

    def inject(attempt):
        calls.append(attempt.images)
        if attempt.images > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    return inject, calls


async def test_oom_on_a_batch_of_four_retries_with_smaller_batches(make_worker, engine):
    inject, calls = oom_above(2)
    worker = make_worker(on_render=inject, max_batch=4)
    gate = Gate(worker)
    requests = [req(f"cat {i}", seed=i) for i in range(4)]
    handles = [worker.submit(r, owner=i) for i, r in enumerate(requests)]
    loads = engine.models.disk_loads
    await gate.open()
    results = [await h for h in handles]
    assert calls == [4, 2, 2] and worker.stats.oom_retries == 1
    assert engine.models.disk_loads == loads + 1  # the cache was freed: the checkpoint loaded again
    solo = [await worker.submit(r, owner="s") for r in requests]
    assert_same_pixels(results, solo)


async def test_oom_on_one_job_renders_its_images_in_halves(make_worker):
    inject, calls = oom_above(2)
    worker = make_worker(on_render=inject)
    result = await worker.submit(req(batch_size=4, seed=100), owner="a")
    assert calls == [4, 2, 2]
    assert [i.seed for i in result.images] == [100, 101, 102, 103] and result.request.batch_size == 4
    assert "out of memory" in result.notes[-1]


async def test_oom_twice_fails_with_a_readable_message(make_worker):
    inject, calls = oom_above(0)
    armed = threading.Event()
    armed.set()
    worker = make_worker(on_render=lambda attempt: inject(attempt) if armed.is_set() else None)
    handle = worker.submit(req(), owner="a")
    with pytest.raises(EngineError) as info:
        await handle
    assert str(info.value) == OOM_MESSAGE and calls == [1, 1]
    armed.clear()
    await worker.submit(req(), owner="a")


# --- caches ------------------------------------------------------------------------------------------------


async def test_a_vae_used_before_costs_no_disk_read(make_worker, engine):
    worker = make_worker(batching=False)
    await worker.submit(req(), owner="a")  # the checkpoint is loaded
    loads = engine.models.disk_loads
    for vae in ["va.safetensors", "vb.safetensors", "va.safetensors", "vc.safetensors", "vb.safetensors", "va"]:
        result = await worker.submit(req(vae=vae), owner="a")
        assert result.vae and result.vae.startswith(vae)
    assert engine.models.disk_loads == loads + 3  # three VAEs read once each, the checkpoint never again


async def test_checkpoint_switch_is_logged_with_its_load_time(make_worker, config, caplog):
    worker = make_worker(Engine(config), batching=False)
    caplog.set_level(logging.INFO, logger="engine.backends.worker")
    for model in ["tiny-sd15", "tiny-copy", "tiny-copy", "tiny-sd15"]:
        result = await worker.submit(req(model=model), owner="a")
        assert result.model == model
    assert worker.stats.checkpoint_switches == 2
    switches = [r.getMessage() for r in caplog.records if "checkpoint switch" in r.getMessage()]
    assert len(switches) == 2 and switches[0].startswith("checkpoint switch: tiny-sd15 -> tiny-copy, loaded in ")
    assert worker.engine.models.disk_loads == 3  # cache size 1: each switch reads the file again


# --- previews ----------------------------------------------------------------------------------------------


async def test_step_events_carry_previews_every_k_steps(make_worker):
    made = []

    class Recorder:
        def preview(self, latents, family, vae_scale_factor):
            made.append((tuple(latents.shape), family, vae_scale_factor))
            return Image.new("RGB", (latents.shape[-1], latents.shape[-2]))

    worker = make_worker(preview_every=2, previewer=Recorder(), max_batch=4)
    gate = Gate(worker)
    handles = [worker.submit(req(f"cat {i}", steps=6, seed=i), owner=i) for i in range(2)]
    unseen = worker.submit(req("nobody watches", steps=6, seed=9).replace(previews=False), owner=3)
    await gate.open()
    await asyncio.gather(*handles, unseen)
    assert made == [((1, 4, 8, 8), "sd", 8)] * 6  # steps 2, 4, 6 for each of the two jobs, one image each
    assert not [e for e in unseen.events if isinstance(e, Step) and e.preview is not None]  # none made for it
    # only the newest preview is kept in a handle's history
    kept = [e for e in handles[0].events if isinstance(e, Step) and e.preview is not None]
    assert [e.step for e in kept] == [6] and kept[0].preview.size == (8, 8)


async def test_default_previews_are_approx_cheap(make_worker):
    worker = make_worker(preview_every=1)
    handle = worker.submit(req(steps=2, width=128, height=64), owner="a")
    previews = []
    async for event in handle:
        if isinstance(event, Step) and event.preview is not None:
            previews.append(event.preview.size)
    assert previews and set(previews) == {(16, 8)}  # latent size: W/8 x H/8


# --- shutdown ----------------------------------------------------------------------------------------------


async def test_close_returns_jobs_not_started_and_cancels_the_running_one(make_worker):
    worker = make_worker(batching=False)
    running = worker.submit(req(steps=150), owner="a", job_id="run")
    async for event in running:
        if isinstance(event, Step):
            break
    waiting = [worker.submit(req(f"w{i}"), owner=f"u{i}", job_id=f"w{i}", priority=i == 2) for i in range(3)]
    left = await worker.close(cancel_running=True)
    assert [p.job_id for p in left] == ["w2", "w0", "w1"]  # queue order: the priority job first
    assert all(isinstance(p, PendingJob) for p in left) and left[0].priority and left[1].owner == "u0"
    assert left[1].request == req("w0")
    assert running.status == "cancelled" and "shut down" in running.last_event.reason
    assert all(h.status == "cancelled" for h in waiting)
    with pytest.raises(WorkerClosed):
        worker.submit(req(), owner="a")


async def test_close_lets_the_running_job_finish(make_worker):
    worker = make_worker()
    running = worker.submit(req(steps=8), owner="a")
    queued = worker.submit(req(steps=9), owner="b")
    async for event in running:
        if isinstance(event, Started):
            break
    left = await worker.close()
    assert running.status == "finished" and [p.job_id for p in left] == [queued.job_id]


async def test_close_with_timeout_cancels_a_long_job(make_worker, config):
    worker = make_worker(PacedEngine(config, step_s=0.1))
    running = worker.submit(req(steps=30), owner="a")  # 3 s at least: far from done after 0.1 s
    async for event in running:
        if isinstance(event, Step):
            break
    assert await worker.close(timeout=0.1) == []
    assert running.status == "cancelled"
