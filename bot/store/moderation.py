"""Moderation items (jobs held for review) and the audit log (who approved or rejected what, when and why).

Approving or rejecting locks the item, so when two moderators press at once exactly one decision counts and
the other gets `AlreadyDecided`; the job's status and the audit entry change in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store import jobs
from bot.store.errors import AlreadyDecided, IllegalTransition, ModerationItemNotFound
from bot.store.models import AuditEntry, ItemStatus, JobStatus, ModerationItem, insert, utcnow

MAX_REASON_CHARS = 1000


async def hold(s: AsyncSession, job_id: int, *, reason: str = "") -> ModerationItem:
    """Open a review item for a job that was created as `awaiting_review` (its prompt is reviewed), or for a
    `done` job whose images are reviewed before they are posted."""
    job = await jobs.get(s, job_id)
    if job.status not in (JobStatus.AWAITING_REVIEW.value, JobStatus.DONE.value):
        raise IllegalTransition(
            f"job #{job_id} is {job.status}; only jobs awaiting review (or rendered, not yet posted) can be held"
        )
    existing = await item_for_job(s, job_id)
    if existing is not None:
        return existing
    return await insert(
        s, ModerationItem(job_id=job_id, guild_id=job.guild_id, reason=_reason(reason), status=ItemStatus.PENDING.value)
    )


async def get_item(s: AsyncSession, item_id: int) -> ModerationItem:
    item = await s.get(ModerationItem, item_id)
    if item is None:
        raise ModerationItemNotFound(f"there is no moderation item #{item_id}")
    return item


async def item_for_job(s: AsyncSession, job_id: int) -> ModerationItem | None:
    return (await s.execute(select(ModerationItem).where(ModerationItem.job_id == job_id))).scalar_one_or_none()


async def pending(s: AsyncSession, guild_id: int | None, *, limit: int = 25) -> list[ModerationItem]:
    """Items still waiting for a decision in the guild, oldest first."""
    stmt = (
        select(ModerationItem)
        .where(ModerationItem.guild_id == guild_id, ModerationItem.status == ItemStatus.PENDING.value)
        .order_by(ModerationItem.id)
        .limit(limit)
    )
    return list((await s.execute(stmt)).scalars())


async def set_review_message(s: AsyncSession, item_id: int, message_id: int) -> ModerationItem:
    """Remember the message in the review channel that shows the item (to edit it once decided)."""
    item = await get_item(s, item_id)
    item.review_message_id = message_id
    await s.flush()
    return item


async def approve(s: AsyncSession, item_id: int, moderator_id: int, *, reason: str = "") -> ModerationItem:
    """Approve: a held prompt's job goes to `queued` (held images stay `done`, to be posted) and the decision is
    logged. `AlreadyDecided` if someone was faster."""
    return await _decide(s, item_id, moderator_id, ItemStatus.APPROVED, JobStatus.QUEUED, reason)


async def reject(s: AsyncSession, item_id: int, moderator_id: int, *, reason: str = "") -> ModerationItem:
    """Reject: the job goes to `rejected` and the decision is logged. `AlreadyDecided` if someone was faster."""
    return await _decide(s, item_id, moderator_id, ItemStatus.REJECTED, JobStatus.REJECTED, reason)


async def record(
    s: AsyncSession,
    *,
    actor_id: int,
    action: str,
    guild_id: int | None = None,
    job_id: int | None = None,
    target_user_id: int | None = None,
    reason: str = "",
    details: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Append one audit entry (approvals and rejections write their own; use this for settings changes...)."""
    if not isinstance(action, str) or not action or len(action) > 32:
        raise ValueError(f"an audit action is a short name, got {action!r}")
    return await insert(
        s,
        AuditEntry(
            guild_id=guild_id,
            actor_id=actor_id,
            action=action,
            job_id=job_id,
            target_user_id=target_user_id,
            reason=_reason(reason),
            details=dict(details or {}),
            created_at=utcnow(),
        ),
    )


async def audit_log(
    s: AsyncSession,
    guild_id: int | None,
    *,
    limit: int = 50,
    before_id: int | None = None,
    action: str | None = None,
    target_user_id: int | None = None,
) -> list[AuditEntry]:
    """The guild's audit entries, newest first; page with `before_id` (the last id of the previous page);
    `target_user_id`: only those about that user."""
    stmt = select(AuditEntry).where(AuditEntry.guild_id == guild_id)
    if target_user_id is not None:
        stmt = stmt.where(AuditEntry.target_user_id == target_user_id)
    if before_id is not None:
        stmt = stmt.where(AuditEntry.id < before_id)
    if action is not None:
        stmt = stmt.where(AuditEntry.action == action)
    stmt = stmt.order_by(AuditEntry.id.desc()).limit(limit)
    return list((await s.execute(stmt)).scalars())


# --- helpers -------------------------------------------------------------------------------------------------


async def _decide(
    s: AsyncSession, item_id: int, moderator_id: int, decision: ItemStatus, job_status: JobStatus, reason: str
) -> ModerationItem:
    stmt = (
        select(ModerationItem)
        .where(ModerationItem.id == item_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    item = (await s.execute(stmt)).scalar_one_or_none()
    if item is None:
        raise ModerationItemNotFound(f"there is no moderation item #{item_id}")
    if item.status != ItemStatus.PENDING.value:
        raise AlreadyDecided(f"this request was already {item.status}")
    job = await jobs.get(s, item.job_id, for_update=True)
    if not (job_status is JobStatus.QUEUED and job.status == JobStatus.DONE.value):  # approved images stay done
        job = await jobs.transition(s, item.job_id, job_status)
    now = utcnow()
    item.status = decision.value
    item.decided_by = moderator_id
    item.decided_at = now
    item.decision_reason = _reason(reason)
    action = "approve" if decision is ItemStatus.APPROVED else "reject"
    await record(
        s,
        actor_id=moderator_id,
        action=action,
        guild_id=item.guild_id,
        job_id=item.job_id,
        target_user_id=job.user_id,
        reason=reason,
        details={"item_id": item.id, "prompt": job.request.get("prompt", "")[:200]},
    )
    return item


def _reason(reason: Any) -> str:
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise ValueError("a reason must be text")
    return reason.strip()[:MAX_REASON_CHARS]


async def unshown(s: AsyncSession, *, limit: int = 100) -> list[ModerationItem]:
    """Pending items that have no review message yet (the bot stopped before posting it), oldest first."""
    stmt = (
        select(ModerationItem)
        .where(ModerationItem.status == ItemStatus.PENDING.value, ModerationItem.review_message_id.is_(None))
        .order_by(ModerationItem.id)
        .limit(limit)
    )
    return list((await s.execute(stmt)).scalars())
