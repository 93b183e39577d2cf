"""What every backend offers the bot (`Backend`), and the names of the backends.

`[engine] backend = "local"` (the default) or `"ray"` (`engine.backends.ray_backend.RayWorker`, engine replicas on a Ray
cluster; Ray is imported only then). The local one runs in a child process the bot restarts when it dies
(`isolation = "process"`, the default: `engine.backends.process.ProcessWorker`) or in a thread of the bot
(`"thread"`: `engine.backends.worker.Worker`); `engine.backends.factory.make_worker` builds the one configured. All
keep their queue in the bot's process in a `FairQueue` (engine/backends/fair_queue.py), so order, positions, cancels
and the per-member cap are the same everywhere; tests/engine/backends/test_backend_contract.py runs one suite over
all three.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, Self, TypeVar

from engine.config import EngineConfig
from engine.jobs import CANCELLED, JobHandle, PendingJob
from engine.request import GenerationRequest

if TYPE_CHECKING:
    from engine.render.pipeline import Engine

BACKENDS = ("local", "ray")

T = TypeVar("T")


class Backend(Protocol):
    """A worker as the bot uses it; every method is for the event loop."""

    config: EngineConfig
    in_process: bool  # the engine lives in this process: `call` reaches it (else it raises EngineError)

    def start(self) -> None:
        """Start serving (threads, connections); `submit` starts it too."""

    async def ready(self) -> None:
        """Wait until the engine can take jobs; EngineError saying why when it cannot."""

    def submit(
        self,
        request: GenerationRequest,
        *,
        owner: str | int,
        job_id: str | None = None,
        priority: bool = False,
        group: str | int | None = None,
    ) -> JobHandle:
        """Queue a job and return its handle at once; QueueFull at the owner's cap, WorkerClosed when closing."""

    def cancel(self, job_id: str, reason: str = CANCELLED) -> bool:
        """Cancel a queued or running job; False for an unknown, ended or already cancelled one."""

    def position(self, job_id: str) -> int | None:
        """The job's place in the queue (1 = next); None once it started, ended, or is unknown."""

    def handle(self, job_id: str) -> JobHandle | None:
        """The handle of a queued or running job."""

    def queued(self) -> list[PendingJob]:
        """The waiting jobs, in the order they will start."""

    def running(self) -> list[PendingJob]:
        """The jobs that left the queue and have not ended."""

    def call(self, fn: Callable[[Engine], T]) -> asyncio.Future[T]:
        """Run `fn(engine)` where the engine is, before the next job (only when `in_process`)."""

    async def close(self, *, cancel_running: bool = False, timeout: float | None = None) -> list[PendingJob]:
        """Stop: the jobs not started end `Cancelled` and come back in queue order, to persist."""


class ContextManaged:
    """`async with backend:` starts it, and closes it on the way out, cancelling the running jobs too."""

    def start(self) -> None:
        raise NotImplementedError

    async def close(self, *, cancel_running: bool = False, timeout: float | None = None) -> list[PendingJob]:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close(cancel_running=True)
