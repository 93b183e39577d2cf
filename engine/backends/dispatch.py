"""The bot side of a backend whose engine is elsewhere: the child process (engine/backends/process.py) and the Ray
replicas (engine/backends/ray_backend.py). Both subclass `DispatchWorker`, which keeps the queue here and sends jobs
out.

Queue. The waiting jobs stay in the bot, in a `FairQueue` (engine/backends/fair_queue.py): the thread worker's order
(priority first, then round robin by server and member), `max_queued_per_user` per owner (`QueueFull` past it),
the same `Queued(position)` events and `position()`. The engine executes, the bot's database remembers: nothing
waits over there that the bot does not also hold.

Batches. This queue is the only one that orders: the bot chooses each batch (`next_batch`: the next job in fair
order and the compatible jobs after it, up to `limits.max_batch` images, after the gather window of
engine/backends/batching.py) and the engine renders the batches it is given, in the order given.

Dispatch and back-pressure. At most `capacity` jobs in at most `max_batches` batches are out at once; the rest
wait here, where fairness and cancellation are cheap. A job sent out has no position (None), like a running one. A
refused send goes back to its place in the queue (`requeue`).

Events. A subclass's `_attempt` runs one attempt of a batch and feeds what comes back for each job, wire tuples
(engine/backends/wire.py), to `_on_message`; `Started` is reported once and `Step`s only forward (a retried job does
not go back to step 1 on screen).

Retries. An attempt lost with its engine ("lost": a replica or child that died) runs again from the start (the
lost jobs of a batch together), with the same seed (resolved before the first attempt), at most `max_retries`
times, then the job fails with
`lost_message`. Each attempt has its own id over there, and events of an abandoned attempt are never read, so a job
ends exactly once: nothing is lost and nothing is reported finished twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.backends.base import ContextManaged
from engine.backends.batching import GatherWindow, next_batch
from engine.backends.fair_queue import FairQueue, QueuedJob
from engine.backends.wire import decode_result
from engine.config import EngineConfig
from engine.errors import EngineError, internal_message
from engine.jobs import (
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
    PendingJob,
    Started,
    Step,
    WorkerClosed,
)
from engine.request import GenerationRequest

log = logging.getLogger(__name__)

BACK_PRESSURE_PAUSE_S = 0.5

Outcome = Literal["done", "lost", "requeue", "again"]


@dataclass(frozen=True)
class ReplicaInfo:
    """Where an attempt of a job runs: the Serve replica (or the child), its process and its node."""

    replica_id: str
    pid: int
    node_id: str
    node_ip: str


@dataclass
class DispatchStats(JobCounts):
    """Counters for tests and benchmarks."""

    dispatched: int = 0  # attempts sent (retries included)
    retries: int = 0  # attempts re-run after their engine died
    back_pressure: int = 0  # sends refused; put back in the queue
    max_in_flight: int = 0
    batches: int = 0  # batches sent (first attempts)
    by_replica: collections.Counter = field(default_factory=collections.Counter)  # finished jobs per replica


class DispatchedJob(QueuedJob):
    def __init__(self, pending: PendingJob, seq: int, handle: JobHandle) -> None:
        super().__init__(pending, seq, handle)
        self.attempts = 0
        self.stream: Any = None  # the current attempt, with a `cancel()`
        self.replica: ReplicaInfo | None = None
        self.started = False
        self.last_step = 0


class DispatchWorker(ContextManaged):
    """The backend interface (engine.backends.base.Backend) over an engine elsewhere; every method is for the event
    loop. Subclasses give `_connect`, `_attempt` and `_teardown`, and may change `capacity` and `max_retries`."""

    in_process = False  # the engine is not in this process: `call` cannot reach it
    gathers = True  # the gather window is waited here (False: the engine's side waits it)

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.stats = DispatchStats()
        self.queue: FairQueue[DispatchedJob] = FairQueue(
            round_robin=config.round_robin,
            cap=config.max_queued_per_user,
            make=lambda pending, seq: DispatchedJob(pending, seq, JobHandle(pending, self.cancel)),
            emit=self._emit,
        )
        self.gather = GatherWindow(config.batch_window_ms if self.gathers else 0, config.limits.max_batch)
        self._tasks: set[asyncio.Task] = set()
        self._in_flight = 0
        self._batches_out = 0
        self._closing = False
        self._pause_until = 0.0
        self._wake = asyncio.Event()  # made again by `start()`, on its loop
        self._connecting: asyncio.Task | None = None
        self._dispatcher: asyncio.Task | None = None
        self._error: str | None = None
        self._torn_down = False

    # -- what subclasses give -------------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Jobs out at once."""
        return 1

    @property
    def max_batches(self) -> int:
        """Batches out at once."""
        return self.capacity

    @property
    def max_retries(self) -> int:
        """Re-runs of a job whose engine died."""
        return 0

    def lost_message(self, attempts: int) -> str:
        """What the user reads when the job's last retry died too."""
        return f"the image engine stopped {attempts} times while rendering this job"

    async def _connect(self) -> None:
        """Make the engine usable (blocking work in a thread); raise EngineError (and set `_error`) if it is not."""

    async def _attempt(self, jobs: list[DispatchedJob]) -> list[Outcome]:
        """One attempt of a batch, rendered as given: for each job "done" (it ended), "lost" (its engine went
        away), "requeue" or "again" (refused before or after it was shown started)."""
        raise NotImplementedError

    def _teardown(self) -> None:
        """Undo what `_connect` set up (blocking: run in a thread)."""

    # -- loop side ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect and start dispatching; call it on the event loop (`submit` calls it)."""
        if self._dispatcher is not None:
            return
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._connecting = loop.create_task(self._connect(), name="sdbot-engine-connect")
        self._dispatcher = loop.create_task(self._dispatch_loop(), name="sdbot-engine-dispatch")

    async def ready(self) -> None:
        """Wait until the engine is up; raises EngineError saying what went wrong if it cannot be used."""
        self.start()
        assert self._connecting is not None  # made by start()
        await asyncio.shield(self._connecting)

    def call(self, fn: Callable[[Any], Any]) -> asyncio.Future:
        """The engine is not in this process (`in_process` is False): it loads its own models."""
        raise EngineError("the image engine is not in this process")

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
        self.start()
        if self._closing:
            raise WorkerClosed(CLOSING)
        if self._error is not None:
            raise EngineError(self._error)
        job = self.queue.submit(request, owner=owner, job_id=job_id, priority=priority, group=group)
        self._wake.set()
        return job.handle

    def cancel(self, job_id: str, reason: str = CANCELLED) -> bool:
        """Cancel a job: a queued one leaves the queue at once, a dispatched one is cancelled over there (it stops
        at its next step). False for an unknown, finished or already cancelled job."""
        job = self.queue.cancel(job_id, reason)
        if job is None:
            return False
        self._wake.set()  # a gather waiting on this job looks again
        if job.state == "dispatched" and job.stream is not None:
            job.stream.cancel()  # the job's task reports Cancelled when the attempt stops
        return True

    def position(self, job_id: str) -> int | None:
        return self.queue.position(job_id)

    def handle(self, job_id: str) -> JobHandle | None:
        return self.queue.handle(job_id)

    def queued(self) -> list[PendingJob]:
        return self.queue.queued()

    def running(self) -> list[PendingJob]:
        return [j.pending for j in self.queue.started()]

    def where(self, job_id: str) -> ReplicaInfo | None:
        """Where the job's current attempt runs (None while queued, or before the engine answered)."""
        job = self.queue.jobs.get(job_id)
        return job.replica if job is not None else None

    async def close(self, *, cancel_running: bool = False, timeout: float | None = None) -> list[PendingJob]:
        """Stop: cancel and return the jobs not dispatched (in queue order); let the dispatched ones finish
        (`cancel_running`: cancel them; `timeout`: then cancel them); remove what `start()` set up."""
        self._closing = True
        pending = self.queue.close(SHUTDOWN_QUEUED)
        if cancel_running:
            self._cancel_dispatched(SHUTDOWN_RUNNING)
        if self._tasks:
            _, still = await asyncio.wait(set(self._tasks), timeout=timeout)
            if still:
                self._cancel_dispatched(SHUTDOWN_RUNNING)
                await asyncio.wait(still, timeout=30)
        if self._dispatcher is not None and self._connecting is not None and not self._torn_down:
            self._torn_down = True
            self._wake.set()
            await asyncio.wait([self._dispatcher], timeout=5)
            await asyncio.wait([self._connecting])
            await asyncio.to_thread(self._teardown)
        return [job.pending for job in pending]

    # -- helpers --------------------------------------------------------------------------------------------

    def _emit(self, job: DispatchedJob, event: JobEvent) -> None:
        self.stats.count(event)
        if isinstance(event, Finished) and job.replica is not None:
            self.stats.by_replica[job.replica.replica_id] += 1
        job.handle.record(event)

    def _done(self, job: DispatchedJob, event: JobEvent) -> None:
        self.queue.finish(job, event)

    def _cancelled(self, job: DispatchedJob, fallback: str = CANCELLED) -> None:
        self._done(job, Cancelled(job_id=job.id, reason=job.cancel_reason or fallback))

    def _cancel_dispatched(self, reason: str) -> None:
        for job in self.queue.started():
            if job.cancel_reason is None:
                job.cancel_reason = reason
                if job.stream is not None:
                    job.stream.cancel()

    # -- dispatch -------------------------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        assert self._connecting is not None  # start() makes it before this task
        try:
            await self._connecting
        except Exception:
            for job in self.queue.drain():
                self._done(job, Failed(job_id=job.id, message=self._error or "the image engine is not available"))
            return
        while True:
            while not self._closing and not (len(self.queue) and self._room() > 0):
                self._wake.clear()
                await self._wake.wait()
            if self._closing:
                return
            pause = self._pause_until - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
                continue
            ordered = self.queue.ordered()
            wait = self.gather.remaining(ordered)
            if wait > 0:  # a submit or a cancel looks again at once
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            self._send(self.next_batch(ordered))

    def _room(self) -> int:
        """How many more jobs may go out now."""
        return self.capacity - self._in_flight if self._batches_out < self.max_batches else 0

    def next_batch(self, ordered: list[DispatchedJob]) -> list[DispatchedJob]:
        """The next batch to send: the first waiting job and its compatible followers, as many as may go out."""
        return next_batch(ordered, self.config.limits.max_batch)[: max(1, self._room())]

    def _send(self, batch: list[DispatchedJob]) -> None:
        self.queue.take(batch, "dispatched")  # every attempt draws the same noise
        self._in_flight += len(batch)
        self._batches_out += 1
        self.stats.batches += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
        task = asyncio.get_running_loop().create_task(self._run(batch), name=f"sdbot-engine-batch-{batch[0].id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[DispatchedJob]) -> None:
        """Run a dispatched batch until each of its jobs has its one terminal event, retrying when its engine
        dies."""
        jobs = batch
        try:
            while jobs:
                for job in jobs:
                    if job.cancel_reason is not None and job.state != "done":
                        self._cancelled(job)
                jobs = [job for job in jobs if job.state != "done"]
                if not jobs:
                    break
                again, pause = [], 0.0
                for job, outcome in zip(jobs, await self._attempt(jobs)):
                    if job.state == "done":
                        continue
                    if outcome == "requeue":
                        self._requeue(job)
                    elif outcome == "again":  # refused a job already on screen as started: wait, send again
                        again.append(job)
                        pause = max(pause, BACK_PRESSURE_PAUSE_S)
                    elif outcome == "lost" and job.attempts > self.max_retries:
                        self._done(job, Failed(job_id=job.id, message=self.lost_message(job.attempts)))
                    elif outcome == "lost":
                        self.stats.retries += 1
                        again.append(job)
                        pause = max(pause, min(2.0, 0.25 * 2 ** (job.attempts - 1)))
                jobs = again
                if jobs:
                    await asyncio.sleep(pause)
        except Exception as exc:  # a bug here: fail the jobs readably, keep serving
            log.exception("batch of %s", batch[0].id)
            for job in batch:
                self._done(job, Failed(job_id=job.id, message=internal_message(exc)))
        finally:
            self._in_flight -= len(batch)
            self._batches_out -= 1
            self._wake.set()

    def _on_message(self, job: DispatchedJob, message: tuple) -> None:
        kind = message[0]
        if kind == "replica":
            job.replica = ReplicaInfo(*message[1:])
        elif kind == "started":
            if not job.started:
                job.started = True
                self._emit(job, Started(job_id=job.id, batch=message[1]))
        elif kind == "step":
            _, step, total, preview = message
            if step > job.last_step and job.cancel_reason is None:
                job.last_step = step
                self._emit(job, Step(job_id=job.id, step=step, total=total, preview=preview))
        elif kind == "finished":
            if job.cancel_reason is not None:
                self._cancelled(job)
            else:
                self._done(job, Finished(job_id=job.id, result=decode_result(message[1])))
        elif kind == "failed":
            self._done(job, Failed(job_id=job.id, message=message[1]))
        elif kind == "cancelled":
            self._cancelled(job, message[1])

    def _requeue(self, job: DispatchedJob) -> None:
        """Put a job that was refused back at its place in the queue (it keeps its arrival)."""
        if self._closing or job.cancel_reason is not None:
            self._cancelled(job, SHUTDOWN_QUEUED)
            return
        self.queue.requeue(job)
