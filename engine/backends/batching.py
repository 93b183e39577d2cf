"""Which waiting jobs share the next diffusers call.

When a job starts, the worker adds queued jobs with the same `GenerationRequest.batch_key()` (model, VAE, CLIP
skip, size, steps, sampler, schedule, CFG, LoRA set) and the same number of 75-token prompt chunks, in queue order,
up to `max_batch` images per call (default `limits.max_batch`), and renders them in one diffusers call with one
CPU generator per image. With `batch_mode = "exact"` (the config default) the engine gives the UNet and the VAE
one image at a time inside that call, so every image is pixel-identical to the same job rendered alone (BLAS
rounds differently for different batch sizes; tests/engine/backends/test_worker.py compares the PNG pixels);
`batch_mode = "fast"` batches the tensors too, for GPU throughput, and may differ from a solo render by a level in
a few pixels.

The gather window (`batch_window_ms`, `GatherWindow`), as Triton's dynamic batcher (`max_queue_delay`) and Ray
Serve's `@serve.batch` (`batch_wait_timeout_s`): the next job to start waits for compatible jobs until the window
has passed since the newest of its batch arrived, and starts at once when they fill the batch. A job alone waits
at most the window; a burst whose commands reach the queue some milliseconds apart (each is acknowledged and
recorded first) still renders as full batches (8 as 4 + 4, not 4 + 3 + 1), and its first job waits at most
`max_batch - 1` windows; a job that already waited longer than the window (behind a render, say) does not wait
at all; 0 turns it off. It gathers only jobs the fair order would run anyway: the batch is still the head job
and its compatible followers in start order.

Who chooses. The thread worker chooses its batches itself; with the engine elsewhere (the child process, Ray
replicas), the bot side chooses them (engine/backends/dispatch.py) and the engine renders them as given, in the
order given, only splitting a batch whose prompts tokenize to different chunk counts (`BatchPlanner.split`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from engine.backends.worker_state import WorkerStats
    from engine.render.pipeline import Engine

log = logging.getLogger("engine.backends.worker")  # the worker's log: operators follow one logger


class Waiting(Protocol):
    id: str
    request: Any  # GenerationRequest


class Batchable(Waiting, Protocol):
    seq: int
    chunks: dict[Any, int]  # prompt chunk counts by checkpoint path, counted once


class Gatherable(Waiting, Protocol):
    arrived: float  # time.monotonic() at submit


W = TypeVar("W", bound=Waiting)
B = TypeVar("B", bound=Batchable)


def same_call(head: Waiting, ordered: Sequence[W], budget: int) -> list[W]:
    """The waiting jobs (in start order) whose settings let them share `head`'s call and that fit `budget`."""
    key = head.request.batch_key()
    return [j for j in ordered if j.request.batch_key() == key and j.request.batch_size <= budget]


def fill(ordered: Sequence[W], fits: set[str], budget: int) -> list[W]:
    """The jobs of `fits` in start order, as many as `budget` images allow."""
    chosen = []
    for job in ordered:
        if job.id in fits and job.request.batch_size <= budget:
            chosen.append(job)
            budget -= job.request.batch_size
    return chosen


def next_batch(ordered: Sequence[W], max_batch: int) -> list[W]:
    """The head of `ordered` and the compatible jobs after it, in start order, up to `max_batch` images."""
    head, budget = ordered[0], max_batch - ordered[0].request.batch_size
    if budget <= 0:
        return [head]
    followers = same_call(head, ordered[1:], budget)
    return [head, *fill(ordered[1:], {j.id for j in followers}, budget)]


class GatherWindow:
    """How long the next batch still waits for compatible jobs (see the module docstring); `clock` is the one
    that stamped the jobs' `arrived`."""

    def __init__(self, window_ms: float, max_batch: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = max(0.0, window_ms / 1000)
        self.max_batch = max(1, max_batch)
        self.clock = clock

    def remaining(self, ordered: Sequence[Gatherable]) -> float:
        """Seconds the head of `ordered` (the waiting jobs in start order) still waits; 0: start now."""
        if self.window_s <= 0 or not ordered:
            return 0.0
        batch = next_batch(ordered, self.max_batch)
        if sum(j.request.batch_size for j in batch) >= self.max_batch:
            return 0.0
        return max(0.0, max(j.arrived for j in batch) + self.window_s - self.clock())


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
    waiting jobs that can share its call. Runs in the worker thread; it reads what it is given and takes nothing."""

    def __init__(self, engine: Engine, stats: WorkerStats, *, batching: bool = True, max_batch: int = 4) -> None:
        self.engine = engine
        self.stats = stats
        self.batching = batching
        self.max_batch = max(1, max_batch)
        self.family = "sd"  # the last checkpoint's family and latent grid (previews decode with them)
        self.vae_scale_factor = 8
        self._last_checkpoint: Any = None

    def plan(self, head: Batchable, candidates: Sequence[Batchable]) -> set[str]:
        """The ids of `candidates` (waiting jobs, read under the caller's lock) that can share `head`'s call: same
        settings, the same prompt chunk count; tokenized here, outside that lock. The caller takes them."""
        ckpt = self.checkpoint_for(head.request)
        budget = self.max_batch - head.request.batch_size
        if ckpt is None or not self.batching or budget <= 0:
            return set()
        followers = same_call(head, candidates, budget)
        if not followers:
            return set()
        chunks = chunk_counter(self.engine.prompt_encoder(ckpt), ckpt.file.path)
        wanted = chunks(head)
        return {j.id for j in followers if chunks(j) == wanted}

    def split(self, jobs: Sequence[B]) -> list[list[B]]:
        """A batch chosen elsewhere, as the calls that render it, in its order: one call per settings and prompt
        chunk count (a checkpoint that does not load: one call per job, each reporting its error)."""
        by_key: dict[Any, list[B]] = {}
        for job in jobs:
            by_key.setdefault(job.request.batch_key(), []).append(job)
        calls: list[list[B]] = []
        for group in by_key.values():
            ckpt = self.checkpoint_for(group[0].request) if len(group) > 1 and self.batching else None
            if ckpt is None:
                calls.extend([job] for job in group)
                continue
            chunks = chunk_counter(self.engine.prompt_encoder(ckpt), ckpt.file.path)
            by_chunks: dict[int, list[B]] = {}
            for job in group:
                by_chunks.setdefault(chunks(job), []).append(job)
            calls.extend(by_chunks.values())
        return calls

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
