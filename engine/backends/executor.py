"""One batch on the engine: the thread worker's calls into diffusers, and what they report.

`Executor` renders a batch the worker (engine/backends/worker.py) took from its queue: it makes each call into
the engine (`attempt`), turns the engine's steps into `Step` events (with previews and the time limit), stops
cancelled jobs at their next step, and ends each job with its terminal event in the queue. What to do when a
call fails is `RetryPolicy`'s (engine/backends/retry.py), which drives the executor and nothing else.

It shares the worker's lock (jobs and the queue are guarded by it) and outbox (events reach the loop through
it), both given to its constructor; it never calls the worker. `on_render(attempt)`, given to the worker's
constructor, is called in the worker thread before each call enters the engine: the engine child tells the bot
there which jobs are on the engine (a crash from then on is theirs), and tests inject faults with it.

Previews. With `preview_every = K`, every K-th `Step` carries a preview of the job's first image, made by
`engine.render.previews.Previewer`: TAESD when its weights are in `<models_dir>/VAE-taesd/`, A1111's "Approx cheap"
otherwise (see engine/render/previews.py).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from engine.backends.batching import BatchPlanner
from engine.backends.fair_queue import FairQueue
from engine.backends.retry import RenderAttempt, RetryPolicy, Status, is_out_of_memory
from engine.backends.worker_state import WorkerJob, WorkerStats
from engine.config import EngineConfig
from engine.errors import EngineError, JobCancelled, internal_message
from engine.jobs import CANCELLED, Cancelled, Failed, Finished, JobEvent, Outbox, Started, Step
from engine.render.pipeline import Engine, RenderResult
from engine.request import GenerationRequest

log = logging.getLogger("engine.backends.worker")  # the worker's log: operators follow one logger


class Executor:
    """Renders batches of taken jobs to their ends (see the module docstring); runs in the worker thread."""

    def __init__(
        self,
        engine: Engine,
        config: EngineConfig,
        *,
        stats: WorkerStats,
        queue: FairQueue[WorkerJob],
        outbox: Outbox,
        lock: threading.Lock,
        planner: BatchPlanner,
        on_render: Callable[[RenderAttempt], None] | None = None,
        previewer: Any = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.stats = stats
        self.queue = queue
        self.outbox = outbox
        self.lock = lock
        self.planner = planner
        self.on_render = on_render
        self.retry = RetryPolicy(self, stats)
        self.step_counter = 0  # engine steps run so far: how late a cancel took effect is measured in them
        self._previewer = previewer
        self._in_pipeline = 0

    def run(self, jobs: list[WorkerJob]) -> None:
        """Start the jobs that were not cancelled meanwhile and render them in one call (retrying as the policy
        says), until each has ended."""
        live = []
        with self.lock:
            for job in jobs:
                if job.cancel_reason is not None:  # cancelled between leaving the queue and starting
                    self.queue.finish(job, Cancelled(job_id=job.id, reason=job.cancel_reason))
                else:
                    live.append(job)
            for job in live:
                self._emit(job, Started(job_id=job.id, batch=len(live)))
        self.kick()
        if live:
            self.retry.render(live)

    def kick(self) -> None:
        self.outbox.kick()
        self.stats.loop_callbacks = self.outbox.wakeups

    def _emit(self, job: WorkerJob, event: JobEvent) -> None:
        self.outbox.put(job.handle, event)

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
            if self.on_render is not None:
                self.on_render(attempt)
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

    def deliver(self, job: WorkerJob, result: RenderResult) -> None:
        # The PNGs are encoded by the caller in a thread of its own (`RenderedImage.png_data`, cached), so the
        # engine goes on to the next job at once instead of compressing this one's images.
        with self.lock:
            if job.state == "done":
                return
            if job.cancel_reason is not None:
                self._report_cancelled([job])
            else:
                self.queue.finish(job, Finished(job_id=job.id, result=result))

    def report_cancelled(self, jobs: list[WorkerJob]) -> None:
        with self.lock:
            self._report_cancelled(jobs)

    def fail(self, jobs: list[WorkerJob], message: str) -> None:
        with self.lock:
            for job in jobs:
                if job.state != "done":
                    if job.cancel_reason is not None:
                        self.queue.finish(job, Cancelled(job_id=job.id, reason=job.cancel_reason))
                    else:
                        self.queue.finish(job, Failed(job_id=job.id, message=message))

    def free_memory(self) -> None:
        """After an out-of-memory error: drop the cached models and ControlNets (and the CUDA cache)."""
        self.engine.controls.cache.clear()
        self.engine.models.clear()

    # -- helpers --------------------------------------------------------------------------------------------

    def _report_cancelled(self, jobs: list[WorkerJob]) -> None:
        """(lock held)"""
        for job in jobs:
            if job.state == "done":
                continue
            if job.cancel_step is not None:
                after = self.step_counter - job.cancel_step
                self.stats.max_steps_after_cancel = max(self.stats.max_steps_after_cancel, after)
            self.queue.finish(job, Cancelled(job_id=job.id, reason=job.cancel_reason or CANCELLED))

    def _step_hooks(self, jobs: list[WorkerJob], requests: list[GenerationRequest]):
        """The engine's `on_step` (Step events, previews, the time limit) and `should_stop` (cancels) for a call."""
        offsets = list(itertools.accumulate([0] + [r.batch_size for r in requests[:-1]]))
        every = self.config.preview_every
        timeout = self.config.job_timeout_s

        def on_step(step: int, total: int, latents: torch.Tensor) -> None:
            self.step_counter += 1
            now = time.monotonic()
            previews: dict[str, Image.Image | None] = {}
            if every and every > 0 and step % every == 0:  # made outside the lock: TAESD takes a while
                for job, offset, request in zip(jobs, offsets, requests):
                    if request.previews and job.state != "done" and job.cancel_reason is None and step > job.last_step:
                        previews[job.id] = self._preview(latents[offset : offset + 1])
            with self.lock:
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
            self.kick()

        def should_stop() -> bool:
            with self.lock:  # a cancel that came during this step stops the job now
                cancelled = [j for j in jobs if j.state != "done" and j.cancel_reason is not None]
                self._report_cancelled(cancelled)
                stop = all(job.state == "done" for job in jobs)
            if cancelled:
                self.kick()
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
