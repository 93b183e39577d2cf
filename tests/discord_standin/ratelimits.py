"""Discord's REST rate limits, as the stand-in enforces them when a test asks (`DiscordStandIn(rate_limits=...)`).

Per-route buckets: each route (its "METHOD template") with its major parameter (the channel, the guild, the
webhook and its token, the interaction) is a bucket of `limit` requests per `per_s` seconds; every answer on a
limited route carries `X-RateLimit-Limit`, `-Remaining`, `-Reset`, `-Reset-After` and `-Bucket`, so a client
can wait before it is refused, as discord.py does. Past the limit the answer is 429 with `retry_after` in the
body, `Retry-After`, `X-RateLimit-Scope: user` and a `Via` header (an answer from Discord's API, which discord.py
waits out and retries, not a Cloudflare ban).

The global limit: `global_per_s` requests per second over every route except the interaction endpoints
(callbacks and the interaction webhooks), which Discord exempts; past it, 429 with `"global": true`,
`X-RateLimit-Global: true` and `X-RateLimit-Scope: global`.

Windows are fixed: a bucket's first request opens a window of `per_s` seconds (Discord's buckets behave so as
seen from a client). Sizes are the test's choice; `DISCORD_LIKE` holds those Discord answers bots with today
for the routes sdbot uses (Discord documents that they may change and that clients must read the headers).
`clock` (seconds, `time.monotonic` by default) lets a test move time on instead of sleeping through a window.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

GLOBAL_PER_S = 50
MAJOR_PARAMETERS = ("channel_id", "guild_id", "webhook_id", "interaction_id")


@dataclass(frozen=True)
class Bucket:
    limit: int
    per_s: float


# "METHOD template" (as `server.Routes` writes them) -> bucket size.
DISCORD_LIKE: dict[str, Bucket] = {
    "POST /channels/{channel_id}/messages": Bucket(5, 5.0),
    "PATCH /channels/{channel_id}/messages/{message_id}": Bucket(5, 5.0),
    "DELETE /channels/{channel_id}/messages/{message_id}": Bucket(5, 1.0),
    "GET /channels/{channel_id}/messages": Bucket(5, 5.0),
    "POST /webhooks/{webhook_id}/{webhook_token}": Bucket(5, 2.0),
    "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/@original": Bucket(5, 2.0),
    "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/{message_id}": Bucket(5, 2.0),
    "DELETE /webhooks/{webhook_id}/{webhook_token}/messages/@original": Bucket(5, 2.0),
    "POST /users/@me/channels": Bucket(1, 1.0),
}


@dataclass(frozen=True)
class Verdict:
    """What the limiter says of one request: the headers to send, and whether it is refused (429)."""

    headers: dict[str, str]
    retry_after: float | None = None  # set: refused
    is_global: bool = False

    @property
    def limited(self) -> bool:
        return self.retry_after is not None

    def body(self) -> dict:
        return {
            "message": "You are being rate limited.",
            "retry_after": round(self.retry_after or 0.0, 3),
            "global": self.is_global,
            "code": 0,
        }


class RateLimiter:
    def __init__(
        self,
        buckets: dict[str, Bucket] | None = None,
        global_per_s: int | None = GLOBAL_PER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.buckets = dict(buckets or {})
        self.clock = clock
        self.global_per_s = global_per_s
        self._windows: dict[tuple[str, str], list[float]] = {}  # key -> [window end, used]
        self._global = [0.0, 0.0]

    def check(self, route_key: str, params: dict[str, str], *, interaction: bool) -> Verdict:
        """Count one request on `route_key`; `interaction`: an interaction endpoint (no global limit)."""
        now = self.clock()
        bucket = self.buckets.get(route_key)
        if not interaction and self.global_per_s is not None:
            if now >= self._global[0]:
                self._global = [now + 1.0, 0.0]
            if self._global[1] >= self.global_per_s:
                after = self._global[0] - now
                return Verdict({**_refusal_headers(after, "global"), "X-RateLimit-Global": "true"}, after, True)
            self._global[1] += 1
        if bucket is None:
            return Verdict({})
        major = next((f"{p}={params[p]}" for p in MAJOR_PARAMETERS if p in params), "")
        if "webhook_token" in params:
            major += "/" + params["webhook_token"]
        window = self._windows.get((route_key, major))
        if window is None or now >= window[0]:
            window = self._windows[(route_key, major)] = [now + bucket.per_s, 0.0]
        after = window[0] - now
        headers = {
            "X-RateLimit-Limit": str(bucket.limit),
            "X-RateLimit-Reset": f"{time.time() + after:.3f}",
            "X-RateLimit-Reset-After": f"{after:.3f}",
            "X-RateLimit-Bucket": hashlib.sha1(route_key.encode()).hexdigest()[:16],
        }
        if window[1] >= bucket.limit:
            return Verdict({**headers, "X-RateLimit-Remaining": "0", **_refusal_headers(after, "user")}, after)
        window[1] += 1
        headers["X-RateLimit-Remaining"] = str(int(bucket.limit - window[1]))
        return Verdict(headers)


def _refusal_headers(after: float, scope: str) -> dict[str, str]:
    return {"Retry-After": str(max(1, int(after + 0.999))), "X-RateLimit-Scope": scope, "Via": "1.1 google"}
