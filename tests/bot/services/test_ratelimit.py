"""Pacing new images: the member's cooldown, and per-member and per-server rates that smooth a burst for a
moment and then refuse with the limit in words."""

from __future__ import annotations

import pytest

from bot.errors import UserError
from bot.services import ratelimit
from bot.services.ratelimit import Rate, RateLimits

GUILD, OTHER_GUILD = 900, 901
ALICE, BOB = 111, 112
HOUR = 3600.0


@pytest.mark.parametrize(
    ("rate", "words"),
    [
        (Rate(1, 10), "1 image request per 10 s"),
        (Rate(5, 90), "5 image requests per 90 s"),
        (Rate(30, 600), "30 image requests per 10 min"),
    ],
)
def test_a_rate_in_words(rate, words):
    assert rate.describe() == words


async def test_a_member_over_their_rate_is_refused_saying_the_limit():
    limits = RateLimits(user=Rate(2, HOUR), guild=Rate(100, HOUR), wait_s=0.01)
    await limits.acquire(ALICE, GUILD)
    await limits.acquire(ALICE, GUILD)
    with pytest.raises(UserError, match=r"you're going fast: the limit is 2 image requests per 60 min"):
        await limits.acquire(ALICE, GUILD)
    await limits.acquire(BOB, GUILD)  # another member has their own allowance


async def test_a_server_over_its_rate_is_refused_and_the_members_allowance_is_kept():
    limits = RateLimits(user=Rate(2, HOUR), guild=Rate(1, HOUR), wait_s=0.01)
    await limits.acquire(ALICE, GUILD)
    with pytest.raises(UserError, match="this server is asking for a lot of images right now: the limit is 1"):
        await limits.acquire(ALICE, GUILD)
    # The server's refusal took none of Alice's own slots: her second one is still there, elsewhere.
    await limits.acquire(ALICE, OTHER_GUILD)
    with pytest.raises(UserError, match="you're going fast"):
        await limits.acquire(ALICE, None)  # outside a server only the member's rate applies


async def test_a_short_burst_waits_for_a_slot_instead_of_failing():
    limits = RateLimits(user=Rate(1, 0.05), guild=Rate(100, HOUR), wait_s=5.0)
    await limits.acquire(ALICE, GUILD)
    await limits.acquire(ALICE, GUILD)  # the next slot comes within the wait


def test_the_cooldown_refuses_a_members_next_command_saying_how_long_to_wait(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: clock[0])
    limits = RateLimits(user=Rate(100, HOUR), guild=Rate(100, HOUR), cooldown_s=10.0)
    limits.cooldown(ALICE)
    clock[0] += 4.0
    with pytest.raises(UserError, match=r"wait 6\.0 s before the next image"):
        limits.cooldown(ALICE)
    limits.cooldown(BOB)  # each member has their own
    clock[0] += 6.0
    limits.cooldown(ALICE)  # a refused command did not restart the wait


def test_no_cooldown_when_it_is_zero():
    limits = RateLimits(user=Rate(100, HOUR), guild=Rate(100, HOUR), cooldown_s=0.0)
    for _ in range(3):
        limits.cooldown(ALICE)


async def test_memory_stays_bounded_whoever_calls(monkeypatch):
    monkeypatch.setattr(ratelimit, "MAX_KEYS", 3)
    limits = RateLimits(user=Rate(1, HOUR), guild=Rate(100, HOUR), wait_s=0.01, cooldown_s=1.0)
    for user in range(10):
        await limits.acquire(user, None)
        limits.cooldown(user)
    assert len(limits._users._by_key) == 3 and len(limits._last) == 3
    await limits.acquire(0, None)  # the least recently seen were forgotten: a fresh allowance
    with pytest.raises(UserError):
        await limits.acquire(9, None)  # the most recent are kept
