"""A local Discord API v10 + gateway stand-in for end-to-end tests of the bot with the real discord.py client.

See `server.DiscordStandIn` for the entry point; `payloads` has the raw Discord objects and interaction
builders, `validation` checks request bodies against Discord's OpenAPI spec, `gateway` is the websocket side.
"""

from .gateway import RESUMABLE_CLOSE, GatewayFrame
from .payloads import (
    StandInChannel,
    StandInGuild,
    StandInRole,
    StandInUser,
    image_size,
    snowflake,
)
from .ratelimits import DISCORD_LIKE, Bucket
from .server import (
    DEFAULT_TOKEN,
    DiscordStandIn,
    Fault,
    InteractionHandle,
    RecordedFile,
    RecordedRequest,
    Routes,
)
from .validation import Spec, find_spec

__all__ = [
    "Bucket",
    "DISCORD_LIKE",
    "DEFAULT_TOKEN",
    "DiscordStandIn",
    "Fault",
    "GatewayFrame",
    "InteractionHandle",
    "RESUMABLE_CLOSE",
    "RecordedFile",
    "RecordedRequest",
    "Routes",
    "Spec",
    "StandInChannel",
    "StandInGuild",
    "StandInRole",
    "StandInUser",
    "find_spec",
    "image_size",
    "snowflake",
]
