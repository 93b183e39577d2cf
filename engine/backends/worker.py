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
  * which jobs share a diffusers call: engine/backends/batching.py;
  * what happens when a render fails or runs out of memory: engine/backends/retry.py (`RetryPolicy`).

Threads. Events made in the worker thread reach the loop through one `Outbox` (engine/jobs.py): in order, one loop
wake-up per burst (`stats.loop_callbacks`). Calls made on the loop thread (`submit`, `cancel`, `close`) deliver
their events before they return: `submit` returns a handle that already shows its `Queued(position)`, and
`cancel` of a queued job has already delivered `Cancelled`.
Results carry images, not PNGs: the caller encodes them in a thread of its own (`RenderedImage.png()`), so the
engine renders the next job meanwhile and the loop never compresses an image.

Cancel and time. A job cancelled inside a batch stops getting events at the next step; its images are dropped
and the others go on (the call stops once every job in it is cancelled). A job running longer than
`job_timeout_s` (0 = no limit) is cancelled at its next step; time in a model load or the VAE decode cannot be
interrupted. `fault_injector(attempt)`, called in the worker thread before each render, lets tests inject
failures.

Previews. With `preview_every = K`, every K-th `Step` carries a preview of the job's first image, made by
`engine.render.previews.Previewer`: TAESD when its weights are in `<models_dir>/VAE-taesd/`, A1111's "Approx cheap"
otherwise (see engine/render/previews.py).

Shutdown. `close()` takes no new jobs, cancels the queued ones (they get `Cancelled`) and returns them as
`PendingJob`s (id, owner, request, priority) in queue order so the caller can persist them; the running job
finishes (`cancel_running=True` cancels it at its next step; `timeout` bounds the wait, then it is cancelled).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from PIL import Image

from engine.backends.base import ContextManaged
from engine.backends.batching import BatchPlanner
from engine.backends.fair_queue import FairQueue
from engine.backends.retry import OOM_MESSAGE, RenderAttempt, RetryPolicy, Status, is_out_of_memory  # noqa: F401
from engine.backends.worker_state import WorkerJob, WorkerStats
from engine.config import EngineConfig
from engine.errors import EngineError, JobCancelled, internal_message
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
from engine.render.pipeline import Engine, RenderResult
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
        fault_injector: Callable[[RenderAttempt], None] | None = None,
        previewer: Any = None,
        nice: int = 0,
    ) -> None:
        self.config = config or (engine.config if engine is not None else EngineConfig())
        self.engine = engine if engine is not None else Engine(self.config)
        self.fault_injector = fault_injector
        self.stats = WorkerStats()
        self.planner = BatchPlanner(
            self.engine,
            self.stats,
            batching=batching,
            max_batch=max_batch if max_batch is not None else self.config.limits.max_batch,
        )
        self.nice = nice
        self.queue: FairQueue[WorkerJob] = FairQueue(
            round_robin=self.config.round_robin,
            cap=self.config.max_queued_per_user,
            make=lambda pending, seq: WorkerJob(pending, seq, JobHandle(pending, self.cancel)),
            emit=self._emit,
        )
        self.retry = RetryPolicy(self, self.stats)
        self._previewer = previewer
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._running: list[WorkerJob] = []
        self._control: collections.deque = collections.deque()
        self._closing = False
        self._stopping = False
        self._step_counter = 0
        self._in_pipeline = 0
        self._outbox = Outbox()
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
            self._cond.notify_all()
        self._kick()
        return job.handle

    def cancel(self, job_id: str, reason: str = CANCELLED) -> bool:
        """Cancel a job: a queued one leaves the queue at once, a running one stops at its next step.

        Returns False for an unknown, finished or already cancelled job.
        """
        with self._cond:
            job = self.queue.cancel(job_id, reason)
            if job is None:
                return False
            if job.state == "running":
                job.cancel_step = self._step_counter
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
                job.cancel_step = self._step_counter

    def _done(self, job: WorkerJob, event: JobEvent) -> None:
        self.queue.finish(job, event)

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
                    self._run(item)
                except Exception as exc:  # a bug in the worker itself: fail the jobs, keep serving
                    log.exception("worker error")
                    self.fail([j for j in item if j.state != "done"], internal_message(exc))
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

    def _next(self) -> list[WorkerJob] | tuple | None:
        """Wait for work: a control call, or the next job with the queued jobs that can share its call."""
        with self._cond:
            while not (self._control or len(self.queue) or self._stopping):
                self._cond.wait()
            if self._control:
                return self._control.popleft()
            if not len(self.queue):
                return None
            head = self.queue.ordered()[0]
            self._take([head])
        try:
            return self.planner.plan(head, self.queue, self._lock, self._take)
        except Exception:  # never lose the thread over batching: the head job runs alone
            log.exception("could not form a batch")
            return [head]

    def _take(self, jobs: list[WorkerJob]) -> None:
        """Move jobs from the queue to running (lock held)."""
        self.queue.take(jobs, "running")
        now = time.monotonic()
        for job in jobs:
            job.started_at = now
            self._running.append(job)

    def _run(self, jobs: list[WorkerJob]) -> None:
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
            self.retry.render(live)

    # -- what the retry policy drives (engine.backends.retry.Runner) -------------------------------------------------

    def attempt(self, jobs: list[WorkerJob], requests: list[GenerationRequest], retry: bool) -> tuple[Status, Any]:
        """One call into the engine: ("ok", results) | ("cancelled", None) | ("oom", None) | ("error", message).

        The exception is turned into a status inside the `except` block, so its traceback (and the tensors its
        frames hold) is gone before any retry.
        """
        attempt = RenderAttempt(tuple(j.id for j in jobs), tuple(requests), retry)
        on_step, should_stop = self._step_hooks(jobs, requests)
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
            log.error(
                "job(s) %s failed with an internal error: %s: %s", ", ".join(attempt.job_ids), type(exc).__name__, exc
            )
            return "error", internal_message(exc)
        finally:
            self._in_pipeline -= 1

    def _step_hooks(self, jobs: list[WorkerJob], requests: list[GenerationRequest]):
        """The engine's `on_step` (Step events, previews, the time limit) and `should_stop` (cancels) for a call."""
        offsets = list(itertools.accumulate([0] + [r.batch_size for r in requests[:-1]]))
        every = self.config.preview_every
        timeout = self.config.job_timeout_s

        def on_step(step: int, total: int, latents: torch.Tensor) -> None:
            self._step_counter += 1
            now = time.monotonic()
            previews: dict[str, Image.Image | None] = {}
            if every and every > 0 and step % every == 0:  # made outside the lock: TAESD takes a while
                for job, offset, request in zip(jobs, offsets, requests):
                    if request.previews and job.state != "done" and job.cancel_reason is None and step > job.last_step:
                        previews[job.id] = self._preview(latents[offset : offset + 1])
            with self._lock:
                for job in jobs:
                    if job.state == "done":
                        continue
                    if job.cancel_reason is None and timeout and timeout > 0 and now - job.started_at > timeout:
                        job.cancel_reason = f"the job ran past the {timeout:g} s time limit"
                    if job.cancel_reason is not None:
                        self._report_cancelled([job])
                    elif step > job.last_step:
                        job.last_step = step
                        self._emit(job, Step(job_id=job.id, step=step, total=total, preview=previews.get(job.id)))
            self._kick()

        def should_stop() -> bool:
            with self._lock:  # a cancel that came during this step stops the job now
                cancelled = [j for j in jobs if j.state != "done" and j.cancel_reason is not None]
                self._report_cancelled(cancelled)
                stop = all(job.state == "done" for job in jobs)
            if cancelled:
                self._kick()
            return stop

        return on_step, should_stop

    def _preview(self, latents: torch.Tensor) -> Image.Image | None:
        try:
            if self._previewer is None:
                from engine.render.previews import Previewer

                models = self.engine.models
                self._previewer = Previewer(
                    self.config.models_dir,
                    device=models.device,
                    dtype=models.dtype,
                    allow_pickle=self.config.allow_pickle,
                )
            return self._previewer.preview(latents, self.planner.family, self.planner.vae_scale_factor)
        except Exception:  # a preview is a nicety: never fail a job for it
            log.exception("preview failed")
            return None

    def deliver(self, job: WorkerJob, result: RenderResult) -> None:
        # The PNGs are encoded by the caller in a thread of its own (`RenderedImage.png_data`, cached), so the
        # engine goes on to the next job at once instead of compressing this one's images.
        with self._lock:
            if job.state == "done":
                return
            if job.cancel_reason is not None:
                self._report_cancelled([job])
            else:
                self._done(job, Finished(job_id=job.id, result=result))

    def report_cancelled(self, jobs: list[WorkerJob]) -> None:
        with self._lock:
            self._report_cancelled(jobs)

    def _report_cancelled(self, jobs: list[WorkerJob]) -> None:
        """(lock held)"""
        for job in jobs:
            if job.state == "done":
                continue
            if job.cancel_step is not None:
                after = self._step_counter - job.cancel_step
                self.stats.max_steps_after_cancel = max(self.stats.max_steps_after_cancel, after)
            self._done(job, Cancelled(job_id=job.id, reason=job.cancel_reason or CANCELLED))

    def fail(self, jobs: list[WorkerJob], message: str) -> None:
        with self._lock:
            for job in jobs:
                if job.state != "done":
                    if job.cancel_reason is not None:
                        self._done(job, Cancelled(job_id=job.id, reason=job.cancel_reason))
                    else:
                        self._done(job, Failed(job_id=job.id, message=message))

    def free_memory(self) -> None:
        """After an out-of-memory error: drop the cached models and ControlNets (and the CUDA cache)."""
        self.engine.controls.cache.clear()
        self.engine.models.clear()


def _set_done(future: asyncio.Future | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)
