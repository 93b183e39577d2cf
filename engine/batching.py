"""Which waiting jobs share the next diffusers call (issue 3's batching).

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

from collections.abc import Callable, Sequence
from typing import Any, Protocol


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
