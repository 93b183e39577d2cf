"""What the services hand the Discord areas: plain, frozen records built from the store's rows.

The areas (`bot/exts/`) never see a SQLAlchemy row: a row read after its session could load lazily, and one
changed by an area could be written back by accident. A record holds the values as they were read, and nothing
more. The enums are the store's (one definition of each status); the journal's `Ack` is already plain data.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from bot.store.journal import Ack
from bot.store.models import ItemStatus, JobStatus, ModerationMode, NotifyBy, utcnow

__all__ = [
    "Ack",
    "AuditRecord",
    "BanRecord",
    "GridRecord",
    "ItemStatus",
    "JobRecord",
    "JobStatus",
    "ModerationMode",
    "NotifyBy",
    "ReviewItemRecord",
    "SettingsRecord",
    "record",
    "utcnow",
]

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_Record = TypeVar("_Record", bound="DataclassInstance")


def record(cls: type[_Record], row: Any) -> _Record:
    """`cls` filled from `row`'s attributes of the same names (a row, or a record already)."""
    return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class JobRecord:
    """A job as stored (`bot.store.models.Job`): who asked where, the resolved request, its state and results."""

    id: int
    user_id: int
    guild_id: int | None
    channel_id: int | None
    interaction_id: int | None
    message_id: int | None
    request: dict[str, Any]
    sources: dict[str, Any]
    status: str
    seed: int | None
    result_paths: list[str]
    image_scores: list[dict[str, float] | None] | None
    notes: list[str] | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    posted_at: datetime | None
    age_restricted: bool = False  # the command's channel was age-restricted (the review's NSFW thresholds)


@dataclass(frozen=True)
class GridRecord:
    """An X/Y/Z grid: its own job's id, its axes as typed (`X: Steps: 10, 20`), and its cells in index order,
    each with its labels (`Steps: 20, CFG Scale: 7.0`)."""

    job_id: int
    axes: tuple[str, ...]
    cells: tuple[tuple[str, JobRecord], ...]


@dataclass(frozen=True)
class ReviewItemRecord:
    """A prompt or a job's images held for review (`ModerationItem`), and its decision once made."""

    id: int
    job_id: int
    guild_id: int | None
    reason: str
    status: str
    review_message_id: int | None
    decided_by: int | None
    decision_reason: str | None


@dataclass(frozen=True)
class AuditRecord:
    """One line of the moderation log (`AuditEntry`)."""

    actor_id: int
    action: str
    job_id: int | None
    reason: str
    created_at: datetime


@dataclass(frozen=True)
class BanRecord:
    """One ban, lifted or not (`Ban`)."""

    guild_id: int | None
    actor_id: int
    reason: str
    created_at: datetime
    expires_at: datetime | None
    lifted_at: datetime | None


@dataclass(frozen=True)
class SettingsRecord:
    """A guild's moderation and limits settings (`GuildSettings`), as /config shows them."""

    guild_id: int
    moderation_mode: str
    review_channel_id: int | None
    moderator_role_id: int | None
    banned_words: list[str]
    flagged_words: list[str]
    max_steps: int | None
    max_pixels: int | None
    max_batch: int | None
    max_jobs_per_user: int | None
    notify_by: str
    max_prompt_chars: int | None
    previews: bool
    nsfw_flag_above: float | None
    nsfw_block_above: float | None
