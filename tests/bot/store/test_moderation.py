"""Moderation items and the audit log: hold, approve or reject once, and who did what, when and why."""

from __future__ import annotations

import pytest

from bot.store import jobs, moderation
from bot.store.errors import AlreadyDecided, IllegalTransition, ModerationItemNotFound

GUILD, ALICE, MOD, MOD2 = 900, 111, 777, 778


async def _held(sessions, prompt="a swimsuit photo"):
    async with sessions.begin() as s:
        job = await jobs.create(s, user_id=ALICE, guild_id=GUILD, request={"prompt": prompt}, status="awaiting_review")
        item = await moderation.hold(s, job.id, reason="flagged: swimsuit")
    return job, item


async def test_hold_and_list_pending(any_sessions):
    job, item = await _held(any_sessions)
    assert item.status == "pending" and item.guild_id == GUILD and item.reason == "flagged: swimsuit"
    async with any_sessions.begin() as s:
        assert [i.id for i in await moderation.pending(s, GUILD)] == [item.id]
        assert (await moderation.item_for_job(s, job.id)).id == item.id
        assert (await moderation.hold(s, job.id)).id == item.id  # holding twice keeps one item
        await moderation.set_review_message(s, item.id, 31337)
        assert (await moderation.get_item(s, item.id)).review_message_id == 31337


async def test_hold_needs_a_job_awaiting_review(any_sessions):
    async with any_sessions.begin() as s:
        job = await jobs.create(s, user_id=ALICE, request={"prompt": "x"})
        with pytest.raises(IllegalTransition, match="only jobs awaiting review"):
            await moderation.hold(s, job.id)


async def test_approve_queues_the_job_and_logs_it(any_sessions):
    job, item = await _held(any_sessions)
    async with any_sessions.begin() as s:
        decided = await moderation.approve(s, item.id, MOD, reason="fine")
    assert decided.status == "approved" and decided.decided_by == MOD and decided.decided_at is not None
    async with any_sessions.begin() as s:
        assert (await jobs.get(s, job.id)).status == "queued"
        assert await moderation.pending(s, GUILD) == []
        [entry] = await moderation.audit_log(s, GUILD)
    assert (entry.action, entry.actor_id, entry.job_id, entry.target_user_id, entry.reason) == (
        "approve",
        MOD,
        job.id,
        ALICE,
        "fine",
    )
    assert entry.details == {"item_id": item.id, "prompt": "a swimsuit photo"}
    assert entry.created_at is not None


async def test_reject_and_decide_only_once(any_sessions):
    job, item = await _held(any_sessions)
    async with any_sessions.begin() as s:
        await moderation.reject(s, item.id, MOD, reason="not here")
    async with any_sessions.begin() as s:
        with pytest.raises(AlreadyDecided, match="already rejected"):
            await moderation.approve(s, item.id, MOD2)
    async with any_sessions.begin() as s:
        assert (await jobs.get(s, job.id)).status == "rejected"
        [entry] = await moderation.audit_log(s, GUILD)
    assert (entry.action, entry.actor_id, entry.reason) == ("reject", MOD, "not here")


async def test_missing_item(any_sessions):
    async with any_sessions.begin() as s:
        with pytest.raises(ModerationItemNotFound):
            await moderation.approve(s, 404, MOD)


async def test_audit_log_paging_and_filter(any_sessions):
    async with any_sessions.begin() as s:
        for i in range(5):
            await moderation.record(
                s, actor_id=MOD, action="settings" if i % 2 else "ban_word", guild_id=GUILD, details={"i": i}
            )
        await moderation.record(s, actor_id=MOD, action="settings", guild_id=1)
    async with any_sessions.begin() as s:
        page1 = await moderation.audit_log(s, GUILD, limit=2)
        page2 = await moderation.audit_log(s, GUILD, limit=2, before_id=page1[-1].id)
        assert [e.details["i"] for e in page1 + page2] == [4, 3, 2, 1]
        assert [e.details["i"] for e in await moderation.audit_log(s, GUILD, action="settings")] == [3, 1]
