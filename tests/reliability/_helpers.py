"""Helpers for the reliability tests: what the stand-in received per job, and fast bot settings.

A job's final post is recognised the way `DiscordPosts` (bot/exts/imagine/_posts.py) recognises it: a message carrying
the job's buttons (`sdbot:job:<id>:…`). "Delivered exactly once" means exactly one such message exists and
exactly one upload of its images took effect (a PATCH of the original response or a channel POST).
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Callable
from typing import Any

from tests.discord_standin import DiscordStandIn, RecordedRequest

FAST = "--size 64x64 --steps 2"
# One torch thread: with two on a busy 2-core machine, OpenMP spinning makes tiny renders ~100x slower.
ENGINE = {"threads": 1}
DISCORD = {"post_backoff_s": 0.05, "post_retry_s": 30.0, "edit_period_s": 0.2, "edits_per_channel": 5}

_JOB = re.compile(r"Job #(\d+)")


def multipart(r: RecordedRequest) -> bool:
    """A request carrying files (a fault matcher runs before the body is read, so look at the header)."""
    return r.headers.get("Content-Type", "").startswith("multipart/")


def final_edit(r: RecordedRequest) -> bool:
    """The final post through the interaction: a PATCH of the original response with the images."""
    return r.method == "PATCH" and r.path.endswith("/messages/@original") and multipart(r)


def channel_upload(r: RecordedRequest) -> bool:
    """The final post to the channel (token expired, or a job resumed after a restart)."""
    return r.method == "POST" and r.route == "/channels/{channel_id}/messages" and multipart(r)


def marker_of(message: dict[str, Any]) -> int | None:
    for row in message.get("components") or []:
        for item in row.get("components") or []:
            m = re.fullmatch(r"sdbot:job:(\d+):\w+", item.get("custom_id") or "")
            if m:
                return int(m.group(1))
    return None


def final_messages(standin: DiscordStandIn, job_id: int) -> list[dict[str, Any]]:
    return [m for m in standin.messages.values() if marker_of(m) == job_id]


def uploads(standin: DiscordStandIn, job_id: int) -> list[RecordedRequest]:
    """Uploads of the job's images that took effect (answered 200, or applied before the connection dropped; not
    a repeat that Discord answered with the first message because of its `nonce`)."""
    out = []
    for r in standin.requests:
        if not r.files or r.deduplicated or not (r.status == 200 or r.reset == "after"):
            continue
        m = _JOB.search((r.json or {}).get("content") or "")
        if m and int(m.group(1)) == job_id:
            out.append(r)
    return out


def assert_delivered_once(standin: DiscordStandIn, job_id: int) -> dict[str, Any]:
    messages = final_messages(standin, job_id)
    assert len(messages) == 1, f"job {job_id}: {len(messages)} final messages"
    assert len(uploads(standin, job_id)) == 1, [r.describe() for r in uploads(standin, job_id)]
    assert messages[0]["attachments"], messages[0]
    return messages[0]


async def wait_until(predicate, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `predicate` (a function, or a coroutine function) until it is true; fail clearly at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


def in_flight(standin: DiscordStandIn, since: int = 0) -> list[RecordedRequest]:
    """Requests (index >= `since`) still waiting for their answer."""
    return [r for r in standin.requests[since:] if not r.done]


async def settled(standin: DiscordStandIn, final: Callable[[], Any], timeout: float, what: str, since: int = 0) -> None:
    """Wait until the system is idle: `final()` (every job's row in a final state, so nothing is left to post;
    a function or a coroutine function) and no request since `standin.mark()` `since` in flight (a killed
    process's requests held by a fault's delay never end: start after them). "Nothing arrives twice" is
    checked after this, not after a grace time."""

    async def idle() -> bool:
        done = final()
        if inspect.isawaitable(done):
            done = await done
        return bool(done) and not in_flight(standin, since)

    try:
        await wait_until(idle, timeout, what)
    except AssertionError as e:
        raise AssertionError(f"{e}; in flight: {[r.describe() for r in in_flight(standin, since)]}") from None


async def recovered(running) -> None:
    """Wait for the start-up recovery (run from setup_hook, before the bot connects)."""
    await wait_until(lambda: running.bot.recovered is not None, 30, "start-up recovery")


def job_id_in(text: str) -> int:
    m = _JOB.search(text or "")
    assert m, text
    return int(m.group(1))
