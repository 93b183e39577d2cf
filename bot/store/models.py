"""The tables: users, presets (+ each user's default), jobs, X/Y/Z grids and their cells, guild settings,
moderation items, the audit log, bans.

Option dicts and word lists are JSON columns. A JSON value is replaced, never mutated in place (SQLAlchemy does
not see in-place changes), which the store modules respect. Discord ids are 64-bit, hence `BigInteger`.
Timestamps are timezone-aware UTC in Python on every backend (`UTCDateTime`).

Changing anything here needs a migration: `alembic revision --autogenerate` against a database at head (see
`bot/store/migrate.py`), checked by hand, and `sdbot db check` must then be clean.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncAttrs, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Stable constraint names, so batch migrations on SQLite (which rebuild tables) can find them again.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


_Row = TypeVar("_Row")


async def insert(s: AsyncSession, row: _Row) -> _Row:
    """Add a new row and flush, so it has its id (and defaults) before the caller commits."""
    s.add(row)
    await s.flush()
    return row


class UTCDateTime(TypeDecorator[datetime]):
    """`DateTime(timezone=True)` that always hands back aware UTC datetimes (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("store timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(AsyncAttrs, DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[str]: JSON()}


class JobStatus(StrEnum):
    AWAITING_REVIEW = "awaiting_review"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"  # rendered, files on disk, not yet posted to Discord
    POSTED = "posted"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class ModerationMode(StrEnum):
    OFF = "off"  # nothing is held; banned words still refuse a prompt
    FLAGGED = "flagged"  # prompts with a flagged word wait for a moderator
    PROMPTS = "prompts"  # every prompt waits for a moderator before it runs
    IMAGES = "images"  # prompts run; the images wait for a moderator before they are posted
    AUTO = "auto"  # the image classifier scores every image: doubtful ones wait for a moderator, the worst are refused


class NotifyBy(StrEnum):
    """How a user hears of a moderator's decision once the command's interaction token has expired."""

    DM = "dm"
    CHANNEL = "channel"  # a message in the channel they asked in, mentioning them


class NsfwPolicy(StrEnum):
    ALLOW = "allow"
    NSFW_CHANNELS = "nsfw_channels"  # only in channels Discord marks age-restricted
    BLOCK = "block"


class ItemStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


def _in(column: str, values: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class User(Base):
    """A Discord user the bot has stored something for."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Preset(Base):
    """A named subset of generation options belonging to one user."""

    __tablename__ = "presets"
    __table_args__ = (UniqueConstraint("user_id", "name_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # No index of its own on user_id: the unique (user_id, name_key) constraint's index serves user lookups.
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(32))  # as the user last typed it
    name_key: Mapped[str] = mapped_column(String(32))  # lower-cased: what uniqueness and lookups use
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"Preset(user_id={self.user_id}, name={self.name!r}, options={self.options!r})"


class DefaultPreset(Base):
    """A user's default preset: at most one per user (the primary key); deleting the preset clears it."""

    __tablename__ = "default_presets"

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    preset_id: Mapped[int] = mapped_column(ForeignKey("presets.id", ondelete="CASCADE"), unique=True)


class Job(Base):
    """One generation request, persisted before it is queued; `status` moves through `jobs.TRANSITIONS`."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("status", JobStatus), name="status"),
        Index("ix_jobs_user_id_status", "user_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    guild_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    interaction_id: Mapped[int | None] = mapped_column(BigInteger)
    message_id: Mapped[int | None] = mapped_column(BigInteger)  # the message showing the job / its images
    request: Mapped[dict[str, Any]] = mapped_column()  # resolved options: GenerationRequest field names
    sources: Mapped[dict[str, Any]] = mapped_column(default=dict)  # option -> where its value came from
    # The command's channel was age-restricted (Discord's NSFW flag): the image review's thresholds for such channels.
    age_restricted: Mapped[bool] = mapped_column(default=False, server_default=false())
    status: Mapped[str] = mapped_column(String(20), index=True)
    seed: Mapped[int | None] = mapped_column(BigInteger)  # the seed actually used
    result_paths: Mapped[list[str]] = mapped_column(default=list)
    # The image classifier's {label: probability} per image, in result order; None: not scored.
    image_scores: Mapped[list[dict[str, float] | None] | None] = mapped_column(JSON)
    # The engine's notes on the render (e.g. an embedding left out because its file is refused); None: none.
    notes: Mapped[list[str] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    posted_at: Mapped[datetime | None] = mapped_column()

    def __repr__(self) -> str:
        return f"Job(id={self.id}, user_id={self.user_id}, status={self.status!r})"


class Grid(Base):
    """An X/Y/Z plot: its own job (the grid image, posted once; its status is the grid's) and one job per cell
    (`GridCell`). `axes` is the plot's fixed axes as plain data (`bot.services.xyz.plan.GridAxes.to_data`)."""

    __tablename__ = "grids"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    axes: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GridCell(Base):
    """One cell of a grid: a job of its own (rendered, saved and checked like any job), at place `cell`."""

    __tablename__ = "grid_cells"
    __table_args__ = (UniqueConstraint("grid_id", "cell"),)

    job_id: Mapped[int] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    grid_id: Mapped[int] = mapped_column(ForeignKey("grids.id", ondelete="CASCADE"), index=True)
    cell: Mapped[int] = mapped_column(Integer)


class GuildSettings(Base):
    """One guild's moderation setup, caps and defaults; a guild without a row uses the defaults below."""

    __tablename__ = "guild_settings"
    __table_args__ = (
        CheckConstraint(_in("moderation_mode", ModerationMode), name="moderation_mode"),
        CheckConstraint(_in("nsfw_policy", NsfwPolicy), name="nsfw_policy"),
        CheckConstraint(_in("notify_by", NotifyBy), name="notify_by"),
    )

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    moderation_mode: Mapped[str] = mapped_column(String(16), default=ModerationMode.OFF.value)
    review_channel_id: Mapped[int | None] = mapped_column(BigInteger)
    moderator_role_id: Mapped[int | None] = mapped_column(BigInteger)
    banned_words: Mapped[list[str]] = mapped_column(default=list)
    flagged_words: Mapped[list[str]] = mapped_column(default=list)
    forced_negative_prompt: Mapped[str] = mapped_column(Text, default="")
    defaults: Mapped[dict[str, Any]] = mapped_column(default=dict)  # guild default options
    max_steps: Mapped[int | None] = mapped_column()  # None: the engine's limit
    max_pixels: Mapped[int | None] = mapped_column()
    max_batch: Mapped[int | None] = mapped_column()
    max_jobs_per_user: Mapped[int | None] = mapped_column()
    allowed_models: Mapped[list[str]] = mapped_column(default=list)  # empty: every model
    allowed_vaes: Mapped[list[str]] = mapped_column(default=list)  # empty: every VAE
    nsfw_policy: Mapped[str] = mapped_column(String(16), default=NsfwPolicy.NSFW_CHANNELS.value)
    notify_by: Mapped[str] = mapped_column(String(16), default=NotifyBy.DM.value)
    max_prompt_chars: Mapped[int | None] = mapped_column()  # None: the engine's limit
    previews: Mapped[bool] = mapped_column(default=False)  # show live preview images in progress messages
    # `auto` mode in age-restricted channels: the guild's own thresholds (None: the bot's [moderation] ones).
    nsfw_flag_above: Mapped[float | None] = mapped_column(Float)
    nsfw_block_above: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModerationItem(Base):
    """A job held for review; decided once, by one moderator."""

    __tablename__ = "moderation_items"
    __table_args__ = (CheckConstraint(_in("status", ItemStatus), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    reason: Mapped[str] = mapped_column(Text, default="")  # why it was held (e.g. the flagged words)
    status: Mapped[str] = mapped_column(String(16), default=ItemStatus.PENDING.value)
    review_message_id: Mapped[int | None] = mapped_column(BigInteger)
    decided_by: Mapped[int | None] = mapped_column(BigInteger)
    decision_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column()


class AuditEntry(Base):
    """Who did what, when and why (approvals, rejections, settings changes)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    actor_id: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    target_user_id: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Ban(Base):
    """A user barred from the bot, in one guild (or everywhere: `guild_id` NULL) until `expires_at` (NULL: for
    good) or until lifted. Rows are kept after they end, as the user's history."""

    __tablename__ = "bans"
    __table_args__ = (Index("ix_bans_user_id_guild_id", "user_id", "guild_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    actor_id: Mapped[int] = mapped_column(BigInteger)  # the moderator who banned
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column()
    lifted_at: Mapped[datetime | None] = mapped_column()
    lifted_by: Mapped[int | None] = mapped_column(BigInteger)
