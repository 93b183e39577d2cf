"""Raw Discord objects as Discord sends them: snowflakes, users, guilds, channels, members, messages, and the
INTERACTION_CREATE payloads of each interaction kind.

The `StandIn*` dataclasses describe the world the stand-in serves (they are server-side fixtures, not
discord.py objects); their `to_dict()` gives the raw JSON a Discord API would return. The builder functions
take everything explicitly; `DiscordStandIn.slash(...)` and friends fill in the defaults from its state.
"""

from __future__ import annotations

import base64
import itertools
import secrets
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

DISCORD_EPOCH_MS = 1420070400000
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # Discord's default per-request upload limit (no boosts)

# permission bits
CREATE_INSTANT_INVITE = 1 << 0
ADMINISTRATOR = 1 << 3
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_EXTERNAL_EMOJIS = 1 << 18
CONNECT = 1 << 20
SPEAK = 1 << 21
CHANGE_NICKNAME = 1 << 26
USE_APPLICATION_COMMANDS = 1 << 31
SEND_MESSAGES_IN_THREADS = 1 << 38
USE_EXTERNAL_APPS = 1 << 50
ALL_PERMISSIONS = (1 << 51) - 1

EVERYONE_PERMISSIONS = (
    CREATE_INSTANT_INVITE
    | ADD_REACTIONS
    | VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_EXTERNAL_EMOJIS
    | CONNECT
    | SPEAK
    | CHANGE_NICKNAME
    | USE_APPLICATION_COMMANDS
    | SEND_MESSAGES_IN_THREADS
    | USE_EXTERNAL_APPS
)
BOT_ROLE_PERMISSIONS = VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES | READ_MESSAGE_HISTORY

# interaction types / callback types / option types
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, APPLICATION_COMMAND_AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5
OPTION_SUB_COMMAND, OPTION_SUB_COMMAND_GROUP = 1, 2
OPTION_STRING, OPTION_INTEGER, OPTION_BOOLEAN, OPTION_USER, OPTION_CHANNEL, OPTION_ROLE = 3, 4, 5, 6, 7, 8
OPTION_MENTIONABLE, OPTION_NUMBER, OPTION_ATTACHMENT = 9, 10, 11
COMMAND_CHAT_INPUT, COMMAND_USER, COMMAND_MESSAGE = 1, 2, 3  # application command types

_counter = itertools.count()
_counter_lock = threading.Lock()


def snowflake() -> int:
    """A fresh, unique, time-ordered Discord snowflake."""
    with _counter_lock:
        n = next(_counter)
    ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | (1 << 17) | (n & 0x1FFFF)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def interaction_token(interaction_id: int) -> str:
    """Like Discord's: base64 of "interaction:<id>:<random>" (so it starts with aW50ZXJhY3Rpb246)."""
    raw = f"interaction:{interaction_id}:{secrets.token_urlsafe(48)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass
class StandInUser:
    username: str = "tester"
    id: int = field(default_factory=snowflake)
    global_name: str | None = None
    bot: bool = False
    avatar: str | None = None
    locale: str = "en-US"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": str(self.id),
            "username": self.username,
            "avatar": self.avatar,
            "discriminator": "0",
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "global_name": self.global_name,
            "avatar_decoration_data": None,
            "collectibles": None,
            "banner_color": None,
            "clan": None,
            "primary_guild": None,
        }
        if self.bot:
            d["bot"] = True
        return d


@dataclass
class StandInRole:
    name: str
    id: int = field(default_factory=snowflake)
    permissions: int = 0
    position: int = 1
    color: int = 0
    managed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "description": None,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": self.color,
            "colors": {"primary_color": self.color, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": self.managed,
            "mentionable": False,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }


@dataclass
class StandInChannel:
    name: str = "general"
    id: int = field(default_factory=snowflake)
    type: int = 0  # 0 text, 2 voice, 4 category, 5 announcement, 15 forum
    position: int = 0
    parent_id: int | None = None
    nsfw: bool = False
    topic: str | None = None

    def to_dict(self, guild_id: int) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(guild_id),
            "name": self.name,
            "position": self.position,
            "flags": 0,
            "parent_id": str(self.parent_id) if self.parent_id else None,
            "permission_overwrites": [],
            "nsfw": self.nsfw,
        }
        if self.type in (0, 5, 15):
            d.update(topic=self.topic, last_message_id=None, rate_limit_per_user=0)
        if self.type == 2:
            d.update(bitrate=64000, user_limit=0, rtc_region=None, last_message_id=None, rate_limit_per_user=0)
        return d


@dataclass
class StandInGuild:
    """A guild the stand-in serves. The bot's member and an @everyone role (id = guild id) are added by the
    stand-in; `members` are the other users (the first is the default interaction user). `owner` (default: a
    member "guild-owner", added to `members`) has every permission; the others have @everyone's plus roles'."""

    name: str = "Test Guild"
    id: int = field(default_factory=snowflake)
    channels: list[StandInChannel] = field(default_factory=lambda: [StandInChannel("general")])
    roles: list[StandInRole] = field(default_factory=list)
    members: list[StandInUser] = field(default_factory=lambda: [StandInUser("tester")])
    member_roles: dict[int, list[int]] = field(default_factory=dict)  # user id -> role ids
    owner: StandInUser | None = None
    everyone_permissions: int = EVERYONE_PERMISSIONS
    upload_limit: int = DEFAULT_UPLOAD_LIMIT
    locale: str = "en-US"
    features: list[str] = field(default_factory=list)
    joined_at: str = field(default_factory=now_iso)

    def __post_init__(self) -> None:
        if self.owner is None:
            self.owner = StandInUser("guild-owner")
        if all(m.id != self.owner.id for m in self.members):
            self.members.append(self.owner)

    @property
    def owner_id(self) -> int:
        assert self.owner is not None
        return self.owner.id

    @property
    def text_channels(self) -> list[StandInChannel]:
        return [c for c in self.channels if c.type in (0, 5)]

    def channel(self, name_or_id: str | int) -> StandInChannel:
        for c in self.channels:
            if c.id == name_or_id or c.name == name_or_id:
                return c
        raise KeyError(f"no channel {name_or_id!r} in guild {self.name!r}")

    def member(self, name_or_id: str | int) -> StandInUser:
        for u in self.members:
            if u.id == name_or_id or u.username == name_or_id:
                return u
        raise KeyError(f"no member {name_or_id!r} in guild {self.name!r}")

    def everyone_role(self) -> dict[str, Any]:
        return StandInRole("@everyone", id=self.id, permissions=self.everyone_permissions, position=0).to_dict()

    def role_dicts(self) -> list[dict[str, Any]]:
        return [self.everyone_role()] + [r.to_dict() for r in self.roles]

    def permissions_of(self, user_id: int) -> int:
        if user_id == self.owner_id:
            return ALL_PERMISSIONS
        perms = self.everyone_permissions
        wanted = set(self.member_roles.get(user_id, []))
        for r in self.roles:
            if r.id in wanted:
                perms |= r.permissions
        return ALL_PERMISSIONS if perms & ADMINISTRATOR else perms

    def member_dict(self, user: StandInUser, *, with_permissions: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "user": user.to_dict(),
            "roles": [str(r) for r in self.member_roles.get(user.id, [])],
            "nick": None,
            "avatar": None,
            "banner": None,
            "premium_since": None,
            "joined_at": self.joined_at,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
            "unusual_dm_activity_until": None,
            "collectibles": None,
        }
        if with_permissions:
            d["permissions"] = str(self.permissions_of(user.id))
        return d

    def to_dict(self, *, bot: StandInUser | None = None, full: bool = False) -> dict[str, Any]:
        """The guild object (`GET /guilds/{id}`); with `full`, the GUILD_CREATE payload (channels, members)."""
        d: dict[str, Any] = {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "icon_hash": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id) if self.owner_id else None,
            "region": "deprecated",
            "afk_channel_id": None,
            "afk_timeout": 300,
            "widget_enabled": False,
            "widget_channel_id": None,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": self.role_dicts(),
            "emojis": [],
            "stickers": [],
            "features": list(self.features),
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": str(self.text_channels[0].id) if self.text_channels else None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "max_presences": None,
            "max_members": 500000,
            "vanity_url_code": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": self.locale,
            "public_updates_channel_id": None,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "nsfw_level": 0,
            "nsfw": False,
            "premium_progress_bar_enabled": False,
            "safety_alerts_channel_id": None,
            "incidents_data": None,
        }
        if full:
            members = list(self.members) + ([bot] if bot is not None else [])
            d.update(
                joined_at=self.joined_at,
                large=False,
                unavailable=False,
                member_count=len(members),
                voice_states=[],
                members=[self.member_dict(u) for u in members],
                channels=[c.to_dict(self.id) for c in self.channels],
                threads=[],
                presences=[],
                stage_instances=[],
                guild_scheduled_events=[],
                soundboard_sounds=[],
                lazy=True,
                application_command_counts={},
                embedded_activities=[],
                version=int(time.time() * 1000),
            )
        return d


# ---------------------------------------------------------------------------------------------- messages


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, GIF or JPEG, from its header; None for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xC0, 0xC1, 0xC2):
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return w, h
            (seg_len,) = struct.unpack(">H", data[i + 2 : i + 4])
            i += 2 + seg_len
    return None


def number_components(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of `components` with the numeric `id` Discord gives every component that has none."""
    counter = itertools.count(1)
    taken: set[int] = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("id"), int):
                taken.add(node["id"])
            for v in node.values():
                collect(v)
        elif isinstance(node, list):
            for v in node:
                collect(v)

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            if "type" in out and "id" not in out:
                n = next(counter)
                while n in taken:
                    n = next(counter)
                out["id"] = n
            return out
        return node

    collect(components)
    return walk(components)


def find_component(components: list[dict[str, Any]], custom_id: str) -> dict[str, Any] | None:
    stack = list(components)
    while stack:
        c = stack.pop(0)
        if not isinstance(c, dict):
            continue
        if c.get("custom_id") == custom_id:
            return c
        for key in ("components", "accessory", "component"):
            sub = c.get(key)
            if isinstance(sub, list):
                stack.extend(sub)
            elif isinstance(sub, dict):
                stack.append(sub)
    return None


def message_object(
    *,
    id: int,
    channel_id: int,
    author: dict[str, Any],
    content: str = "",
    embeds: list[dict[str, Any]] | None = None,
    components: list[dict[str, Any]] | None = None,
    attachments: list[dict[str, Any]] | None = None,
    flags: int = 0,
    type: int = 0,
    tts: bool = False,
    guild_id: int | None = None,
    webhook_id: int | None = None,
    application_id: int | None = None,
    interaction_metadata: dict[str, Any] | None = None,
    message_reference: dict[str, Any] | None = None,
    nonce: Any = None,
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "id": str(id),
        "type": type,
        "channel_id": str(channel_id),
        "author": author,
        "content": content,
        "timestamp": now_iso(),
        "edited_timestamp": None,
        "tts": tts,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "mention_channels": [],
        "attachments": attachments or [],
        "embeds": embeds or [],
        "components": components or [],
        "pinned": False,
        "flags": flags,
    }
    if guild_id is not None:
        msg["guild_id"] = str(guild_id)
    if webhook_id is not None:
        msg["webhook_id"] = str(webhook_id)
    if application_id is not None:
        msg["application_id"] = str(application_id)
    if interaction_metadata is not None:
        msg["interaction_metadata"] = interaction_metadata
        msg["interaction"] = {
            "id": interaction_metadata["id"],
            "type": interaction_metadata["type"],
            "name": interaction_metadata.get("name", ""),
            "user": interaction_metadata["user"],
        }
    if message_reference is not None:
        msg["message_reference"] = message_reference
    if nonce is not None:
        msg["nonce"] = nonce
    return msg


# ---------------------------------------------------------------------------------------------- interactions


def _infer_option_type(value: Any) -> int:
    if isinstance(value, bool):
        return OPTION_BOOLEAN
    if isinstance(value, int):
        return OPTION_INTEGER
    if isinstance(value, float):
        return OPTION_NUMBER
    if isinstance(value, StandInUser):
        return OPTION_USER
    if isinstance(value, StandInChannel):
        return OPTION_CHANNEL
    if isinstance(value, StandInRole):
        return OPTION_ROLE
    if isinstance(value, dict) and "filename" in value and "url" in value:
        return OPTION_ATTACHMENT
    return OPTION_STRING


def build_options(
    values: dict[str, Any] | list[dict[str, Any]] | None,
    declared: list[dict[str, Any]] | None,
    *,
    guild: StandInGuild | None = None,
    focused: str | None = None,
    resolved: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Interaction `data.options` from {name: value}: types from the registered command's options where known,
    else from the Python type; users/channels/roles/attachments become ids plus `resolved` entries.
    A list is taken as raw options. `focused` marks the autocomplete option (its value sent as typed, a str)."""
    if values is None:
        return []
    if isinstance(values, list):
        return values
    declared_by_name = {o["name"]: o for o in (declared or [])}
    out = []
    for name, value in values.items():
        decl = declared_by_name.get(name)
        typ = decl["type"] if decl else _infer_option_type(value)
        opt: dict[str, Any] = {"name": name, "type": typ}
        if isinstance(value, StandInUser):
            opt["value"] = str(value.id)
            if resolved is not None:
                resolved.setdefault("users", {})[str(value.id)] = value.to_dict()
                if guild is not None and any(m.id == value.id for m in guild.members):
                    member = guild.member_dict(value, with_permissions=True)
                    member.pop("user")
                    resolved.setdefault("members", {})[str(value.id)] = member
        elif isinstance(value, StandInChannel):
            opt["value"] = str(value.id)
            if resolved is not None:
                ch = value.to_dict(guild.id if guild else 0)
                ch["permissions"] = str(guild.everyone_permissions if guild else EVERYONE_PERMISSIONS)
                resolved.setdefault("channels", {})[str(value.id)] = ch
        elif isinstance(value, StandInRole):
            opt["value"] = str(value.id)
            if resolved is not None:
                resolved.setdefault("roles", {})[str(value.id)] = value.to_dict()
        elif typ == OPTION_ATTACHMENT and isinstance(value, dict):
            opt["value"] = str(value["id"])
            if resolved is not None:
                resolved.setdefault("attachments", {})[str(value["id"])] = value
        elif name == focused:
            opt["value"] = "" if value is None else str(value) if not isinstance(value, str) else value
        else:
            opt["value"] = value
        if name == focused:
            opt["focused"] = True
        out.append(opt)
    return out


def _user_context(
    *, user: StandInUser, guild: StandInGuild | None, channel: dict[str, Any], bot_user_id: int
) -> dict[str, Any]:
    """The who/where part of every interaction payload."""
    if guild is not None:
        return {
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": guild.locale, "features": list(guild.features)},
            "guild_locale": guild.locale,
            "channel_id": channel["id"],
            "channel": channel,
            "member": guild.member_dict(user, with_permissions=True),
            "app_permissions": str(guild.permissions_of(bot_user_id)),
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
            "attachment_size_limit": guild.upload_limit,
        }
    return {
        "channel_id": channel["id"],
        "channel": channel,
        "user": user.to_dict(),
        "app_permissions": str(EVERYONE_PERMISSIONS),
        "authorizing_integration_owners": {"0": "0"},
        "context": 1,
        "attachment_size_limit": DEFAULT_UPLOAD_LIMIT,
    }


def interaction_payload(
    *,
    type: int,
    data: dict[str, Any] | None,
    application_id: int,
    bot_user_id: int,
    user: StandInUser,
    guild: StandInGuild | None,
    channel: dict[str, Any],
    message: dict[str, Any] | None = None,
    locale: str | None = None,
    id: int | None = None,
) -> dict[str, Any]:
    """A full INTERACTION_CREATE `d` as Discord sends it (guild or DM context)."""
    iid = id if id is not None else snowflake()
    payload: dict[str, Any] = {
        "id": str(iid),
        "application_id": str(application_id),
        "type": type,
        "token": interaction_token(iid),
        "version": 1,
        "locale": locale or user.locale,
        "entitlements": [],
        "entitlement_sku_ids": [],
    }
    if data is not None:
        payload["data"] = data
    payload.update(_user_context(user=user, guild=guild, channel=channel, bot_user_id=bot_user_id))
    if message is not None:
        payload["message"] = message
    return payload


def command_data(
    name: str,
    options: list[dict[str, Any]],
    *,
    command: dict[str, Any] | None,
    resolved: dict[str, Any] | None = None,
    command_type: int = 1,
) -> dict[str, Any]:
    """`data` of an application-command (or autocomplete) interaction for a (possibly registered) command."""
    data: dict[str, Any] = {
        "id": command["id"] if command else str(snowflake()),
        "name": name,
        "type": command.get("type", command_type) if command else command_type,
    }
    if options:
        data["options"] = options
    if command and command.get("guild_id"):
        data["guild_id"] = command["guild_id"]
    if resolved:
        data["resolved"] = resolved
    return data


def nest_subcommands(
    path: list[str], leaf_options: list[dict[str, Any]], command: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """`/cmd group sub opt:..` -> options [{type 2 group, options [{type 1 sub, options [...]}]}]."""
    if not path:
        return leaf_options
    declared = (command or {}).get("options") or []
    types = []
    for name in path:
        decl = next((o for o in declared if o["name"] == name), None)
        types.append(decl["type"] if decl else None)
        declared = (decl or {}).get("options") or []
    opts = leaf_options
    for i in range(len(path) - 1, -1, -1):
        typ = types[i] or (OPTION_SUB_COMMAND if i == len(path) - 1 else OPTION_SUB_COMMAND_GROUP)
        node: dict[str, Any] = {"name": path[i], "type": typ}
        if opts:
            node["options"] = opts
        opts = [node]
    return opts


def declared_leaf_options(command: dict[str, Any] | None, path: list[str]) -> list[dict[str, Any]] | None:
    if command is None:
        return None
    declared = command.get("options") or []
    for name in path:
        decl = next((o for o in declared if o["name"] == name), None)
        if decl is None:
            return None
        declared = decl.get("options") or []
    return declared


def modal_submit_components(
    fields: dict[str, Any], template: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """`data.components` of a modal submit: mirrors the modal's own layout (action rows of text inputs, or
    labels around text inputs/selects) when the modal the bot sent is known, else one action row per field.
    Values: a str for a text input, a list of str for a select."""
    if template is None:
        return [
            {"type": 1, "id": i * 2 + 1, "components": [{"type": 4, "id": i * 2 + 2, "custom_id": k, "value": v}]}
            for i, (k, v) in enumerate(fields.items())
        ]

    def submitted(comp: dict[str, Any]) -> dict[str, Any] | None:
        t = comp.get("type")
        cid = comp.get("custom_id")
        out: dict[str, Any] = {"type": t, "id": comp.get("id", 0)}
        if t == 4:
            out.update(custom_id=cid, value=str(fields.get(cid, comp.get("value") or "")))
        elif t in (3, 5, 6, 7, 8) or t == 19:
            v = fields.get(cid, [])
            out.update(custom_id=cid, values=list(v) if isinstance(v, (list, tuple)) else [v])
        elif t == 1:
            out["components"] = [s for s in (submitted(c) for c in comp.get("components", [])) if s]
        elif t == 18:
            inner = submitted(comp["component"])
            if inner is None:
                return None
            out["component"] = inner
        elif t == 10:
            pass
        else:
            return None
        return out

    return [s for s in (submitted(c) for c in number_components(template)) if s]
