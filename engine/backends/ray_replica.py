"""The Ray Serve deployment behind `backend = "ray"`: one engine worker per replica.

A replica is one Ray actor holding one `engine.backends.worker.Worker` (one device, one thread, its own model caches),
built from the same frozen `EngineConfig` as the bot's: the same models dir (a path every node must have),
the same `batch_mode`, so a job renders to the same pixels as with the local backend. The bot's
`engine.backends.ray_backend.RayWorker` calls `render(job)` as a streaming request and reads the job's events from it.

Batching: the bot chooses the batches and sends a batch's jobs together; `@serve.batch` gathers the requests that
reach a replica within `batch_window_ms` (at most `limits.max_batch`), and the local worker (`order="given"`)
renders them as one given batch, in the order they came: compatible ones (equal `batch_key()` and prompt chunk
count) in one diffusers call, exactly as the local backends do, the others one after the other. A streamed
batch yields one list per event, a slot per job; a slot holds `None` when that job has nothing new (`render`
drops those) and `StopIteration` once the job has ended.

This module imports Ray at the top: only `engine.backends.ray_backend` imports it, and only when Ray is used.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import ray
from ray import serve

from engine.backends.wire import TERMINAL, encode_event
from engine.backends.worker import Worker
from engine.config import EngineConfig
from engine.errors import EngineError
from engine.jobs import JobHandle

log = logging.getLogger(__name__)

# Serve's `batch` is typed for handlers that map a list to a list; a streaming handler (an async generator method,
# which Serve runs as well) and the decorated method's `set_max_batch_size` fall outside those types.
_batched: Any = serve.batch


class EngineReplica:
    """One replica: a local engine worker, fed by Serve's batches, streaming wire events back."""

    def __init__(self, config: EngineConfig) -> None:
        if not config.models_dir.is_dir():
            raise EngineError(
                f"the models dir {config.models_dir} does not exist on this node "
                f"({ray.util.get_node_ip_address()}); every node needs the same models dir"
            )
        threads = config.threads or max(1, int(config.ray.num_cpus))
        # The replica's own queue: no per-user cap (the bot enforces it), nothing to hand back on shutdown.
        self.config = dataclasses.replace(config, threads=threads, max_queued_per_user=0, backend="local")
        context = serve.get_replica_context()
        self.info = (
            context.replica_id.unique_id,
            os.getpid(),
            ray.get_runtime_context().get_node_id(),
            ray.util.get_node_ip_address(),
        )
        self._worker = Worker(self.config, order="given")
        try:  # load the default checkpoint now, so the first job does not wait for it
            self._worker.engine.models.checkpoint(self.config.default_model)
        except Exception as exc:  # the jobs will report it
            log.warning("could not preload the default model: %s", exc)
        size = max(1, min(config.limits.max_batch, config.ray.max_ongoing_requests))
        self._batch.set_max_batch_size(size)
        self._batch.set_batch_wait_timeout_s(config.batch_window_ms / 1000)

    async def render(self, job: dict) -> AsyncIterator[tuple]:
        """Stream one job: ("replica", id, pid, node id, node ip), then its events, ending with a terminal one."""
        yield ("replica", *self.info)
        try:
            async for message in self._batch(job):
                if message is not None:
                    yield message
                    if message[0] in TERMINAL:
                        return  # end the stream now, not at the batch's next event
        except asyncio.CancelledError:  # the bot cancelled the request: stop the job at its next step
            self._worker.cancel(job["job_id"])
            raise

    @_batched(max_batch_size=4, batch_wait_timeout_s=0.01)
    async def _batch(self, jobs: list[dict]) -> AsyncIterator[list]:
        try:
            handles = self._worker.submit_batch([(job["job_id"], job["request"]) for job in jobs])
        except EngineError as exc:  # the replica is shutting down
            handles = [str(exc)] * len(jobs)
        events: asyncio.Queue = asyncio.Queue()

        async def pump(slot: int, handle: JobHandle) -> None:
            async for event in handle:
                events.put_nowait((slot, event))

        pumps = [asyncio.create_task(pump(i, h)) for i, h in enumerate(handles) if isinstance(h, JobHandle)]
        ended: set[int] = set()
        try:
            for slot, handle in enumerate(handles):
                if not isinstance(handle, JobHandle):  # refused by the local worker: report it, slot done
                    yield self._slots(len(jobs), ended, {slot: ("failed", handle)})
                    ended.add(slot)
            while len(ended) < len(jobs):
                slot, event = await events.get()
                message = encode_event(event)
                if message is None:
                    continue
                yield self._slots(len(jobs), ended, {slot: message})
                if event.terminal:
                    ended.add(slot)
        finally:
            for task in pumps:
                task.cancel()

    @staticmethod
    def _slots(size: int, ended: set[int], messages: dict[int, tuple]) -> list:
        return [StopIteration if i in ended else messages.get(i) for i in range(size)]
