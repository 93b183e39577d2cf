"""Discord faults injected by the stand-in: 429s, 5xx bursts, dropped connections, gateway drops.

Every job must be posted exactly once (one message with its buttons, one upload that took effect), be recorded
`posted`, and the bot must reconnect by itself.
"""

from __future__ import annotations

from tests.reliability._helpers import (
    FAST,
    assert_delivered_once,
    channel_upload,
    final_edit,
    marker_of,
    uploads,
    wait_until,
)


async def imagine(s, prompt: str = f"a cat {FAST}", user=None):
    ix = await s.send_interaction(s.slash("imagine", {"prompt": prompt}, user=user))
    await ix.wait_callback(timeout=10)
    return ix


async def delivered(bot, ix, timeout: float = 30) -> int:
    """The job id of `ix` once its images are in the original response, and it is recorded as posted."""
    msg = await ix.wait_original_message(lambda m: bool(m.get("attachments")), timeout=timeout)
    job_id = marker_of(msg)
    await wait_until(lambda: job_id in _posted(bot), 10, f"job {job_id} recorded as posted")
    return job_id


def _posted(bot) -> set[int]:
    import sqlite3

    path = bot.config_path.parent / "sdbot.db"
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM jobs WHERE status = 'posted'")}


async def test_429s_are_waited_out_with_and_without_via(bot):
    """discord.py waits out a 429 with Via itself; a bare 429 (Cloudflare) reaches us and is retried."""
    s = bot.standin
    via = s.rate_limit_next(final_edit, count=2, retry_after=0.2)
    first = await delivered(bot, await imagine(s))
    bare = s.rate_limit_next(final_edit, count=2, retry_after=0.2, via=False)
    second = await delivered(bot, await imagine(s))
    assert via.remaining == 0 and bare.remaining == 0
    for job_id in (first, second):
        assert_delivered_once(s, job_id)
    s.assert_no_invalid_requests()


async def test_5xx_bursts_are_retried_with_backoff(bot):
    """A burst of 503s on a channel post (raised by discord.py) is retried by us with doubling delays, each retry
    with the same nonce (Discord would answer a repeat of a post that landed with that post), so no retry reads
    the channel's history; 500/502/503 on the interaction's webhook are retried by discord.py itself."""
    s = bot.standin
    ix = await imagine(s)
    ix.expire()  # the result goes to the channel
    burst = s.fail_next(channel_upload, 503, count=3)
    await wait_until(
        lambda: burst.remaining == 0 and [m for m in s.messages.values() if marker_of(m)],
        30,
        "the post after the burst",
    )
    job_id = next(marker_of(m) for m in s.messages.values() if marker_of(m))
    attempts = [r.time for r in s.requests if channel_upload(r)]
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert len(gaps) == 3 and gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2, gaps
    nonces = {(r.json["nonce"], r.json["enforce_nonce"]) for r in s.requests if channel_upload(r)}
    assert nonces == {(f"sdbot:{job_id}:1", True)}
    assert not [r for r in s.requests if r.method == "GET" and r.route == "/channels/{channel_id}/messages"]
    await wait_until(lambda: job_id in _posted(bot), 10, "recorded as posted")
    assert_delivered_once(s, job_id)
    for status in (503, 502, 500):  # one each (discord.py waits 1 s, then 3 s, 5 s ... within a burst)
        s.fail_next(final_edit, status, count=1)
        assert_delivered_once(s, await delivered(bot, await imagine(s)))
    s.assert_no_invalid_requests()


async def test_a_dropped_connection_is_retried(bot):
    """The connection drops before Discord sees the post: it is made again, once."""
    s = bot.standin
    reset = s.reset_next(final_edit, count=2)
    job_id = await delivered(bot, await imagine(s))
    assert reset.remaining == 0
    assert_delivered_once(s, job_id)
    s.assert_no_invalid_requests()


async def test_a_post_whose_answer_was_lost_is_not_made_twice(bot):
    """The channel post takes effect but its answer is lost: the retry repeats its nonce, and Discord answers
    with the first message instead of posting again; no history is read."""
    s = bot.standin
    ix = await imagine(s)
    ix.expire()  # the result goes to the channel with a mention: a POST that a blind retry would duplicate
    lost = s.reset_next(channel_upload, after_processing=True)
    await wait_until(lambda: lost.remaining == 0, 30, "the post whose answer is lost")
    job_id = marker_of(lost.hits[0].response or {}) or marker_of(next(m for m in s.messages.values() if marker_of(m)))
    await wait_until(lambda: job_id in _posted(bot), 20, f"job {job_id} recorded as posted")
    message = assert_delivered_once(s, job_id)
    assert message["content"].startswith(f"<@{s.user.id}>")
    job = await bot.services.jobs.get(job_id)
    assert job.message_id == int(message["id"])  # Discord's answer to the repeat, recorded as the job's message
    posts = [r for r in s.requests if channel_upload(r)]
    assert [r.deduplicated for r in posts] == [False, True] and posts[0].json["nonce"] == posts[1].json["nonce"]
    assert not [r for r in s.requests if r.route == "/channels/{channel_id}/messages" and r.method == "GET"]
    s.assert_no_invalid_requests()


async def test_a_refused_post_fails_the_job_with_a_message(bot):
    """A 403 will not pass by retrying: the job fails at once and the user is told why."""
    s = bot.standin
    s.fail_next(final_edit, 403, count=1)
    ix = await imagine(s)
    msg = await ix.wait_original_message(lambda m: "failed" in m.get("content", ""), timeout=30)
    assert "could not be posted" in msg["content"] and "403" in msg["content"]
    assert len([r for r in s.requests if final_edit(r)]) == 1
    s.assert_no_invalid_requests()


async def test_gateway_drops_resume_by_themselves_and_lose_nothing(bot):
    """A closed gateway (4000), a dropped TCP connection and an invalidated session: the bot reconnects by
    itself, the command sent while it was away is replayed on RESUME, and every job is posted once."""
    s = bot.standin
    mark = s.gateway_mark()
    before = await imagine(s, "a cat --size 128x128 --steps 20")
    await s.drop_gateway()  # close code 4000: resume
    away = await s.send_interaction(s.slash("imagine", {"prompt": f"a dog {FAST}"}))  # waits in the session
    await s.wait_for_gateway(t="RESUMED", since=mark, timeout=30)
    mark = s.gateway_mark()
    await s.drop_gateway(abort=True)  # no close frame at all
    await s.wait_for_gateway(t="RESUMED", since=mark, timeout=30)
    mark = s.gateway_mark()
    await s.invalidate_session()  # not resumable: IDENTIFY again
    await s.wait_for_gateway(t="READY", since=mark, timeout=30)
    after = await imagine(s, f"a bird {FAST}")
    jobs = [await delivered(bot, ix) for ix in (before, away, after)]
    assert len(set(jobs)) == 3
    for job_id in jobs:
        assert_delivered_once(s, job_id)
    assert sum(1 for f in s.gateway_frames if f.op == 2) == 2  # one IDENTIFY at start, one after invalidation
    assert bot.bot.recovered is not None and len(uploads(s, jobs[0])) == 1
    s.assert_no_invalid_requests()


async def test_too_late_for_the_nonce_the_history_is_the_last_resort(bot, monkeypatch):
    """When a repeat could be past Discord's nonce window, the retry reads the channel's history (bounded, logged)
    and finds the post there instead of posting again."""
    from datetime import timedelta

    from bot.services import posting

    monkeypatch.setattr(posting, "NONCE_TRUST", timedelta(0))
    s = bot.standin
    ix = await imagine(s)
    ix.expire()
    lost = s.reset_next(channel_upload, after_processing=True)
    await wait_until(lambda: lost.remaining == 0, 30, "the post whose answer is lost")
    job_id = marker_of(next(m for m in s.messages.values() if marker_of(m)))
    await wait_until(lambda: job_id in _posted(bot), 20, f"job {job_id} recorded as posted")
    assert_delivered_once(s, job_id)
    assert len([r for r in s.requests if channel_upload(r)]) == 1
    assert [r for r in s.requests if r.route == "/channels/{channel_id}/messages" and r.method == "GET"]
    s.assert_no_invalid_requests()
