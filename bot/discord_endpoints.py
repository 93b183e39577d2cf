"""Where discord.py sends REST calls and opens its gateway connection.

discord.py has no constructor option for either endpoint: REST goes to the class attribute
`discord.http.Route.BASE` (webhook follow-ups and interaction callbacks too), and a plain `Client`/`commands.Bot`
opens `discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY` (a `yarl.URL`) without asking `GET /gateway/bot`,
adding `?v=10&encoding=json&compress=zlib-stream` itself; after READY it resumes at READY's
`resume_gateway_url`. Both attributes are process-wide, so set them before the client logs in.

Production uses the defaults (config may point at a proxy); tests point at the local stand-in and must put the
defaults back, which `discord_endpoints(...)` (a context manager) or `restore_discord_endpoints()` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import discord.gateway
import discord.http
import yarl

DEFAULT_API_BASE_URL: str = discord.http.Route.BASE
DEFAULT_GATEWAY_URL: str = str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)


def point_discord_at(api_base_url: str, gateway_url: str) -> None:
    """Send discord.py's REST calls to `api_base_url` (e.g. `http://127.0.0.1:8080/api/v10`, no trailing
    slash) and open its gateway at `gateway_url` (`ws://` or `wss://`; discord.py adds the query itself)."""
    gateway = yarl.URL(gateway_url)
    if gateway.scheme not in ("ws", "wss"):
        raise ValueError(f"gateway URL must be ws:// or wss://, got {gateway_url!r}")
    if not api_base_url.startswith(("http://", "https://")):
        raise ValueError(f"API base URL must be http:// or https://, got {api_base_url!r}")
    discord.http.Route.BASE = api_base_url.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway.with_query(None)


def restore_discord_endpoints() -> None:
    """Put discord.py's own endpoints (discord.com API v10, gateway.discord.gg) back."""
    discord.http.Route.BASE = DEFAULT_API_BASE_URL
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(DEFAULT_GATEWAY_URL)


@contextmanager
def discord_endpoints(api_base_url: str, gateway_url: str) -> Iterator[None]:
    """`point_discord_at` for the duration of a `with` block; whatever was set before comes back after it."""
    saved_base = discord.http.Route.BASE
    saved_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    point_discord_at(api_base_url, gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = saved_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved_gateway
