"""The waiting jobs of one backend: who is next, each job's place, cancels, and the per-member cap.

Every backend keeps its queue here, in the bot's process (the thread worker, and the bot side of the child
process and of the Ray replicas), so they order, number and refuse jobs the same way:

* Order: priority jobs first, then round robin by server and by member, or first come first served
  (`round_robin = false`): see engine/backends/fairness.py.
* Positions: whenever a job's place changes, its handle gets `Queued(position)` (1 = next).
* Cap: at most `max_queued_per_user` waiting jobs per owner (0 = no cap; started jobs and priority jobs do not
  count); one more raises `QueueFull` with `member_cap_message`.
* Cancel: a waiting job leaves at once and ends `Cancelled`; a started one is handed back for its backend to stop.

A job's life here: `submit` (waiting) -> `take` (started: the backend renders it) -> `finish` with its terminal
event; `requeue` puts a started job back at its place (it keeps its arrival). Events go out through `emit`, which
the backend gives: the thread worker queues them for the loop, the others record them on the handle at once.
`FairQueue` holds no lock: the thread worker calls it under its own.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable
from typing import Generic, TypeVar

from engine.backends.fairness import Served, fair_order
from engine.errors import EngineError
from engine.jobs import (
    SHUTDOWN_QUEUED,
    Cancelled,
    JobEvent,
    JobHandle,
    PendingJob,
    Queued,
    QueueFull,
    member_cap_message,
)
from engine.request import GenerationRequest


class QueuedJob:
    """A backend's record of one job, from `submit` to its end; backends add what their runner needs."""

    def __init__(self, pending: PendingJob, seq: int, handle: JobHandle) -> None:
        self.pending = pending
        self.id = pending.job_id
        self.owner = pending.owner
        self.group = pending.group
        self.request = pending.request  # the seed is resolved when the job starts
        self.priority = pending.priority
        self.seq = seq  # arrival
        self.arrived = time.monotonic()  # when it was submitted: the gather window counts from it
        self.handle = handle
        self.position: int | None = None
        self.state = "queued"  # queued | started (a backend's own name: running, dispatched) | done
        self.cancel_reason: str | None = None


J = TypeVar("J", bound=QueuedJob)


class FairQueue(Generic[J]):
    """Waiting jobs in start order, and every job not yet ended by id. See the module docstring."""

    def __init__(
        self, *, round_robin: bool, cap: int, make: Callable[[PendingJob, int], J], emit: Callable[[J, JobEvent], None]
    ) -> None:
        self.round_robin = round_robin
        self.cap = cap
        self._make = make  # a new job's record (with its handle) from what was submitted and its arrival number
        self._emit = emit
        self.jobs: dict[str, J] = {}  # waiting and started jobs by id
        self._waiting: list[J] = []
        self._served = Served()  # round robin: who started a job last
        self._seq = itertools.count()

    def __len__(self) -> int:
        """How many jobs wait."""
        return len(self._waiting)

    # -- reading ---------------------------------------------------------------------------------------------

    def ordered(self) -> list[J]:
        """The waiting jobs in the order they will start."""
        return fair_order(self._waiting, self.round_robin, self._served)

    def waiting_of(self, owner: str) -> int:
        """The owner's waiting jobs that count against the cap (priority jobs do not)."""
        return sum(1 for job in self._waiting if job.owner == owner and not job.priority)

    def position(self, job_id: str) -> int | None:
        """1 = next; None when the job is not waiting (started, ended or unknown)."""
        job = self.jobs.get(job_id)
        return job.position if job is not None and job.state == "queued" else None

    def handle(self, job_id: str) -> JobHandle | None:
        """The handle of a waiting or started job."""
        job = self.jobs.get(job_id)
        return job.handle if job is not None else None

    def queued(self) -> list[PendingJob]:
        return [job.pending for job in self.ordered()]

    def started(self) -> list[J]:
        return [job for job in self.jobs.values() if job.state not in ("queued", "done")]

    # -- changing --------------------------------------------------------------------------------------------

    def submit(
        self,
        request: GenerationRequest,
        *,
        owner: str | int,
        job_id: str | None = None,
        priority: bool = False,
        group: str | int | None = None,
    ) -> J:
        """A new waiting job. Raises QueueFull at the owner's cap, EngineError for an id in use."""
        if not isinstance(request, GenerationRequest):
            raise TypeError("submit() takes a GenerationRequest")
        job_id = uuid.uuid4().hex if job_id is None else str(job_id)
        owner = str(owner)
        if job_id in self.jobs:
            raise EngineError(f"a job with id {job_id!r} is already queued or running")
        if not priority and self.cap > 0:
            queued = self.waiting_of(owner)
            if queued >= self.cap:
                raise QueueFull(member_cap_message(queued, self.cap))
        pending = PendingJob(job_id, owner, request, bool(priority), time.time(), None if group is None else str(group))
        job = self._make(pending, next(self._seq))
        self._waiting.append(job)
        self.jobs[job_id] = job
        self._reposition()
        return job

    def take(self, jobs: list[J], state: str = "running") -> None:
        """These waiting jobs start now: they leave the queue with their seed resolved (a retry must draw the
        same noise) and take their member's and server's turn."""
        for job in jobs:
            self._waiting.remove(job)
            job.state = state
            job.request = job.request.with_seed()
            self._served.note(job)
        if jobs:
            self._reposition()

    def requeue(self, job: J) -> None:
        """A started job waits again, at its place (it keeps its arrival)."""
        job.state = "queued"
        job.position = None
        self._waiting.append(job)
        self._reposition()

    def cancel(self, job_id: str, reason: str) -> J | None:
        """Mark a job cancelled: a waiting one ends `Cancelled` now; a started one is returned for its backend to
        stop. None for an unknown, ended or already cancelled job."""
        job = self.jobs.get(job_id)
        if job is None or job.state == "done" or job.cancel_reason is not None:
            return None
        job.cancel_reason = reason
        if job.state == "queued":
            self._waiting.remove(job)
            self.finish(job, Cancelled(job_id=job.id, reason=reason))
            self._reposition()
        return job

    def finish(self, job: J, event: JobEvent) -> bool:
        """End a job with its terminal event; False if it had ended already (a job ends once)."""
        if job.state == "done":
            return False
        job.state = "done"
        self.jobs.pop(job.id, None)
        self._emit(job, event)
        return True

    def drain(self) -> list[J]:
        """Empty the queue: the waiting jobs in start order, for the caller to end (`finish`)."""
        pending = self.ordered()
        self._waiting.clear()
        return pending

    def close(self, reason: str = SHUTDOWN_QUEUED) -> list[J]:
        """Empty the queue for a shutdown: every waiting job ends `Cancelled(reason)`; returned in start order."""
        pending = self.drain()
        for job in pending:
            job.cancel_reason = reason
            self.finish(job, Cancelled(job_id=job.id, reason=reason))
        return pending

    def _reposition(self) -> None:
        for index, job in enumerate(self.ordered(), start=1):
            if job.position != index:
                job.position = index
                self._emit(job, Queued(job_id=job.id, position=index))
