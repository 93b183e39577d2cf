"""What the thread worker does when a render fails: the retry policy.

An exception in a render fails its jobs with a readable message, and the worker goes on with the next job. A
failure in a batch of several jobs is retried job by job, so one bad job does not fail the others. Out of memory
(`torch.cuda.OutOfMemoryError`, or an error whose message says "out of memory") empties the model cache
(`ModelCache.clear()`, which also empties the CUDA cache) and retries once with smaller batches: the jobs split in
two halves, or a single job's images in two halves (image i keeps seed + i).

`RetryPolicy` decides; the runner (`engine.backends.executor.Executor`) makes each attempt and reports the jobs' ends.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch

from engine.errors import EngineError
from engine.render.pipeline import RenderResult
from engine.request import GenerationRequest

if TYPE_CHECKING:
    from engine.backends.worker_state import WorkerJob, WorkerStats

log = logging.getLogger("engine.backends.worker")  # the worker's log: operators follow one logger

OOM_MESSAGE = "the GPU ran out of memory for this job, even with a smaller batch; try a smaller size or fewer images"

Status = Literal["ok", "cancelled", "oom", "error"]


@dataclass(frozen=True)
class RenderAttempt:
    """What the worker is about to render (given to `on_render`); `retry` after a failure or OOM."""

    job_ids: tuple[str, ...]
    requests: tuple[GenerationRequest, ...]
    retry: bool = False

    @property
    def images(self) -> int:
        return sum(r.batch_size for r in self.requests)


class Runner(Protocol):
    """What the policy drives: one call into the engine, and the jobs' ends."""

    def attempt(self, jobs: list[WorkerJob], requests: list[GenerationRequest], retry: bool) -> tuple[Status, Any]:
        """("ok", results) | ("cancelled", None) | ("oom", None) | ("error", message)"""

    def deliver(self, job: WorkerJob, result: RenderResult) -> None: ...

    def report_cancelled(self, jobs: list[WorkerJob]) -> None: ...

    def fail(self, jobs: list[WorkerJob], message: str) -> None: ...

    def free_memory(self) -> None: ...


class RetryPolicy:
    def __init__(self, runner: Runner, stats: WorkerStats) -> None:
        self.runner = runner
        self.stats = stats

    def render(self, jobs: list[WorkerJob], *, oom_retry: bool = True, retry: bool = False) -> None:
        """Render jobs that share one call, retrying as the module docstring says, until each has ended."""
        run = self.runner
        status, value = run.attempt(jobs, [j.request for j in jobs], retry)
        live = [j for j in jobs if j.state != "done"]
        if status == "ok":
            for job, result in zip(jobs, value):
                run.deliver(job, result)
        elif status == "cancelled":
            run.report_cancelled(live)
        elif status == "oom":
            if not oom_retry or not live:
                run.fail(live, OOM_MESSAGE)
                return
            self.stats.oom_retries += 1
            log.warning(
                "out of memory rendering %d job(s), %d image(s): freeing the model cache, retrying "
                "with smaller batches",
                len(live),
                sum(j.request.batch_size for j in live),
            )
            run.free_memory()
            if len(live) > 1:
                half = len(live) // 2
                for part in (live[:half], live[half:]):
                    self.render(part, oom_retry=False, retry=True)
            elif live[0].request.batch_size > 1:
                self._render_halves(live[0])
            else:
                self.render(live, oom_retry=False, retry=True)
        elif len(live) > 1:  # one bad job must not fail the others: run each alone
            self.stats.isolated_retries += 1
            log.warning("a batch of %d jobs failed (%s); running each job alone", len(live), value)
            for job in live:
                self.render([job], oom_retry=oom_retry, retry=True)
        else:
            run.fail(live, value)

    def _render_halves(self, job: WorkerJob) -> None:
        """After an OOM: a single job's images in two calls (image i keeps seed + i), merged into one result."""
        run = self.runner
        r = job.request
        first = r.batch_size // 2
        try:
            parts = [r.replace(batch_size=first), r.replace(seed=r.seed + first, batch_size=r.batch_size - first)]
        except EngineError:
            run.fail([job], OOM_MESSAGE)
            return
        results: list[RenderResult] = []
        for part in parts:
            status, value = run.attempt([job], [part], retry=True)
            if job.state == "done":
                return
            if status == "cancelled":
                run.report_cancelled([job])
                return
            if status != "ok":
                run.fail([job], OOM_MESSAGE if status == "oom" else value)
                return
            results.append(value[0])
        head = results[0]
        merged = RenderResult(
            request=r.replace(model=head.request.model),
            images=[img for res in results for img in res.images],
            model=head.model,
            vae=head.vae,
            seconds=sum(res.seconds for res in results),
            notes=head.notes + ("rendered in two halves after running out of memory",),
        )
        run.deliver(job, merged)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or a RuntimeError/MemoryError saying memory ran out (CUDA, MPS, CPU)."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return "out of memory" in text or "can't allocate memory" in text
    return False
