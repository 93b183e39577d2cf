"""Jobs from the queue to the channel: hand them to the engine, follow them, keep the files, post, report.

Jobs come in committed: the submission pipeline (bot/services/submission.py) persists a job and then calls
`start()`. The order is what makes restarts safe: a job row is committed (`queued`) before the worker hears of it, its
images are written to disk and the row marked `done` (with the message that showed its progress) before anything is
posted, and `posted` is recorded after the post. `recover()` at start-up picks up whatever a crash left in between.
Posting is made exactly-once by `PostOnce` (bot/services/posting.py: the nonce, the job's stored message, the
check before every repeat); until a failed post goes through, the job stays `done` with its files.

`shutdown()` (SIGTERM) stops taking jobs, lets the running one finish and post within the timeout, and puts
what did not finish back to `queued` for the next start. See docs/operations.md for every failure case.

The Discord side is a `JobListener` per job: effects only (show progress, post, tell the member); what to do is
decided here. Whether the engine makes live previews is the guild's setting (`policy.previews_allowed`), set on the
request by the submission pipeline and, for jobs started again (approved, recovered), here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.best_effort import quietly
from bot.services.policy import SettingsCache, previews_allowed
from bot.services.posting import PostOnce, Refused
from bot.services.records import JobRecord, record
from bot.store import jobs as job_store
from bot.store.db import transaction
from bot.store.errors import DatabaseBusy, DatabaseUnavailable
from bot.store.models import Job, JobStatus
from engine import jobs as w
from engine.backends.base import Backend
from engine.config import Limits
from engine.errors import EngineError
from engine.request import GenerationRequest

log = logging.getLogger(__name__)

RESTARTING = "the bot is restarting; try again in a minute"
LOST = "the rendered images were lost before they could be posted"


class JobListener(Protocol):
    """The Discord side of one job: effects only, called from the event loop."""

    async def queued(self, job_id: int, position: int) -> int | None:
        """Show the job's place in the queue. Returns the message that shows the job once there is one: stored
        with the rendered job, it is the first place the check before a repeated post looks."""

    async def started(self, job_id: int) -> None: ...
    async def step(self, job_id: int, step: int, total: int, preview: Any | None) -> None: ...
    async def post(self, job: JobRecord, files: list[Path], nonce: str) -> int | None:
        """Post the images (see `posting.Poster`); returns the first message's id."""

    async def failed(self, job_id: int, message: str) -> None: ...
    async def cancelled(self, job_id: int) -> None: ...
    async def interrupted(self, job_id: int) -> None:
        """The job was put back in the queue by a shutdown; it resumes at the next start."""

    async def notice(self, job_id: int, text: str) -> None:
        """A status line in place of the progress (held for review, rejected)."""

    async def whisper(self, text: str) -> bool:
        """Tell the member only, while the command's token lives; False when it cannot (then others tell them)."""


class ImageGate(Protocol):
    """The image-review stage between rendering and posting (bot/services/review.py)."""

    async def images_held(self, job: JobRecord, listener: JobListener) -> bool: ...


@dataclass
class _Running:
    handle: Any
    task: asyncio.Task
    user_id: int


@dataclass
class JobService:
    sessions: async_sessionmaker[AsyncSession]
    worker: Backend
    outputs_dir: Path
    review: ImageGate  # asked after rendering whether the images wait for a moderator instead of being posted
    listener_for: Callable[[JobRecord], JobListener]  # a job's Discord side when the service has none in hand
    posts: PostOnce  # the one place a post is made exactly once
    settings: SettingsCache  # the guilds' settings: whether a job started again makes live previews
    limits: Limits = Limits()
    record_retry_s: float = 60.0  # how long a job's status change is retried while the database is unavailable
    _jobs: dict[int, _Running] = field(default_factory=dict)
    _listeners: dict[int, JobListener] = field(default_factory=dict)  # each job's Discord side until the job ends
    _posting: set[int] = field(default_factory=set)
    _background: set[asyncio.Task] = field(default_factory=set)
    _stopping: bool = False

    @property
    def stopping(self) -> bool:
        """True once `shutdown()` began: new commands hear `RESTARTING`."""
        return self._stopping

    async def start(
        self, job: Job | JobRecord, request: GenerationRequest, listener: JobListener, *, priority: bool = False
    ) -> None:
        """Hand the worker a job whose `queued` row is committed (the submission pipeline's, whose request says
        whether to make previews). A job the worker refuses is recorded `failed`, never left `queued`, and the
        error raised."""
        try:
            self._start(job.id, job.user_id, request, listener, priority=priority, guild_id=job.guild_id)
        except Exception as exc:
            await self._refused(job.id, exc)
            raise

    def keep(self, job_id: int, listener: JobListener) -> None:
        """Hold a job's Discord side while it waits outside the queue (a prompt held for review)."""
        self._listeners[job_id] = listener

    def listener_of(self, job: JobRecord) -> JobListener | None:
        """A held job's Discord side, taken for a decision about it (None: made before this process started)."""
        return self._listeners.pop(job.id, None)

    async def _refused(self, job_id: int, exc: Exception) -> None:
        """The worker would not take a persisted job (shutting down, full): record it as failed."""
        message = str(exc) if isinstance(exc, EngineError) else "the job could not be queued"
        try:
            await self._write(job_store.transition, job_id, JobStatus.FAILED, error=message)
        except Exception:
            log.exception("job %s: could not record that the worker refused it", job_id)

    async def start_queued(self, job: JobRecord, listener: JobListener) -> None:
        """`start()` for a job whose row became `queued` later (approved after review)."""
        await self.start(job, await self._again(job), listener)

    async def _again(self, job: JobRecord) -> GenerationRequest:
        """A stored job's request, with live previews as its guild's settings say today."""
        settings = await self.settings.get(job.guild_id) if job.guild_id is not None else None
        return GenerationRequest(**job.request, limits=self.limits).replace(previews=previews_allowed(settings))

    def _start(
        self,
        job_id: int,
        user_id: int,
        request: GenerationRequest,
        listener: JobListener,
        *,
        priority: bool = False,
        guild_id: int | None = None,
    ) -> None:
        # The queue is round robin by server (`group`), then by member.
        handle = self.worker.submit(
            request,
            job_id=str(job_id),
            owner=str(user_id),
            priority=priority,
            group=None if guild_id is None else str(guild_id),
        )
        task = asyncio.create_task(self._follow(job_id, handle, listener), name=f"job-{job_id}")
        self._jobs[job_id] = _Running(handle, task, user_id)
        self._listeners[job_id] = listener

    async def _follow(self, job_id: int, handle: Any, listener: JobListener) -> None:
        message_id = None  # the message that shows the job, once the listener says
        try:
            async for event in handle:
                if isinstance(event, w.Queued):
                    message_id = await _quietly(listener.queued(job_id, event.position)) or message_id
                elif isinstance(event, w.Started):
                    await self._write(job_store.transition, job_id, JobStatus.RUNNING)
                    await _quietly(listener.started(job_id))
                elif isinstance(event, w.Step):
                    await _quietly(listener.step(job_id, event.step, event.total, event.preview))
                elif isinstance(event, w.Finished):
                    await self._finish(job_id, event.result, listener, message_id)
                elif isinstance(event, w.Failed):
                    await self._write(job_store.transition, job_id, JobStatus.FAILED, error=event.message)
                    self._listeners.pop(job_id, None)
                    await _quietly(listener.failed(job_id, event.message))
                elif (
                    isinstance(event, w.Cancelled)
                    and self._stopping
                    and event.reason in (w.SHUTDOWN_QUEUED, w.SHUTDOWN_RUNNING)
                ):
                    await self._write(_back_to_queue, job_id)  # the next start runs it again
                    await _quietly(listener.interrupted(job_id))
                elif isinstance(event, w.Cancelled):
                    await transaction(self.sessions, job_store.transition, job_id, JobStatus.CANCELLED)
                    self._listeners.pop(job_id, None)
                    await _quietly(listener.cancelled(job_id))
        except Exception:
            log.exception("following job %s failed", job_id)
        finally:
            self._jobs.pop(job_id, None)

    async def _finish(self, job_id: int, result: Any, listener: JobListener, message_id: int | None) -> None:
        folder = self.outputs_dir / str(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, image in enumerate(result.images, start=1):
            path = folder / f"{job_id}-{i}.png"
            # Encoded here, in a thread: not on the event loop, and not in the engine, which renders the next job.
            await asyncio.to_thread(_save_png, path, image)
            paths.append(path)
        scores = [getattr(image, "scores", None) for image in result.images]
        job = await self._write(
            job_store.transition,
            job_id,
            JobStatus.DONE,
            seed=result.seed,
            result_paths=[str(p) for p in paths],
            image_scores=scores if any(s is not None for s in scores) else None,
            notes=getattr(result, "notes", ()),
            message_id=message_id,
        )
        await self.post(job, listener)

    async def post(
        self, job: Job | JobRecord, listener: JobListener, *, check_first: bool = False, review: bool = True
    ) -> None:
        """Post a `done` job's saved files and record it as `posted`, exactly once (`PostOnce`: retried while
        the failure may pass, each repeat checked first; `check_first`: the first attempt too, after a restart).
        A failure that cannot pass fails the job with the reason; a job still unposted at the end stays `done`
        and is posted at the next start. `review=False` skips the image review stage (a grid, whose cells were
        reviewed one by one)."""
        if job.id in self._posting:
            return  # already being posted by another task
        self._posting.add(job.id)
        try:
            await self._post(record(JobRecord, job), listener, check_first, review)
        finally:
            self._posting.discard(job.id)

    async def _post(self, job: JobRecord, listener: JobListener, check_first: bool, review: bool) -> None:
        files = [Path(p) for p in job.result_paths or []]
        if not files or not all(p.exists() for p in files):
            await self._write(job_store.transition, job.id, JobStatus.FAILED, error=LOST)
            self._listeners.pop(job.id, None)
            await _quietly(listener.failed(job.id, LOST))
            return
        self._listeners[job.id] = listener
        if review and await self.review.images_held(job, listener):
            return  # its listener is kept for the moderators' decision
        outcome = await self.posts.post(job, files, listener, check_first=check_first, stopping=lambda: self._stopping)
        if outcome is not None:
            self._listeners.pop(job.id, None)
        if isinstance(outcome, Refused):
            await self._write(job_store.transition, job.id, JobStatus.FAILED, error=outcome.reason)
            await _quietly(listener.failed(job.id, outcome.reason))
        elif outcome is not None:
            await self._write(job_store.mark_posted, job.id, message_id=outcome.message_id)

    async def write(self, fn, /, *args: Any, **kwargs: Any) -> Any:
        """A job's own state change, retried while the database is briefly away (`_write`): for the services that
        change jobs beside this one (grids)."""
        return await self._write(fn, *args, **kwargs)

    async def _write(self, fn, /, *args: Any, **kwargs: Any) -> Any:
        """`transaction(fn, ...)` for a job's own state, retried with back-off for `record_retry_s` while the
        database is busy or unavailable: a short outage delays a job instead of dropping it."""
        deadline = time.monotonic() + self.record_retry_s
        delay = 0.2
        while True:
            try:
                return await transaction(self.sessions, fn, *args, **kwargs)
            except (DatabaseBusy, DatabaseUnavailable) as exc:
                if time.monotonic() >= deadline:
                    raise
                log.warning("database unavailable (%s); retrying %s in %.1f s", exc, getattr(fn, "__name__", fn), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def cancel(self, job_id: int) -> bool:
        """Cancel a queued or running job (who may is `ModerationService.authorize`'s). False if it is not active."""
        running = self._jobs.get(job_id)
        if running is None:
            return False
        return bool(self.worker.cancel(str(job_id)))

    async def get(self, job_id: int) -> JobRecord:
        return record(JobRecord, await transaction(self.sessions, job_store.get, job_id))

    async def active_for(self, user_id: int) -> list[tuple[JobRecord, int | None]]:
        """The user's waiting and running jobs with their queue positions (None: running or held)."""
        rows = await transaction(self.sessions, job_store.list_for_user, user_id, job_store.ACTIVE)
        return [(record(JobRecord, job), self.worker.position(str(job.id))) for job in rows]

    async def by_message(self, message_id: int) -> JobRecord | None:
        job = await transaction(self.sessions, job_store.find_by_message, message_id)
        return record(JobRecord, job) if job is not None else None

    async def interactions_with_jobs(self, interaction_ids: list[int]) -> set[int]:
        return await self._write(job_store.interactions_with_jobs, interaction_ids)

    async def last_for(self, user_id: int) -> JobRecord | None:
        rows = await transaction(self.sessions, job_store.list_for_user, user_id, None, limit=1)
        return record(JobRecord, rows[0]) if rows else None

    def infotext_of(self, job: JobRecord) -> str | None:
        """The A1111 infotext of the job's first image, read back from its PNG (None: files gone)."""
        from engine.infotext import read_png_infotext

        files = self.files_of(job)
        return read_png_infotext(files[0].read_bytes()) if files else None

    def files_of(self, job: JobRecord) -> list[Path]:
        return files_of(job)

    async def delete_files(self, job: JobRecord) -> None:
        folder = self.outputs_dir / str(job.id)
        await asyncio.to_thread(shutil.rmtree, folder, True)

    async def recover(self, serves: Callable[[int | None], bool] = lambda guild_id: True) -> tuple[int, int]:
        """At start-up: re-run queued/running jobs, post done ones. Returns (re-run, re-posted).

        `awaiting_review` jobs are left to their moderators. Done jobs are posted in background tasks (with
        `check_first`: a post may have happened just before the crash), so start-up does not wait on Discord.
        Only jobs of guilds this process `serves` (by guild id, None for direct messages): with shards split over
        processes sharing one database, each process recovers its own, and a running job is never taken twice.
        """
        unfinished = await self._write(job_store.unfinished)
        # Run from `setup_hook`, before any command is taken: every unfinished job is a previous run's.
        ours = [record(JobRecord, j) for j in unfinished.rerun + unfinished.to_post if serves(j.guild_id)]
        rerun = [j for j in ours if j.status != JobStatus.DONE.value]
        to_post = [j for j in ours if j.status == JobStatus.DONE.value]
        for job in rerun:
            if job.status == JobStatus.RUNNING.value:  # its render died with the last process
                await self._write(_back_to_queue, job.id)
            try:
                request = await self._again(job)
                if job.seed is not None:
                    request = request.replace(seed=job.seed)
            except EngineError as exc:  # e.g. the limits were lowered since: fail this job, recover the others
                log.warning("job %s cannot be resumed: %s", job.id, exc)
                await self._refused(job.id, exc)
                continue
            # Older than anything queued now, so they go first (and past the per-user cap).
            self._start(job.id, job.user_id, request, self.listener_for(job), priority=True, guild_id=job.guild_id)
        for job in to_post:
            self._spawn(self.post(job, self.listener_for(job), check_first=True), f"post-{job.id}")
        return len(rerun), len(to_post)

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def shutdown(self, timeout: float) -> None:
        """Stop taking jobs (new commands hear `RESTARTING`); give the running job `timeout` seconds to finish
        and be posted. Queued jobs stay `queued` for the next start; so does the running job when time runs
        out (it is cancelled at its next step and put back). A post still in flight at the end is cut off: its
        job stays `done` and is posted, once, at the next start. Safe to call twice."""
        if self._stopping:
            return
        self._stopping = True
        deadline = time.monotonic() + timeout
        log.info("shutting down: %d jobs queued or running, waiting up to %.0f s", len(self._jobs), timeout)
        await self.worker.close(timeout=timeout)
        tasks = [r.task for r in self._jobs.values()] + list(self._background)
        if tasks:
            # At least a moment for the status writes of jobs cancelled at the deadline.
            _, pending = await asyncio.wait(tasks, timeout=max(deadline - time.monotonic(), 2.0))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        log.info("shutdown: the job service stopped")


async def _back_to_queue(s: AsyncSession, job_id: int) -> None:
    """A job interrupted by a shutdown goes back to `queued` (a queued one stays as it is)."""
    job = await job_store.get(s, job_id, for_update=True)
    if job.status == JobStatus.RUNNING.value:
        await job_store.transition(s, job_id, JobStatus.QUEUED)


def files_of(job: JobRecord) -> list[Path]:
    """The job's saved images that are still on disk."""
    return [Path(p) for p in job.result_paths or [] if Path(p).exists()]


def _save_png(path: Path, image: Any) -> None:
    path.write_bytes(image.png())


_quietly = functools.partial(quietly, what="progress report")  # a failed edit must not fail the job
