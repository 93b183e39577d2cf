"""The engine's worker (issue 3): one device, one job at a time, and an event loop that never waits for it.

`Worker` owns an `Engine` and renders in one dedicated thread, so there are never two generations on the
device at once and the asyncio event loop stays free. The loop side is cheap and never touches torch:

    async with Worker(config) as worker:
        handle = worker.submit(request, owner=user_id)        # returns at once; raises QueueFull at the cap
        async for event in handle:                            # Queued(3) Queued(2) ... Started Step(1, 20) ...
            ...                                               # ... Finished / Failed / Cancelled, then stops
        result = await handle                                 # the RenderResult, or raises EngineError /
                                                              # JobCancelled with a message a user can read
        not_started = await worker.close()                    # PendingJobs to persist

Events. Every job's stream is `Queued(position)` (1 = next to start; repeated whenever the position changes:
a job ahead left the queue, or a fairer or priority job was put ahead), `Started(batch)`, `Step(step, total,
preview)` for every step in order, then exactly one of `Finished(result)`, `Failed(message)`,
`Cancelled(reason)`. A handle keeps its whole history, so an iterator started late, or a second iterator,
still sees every event from the first; step previews are the exception: only the newest preview is kept
(older `Step` events in the history lose theirs), so a long job holds one preview image, not fifty.

Threads. The worker thread appends events to one FIFO outbox and wakes the loop with
`loop.call_soon_threadsafe` only when no wake-up is pending, so a burst of steps costs one loop callback
(`stats.loop_callbacks` counts them); events reach handles in the order they were made. Calls made on the
loop thread (`submit`, `cancel`, `close`) deliver their events before they return: `submit` returns a handle
that already shows its `Queued(position)`, and `cancel` of a queued job has already delivered `Cancelled`.
Results carry images, not PNGs: the caller encodes them in a thread of its own (`RenderedImage.png()`), so the
engine renders the next job meanwhile and the loop never compresses an image.

Order. Priority jobs (moderators' re-runs) go first, first come first served. The others go first come first
served (`round_robin = false`), or round robin by server (`submit(group=...)`), then by member within a server
(`round_robin = true`, the config default), so one server's fifty jobs take turns with another server's one,
and one member's ten jobs with the other members' (see engine/fairness.py). At most `max_queued_per_user` jobs per owner may wait (0 = no cap; running jobs and
priority jobs do not count); one more raises `QueueFull`, a user-facing `EngineError`.

Batching. When a job starts, the worker adds queued jobs with the same `GenerationRequest.batch_key()`
(model, VAE, CLIP skip, size, steps, sampler, schedule, CFG, LoRA set) and the same number of 75-token prompt chunks,
in queue order, up to `max_batch` images per call (default `limits.max_batch`), and renders them in one
diffusers call with one CPU generator per image. With `batch_mode = "exact"` (the config default) the engine
gives the UNet and the VAE one image at a time inside that call, so every image is pixel-identical to the
same job rendered alone (BLAS rounds differently for different batch sizes; tests/engine/test_worker.py
compares the PNG pixels); `batch_mode = "fast"` batches the tensors too, for GPU throughput, and may differ
from a solo render by a level in a few pixels. A job cancelled inside a batch stops getting events at the
next step; its images are dropped and the others go on (the call stops once every job in it is cancelled).

Faults. An exception in a render fails its jobs with a readable message, and the worker goes on with the next
job. A failure in a batch of several jobs is retried job by job, so one bad job does not fail the others.
Out of memory (`torch.cuda.OutOfMemoryError`, or an error whose message says "out of memory") empties the
model cache (`ModelCache.clear()`, which also empties the CUDA cache) and retries once with smaller batches:
the jobs split in two halves, or a single job's images in two halves (image i keeps seed + i). A job running
longer than `job_timeout_s` (0 = no limit) is cancelled at its next step; time in a model load or the VAE
decode cannot be interrupted. `fault_injector(attempt)`, called in the worker thread before each render, lets
tests inject any of these failures.

Previews. With `preview_every = K`, every K-th `Step` carries a preview of the job's first image, made by
`engine.previews.Previewer`: TAESD when its weights are in `<models_dir>/VAE-taesd/`, A1111's "Approx cheap"
otherwise (see engine/previews.py).

Shutdown. `close()` takes no new jobs, cancels the queued ones (they get `Cancelled`) and returns them as
`PendingJob`s (id, owner, request, priority) in queue order so the caller can persist them; the running job
finishes (`cancel_running=True` cancels it at its next step; `timeout` bounds the wait, then it is cancelled).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch
from PIL import Image

from engine.config import EngineConfig
from engine.errors import EngineError, JobCancelled
from engine.fairness import Served, fair_order
from engine.pipeline import Engine, RenderResult
from engine.request import GenerationRequest

log = logging.getLogger(__name__)

T = TypeVar("T")

OOM_MESSAGE = ("the GPU ran out of memory for this job, even with a smaller batch; "
               "try a smaller size or fewer images")
SHUTDOWN_QUEUED = "the image worker shut down before this job started"
SHUTDOWN_RUNNING = "the image worker shut down while this job was running"
CANCELLED = "cancelled"


# --- events ------------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class JobEvent:
    """One thing that happened to a job; `kind` names it, `terminal` marks the last event of a job."""

    job_id: str
    kind: ClassVar[str] = "event"
    terminal: ClassVar[bool] = False


@dataclass(frozen=True, kw_only=True)
class Queued(JobEvent):
    position: int  # 1: the next job to start
    kind: ClassVar[str] = "queued"


@dataclass(frozen=True, kw_only=True)
class Started(JobEvent):
    batch: int = 1  # how many jobs share this diffusers call
    kind: ClassVar[str] = "started"


@dataclass(frozen=True, kw_only=True)
class Step(JobEvent):
    step: int  # 1 .. total, after that step
    total: int
    preview: Image.Image | None = field(default=None, compare=False, repr=False)
    kind: ClassVar[str] = "step"


@dataclass(frozen=True, kw_only=True)
class Finished(JobEvent):
    result: RenderResult = field(repr=False)
    kind: ClassVar[str] = "finished"
    terminal: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True)
class Failed(JobEvent):
    message: str  # for the user, as it is
    kind: ClassVar[str] = "failed"
    terminal: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True)
class Cancelled(JobEvent):
    reason: str  # for the user: "cancelled", a time limit, a shutdown
    kind: ClassVar[str] = "cancelled"
    terminal: ClassVar[bool] = True


@dataclass(frozen=True)
class PendingJob:
    """A job as submitted: what `close()` returns for jobs that never started, to persist and resubmit."""

    job_id: str
    owner: str
    request: GenerationRequest
    priority: bool = False
    submitted_at: float = 0.0  # time.time()
    group: str | None = None  # the server it came from: the queue is round robin by server, then by owner


@dataclass(frozen=True)
class RenderAttempt:
    """What the worker is about to render (given to `fault_injector`); `retry` after a failure or OOM."""

    job_ids: tuple[str, ...]
    requests: tuple[GenerationRequest, ...]
    retry: bool = False

    @property
    def images(self) -> int:
        return sum(r.batch_size for r in self.requests)


@dataclass
class WorkerStats:
    """Counters for tests and benchmarks (written by the worker thread)."""

    renders: int = 0  # diffusers calls (render_batch)
    batched_renders: int = 0  # calls holding more than one job
    images: int = 0
    jobs_finished: int = 0
    jobs_failed: int = 0
    jobs_cancelled: int = 0
    oom_retries: int = 0
    isolated_retries: int = 0  # batches re-run job by job after a failure
    checkpoint_switches: int = 0
    max_in_pipeline: int = 0  # renders inside the engine at once: must stay 1
    max_steps_after_cancel: int = 0  # steps run between a cancel and the job stopping: at most 1
    loop_callbacks: int = 0  # wake-ups of the event loop by the worker thread


class QueueFull(EngineError):
    """The owner has `max_queued_per_user` jobs waiting already."""


class WorkerClosed(EngineError):
    """The worker is shutting down and takes no new jobs."""


# --- handles -----------------------------------------------------------------------------------------------

class JobHandle:
    """A submitted job, on the event loop: await it for the result, iterate it for its events."""

    def __init__(self, worker: "Worker", job: PendingJob) -> None:
        self._worker = worker
        self.job = job
        self._events: list[JobEvent] = []
        self._waiters: list[asyncio.Future] = []
        self._status = "queued"
        self._position: int | None = None
        self._preview_at: int | None = None  # index in _events of the Step holding the kept preview

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def owner(self) -> str:
        return self.job.owner

    @property
    def request(self) -> GenerationRequest:
        return self.job.request

    @property
    def status(self) -> str:
        """queued | running | finished | failed | cancelled"""
        return self._status

    @property
    def position(self) -> int | None:
        """The place in the queue (1 = next) while queued, else None."""
        return self._position if self._status == "queued" else None

    @property
    def events(self) -> tuple[JobEvent, ...]:
        return tuple(self._events)

    @property
    def last_event(self) -> JobEvent | None:
        return self._events[-1] if self._events else None

    def done(self) -> bool:
        return bool(self._events) and self._events[-1].terminal

    def result(self) -> RenderResult:
        """The result of a finished job; raises the job's error (EngineError / JobCancelled) otherwise."""
        if not self.done():
            raise EngineError("the job has not finished yet")
        last = self._events[-1]
        if isinstance(last, Finished):
            return last.result
        if isinstance(last, Cancelled):
            raise JobCancelled(last.reason)
        raise EngineError(last.message)  # type: ignore[attr-defined]

    def cancel(self, reason: str = CANCELLED) -> bool:
        return self._worker.cancel(self.job_id, reason)

    async def wait(self) -> RenderResult:
        while not self.done():
            await self._changed()
        return self.result()

    def __await__(self):
        return self.wait().__await__()

    def __aiter__(self) -> AsyncIterator[JobEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[JobEvent]:
        index = 0
        while True:
            while index < len(self._events):
                event = self._events[index]
                index += 1
                yield event
                if event.terminal:
                    return
            await self._changed()

    def _changed(self) -> asyncio.Future:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def _push(self, event: JobEvent) -> None:
        """Record an event (on the loop thread) and wake whoever waits."""
        if self.done():
            return
        if isinstance(event, Step) and event.preview is not None:
            if self._preview_at is not None:
                old = self._events[self._preview_at]
                self._events[self._preview_at] = dataclasses.replace(old, preview=None)
            self._preview_at = len(self._events)
        self._events.append(event)
        if isinstance(event, Queued):
            self._position = event.position
        elif isinstance(event, Started):
            self._status = "running"
        elif event.terminal:
            self._status = event.kind
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


# --- the worker --------------------------------------------------------------------------------------------

class _Job:
    """The worker's record of a job (guarded by the worker's lock)."""

    def __init__(self, pending: PendingJob, seq: int) -> None:
        self.pending = pending
        self.id = pending.job_id
        self.owner = pending.owner
        self.group = pending.group
        self.request = pending.request  # the seed is resolved when the job starts
        self.priority = pending.priority
        self.seq = seq
        self.position: int | None = None
        self.state = "queued"  # queued | running | done
        self.cancel_reason: str | None = None
        self.cancel_step: int | None = None  # the worker's step counter when a running job was cancelled
        self.started_at = 0.0
        self.last_step = 0
        self.chunks: dict[Any, int] = {}
        self.handle: JobHandle | None = None


class Worker:
    """One device, one thread, one job (or one batch of compatible jobs) at a time. See the module docstring.

    `submit`, `cancel`, `position`, `queued` and `close` are for the event loop (`cancel` may also be called
    from other threads); the engine is only ever used from the worker thread (`call` runs a function there).
    """

    def __init__(self, config: EngineConfig | None = None, *, engine: Engine | None = None,
                 batching: bool = True, max_batch: int | None = None,
                 fault_injector: Callable[[RenderAttempt], None] | None = None,
                 previewer: Any = None, nice: int = 0) -> None:
        self.config = config or (engine.config if engine is not None else EngineConfig())
        self.engine = engine if engine is not None else Engine(self.config)
        self.batching = batching
        self.max_batch = max(1, max_batch if max_batch is not None else self.config.limits.max_batch)
        self.fault_injector = fault_injector
        self.nice = nice
        self.stats = WorkerStats()
        self._previewer = previewer
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: list[_Job] = []
        self._jobs: dict[str, _Job] = {}  # queued and running jobs by id
        self._running: list[_Job] = []
        self._control: collections.deque = collections.deque()
        self._seq = itertools.count()
        self._served = Served()  # round robin: who started a job last
        self._closing = False
        self._stopping = False
        self._step_counter = 0
        self._in_pipeline = 0
        self._family = "sd"
        self._last_checkpoint: Any = None
        self._outbox: collections.deque = collections.deque()
        self._flush_lock = threading.Lock()
        self._flush_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._thread: threading.Thread | None = None
        self._thread_done: asyncio.Future | None = None

    # -- loop side ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread; call it on the event loop (`submit` and `async with` call it)."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._thread_done = self._loop.create_future()
        self._thread = threading.Thread(target=self._thread_main, name="sdbot-worker", daemon=True)
        self._thread.start()

    async def __aenter__(self) -> "Worker":
        self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close(cancel_running=True)

    def submit(self, request: GenerationRequest, *, owner: str | int, job_id: str | None = None,
               priority: bool = False, group: str | int | None = None) -> JobHandle:
        """Queue a job and return its handle at once. Raises QueueFull at the owner's cap, WorkerClosed."""
        if not isinstance(request, GenerationRequest):
            raise TypeError("submit() takes a GenerationRequest")
        if self._thread is None:
            self.start()
        job_id = uuid.uuid4().hex if job_id is None else str(job_id)
        owner = str(owner)
        cap = self.config.max_queued_per_user
        with self._cond:
            if self._closing:
                raise WorkerClosed("the image worker is shutting down; try again in a moment")
            if job_id in self._jobs:
                raise EngineError(f"a job with id {job_id!r} is already queued or running")
            if not priority and cap > 0:
                queued = sum(1 for j in self._queue if j.owner == owner and not j.priority)
                if queued >= cap:
                    raise QueueFull(f"you have {queued} jobs queued; the limit is {cap}")
            pending = PendingJob(job_id, owner, request, bool(priority), time.time(),
                                 None if group is None else str(group))
            job = _Job(pending, next(self._seq))
            job.handle = JobHandle(self, pending)
            self._queue.append(job)
            self._jobs[job_id] = job
            self._reposition()
            self._cond.notify_all()
        self._kick()
        return job.handle

    def cancel(self, job_id: str, reason: str = CANCELLED) -> bool:
        """Cancel a job: a queued one leaves the queue at once, a running one stops at its next step.

        Returns False for an unknown, finished or already cancelled job.
        """
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.state == "done" or job.cancel_reason is not None:
                return False
            job.cancel_reason = reason
            if job.state == "queued":
                self._queue.remove(job)
                self._done(job, Cancelled(job_id=job.id, reason=reason))
                self._reposition()
            else:
                job.cancel_step = self._step_counter
        self._kick()
        return True

    def position(self, job_id: str) -> int | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return job.position if job is not None and job.state == "queued" else None

    def handle(self, job_id: str) -> JobHandle | None:
        """The handle of a queued or running job."""
        with self._lock:
            job = self._jobs.get(job_id)
            return job.handle if job is not None else None

    def queued(self) -> list[PendingJob]:
        """The waiting jobs, in the order they will start."""
        with self._lock:
            return [j.pending for j in self._ordered()]

    def running(self) -> list[PendingJob]:
        with self._lock:
            return [j.pending for j in self._running if j.state == "running"]

    def call(self, fn: Callable[[Engine], T]) -> "asyncio.Future[T]":
        """Run `fn(engine)` in the worker thread before the next job (to preload a model, read the caches)
        and return a future of its result. It is queued at once, ahead of every job not yet started."""
        if self._thread is None:
            self.start()
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._stopping:
                raise WorkerClosed("the image worker is shutting down")
            self._control.append((fn, future))
            self._cond.notify_all()
        return asyncio.wrap_future(future, loop=self._loop)

    async def close(self, *, cancel_running: bool = False, timeout: float | None = None) -> list[PendingJob]:
        """Stop: cancel and return the jobs not started (in queue order); finish or cancel the running one."""
        with self._cond:
            self._closing = True
            pending = self._ordered()
            self._queue.clear()
            for job in pending:
                job.cancel_reason = SHUTDOWN_QUEUED
                self._done(job, Cancelled(job_id=job.id, reason=SHUTDOWN_QUEUED))
            if cancel_running:
                self._cancel_running(SHUTDOWN_RUNNING)
            self._stopping = True
            self._cond.notify_all()
        self._kick()
        if self._thread_done is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._thread_done), timeout)
            except asyncio.TimeoutError:
                with self._lock:
                    self._cancel_running(SHUTDOWN_RUNNING)
                await self._thread_done
            self._flush()
        return [job.pending for job in pending]

    # -- shared helpers (called with the lock held) ---------------------------------------------------------

    def _ordered(self) -> list[_Job]:
        return fair_order(self._queue, self.config.round_robin, self._served)

    def _reposition(self) -> None:
        for index, job in enumerate(self._ordered(), start=1):
            if job.position != index:
                job.position = index
                self._emit(job, Queued(job_id=job.id, position=index))

    def _cancel_running(self, reason: str) -> None:
        for job in self._running:
            if job.state == "running" and job.cancel_reason is None:
                job.cancel_reason = reason
                job.cancel_step = self._step_counter

    def _done(self, job: _Job, event: JobEvent) -> None:
        job.state = "done"
        self._jobs.pop(job.id, None)
        self._emit(job, event)
        if isinstance(event, Finished):
            self.stats.jobs_finished += 1
        elif isinstance(event, Failed):
            self.stats.jobs_failed += 1
        else:
            self.stats.jobs_cancelled += 1

    def _emit(self, job: _Job, event: JobEvent) -> None:
        self._outbox.append((job.handle, event))

    def _kick(self) -> None:
        """Deliver the outbox: now on the loop thread, else by one `call_soon_threadsafe` wake-up."""
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._flush()
            return
        with self._flush_lock:
            if self._flush_pending:
                return
            self._flush_pending = True
        try:
            self._loop.call_soon_threadsafe(self._flush)
            self.stats.loop_callbacks += 1
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def _flush(self) -> None:
        with self._flush_lock:
            self._flush_pending = False
        while True:
            try:
                handle, event = self._outbox.popleft()
            except IndexError:
                return
            handle._push(event)

    # -- worker thread --------------------------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            if self.nice:
                try:
                    tid = threading.get_native_id()
                    os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + self.nice)
                except (OSError, AttributeError):
                    log.info("could not lower the worker thread's priority")
            torch.set_num_threads(torch.get_num_threads())  # apply the process setting to this thread
            while True:
                item = self._next()
                if item is None:
                    break
                if isinstance(item, tuple):
                    self._run_control(*item)
                    continue
                try:
                    self._run(item)
                except Exception as exc:  # a bug in the worker itself: fail the jobs, keep serving
                    log.exception("worker error")
                    self._fail([j for j in item if j.state != "done"], _internal_message(exc))
                finally:
                    with self._lock:
                        self._running = []
                    self._kick()
        finally:
            with self._lock:
                controls, self._control = list(self._control), collections.deque()
            for _, future in controls:
                if future.set_running_or_notify_cancel():
                    future.set_exception(WorkerClosed("the image worker is shutting down"))
            self._kick()
            if self._loop is not None:
                try:
                    self._loop.call_soon_threadsafe(_set_done, self._thread_done)
                except RuntimeError:
                    pass

    def _run_control(self, fn, future: concurrent.futures.Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(self.engine))
        except BaseException as exc:
            future.set_exception(exc)

    def _next(self) -> list[_Job] | tuple | None:
        """Wait for work: a control call, or the next job with the queued jobs that can share its call."""
        with self._cond:
            while not (self._control or self._queue or self._stopping):
                self._cond.wait()
            if self._control:
                return self._control.popleft()
            if not self._queue:
                return None
            head = self._ordered()[0]
            self._take([head])
        try:
            return self._batch_for(head)
        except Exception:  # never lose the thread over batching: the head job runs alone
            log.exception("could not form a batch")
            return [head]

    def _batch_for(self, head: _Job) -> list[_Job]:
        """The head job and the queued jobs that can share its diffusers call (taken from the queue)."""
        batch = [head]
        ckpt = self._checkpoint_for(head.request)
        budget = self.max_batch - head.request.batch_size
        if ckpt is None or not self.batching or budget <= 0:
            return batch
        key = head.request.batch_key()
        with self._lock:
            candidates = [j for j in self._ordered()
                          if j.request.batch_key() == key and j.request.batch_size <= budget]
        if not candidates:
            return batch
        chunks = self._chunk_counter(self.engine.prompt_encoder(ckpt), ckpt)
        wanted = chunks(head)
        fits = {j.id for j in candidates if chunks(j) == wanted}
        with self._lock:
            for job in self._ordered():
                if job.id in fits and job.request.batch_size <= budget:
                    batch.append(job)
                    budget -= job.request.batch_size
            self._take(batch[1:])
        return batch

    def _take(self, jobs: list[_Job]) -> None:
        """Move jobs from the queue to running (lock held)."""
        if not jobs:
            return
        now = time.monotonic()
        for job in jobs:
            self._queue.remove(job)
            job.state = "running"
            job.started_at = now
            job.request = job.request.with_seed()  # a retry must draw the same noise
            self._served.note(job)
            self._running.append(job)
        self._reposition()

    def _checkpoint_for(self, request: GenerationRequest):
        """Load (or find) the job's checkpoint, logging a switch with its load time; None if it fails."""
        models = self.engine.models
        loads, started = models.disk_loads, time.perf_counter()
        try:
            ckpt = models.checkpoint(request.model)
        except Exception:  # the render reports it to the user
            return None
        took = time.perf_counter() - started
        previous, self._last_checkpoint = self._last_checkpoint, ckpt.file
        self._family = ckpt.family
        if previous is not None and previous.path != ckpt.file.path:
            self.stats.checkpoint_switches += 1
            how = f"loaded in {took:.2f} s" if models.disk_loads != loads else "from the cache"
            log.info("checkpoint switch: %s -> %s, %s", previous.name, ckpt.file.name, how)
        return ckpt

    @staticmethod
    def _chunk_counter(encoder, ckpt) -> Callable[[_Job], int]:
        where = ckpt.file.path

        def count(job: _Job) -> int:
            if where not in job.chunks:
                r = job.request
                try:
                    job.chunks[where] = max(encoder.chunk_count(r.prompt), encoder.chunk_count(r.negative_prompt))
                except Exception:  # never batch a prompt that does not even tokenize
                    job.chunks[where] = -1 - job.seq
            return job.chunks[where]

        return count

    def _run(self, jobs: list[_Job]) -> None:
        live = []
        with self._lock:
            for job in jobs:
                if job.cancel_reason is not None:  # cancelled between leaving the queue and starting
                    self._done(job, Cancelled(job_id=job.id, reason=job.cancel_reason))
                else:
                    live.append(job)
            for job in live:
                self._emit(job, Started(job_id=job.id, batch=len(live)))
        self._kick()
        if live:
            self._render_group(live, oom_retry=True)

    def _render_group(self, jobs: list[_Job], *, oom_retry: bool, retry: bool = False) -> None:
        status, value = self._attempt(jobs, [j.request for j in jobs], retry)
        live = [j for j in jobs if j.state != "done"]
        if status == "ok":
            for job, result in zip(jobs, value):
                self._deliver(job, result)
        elif status == "cancelled":
            self._report_cancelled(live)
        elif status == "oom":
            if not oom_retry or not live:
                self._fail(live, OOM_MESSAGE)
                return
            self.stats.oom_retries += 1
            log.warning("out of memory rendering %d job(s), %d image(s): freeing the model cache, retrying "
                        "with smaller batches", len(live), sum(j.request.batch_size for j in live))
            self.engine.models.clear()
            if len(live) > 1:
                half = len(live) // 2
                for part in (live[:half], live[half:]):
                    self._render_group(part, oom_retry=False, retry=True)
            elif live[0].request.batch_size > 1:
                self._render_halves(live[0])
            else:
                self._render_group(live, oom_retry=False, retry=True)
        elif len(live) > 1:  # one bad job must not fail the others: run each alone
            self.stats.isolated_retries += 1
            log.warning("a batch of %d jobs failed (%s); running each job alone", len(live), value)
            for job in live:
                self._render_group([job], oom_retry=oom_retry, retry=True)
        else:
            self._fail(live, value)

    def _render_halves(self, job: _Job) -> None:
        """After an OOM: a single job's images in two calls (image i keeps seed + i), merged into one result."""
        r = job.request
        first = r.batch_size // 2
        try:
            parts = [r.replace(batch_size=first), r.replace(seed=r.seed + first, batch_size=r.batch_size - first)]
        except EngineError:
            self._fail([job], OOM_MESSAGE)
            return
        results: list[RenderResult] = []
        for part in parts:
            status, value = self._attempt([job], [part], retry=True)
            if job.state == "done":
                return
            if status == "cancelled":
                self._report_cancelled([job])
                return
            if status != "ok":
                self._fail([job], OOM_MESSAGE if status == "oom" else value)
                return
            results.append(value[0])
        head = results[0]
        merged = RenderResult(
            request=r.replace(model=head.request.model), images=[img for res in results for img in res.images],
            model=head.model, vae=head.vae, seconds=sum(res.seconds for res in results),
            notes=head.notes + ("rendered in two halves after running out of memory",),
        )
        self._deliver(job, merged)

    def _attempt(self, jobs: list[_Job], requests: list[GenerationRequest], retry: bool) -> tuple[str, Any]:
        """One call into the engine: ("ok", results) | ("cancelled", None) | ("oom", None) | ("error", message).

        The exception is turned into a status inside the `except` block, so its traceback (and the tensors its
        frames hold) is gone before any retry.
        """
        offsets = list(itertools.accumulate([0] + [r.batch_size for r in requests[:-1]]))
        every = self.config.preview_every
        timeout = self.config.job_timeout_s

        def on_step(step: int, total: int, latents: torch.Tensor) -> None:
            self._step_counter += 1
            now = time.monotonic()
            previews: dict[str, Image.Image | None] = {}
            if every and every > 0 and step % every == 0:  # made outside the lock: TAESD takes a while
                for job, offset in zip(jobs, offsets):
                    if job.state != "done" and job.cancel_reason is None and step > job.last_step:
                        previews[job.id] = self._preview(latents[offset:offset + 1])
            with self._lock:
                for job in jobs:
                    if job.state == "done":
                        continue
                    if job.cancel_reason is None and timeout and timeout > 0 and now - job.started_at > timeout:
                        job.cancel_reason = f"the job ran past the {timeout:g} s time limit"
                    if job.cancel_reason is not None:
                        self._report_cancelled([job], locked=True)
                    elif step > job.last_step:
                        job.last_step = step
                        self._emit(job, Step(job_id=job.id, step=step, total=total, preview=previews.get(job.id)))
            self._kick()

        def should_stop() -> bool:
            with self._lock:  # a cancel that came during this step stops the job now
                cancelled = [j for j in jobs if j.state != "done" and j.cancel_reason is not None]
                self._report_cancelled(cancelled, locked=True)
                stop = all(job.state == "done" for job in jobs)
            if cancelled:
                self._kick()
            return stop

        attempt = RenderAttempt(tuple(j.id for j in jobs), tuple(requests), retry)
        self._in_pipeline += 1
        self.stats.max_in_pipeline = max(self.stats.max_in_pipeline, self._in_pipeline)
        self.stats.renders += 1
        self.stats.batched_renders += len(jobs) > 1
        try:
            if self.fault_injector is not None:
                self.fault_injector(attempt)
            results = self.engine.render_batch(requests, on_step, should_stop)
            self.stats.images += sum(len(r.images) for r in results)
            return "ok", results
        except JobCancelled:
            return "cancelled", None
        except Exception as exc:
            if is_out_of_memory(exc):
                return "oom", None
            if isinstance(exc, EngineError):
                log.info("job(s) %s failed: %s", ", ".join(attempt.job_ids), exc)
                return "error", str(exc)
            log.error("job(s) %s failed with an internal error: %s: %s", ", ".join(attempt.job_ids),
                      type(exc).__name__, exc)
            return "error", _internal_message(exc)
        finally:
            self._in_pipeline -= 1

    def _preview(self, latents: torch.Tensor) -> Image.Image | None:
        try:
            if self._previewer is None:
                from engine.previews import Previewer

                models = self.engine.models
                self._previewer = Previewer(self.config.models_dir, device=models.device, dtype=models.dtype,
                                            allow_pickle=self.config.allow_pickle)
            return self._previewer.preview(latents, self._family)
        except Exception:  # a preview is a nicety: never fail a job for it
            log.exception("preview failed")
            return None

    def _deliver(self, job: _Job, result: RenderResult) -> None:
        if job.state == "done":
            return
        if job.cancel_reason is not None:
            self._report_cancelled([job])
            return
        # The PNGs are encoded by the caller in a thread of its own (`RenderedImage.png_data`, cached), so the
        # engine goes on to the next job at once instead of compressing this one's images.
        with self._lock:
            if job.state != "done":
                self._done(job, Finished(job_id=job.id, result=result))

    def _report_cancelled(self, jobs: list[_Job], locked: bool = False) -> None:
        if not locked:
            with self._lock:
                return self._report_cancelled(jobs, locked=True)
        for job in jobs:
            if job.state == "done":
                continue
            if job.cancel_step is not None:
                after = self._step_counter - job.cancel_step
                self.stats.max_steps_after_cancel = max(self.stats.max_steps_after_cancel, after)
            self._done(job, Cancelled(job_id=job.id, reason=job.cancel_reason or CANCELLED))

    def _fail(self, jobs: list[_Job], message: str) -> None:
        with self._lock:
            for job in jobs:
                if job.state != "done":
                    if job.cancel_reason is not None:
                        self._done(job, Cancelled(job_id=job.id, reason=job.cancel_reason))
                    else:
                        self._done(job, Failed(job_id=job.id, message=message))


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or a RuntimeError/MemoryError saying memory ran out (CUDA, MPS, CPU)."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return "out of memory" in text or "can't allocate memory" in text
    return False


def _internal_message(exc: BaseException) -> str:
    detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
    kind = type(exc).__name__
    return f"the image could not be made because of an internal error ({kind}{': ' + detail if detail else ''})"


def _set_done(future: asyncio.Future | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)
