"""Which waiting jobs share the next diffusers call.

When a job starts, the worker adds queued jobs with the same `GenerationRequest.batch_key()` (model, VAE, CLIP
skip, size, steps, sampler, schedule, CFG, LoRA set) and the same number of 75-token prompt chunks, in queue order,
up to `max_batch` images per call (default `limits.max_batch`), and renders them in one diffusers call with one
CPU generator per image. With `batch_mode = "exact"` (the config default) the engine gives the UNet and the VAE
one image at a time inside that call, so every image is pixel-identical to the same job rendered alone (BLAS
rounds differently for different batch sizes; tests/engine/test_worker.py compares the PNG pixels);
`batch_mode = "fast"` batches the tensors too, for GPU throughput, and may differ from a solo render by a level in
a few pixels.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from engine.backends.fair_queue import FairQueue
    from engine.backends.worker_state import WorkerStats
    from engine.render.pipeline import Engine

log = logging.getLogger("engine.backends.worker")  # the worker's log: operators follow one logger


class Batchable(Protocol):
    id: str
    seq: int
    request: Any  # GenerationRequest
    chunks: dict[Any, int]  # prompt chunk counts by checkpoint path, counted once


def same_call(head: Batchable, ordered: Sequence[Batchable], budget: int) -> list[Batchable]:
    """The waiting jobs (in start order) whose settings let them share `head`'s call and that fit `budget`."""
    key = head.request.batch_key()
    return [j for j in ordered if j.request.batch_key() == key and j.request.batch_size <= budget]


def fill(ordered: Sequence[Batchable], fits: set[str], budget: int) -> list[Batchable]:
    """The jobs of `fits` in start order, as many as `budget` images allow."""
    chosen = []
    for job in ordered:
        if job.id in fits and job.request.batch_size <= budget:
            chosen.append(job)
            budget -= job.request.batch_size
    return chosen


def chunk_counter(encoder: Any, checkpoint_path: Any) -> Callable[[Batchable], int]:
    """A job's prompt chunk count under this checkpoint's tokenizer (the longer of prompt and negative), kept on
    the job; a prompt that does not tokenize gets a count of its own, so it never shares a call."""

    def count(job: Batchable) -> int:
        if checkpoint_path not in job.chunks:
            r = job.request
            try:
                job.chunks[checkpoint_path] = max(encoder.chunk_count(r.prompt), encoder.chunk_count(r.negative_prompt))
            except Exception:
                job.chunks[checkpoint_path] = -1 - job.seq
        return job.chunks[checkpoint_path]

    return count


class BatchPlanner:
    """The thread worker's batching: the head job's checkpoint (a switch is logged with its load time), then the
    waiting jobs that can share its call. Runs in the worker thread; the queue is read under the worker's lock."""

    def __init__(self, engine: Engine, stats: WorkerStats, *, batching: bool = True, max_batch: int = 4) -> None:
        self.engine = engine
        self.stats = stats
        self.batching = batching
        self.max_batch = max(1, max_batch)
        self.family = "sd"  # the last checkpoint's family and latent grid (previews decode with them)
        self.vae_scale_factor = 8
        self._last_checkpoint: Any = None

    def plan(self, head: Batchable, queue: FairQueue, lock: threading.Lock, take: Callable[[list], None]) -> list:
        """`head` (already taken) and the waiting jobs that share its call, taken with `take` under `lock`."""
        ckpt = self.checkpoint_for(head.request)
        budget = self.max_batch - head.request.batch_size
        if ckpt is None or not self.batching or budget <= 0:
            return [head]
        with lock:
            candidates = same_call(head, queue.ordered(), budget)
        if not candidates:
            return [head]
        chunks = chunk_counter(self.engine.prompt_encoder(ckpt), ckpt.file.path)  # tokenized outside the lock
        wanted = chunks(head)
        fits = {j.id for j in candidates if chunks(j) == wanted}
        with lock:
            more = fill(queue.ordered(), fits, budget)
            take(more)
        return [head, *more]

    def checkpoint_for(self, request: Any) -> Any:
        """Load (or find) the job's checkpoint, logging a switch with its load time; None if it fails."""
        models = self.engine.models
        loads, started = models.disk_loads, time.perf_counter()
        try:
            ckpt = models.checkpoint(request.model)
        except Exception:  # the render reports it to the user
            return None
        took = time.perf_counter() - started
        previous, self._last_checkpoint = self._last_checkpoint, ckpt.file
        self.family, self.vae_scale_factor = ckpt.family, ckpt.pipe.vae_scale_factor
        if previous is not None and previous.path != ckpt.file.path:
            self.stats.checkpoint_switches += 1
            how = f"loaded in {took:.2f} s" if models.disk_loads != loads else "from the cache"
            log.info("checkpoint switch: %s -> %s, %s", previous.name, ckpt.file.name, how)
        return ckpt
