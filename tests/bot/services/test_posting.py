"""`PostOnce` on its own: what is retried, what fails a job, when a repeat is checked and where it looks (the job's
message, Discord's nonce window, the channel's history), with a poster and a finder that record."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from bot.services import posting
from bot.services.posting import Posted, PostOnce, PostUnavailable, Refused, post_nonce
from bot.services.records import JobRecord, utcnow
from tests.bot.services.fakes import Listener, Posts


def job(*, message_id: int | None = None, interaction_id: int | None = None, age: timedelta = timedelta(0)):
    now = utcnow() - age
    return JobRecord(
        id=7,
        user_id=1,
        guild_id=2,
        channel_id=3,
        interaction_id=interaction_id,
        message_id=message_id,
        age_restricted=False,
        request={},
        sources={},
        status="done",
        seed=5,
        result_paths=[],
        image_scores=None,
        notes=None,
        error=None,
        created_at=now,
        updated_at=now,
        started_at=now,
        finished_at=now,
        posted_at=None,
    )


async def post(once: PostOnce, record: JobRecord, poster: Listener, *, check_first=False, stopping=False):
    return await once.post(record, [Path("1.png")], poster, check_first=check_first, stopping=lambda: stopping)


@pytest.fixture
def finder() -> Posts:
    return Posts()


@pytest.fixture
def once(finder) -> PostOnce:
    return PostOnce(finder, retry_s=60.0, backoff_s=0.001)


async def test_a_first_attempt_posts_with_the_jobs_nonce_and_looks_nowhere(once, finder):
    poster = Listener()
    assert await post(once, job(), poster) == Posted(1007)
    assert list(poster.nonces) == [post_nonce(7)] and finder.asked == []


async def test_a_failure_that_may_pass_is_retried_and_a_lost_answer_is_not_posted_twice(once, finder):
    poster = Listener(fail_posts=[PostUnavailable("reset by peer")])
    poster.lost_post = True
    assert await post(once, job(), poster) == Posted(4242)  # the repeat, same nonce: Discord's first message
    assert poster.posts == [7] and finder.asked == []


async def test_any_other_failure_refuses_with_its_first_line(once):
    poster = Listener(fail_posts=[PermissionError("Missing Access\nmore")])
    assert await post(once, job(), poster) == Refused("the images could not be posted (Missing Access)")


async def test_out_of_time_or_shutting_down_leaves_the_job_for_the_next_start(once, finder):
    once.retry_s = 0.0
    assert await post(once, job(), Listener(fail_posts=[PostUnavailable("502")])) is None
    assert await post(once, job(), Listener(fail_posts=[PostUnavailable("502")]), stopping=True) is None


async def test_a_repeat_looks_at_the_jobs_message_first(once, finder):
    finder.made[7] = 99
    poster = Listener()
    assert await post(once, job(message_id=99), poster, check_first=True) == Posted(99, again=True)
    assert poster.posts == [] and finder.asked == ["message 99"]


async def test_a_message_that_is_not_the_post_leaves_the_repeat_to_the_nonce(once, finder):
    poster = Listener()
    assert await post(once, job(message_id=98, interaction_id=5), poster, check_first=True) == Posted(1007)
    assert finder.asked == ["message 98"]  # its progress message: checked, and the nonce covers the rest


async def test_the_channels_history_is_the_last_resort(once, finder, monkeypatch):
    finder.made[7] = 99
    for record in (job(interaction_id=5), job(age=timedelta(minutes=10))):  # an edit; too late for the nonce
        finder.asked.clear()
        assert await post(once, record, Listener(), check_first=True) == Posted(99, again=True)
        assert finder.asked == ["history"]
    monkeypatch.setattr(posting, "NONCE_TRUST", timedelta(0))
    finder.asked.clear()
    assert await post(once, job(message_id=98), Listener(), check_first=True) == Posted(99, again=True)
    assert finder.asked == ["message 98", "history"]
