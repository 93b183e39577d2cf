"""The stand-in's Discord rate limits: per-route buckets with X-RateLimit-* headers, 429 + retry_after + Via past
them, the global limit (interaction endpoints exempt), and the real discord.py client honouring all of it."""

from __future__ import annotations

import time

import aiohttp
import discord
from discord.ext import commands

from tests.discord_standin import DISCORD_LIKE, Bucket, DiscordStandIn, Routes, StandInGuild
from tests.discord_standin.server import DEFAULT_TOKEN


async def raw(session: aiohttp.ClientSession, standin: DiscordStandIn, method: str, path: str, **kwargs):
    headers = {"Authorization": f"Bot {DEFAULT_TOKEN}"}
    async with session.request(method, standin.api_base_url + path, headers=headers, **kwargs) as response:
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, dict(response.headers), body


async def test_a_bucket_answers_with_headers_then_429_with_retry_after_and_via():
    bucket = Bucket(2, 0.5)
    now = [1000.0]  # the limiter's clock: the test moves it, nothing sleeps
    async with (
        DiscordStandIn(rate_limits={Routes.CREATE_MESSAGE: bucket}, rate_limit_clock=lambda: now[0]) as standin,
        aiohttp.ClientSession() as http,
    ):
        path = f"/channels/{standin.channel.id}/messages"
        answers = [await raw(http, standin, "POST", path, json={"content": f"m{i}"}) for i in range(3)]
        (s1, h1, _), (s2, h2, _), (s3, h3, body) = answers
        assert (s1, s2, s3) == (200, 200, 429)
        assert h1["X-RateLimit-Limit"] == "2" and h1["X-RateLimit-Remaining"] == "1"
        assert h2["X-RateLimit-Remaining"] == "0" and float(h2["X-RateLimit-Reset-After"]) == 0.5
        assert h1["X-RateLimit-Bucket"] == h2["X-RateLimit-Bucket"]
        assert float(h1["X-RateLimit-Reset"]) > time.time() - 1
        assert body["retry_after"] == 0.5 and body["global"] is False
        assert h3["X-RateLimit-Scope"] == "user" and "Via" in h3 and "Retry-After" in h3
        assert len(standin.messages_in(standin.channel)) == 2  # the refused one did nothing
        assert [r.rate_limited for r in standin.requests] == [False, False, True]
        assert standin.assert_no_refused_requests() is None  # a 429 is not a request Discord refuses outright
        # The window stays closed until `per_s` has passed, then reopens.
        now[0] += 0.499
        assert (await raw(http, standin, "POST", path, json={"content": "early"}))[0] == 429
        now[0] += 0.001
        assert (await raw(http, standin, "POST", path, json={"content": "again"}))[0] == 200


async def test_the_global_limit_spares_interaction_endpoints():
    async with DiscordStandIn(rate_limits={}, global_rate_limit=3) as standin, aiohttp.ClientSession() as http:
        path = f"/channels/{standin.channel.id}"
        statuses = [(await raw(http, standin, "GET", path))[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        status, headers, body = await raw(http, standin, "GET", path)
        assert status == 429 and body["global"] is True
        assert headers["X-RateLimit-Global"] == "true" and headers["X-RateLimit-Scope"] == "global"
        # An interaction's callback is not bound by the global limit.
        ix = standin.register_interaction(standin.slash("imagine", {"prompt": "x"}))
        status, _, _ = await raw(http, standin, "POST", f"/interactions/{ix.id}/{ix.token}/callback", json={"type": 5})
        assert status in (200, 204)


async def test_discord_py_waits_for_the_bucket_instead_of_being_refused():
    """The real client reads the headers: five sends into a bucket of 2 per 0.3 s all land, and at most one was
    answered 429: discord.py waited out the windows on its own (had it not, the limiter would have refused more)."""
    async with DiscordStandIn([StandInGuild("G")], rate_limits={Routes.CREATE_MESSAGE: Bucket(2, 0.3)}) as standin:
        bot = commands.Bot(command_prefix="!", intents=discord.Intents.none(), guild_ready_timeout=0.05)
        async with standin.run_client(bot):
            channel = bot.get_partial_messageable(standin.channel.id)
            for i in range(5):
                await channel.send(f"message {i}")
        sends = [r for r in standin.requests if r.key == Routes.CREATE_MESSAGE]
        assert len(standin.messages_in(standin.channel)) == 5
        assert len([r for r in sends if r.rate_limited]) <= 1


def test_discord_like_sizes_cover_the_routes_sdbot_posts_on():
    for route in (Routes.CREATE_MESSAGE, Routes.EDIT_MESSAGE, Routes.EDIT_ORIGINAL, Routes.FOLLOWUP):
        assert DISCORD_LIKE[route].limit >= 1
