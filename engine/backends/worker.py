"""The engine's thread worker: one device, one job at a time, and an event loop that never waits for it.

`Worker` owns an `Engine` and renders in one dedicated thread, so there are never two generations on the
device at once and the asyncio event loop stays free. The loop side is cheap and never touches torch:

    async with Worker(config) as worker:
        handle = worker.submit(request, owner=user_id)        # returns at once; raises QueueFull at the cap
        async for event in handle:                            # Queued(3) Queued(2) ... Started Step(1, 20) ...
            ...                                               # ... Finished / Failed / Cancelled, then stops
        result = await handle                                 # the RenderResult, or raises EngineError /
                                                              # JobCancelled with a message a user can read
        not_started = await worker.close()                    # PendingJobs to persist

It is one of the backends of engine/backends/base.py (`isolation = "thread"`; the child process of
engine/backends/process.py and every Ray replica run one too). The parts it is made of:
  * events and handles: engine/jobs.py;
  * order, positions, cancel and the per-member cap: engine/backends/fair_queue.py (`FairQueue`);
  * which jobs share a diffusers call, and the gather window: engine/backends/batching.py;
  * one batch on the engine, its steps, previews and ends: engine/backends/executor.py (`Executor`), with
    a preview every `preview_every` steps;
  * what happens when a render fails or runs out of memory: engine/backends/retry.py (`RetryPolicy`).

Order. By default the worker orders its jobs itself (`order="fair"`): when the engine is free it takes the next
job in fair order, waits the gather window (`batch_window_ms`) for compatible jobs to come, and renders them in
one call. The engine child and the Ray replicas run it with `order="given"`: the bot chose the batches, and
`submit_batch` queues one to be rendered as it is, after the batches given before it.

Threads. Events made in the worker thread reach the loop through one `Outbox` (engine/jobs.py): in order, one loop
wake-up per burst (`stats.loop_callbacks`). Calls made on the loop thread (`submit`, `cancel`, `close`) deliver
their events before they return: `submit` returns a handle that already shows its `Queued(position)`, and
`cancel` of a queued job has already delivered `Cancelled`.
Results carry images, not PNGs: the caller encodes them in a thread of its own (`RenderedImage.png()`), so the
engine renders the next job meanwhile and the loop never compresses an image.

Cancel and time. A job cancelled inside a batch stops getting events at the next step; its images are dropped
and the others go on (the call stops once every job in it is cancelled). A job running longer than
`job_timeout_s` (0 = no limit) is cancelled at its next step; time in a model load or the VAE decode cannot be
interrupted. `on_render(attempt)`, given to the constructor, is called in the worker thread before each render
(the engine child reports the jobs on the engine with it; tests inject faults).

Shutdown. `close()` takes no new jobs, cancels the queued ones (they get `Cancelled`) and returns them as
`PendingJob`s (id, owner, request, priority) in queue order so the caller can persist them; the running job
finishes (`cancel_running=True` cancels it at its next step; `timeout` bounds the wait, then it is cancelled).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import torch

from engine.backends.base import ContextManaged
from engine.backends.batching import BatchPlanner, GatherWindow, fill
from engine.backends.executor import Executor
from engine.backends.fair_queue import FairQueue
from engine.backends.retry import OOM_MESSAGE, RenderAttempt  # noqa: F401  (re-exported for the bot and tests)
from engine.backends.worker_state import WorkerJob, WorkerStats
from engine.config import EngineConfig
from engine.errors import EngineError, internal_message
from engine.jobs import (  # noqa: F401  (re-exported: the names the bot and tests know from here)
    CANCELLED,
    CLOSING,
    SHUTDOWN_QUEUED,
    SHUTDOWN_RUNNING,
    Cancelled,
    Failed,
    Finished,
    JobCounts,
    JobEvent,
    JobHandle,
    Outbox,
    PendingJob,
    Queued,
    QueueFull,
    Started,
    Step,
    WorkerClosed,
)
from engine.render.pipeline import Engine
from engine.request import GenerationRequest

log = logging.getLogger(__name__)

T = TypeVar("T")


class Worker(ContextManaged):
    """One device, one thread, one job (or one batch of compatible jobs) at a time. See the module docstring.

    `submit`, `cancel`, `position`, `queued` and `close` are for the event loop (`cancel` may also be called
    from other threads); the engine is only ever used from the worker thread (`call` runs a function there).
    """

    in_process = True  # `call` reaches the engine (engine.backends.base.Backend)

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        engine: Engine | None = None,
        batching: bool = True,
        max_batch: int | None = None,
        order: Literal["fair", "given"] = "fair",
        on_render: Callable[[RenderAttempt], None] | None = None,
        previewer: Any = None,
        nice: int = 0,
    ) -> None:
        self.config = config or (engine.config if engine is not None else EngineConfig())
        self.engine = engine if engine is not None else Engine(self.config)
        self.order = order
        self.stats = WorkerStats()
        self.planner = BatchPlanner(
            self.engine,
            self.stats,
            batching=batching,
            max_batch=max_batch if max_batch is not None else self.config.limits.max_batch,
        )
        self.gather = GatherWindow(self.config.batch_window_ms, self.planner.max_batch if batching else 1)
        self.nice = nice
        given = order == "given"  # the batches come chosen: no caps, no turns, no waiting
        self.queue: FairQueue[WorkerJob] = FairQueue(
            round_robin=self.config.round_robin and not given,
            cap=0 if given else self.config.max_queued_per_user,
            make=lambda pending, seq: WorkerJob(pending, seq, JobHandle(pending, self.cancel)),
            emit=self._emit,
        )
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._outbox = Outbox()
        self.executor = Executor(
            self.engine,
            self.config,
            stats=self.stats,
            queue=self.queue,
            outbox=self._outbox,
            lock=self._lock,
            planner=self.planner,
            on_render=on_render,
            previewer=previewer,
        )
        self._running: list[WorkerJob] = []
        self._given: collections.deque[list[WorkerJob]] = collections.deque()
        self._control: collections.deque = collections.deque()
        self._closing = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._thread_done: asyncio.Future | None = None

    # -- loop side ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread; call it on the event loop (`submit` and `async with` call it)."""
        if self._thread is not None:
            return
        loop = asyncio.get_running_loop()
        self._outbox.bind(loop)
        self._thread_done = loop.create_future()
        self._thread = threading.Thread(target=self._thread_main, name="sdbot-worker", daemon=True)
        self._thread.start()

    async def ready(self) -> None:
        """Nothing to wait for: the engine is in this process (models load with the first job or `call`)."""
        self.start()

    def submit(
        self,
        request: GenerationRequest,
        *,
        owner: str | int,
        job_id: str | None = None,
        priority: bool = False,
        group: str | int | None = None,
    ) -> JobHandle:
        """Queue a job and return its handle at once. Raises QueueFull at the owner's cap, WorkerClosed."""
        if self._thread is None:
            self.start()
        with self._cond:
            if self._closing:
                raise WorkerClosed(CLOSING)
            job = self.queue.submit(request, owner=owner, job_id=job_id, priority=priority, group=group)
            if self.order == "given":
                self._given.append([job])
            self._cond.notify_all()
        self._kick()
        return job.handle

    def submit_batch(self, jobs: list[tuple[str, GenerationRequest]], *, owner: str = "bot") -> list[JobHandle | str]:
        """(`order="given"`) Queue jobs (id, request) to render as one batch, after the batches given before:
        a handle per job, or the message saying why that job was refused. Raises WorkerClosed."""
        if self._thread is None:
            self.start()
        results: list[JobHandle | str] = []
        with self._cond:
            if self._closing:
                raise WorkerClosed(CLOSING)
            batch = []
            for job_id, request in jobs:
                try:
                    batch.append(self.queue.submit(request, owner=owner, job_id=job_id))
                    results.append(batch[-1].handle)
                except EngineError as exc:
                    results.append(str(exc))
                except Exception as exc:
                    results.append(internal_message(exc))
            self._given.append(batch)
            self._cond.notify_all()
        self._kick()
        return results

    def cancel(self, job_id: str, reason: str = CANCELLED) -> bool:
        """Cancel a job: a queued one leaves the queue at once, a running one stops at its next step.

        Returns False for an unknown, finished or already cancelled job.
        """
        with self._cond:
            job = self.queue.cancel(job_id, reason)
            if job is None:
                return False
            if job.state == "running":
                job.cancel_step = self.executor.step_counter
            self._cond.notify_all()  # a gather waiting on this job looks again
        self._kick()
        return True

    def position(self, job_id: str) -> int | None:
        with self._lock:
            return self.queue.position(job_id)

    def handle(self, job_id: str) -> JobHandle | None:
        """The handle of a queued or running job."""
        with self._lock:
            return self.queue.handle(job_id)

    def queued(self) -> list[PendingJob]:
        """The waiting jobs, in the order they will start."""
        with self._lock:
            return self.queue.queued()

    def running(self) -> list[PendingJob]:
        with self._lock:
            return [j.pending for j in self._running if j.state == "running"]

    def call(self, fn: Callable[[Engine], T]) -> asyncio.Future[T]:
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
        return asyncio.wrap_future(future, loop=self._outbox.loop)

    async def close(self, *, cancel_running: bool = False, timeout: float | None = None) -> list[PendingJob]:
        """Stop: cancel and return the jobs not started (in queue order); finish or cancel the running one."""
        with self._cond:
            self._closing = True
            pending = self.queue.close(SHUTDOWN_QUEUED)
            if cancel_running:
                self._cancel_running(SHUTDOWN_RUNNING)
            self._stopping = True
            self._cond.notify_all()
        self._kick()
        if self._thread_done is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._thread_done), timeout)
            except TimeoutError:
                with self._lock:
                    self._cancel_running(SHUTDOWN_RUNNING)
                await self._thread_done
            self._outbox.flush()
        return [job.pending for job in pending]

    # -- shared helpers (called with the lock held) ---------------------------------------------------------

    def _cancel_running(self, reason: str) -> None:
        for job in self._running:
            if job.state == "running" and job.cancel_reason is None:
                job.cancel_reason = reason
                job.cancel_step = self.executor.step_counter

    def _emit(self, job: WorkerJob, event: JobEvent) -> None:
        if event.terminal:
            self.stats.count(event)
        self._outbox.put(job.handle, event)

    def _kick(self) -> None:
        self._outbox.kick()
        self.stats.loop_callbacks = self._outbox.wakeups

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
                    for call in item:
                        self.executor.run(call)
                except Exception as exc:  # a bug in the worker itself: fail the jobs, keep serving
                    log.exception("worker error")
                    self.executor.fail([j for call in item for j in call if j.state != "done"], internal_message(exc))
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
            if self._outbox.loop is not None:
                try:
                    self._outbox.loop.call_soon_threadsafe(_set_done, self._thread_done)
                except RuntimeError:
                    pass

    def _run_control(self, fn, future: concurrent.futures.Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(self.engine))
        except BaseException as exc:
            future.set_exception(exc)

    def _next(self) -> list[list[WorkerJob]] | tuple | None:
        """Wait for work: a control call, or the next batch as the calls that render it."""
        with self._cond:
            while True:
                while not (self._control or self._ready() or self._stopping):
                    self._cond.wait()
                if self._control:
                    return self._control.popleft()
                if not self._ready():
                    return None
                if self.order == "given":
                    given = [job for job in self._given.popleft() if job.state == "queued"]
                    self._take(given)
                    break
                ordered = self.queue.ordered()
                wait = self.gather.remaining(ordered)
                if wait <= 0:
                    head, candidates = ordered[0], ordered[1:]
                    self._take([head])
                    break
                self._cond.wait(wait)  # a submit or a cancel wakes it earlier
        try:
            if self.order == "given":
                return self.planner.split(given) if given else []
            fits = self.planner.plan(head, candidates)
        except Exception:  # never lose the thread over batching: each job runs alone
            log.exception("could not form a batch")
            return [[job] for job in given] if self.order == "given" else [[head]]
        with self._lock:
            more = fill(self.queue.ordered(), fits, self.planner.max_batch - head.request.batch_size) if fits else []
            self._take(more)
        return [[head, *more]]

    def _ready(self) -> bool:
        """(lock held) A batch can be taken."""
        return bool(self._given) if self.order == "given" else bool(len(self.queue))

    def _take(self, jobs: list[WorkerJob]) -> None:
        """Move jobs from the queue to running (lock held)."""
        self.queue.take(jobs, "running")
        now = time.monotonic()
        for job in jobs:
            job.started_at = now
            self._running.append(job)


def _set_done(future: asyncio.Future | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)
