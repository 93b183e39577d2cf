"""Posting a job's images exactly once: the nonce, the job's known message, the check before a repeat.

Posting is at-least-once by nature: a post can reach Discord while its answer is lost (a reset connection), or the
process can die between the post and the row's `posted`. `PostOnce` makes it exactly-once, and it is the only
place that does: every attempt carries the job's nonce (`post_nonce`), and before every repeat (a retry, or a
`done` job re-posted after a restart) it looks for the post that may have happened, cheapest first:

1. the job's message by its id (the message that showed the job's progress, stored with the rendered job): does it
   carry the job's buttons?
2. a channel post needs no look while the first attempt is recent (`NONCE_TRUST`): it is repeated with the same
   nonce, and Discord answers a repeat with the first message. Only when the job's message was checked (1) or
   the job's command had no interaction: an interaction's own message is edited, and no nonce covers an edit;
3. otherwise (after a restart with no known message, or too late for the nonce) the channel's recent history,
   bounded and logged, as the last resort.

The Discord side only acts and reports facts: `JobListener.post` posts (raising `PostUnavailable` for a failure
that may pass), `PostFinder` says whether a message is the job's post and finds one in the channel.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from bot.services.records import JobRecord, utcnow

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0
# How long after its first attempt a channel post may be repeated with the same nonce and trust Discord to answer
# with the first message ("the past few minutes", Discord says; kept well inside that).
NONCE_TRUST = timedelta(minutes=2)


class PostUnavailable(Exception):
    """A post that failed in a way that may pass (Discord 5xx or 429, a timeout, a dropped connection): retried."""


class Poster(Protocol):
    """What `PostOnce` needs of a job's Discord side (`JobListener.post`)."""

    async def post(self, job: JobRecord, files: list[Path], nonce: str) -> int | None:
        """Post the images; each message of the post carries `<nonce>:<n>` (n from 1). Returns the first one's
        id. Raises `PostUnavailable` for a failure that may pass; anything else fails the job."""


class PostFinder(Protocol):
    """Where the bot's posts can be looked at (the Discord side): facts, no decisions."""

    async def carries(self, job: JobRecord, message_id: int) -> bool:
        """Whether that message (in the job's channel) is the job's post: the bot's, with the job's buttons."""

    async def search(self, job: JobRecord) -> int | None:
        """The job's post among its channel's messages since the job was made (bounded): the last resort."""


def post_nonce(job_id: int) -> str:
    """The nonce of a job's post; with its part (`:1`, `:2`, `:failed`) at most 25 characters, as Discord allows."""
    return f"sdbot:{job_id}"


@dataclass(frozen=True)
class Posted:
    """The post is there: its first message (recorded with the job's `posted`)."""

    message_id: int | None
    again: bool = False  # found already there: not posted again


@dataclass(frozen=True)
class Refused:
    """The post failed for good: the job fails with this reason."""

    reason: str


@dataclass
class PostOnce:
    finder: PostFinder
    retry_s: float = 900.0  # how long a failed post is retried (then the job waits, `done`, for a restart)
    backoff_s: float = 1.0  # the first retry's delay; doubled each time up to MAX_BACKOFF_S

    async def post(
        self, job: JobRecord, files: list[Path], poster: Poster, *, check_first: bool, stopping: Callable[[], bool]
    ) -> Posted | Refused | None:
        """Post once, retrying `PostUnavailable` with exponential back-off for `retry_s`, each repeat checked
        first (`check_first`: the first attempt too, after a restart). None: not posted now; the job stays
        `done` and is posted at the next start."""
        deadline = time.monotonic() + self.retry_s
        delay, attempt, first = self.backoff_s, 0, None
        while True:
            try:
                if check_first or attempt:
                    found = await self._posted(job, first)
                    if found is not None:
                        log.info("job %s was posted already (message %s); not posting it again", job.id, found)
                        return Posted(found, again=True)
                if first is None:
                    first = time.monotonic()
                return Posted(await poster.post(job, files, post_nonce(job.id)))
            except Exception as exc:
                attempt += 1
                if stopping():
                    log.warning(
                        "job %s: posting failed during shutdown (%s); posted at the next start", job.id, reason(exc)
                    )
                    return None
                if not isinstance(exc, PostUnavailable):
                    log.warning("job %s could not be posted", job.id, exc_info=exc)
                    return Refused(f"the images could not be posted ({reason(exc)})")
                left = deadline - time.monotonic()
                if left <= 0:
                    log.error(
                        "job %s: still not posted after %d attempts (%s); its files are kept and it is "
                        "posted at the next start",
                        job.id,
                        attempt,
                        reason(exc),
                    )
                    return None
                log.warning(
                    "job %s: posting failed (%s); retry %d in %.1f s", job.id, reason(exc), attempt, min(delay, left)
                )
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, MAX_BACKOFF_S)

    async def _posted(self, job: JobRecord, first: float | None) -> int | None:
        """The job's post if it exists already; None: post it (again), with the same nonce."""
        checked = False
        if job.message_id is not None:
            if await self.finder.carries(job, job.message_id):
                return job.message_id
            checked = True
        if (checked or job.interaction_id is None) and _nonce_covers(job, first):
            return None
        log.warning("job %s: looking for its post in the channel's history (the last resort)", job.id)
        return await self.finder.search(job)


def _nonce_covers(job: JobRecord, first: float | None) -> bool:
    if first is not None:
        return time.monotonic() - first < NONCE_TRUST.total_seconds()
    finished = job.finished_at or job.updated_at  # after a restart: the first attempt followed `done`
    return finished is not None and utcnow() - finished < NONCE_TRUST


def reason(exc: BaseException) -> str:
    """An error's first line, short, for a log line or a member's notice."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return text or type(exc).__name__
