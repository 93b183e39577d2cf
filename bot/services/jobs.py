"""Jobs from command to channel: persist, queue on the engine worker, follow it, keep the files, report.

The order is what makes restarts safe: a job row is committed (`queued`) before the worker hears of it, its
images are written to disk and the row marked `done` before anything is posted, and `posted` is recorded after
the post. `recover()` at start-up picks up whatever a crash left in between.

The Discord side is a `JobListener` per job (progress message, final post); this module knows no Discord.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.errors import UserError
from bot.store import jobs as job_store
from bot.store.db import transaction
from bot.store.models import Job, JobStatus
from engine.config import Limits
from engine.request import GenerationRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Requester:
    """Who asked and where; the ids Discord gave us."""

    user_id: int
    guild_id: int | None = None
    channel_id: int | None = None
    interaction_id: int | None = None
    is_moderator: bool = False


@dataclass(frozen=True)
class Delivered:
    """What was posted for a job: the message id (for the job row) and how the images were sent."""

    message_id: int | None


class JobListener(Protocol):
    """The Discord side of one job; every method may be called from the event loop only."""

    async def queued(self, job_id: int, position: int) -> None: ...
    async def started(self, job_id: int) -> None: ...
    async def step(self, job_id: int, step: int, total: int, preview: Any | None) -> None: ...
    async def finished(self, job: Job, files: list[Path]) -> Delivered: ...
    async def failed(self, job_id: int, message: str) -> None: ...
    async def cancelled(self, job_id: int) -> None: ...


@dataclass
class _Running:
    handle: Any
    task: asyncio.Task
    user_id: int


@dataclass
class JobService:
    sessions: async_sessionmaker[AsyncSession]
    worker: Any  # engine.worker.Worker
    outputs_dir: Path
    limits: Limits = Limits()
    max_active_per_user: int = 5
    recovery_listener: Callable[[Job], JobListener] | None = None
    _jobs: dict[int, _Running] = field(default_factory=dict)

    async def submit(self, who: Requester, request: GenerationRequest, listener: JobListener, *,
                     sources: dict[str, str] | None = None, priority: bool = False) -> Job:
        """Persist the job, then queue it; `UserError` when the user already has too many active jobs.

        The count and the insert share one transaction (writers are serialized), so two quick commands
        cannot both slip under the cap.
        """
        async def persist(s: AsyncSession) -> Job:
            self._check_capacity(await job_store.count_active(s, who.user_id))
            return await job_store.create(
                s, user_id=who.user_id, request=request, guild_id=who.guild_id, channel_id=who.channel_id,
                interaction_id=who.interaction_id, sources=sources,
            )

        job = await transaction(self.sessions, persist)
        self._start(job.id, who.user_id, request, listener, priority=priority)
        return job

    def _check_capacity(self, active: int) -> None:
        if active >= self.max_active_per_user:
            raise UserError(
                f"you have {active} jobs queued; the limit is {self.max_active_per_user}. "
                f"Wait for one to finish, or cancel one with /queue"
            )

    def _start(self, job_id: int, user_id: int, request: GenerationRequest, listener: JobListener,
               *, priority: bool = False) -> None:
        handle = self.worker.submit(request, job_id=str(job_id), owner=str(user_id), priority=priority)
        task = asyncio.create_task(self._follow(job_id, handle, listener), name=f"job-{job_id}")
        self._jobs[job_id] = _Running(handle, task, user_id)

    async def _follow(self, job_id: int, handle: Any, listener: JobListener) -> None:
        from engine import worker as w

        try:
            async for event in handle:
                if isinstance(event, w.Queued):
                    await _quietly(listener.queued(job_id, event.position))
                elif isinstance(event, w.Started):
                    await transaction(self.sessions, job_store.transition, job_id, JobStatus.RUNNING)
                    await _quietly(listener.started(job_id))
                elif isinstance(event, w.Step):
                    await _quietly(listener.step(job_id, event.step, event.total, event.preview))
                elif isinstance(event, w.Finished):
                    await self._finish(job_id, event.result, listener)
                elif isinstance(event, w.Failed):
                    await transaction(self.sessions, job_store.transition, job_id, JobStatus.FAILED,
                                      error=event.message)
                    await _quietly(listener.failed(job_id, event.message))
                elif isinstance(event, w.Cancelled):
                    await transaction(self.sessions, job_store.transition, job_id, JobStatus.CANCELLED)
                    await _quietly(listener.cancelled(job_id))
        except Exception:
            log.exception("following job %s failed", job_id)
        finally:
            self._jobs.pop(job_id, None)

    async def _finish(self, job_id: int, result: Any, listener: JobListener) -> None:
        folder = self.outputs_dir / str(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, image in enumerate(result.images, start=1):
            path = folder / f"{job_id}-{i}.png"
            await asyncio.to_thread(path.write_bytes, image.png())
            paths.append(path)
        job = await transaction(self.sessions, job_store.transition, job_id, JobStatus.DONE,
                                seed=result.seed, result_paths=[str(p) for p in paths])
        await self.post(job, listener)

    async def post(self, job: Job, listener: JobListener) -> None:
        """Post a `done` job's saved files and record it as `posted` (exactly once)."""
        files = [Path(p) for p in job.result_paths or []]
        if not files or not all(p.exists() for p in files):
            await transaction(self.sessions, job_store.transition, job.id, JobStatus.FAILED,
                              error="the rendered images were lost before they could be posted")
            await _quietly(listener.failed(job.id, "the rendered images were lost before they could be posted"))
            return
        delivered = await listener.finished(job, files)
        await transaction(self.sessions, job_store.mark_posted, job.id, message_id=delivered.message_id)

    async def cancel(self, job_id: int, user_id: int, *, is_moderator: bool = False) -> bool:
        """Cancel a queued or running job of `user_id` (moderators: anyone's). False if it is not active."""
        job = await transaction(self.sessions, job_store.get, job_id)
        if job.user_id != user_id and not is_moderator:
            raise UserError("only the job's owner or a moderator can cancel it")
        running = self._jobs.get(job_id)
        if running is None:
            return False
        return bool(self.worker.cancel(str(job_id)))

    async def get(self, job_id: int) -> Job:
        return await transaction(self.sessions, job_store.get, job_id)

    async def active_for(self, user_id: int) -> list[tuple[Job, int | None]]:
        """The user's waiting and running jobs with their queue positions (None: running or held)."""
        rows = await transaction(self.sessions, job_store.list_for_user, user_id, job_store.ACTIVE)
        return [(job, self.worker.position(str(job.id))) for job in rows]

    async def by_message(self, message_id: int) -> Job | None:
        return await transaction(self.sessions, job_store.find_by_message, message_id)

    async def last_for(self, user_id: int) -> Job | None:
        rows = await transaction(self.sessions, job_store.list_for_user, user_id, None, limit=1)
        return rows[0] if rows else None

    def files_of(self, job: Job) -> list[Path]:
        return [Path(p) for p in job.result_paths or [] if Path(p).exists()]

    async def delete_files(self, job: Job) -> None:
        folder = self.outputs_dir / str(job.id)
        await asyncio.to_thread(shutil.rmtree, folder, True)

    async def recover(self) -> tuple[int, int]:
        """At start-up: re-run queued/running jobs, post done ones. Returns (re-run, re-posted)."""
        if self.recovery_listener is None:
            raise RuntimeError("recover() needs a recovery_listener")
        await transaction(self.sessions, job_store.requeue_running)
        unfinished = await transaction(self.sessions, job_store.unfinished)
        for job in unfinished.rerun:
            request = GenerationRequest(**job.request, limits=self.limits)
            if job.seed is not None:
                request = request.replace(seed=job.seed)
            # Older than anything queued now, so they go first (and past the per-user cap).
            self._start(job.id, job.user_id, request, self.recovery_listener(job), priority=True)
        for job in unfinished.to_post:
            await self.post(job, self.recovery_listener(job))
        return len(unfinished.rerun), len(unfinished.to_post)

    async def close(self, timeout: float = 10.0) -> None:
        started = time.monotonic()
        tasks = [r.task for r in self._jobs.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, timeout - (time.monotonic() - started)))


async def _quietly(coro) -> None:
    """Progress reports are best effort: a failed edit must not fail the job."""
    try:
        await coro
    except Exception:
        log.warning("progress report failed", exc_info=True)
