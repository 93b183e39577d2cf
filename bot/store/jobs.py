"""Jobs: every request is persisted before it is queued, and its status only moves along `TRANSITIONS`.

Restart recovery rests on that order. `create()` commits a job as `queued` (or `awaiting_review`) before the
worker ever hears of it; if the process dies in between, the row is still `queued`, and `unfinished()` at the
next start returns it to be re-run, together with jobs that were `running` (their render died with the process)
and jobs that are `done` but not yet `posted` (their files are on disk: post them, then `mark_posted`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.errors import IllegalTransition, InvalidOptions, JobNotFound
from bot.store.grids import is_cell, is_grid_job
from bot.store.models import ItemStatus, Job, JobStatus, ModerationItem, insert, utcnow
from bot.store.options import REQUEST_FIELDS
from bot.store.users import ensure_user
from engine.request import GenerationRequest

S = JobStatus

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.AWAITING_REVIEW: frozenset({S.QUEUED, S.REJECTED, S.CANCELLED}),
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED, S.FAILED}),
    # RUNNING -> QUEUED: a render interrupted by a restart is run again.
    S.RUNNING: frozenset({S.DONE, S.FAILED, S.CANCELLED, S.QUEUED}),
    # DONE -> FAILED: the images could not be posted (files gone, channel deleted) and posting gave up.
    # DONE -> REJECTED: a moderator refused the images (a guild reviewing images before they are posted).
    S.DONE: frozenset({S.POSTED, S.FAILED, S.REJECTED}),
    S.POSTED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
}
ACTIVE: tuple[JobStatus, ...] = (S.AWAITING_REVIEW, S.QUEUED, S.RUNNING)  # count against per-user caps
INITIAL: tuple[JobStatus, ...] = (S.QUEUED, S.AWAITING_REVIEW)
FINAL: tuple[JobStatus, ...] = tuple(s for s, nxt in TRANSITIONS.items() if not nxt)


@dataclass(frozen=True)
class Unfinished:
    """What a fresh start must pick up, oldest first."""

    rerun: list[Job]  # queued or running: put back on the worker's queue
    to_post: list[Job]  # done: rendered, files on disk, never posted


async def create(
    s: AsyncSession,
    *,
    user_id: int,
    request: GenerationRequest | Mapping[str, Any],
    guild_id: int | None = None,
    channel_id: int | None = None,
    interaction_id: int | None = None,
    message_id: int | None = None,
    sources: Mapping[str, str] | None = None,
    status: JobStatus | str = S.QUEUED,
    age_restricted: bool = False,
) -> Job:
    """Persist a new job (`queued`, or `awaiting_review` when moderation holds it) and return it with its id.

    `request` is the resolved request: a `GenerationRequest` (already validated with the configured limits) or
    its `options()` dict. The caller commits before handing the job to the worker.
    """
    initial = _status(status)
    if initial not in INITIAL:
        raise IllegalTransition(f"a new job must start as queued or awaiting_review, not {initial.value}")
    data = request.options() if isinstance(request, GenerationRequest) else _request_dict(request)
    await ensure_user(s, user_id)
    return await insert(
        s,
        Job(
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            interaction_id=interaction_id,
            message_id=message_id,
            age_restricted=age_restricted,
            request=data,
            sources=dict(sources or {}),
            status=initial.value,
            seed=_concrete_seed(data.get("seed")),
        ),
    )


async def find_by_message(s: AsyncSession, message_id: int) -> Job | None:
    """The job whose images (or progress) a Discord message shows."""
    return (await s.execute(select(Job).where(Job.message_id == message_id).limit(1))).scalars().first()


async def interactions_with_jobs(s: AsyncSession, interaction_ids: Sequence[int]) -> set[int]:
    """Which of these Discord interactions have a job (the command journal's replay skips those)."""
    if not interaction_ids:
        return set()
    stmt = select(Job.interaction_id).where(Job.interaction_id.in_(list(interaction_ids)))
    return {int(i) for i in (await s.execute(stmt)).scalars() if i is not None}


async def get(s: AsyncSession, job_id: int, *, for_update: bool = False) -> Job:
    """The job, or `JobNotFound`; `for_update` locks the row (PostgreSQL) for a read-modify-write."""
    if for_update:
        return await _locked(s, job_id)
    job = await s.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"there is no job #{job_id} (it may have been deleted)")
    return job


async def transition(
    s: AsyncSession,
    job_id: int,
    to: JobStatus | str,
    *,
    seed: int | None = None,
    result_paths: Sequence[str] | None = None,
    error: str | None = None,
    message_id: int | None = None,
    image_scores: Sequence[Mapping[str, float] | None] | None = None,
    notes: Sequence[str] | None = None,
) -> Job:
    """Move the job to status `to`, or raise `IllegalTransition` (e.g. `posted` -> `running`).

    The row is locked first (`FOR UPDATE` on PostgreSQL; SQLite transactions are serialized), so of two
    concurrent attempts from the same state exactly one wins and the other sees the new state and fails.
    Timestamps follow the status; `error` is kept for `failed` and cleared when the job is queued again.
    """
    target = _status(to)
    job = await _locked(s, job_id)
    current = JobStatus(job.status)
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(_illegal(job_id, current, target))
    now = utcnow()
    job.status = target.value
    job.updated_at = now
    if target is S.RUNNING:
        job.started_at, job.finished_at, job.error = now, None, None
    elif target is S.QUEUED:
        job.started_at = job.finished_at = job.error = None
    elif target in (S.DONE, S.FAILED, S.CANCELLED, S.REJECTED):
        job.finished_at = now
    elif target is S.POSTED:
        job.posted_at = now
    if target is S.FAILED:
        job.error = error or job.error or "failed"
    elif error is not None:
        job.error = error
    if seed is not None:
        job.seed = seed
    if result_paths is not None:
        job.result_paths = [str(p) for p in result_paths]
    if message_id is not None:
        job.message_id = message_id
    if image_scores is not None:  # the image classifier's, saved with the files it judged
        job.image_scores = [dict(x) if x is not None else None for x in image_scores]
    if notes:  # the render's notes, saved with its files so every later post shows them
        job.notes = list(notes)
    await s.flush()
    return job


async def mark_posted(s: AsyncSession, job_id: int, *, message_id: int | None = None) -> Job:
    """`done` -> `posted`; a job that is already `posted` is returned unchanged (safe to call twice)."""
    job = await _locked(s, job_id)
    if job.status == S.POSTED.value:
        if message_id is not None and job.message_id is None:
            job.message_id = message_id
            await s.flush()
        return job
    return await transition(s, job_id, S.POSTED, message_id=message_id)


async def list_for_user(
    s: AsyncSession,
    user_id: int,
    statuses: Iterable[JobStatus | str] | None = None,
    *,
    guild_id: int | None = None,
    limit: int = 25,
) -> list[Job]:
    """The user's jobs, newest first, optionally only those in `statuses` / in one guild; a grid is its own job
    (its cells are not listed)."""
    stmt = select(Job).where(Job.user_id == user_id, ~is_cell())
    if statuses is not None:
        stmt = stmt.where(Job.status.in_([_status(x).value for x in statuses]))
    if guild_id is not None:
        stmt = stmt.where(Job.guild_id == guild_id)
    stmt = stmt.order_by(Job.id.desc()).limit(limit)
    return list((await s.execute(stmt)).scalars())


async def count_active(s: AsyncSession, user_id: int, *, guild_id: int | None = None) -> int:
    """How many of the user's jobs are waiting for review, queued or running (for the per-user cap): a grid counts
    once, as one command."""
    stmt = (
        select(func.count())
        .select_from(Job)
        .where(Job.user_id == user_id, Job.status.in_([x.value for x in ACTIVE]), ~is_cell())
    )
    if guild_id is not None:
        stmt = stmt.where(Job.guild_id == guild_id)
    return int((await s.execute(stmt)).scalar_one())


async def count_active_in_guild(s: AsyncSession, guild_id: int) -> int:
    """How many jobs of the guild are waiting for review, queued or running (for the guild's queue cap): a grid
    counts its cells, which are what the queue holds."""
    stmt = (
        select(func.count())
        .select_from(Job)
        .where(Job.guild_id == guild_id, Job.status.in_([x.value for x in ACTIVE]), ~is_grid_job())
    )
    return int((await s.execute(stmt)).scalar_one())


async def unfinished(s: AsyncSession) -> Unfinished:
    """Jobs a fresh start must pick up: `queued`/`running` ones to re-run, `done` ones to post. Read-only.

    A `done` job whose images wait for a moderator (a pending moderation item) is left alone: it is posted
    once approved. Grids and their cells are the grid service's to finish (`bot.store.grids.open_grids`)."""
    held = select(ModerationItem.id).where(
        ModerationItem.job_id == Job.id, ModerationItem.status == ItemStatus.PENDING.value
    )
    stmt = (
        select(Job)
        .where(Job.status.in_([S.QUEUED.value, S.RUNNING.value, S.DONE.value]), ~held.exists())
        .where(~is_grid_job(), ~is_cell())
        .order_by(Job.id)
    )
    jobs = list((await s.execute(stmt)).scalars())
    return Unfinished(
        rerun=[j for j in jobs if j.status != S.DONE.value],
        to_post=[j for j in jobs if j.status == S.DONE.value],
    )


# --- helpers -------------------------------------------------------------------------------------------------


async def _locked(s: AsyncSession, job_id: int) -> Job:
    stmt = select(Job).where(Job.id == job_id).with_for_update().execution_options(populate_existing=True)
    job = (await s.execute(stmt)).scalar_one_or_none()
    if job is None:
        raise JobNotFound(f"there is no job #{job_id} (it may have been deleted)")
    return job


def _status(value: JobStatus | str) -> JobStatus:
    try:
        return JobStatus(value)
    except ValueError:
        raise IllegalTransition(
            f"unknown job status {value!r}; statuses are {', '.join(x.value for x in JobStatus)}"
        ) from None


def _illegal(job_id: int, current: JobStatus, target: JobStatus) -> str:
    allowed = TRANSITIONS[current]
    if not allowed:
        return f"job #{job_id} is already {current.value}; it cannot become {target.value}"
    options = ", ".join(sorted(x.value for x in allowed))
    return f"job #{job_id} is {current.value}; it can become {options}, not {target.value}"


def _concrete_seed(seed: Any) -> int | None:
    """The request's seed when it is already concrete (-1 means "random", drawn when the job runs)."""
    return seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else None


def _request_dict(request: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(request, Mapping):
        raise InvalidOptions("a job request must be a GenerationRequest or a mapping of its fields")
    unknown = [k for k in request if k not in REQUEST_FIELDS]
    if unknown:
        raise InvalidOptions(f"unknown request option {unknown[0]!r}; allowed: {', '.join(REQUEST_FIELDS)}")
    if not isinstance(request.get("prompt"), str):
        raise InvalidOptions("a job request needs a prompt")
    data = dict(request)
    try:
        json.dumps(data)
    except (TypeError, ValueError):
        raise InvalidOptions("a job request must hold plain values (text and numbers)") from None
    return data
