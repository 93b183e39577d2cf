"""A job as every backend shows it: its events, its handle on the event loop, and the messages users read.

Every job's stream is `Queued(position)` (1 = next to start; repeated whenever the position changes: a job ahead
left the queue, or a fairer or priority job was put ahead), `Started(batch)`, `Step(step, total, preview)` for
every step in order, then exactly one of `Finished(result)`, `Failed(message)`, `Cancelled(reason)`. A handle keeps
its whole history, so an iterator started late, or a second iterator, still sees every event from the first; step
previews are the exception: only the newest preview is kept (older `Step` events in the history lose theirs), so
a long job holds one preview image, not fifty.

The backend that owns a job feeds its handle with `JobHandle.record` on the event loop; nobody else does.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from engine.errors import EngineError, JobCancelled
from engine.request import GenerationRequest

if TYPE_CHECKING:  # the events only carry these: importing the pipeline (torch) is the renderer's business
    from PIL import Image

    from engine.render.pipeline import RenderResult

SHUTDOWN_QUEUED = "the image worker shut down before this job started"
SHUTDOWN_RUNNING = "the image worker shut down while this job was running"
CANCELLED = "cancelled"
CLOSING = "the image worker is shutting down; try again in a moment"
MEMBER_CAP = "you have {queued} jobs queued; the limit is {cap}"


def member_cap_message(queued: int, cap: int) -> str:
    """What a member reads at the per-member cap (`max_queued_per_user`); the bot may add how to go on."""
    return MEMBER_CAP.format(queued=queued, cap=cap)


class QueueFull(EngineError):
    """The owner has `max_queued_per_user` jobs waiting already."""


class WorkerClosed(EngineError):
    """The worker is shutting down and takes no new jobs."""


# --- events ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class JobEvent:
    """One thing that happened to a job; `kind` names it, `terminal` marks the last event of a job."""

    job_id: str
    kind: ClassVar[str] = "event"
    terminal: ClassVar[bool] = False


@dataclass(frozen=True, kw_only=True)
class Queued(JobEvent):
    position: int  # 1: the next job to start
    kind: ClassVar[str] = "queued"


@dataclass(frozen=True, kw_only=True)
class Started(JobEvent):
    batch: int = 1  # how many jobs share this diffusers call
    kind: ClassVar[str] = "started"


@dataclass(frozen=True, kw_only=True)
class Step(JobEvent):
    step: int  # 1 .. total, after that step
    total: int
    preview: Image.Image | None = field(default=None, compare=False, repr=False)
    kind: ClassVar[str] = "step"


@dataclass(frozen=True, kw_only=True)
class Finished(JobEvent):
    result: RenderResult = field(repr=False)
    kind: ClassVar[str] = "finished"
    terminal: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True)
class Failed(JobEvent):
    message: str  # for the user, as it is
    kind: ClassVar[str] = "failed"
    terminal: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True)
class Cancelled(JobEvent):
    reason: str  # for the user: "cancelled", a time limit, a shutdown
    kind: ClassVar[str] = "cancelled"
    terminal: ClassVar[bool] = True


@dataclass(frozen=True)
class PendingJob:
    """A job as submitted: what `close()` returns for jobs that never started, to persist and resubmit."""

    job_id: str
    owner: str
    request: GenerationRequest
    priority: bool = False
    submitted_at: float = 0.0  # time.time()
    group: str | None = None  # the server it came from: the queue is round robin by server, then by owner


@dataclass
class JobCounts:
    """How the jobs a backend ran ended (its stats add their own counters)."""

    jobs_finished: int = 0
    jobs_failed: int = 0
    jobs_cancelled: int = 0

    def count(self, event: JobEvent) -> None:
        """A job ended with `event`."""
        if isinstance(event, Finished):
            self.jobs_finished += 1
        elif isinstance(event, Failed):
            self.jobs_failed += 1
        elif isinstance(event, Cancelled):
            self.jobs_cancelled += 1


# --- handles -----------------------------------------------------------------------------------------------


class JobHandle:
    """A submitted job, on the event loop: await it for the result, iterate it for its events.

    `cancel(job_id, reason)` is its backend's cancel; the backend feeds it with `record`.
    """

    def __init__(self, job: PendingJob, cancel: Callable[[str, str], bool]) -> None:
        self.job = job
        self._cancel = cancel
        self._events: list[JobEvent] = []
        self._waiters: list[asyncio.Future] = []
        self._status = "queued"
        self._position: int | None = None
        self._preview_at: int | None = None  # index in _events of the Step holding the kept preview

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def owner(self) -> str:
        return self.job.owner

    @property
    def request(self) -> GenerationRequest:
        return self.job.request

    @property
    def status(self) -> str:
        """queued | running | finished | failed | cancelled"""
        return self._status

    @property
    def position(self) -> int | None:
        """The place in the queue (1 = next) while queued, else None."""
        return self._position if self._status == "queued" else None

    @property
    def events(self) -> tuple[JobEvent, ...]:
        return tuple(self._events)

    @property
    def last_event(self) -> JobEvent | None:
        return self._events[-1] if self._events else None

    def done(self) -> bool:
        return bool(self._events) and self._events[-1].terminal

    def result(self) -> RenderResult:
        """The result of a finished job; raises the job's error (EngineError / JobCancelled) otherwise."""
        last = self._events[-1] if self.done() else None
        if isinstance(last, Finished):
            return last.result
        if isinstance(last, Cancelled):
            raise JobCancelled(last.reason)
        if isinstance(last, Failed):
            raise EngineError(last.message)
        raise EngineError("the job has not finished yet")

    def cancel(self, reason: str = CANCELLED) -> bool:
        return self._cancel(self.job_id, reason)

    async def wait(self) -> RenderResult:
        while not self.done():
            await self._changed()
        return self.result()

    def __await__(self):
        return self.wait().__await__()

    def __aiter__(self) -> AsyncIterator[JobEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[JobEvent]:
        index = 0
        while True:
            while index < len(self._events):
                event = self._events[index]
                index += 1
                yield event
                if event.terminal:
                    return
            await self._changed()

    def _changed(self) -> asyncio.Future:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def record(self, event: JobEvent) -> None:
        """Add an event (the backend, on the loop thread) and wake whoever waits; nothing after a terminal one."""
        if self.done():
            return
        if isinstance(event, Step) and event.preview is not None:
            if self._preview_at is not None:
                old = self._events[self._preview_at]
                if isinstance(old, Step):  # always: the step that carried the last preview
                    self._events[self._preview_at] = dataclasses.replace(old, preview=None)
            self._preview_at = len(self._events)
        self._events.append(event)
        if isinstance(event, Queued):
            self._position = event.position
        elif isinstance(event, Started):
            self._status = "running"
        elif event.terminal:
            self._status = event.kind
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class Outbox:
    """Events made in another thread (the worker's), delivered to their handles on the event loop.

    One FIFO: events reach handles in the order they were made. The loop is woken with
    `loop.call_soon_threadsafe` only when no wake-up is pending, so a burst of steps costs one loop callback
    (`wakeups` counts them). On the loop thread itself `kick` delivers at once, so a call made there (`submit`,
    `cancel`) has delivered its events when it returns.
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.wakeups = 0
        self._items: collections.deque[tuple[JobHandle, JobEvent]] = collections.deque()
        self._lock = threading.Lock()
        self._pending = False
        self._loop_thread: int | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver on `loop`; call it on the loop's thread."""
        self.loop = loop
        self._loop_thread = threading.get_ident()

    def put(self, handle: JobHandle, event: JobEvent) -> None:
        self._items.append((handle, event))

    def kick(self) -> None:
        """Deliver what is waiting: now on the loop thread, else by one wake-up of the loop."""
        if self.loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self.flush()
            return
        with self._lock:
            if self._pending:
                return
            self._pending = True
        try:
            self.loop.call_soon_threadsafe(self.flush)
            self.wakeups += 1
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def flush(self) -> None:
        with self._lock:
            self._pending = False
        while True:
            try:
                handle, event = self._items.popleft()
            except IndexError:
                return
            handle.record(event)
