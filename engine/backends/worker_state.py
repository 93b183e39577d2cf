"""The thread worker's record of a job and its counters: shared by the worker (worker.py), its batching
(batching.py) and its retry policy (retry.py), so that neither of those imports the worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.backends.fair_queue import QueuedJob
from engine.jobs import JobCounts, JobHandle, PendingJob


@dataclass
class WorkerStats(JobCounts):
    """Counters for tests and benchmarks (written by the worker thread)."""

    renders: int = 0  # diffusers calls (render_batch)
    batched_renders: int = 0  # calls holding more than one job
    images: int = 0
    oom_retries: int = 0
    isolated_retries: int = 0  # batches re-run job by job after a failure
    checkpoint_switches: int = 0
    max_in_pipeline: int = 0  # renders inside the engine at once: must stay 1
    max_steps_after_cancel: int = 0  # steps run between a cancel and the job stopping: at most 1
    loop_callbacks: int = 0  # wake-ups of the event loop by the worker thread


class WorkerJob(QueuedJob):
    """The thread worker's record of a job (guarded by the worker's lock)."""

    def __init__(self, pending: PendingJob, seq: int, handle: JobHandle) -> None:
        super().__init__(pending, seq, handle)
        self.cancel_step: int | None = None  # the worker's step counter when a running job was cancelled
        self.started_at = 0.0
        self.last_step = 0
        self.chunks: dict[Any, int] = {}
