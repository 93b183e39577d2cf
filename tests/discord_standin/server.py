"""`DiscordStandIn`: a local Discord API v10 + gateway on 127.0.0.1 for the real discord.py client.

    async with DiscordStandIn() as standin:
        async with standin.run_client(bot):            # points discord.py here, starts it, waits for on_ready
            ix = await standin.send_interaction(standin.slash("imagine", {"prompt": "a cat"}))
            cb = await ix.wait_callback()
            msg = await ix.wait_original_message(lambda m: m["attachments"])
            png = standin.attachment_bytes(msg["attachments"][0])
        standin.assert_no_invalid_requests()

Every REST request is recorded in order (`standin.requests`), every JSON body (and multipart `payload_json`) is
validated against Discord's OpenAPI request schema, and refused the way Discord refuses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import mimetypes
import re
import secrets
import time
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import payloads as P
from .gateway import OP_INVALID_SESSION, OP_RECONNECT, RESUMABLE_CLOSE, Gateway, GatewayFrame
from .payloads import StandInChannel, StandInGuild, StandInUser, snowflake
from .ratelimits import GLOBAL_PER_S, Bucket, RateLimiter
from .validation import Spec, discord_error_tree

DEFAULT_TOKEN = "sdbot-standin." + "X" * 8 + ".test-token"
API_PREFIX = "/api/v10"
MAX_ATTACHMENTS = 10


class Routes:
    """Route keys ("METHOD template", templates as the OpenAPI spec writes them) for `wait_for` and faults."""

    CALLBACK = "POST /interactions/{interaction_id}/{interaction_token}/callback"
    FOLLOWUP = "POST /webhooks/{webhook_id}/{webhook_token}"
    GET_ORIGINAL = "GET /webhooks/{webhook_id}/{webhook_token}/messages/@original"
    EDIT_ORIGINAL = "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/@original"
    DELETE_ORIGINAL = "DELETE /webhooks/{webhook_id}/{webhook_token}/messages/@original"
    GET_WEBHOOK_MESSAGE = "GET /webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"
    EDIT_WEBHOOK_MESSAGE = "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"
    DELETE_WEBHOOK_MESSAGE = "DELETE /webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"
    CREATE_MESSAGE = "POST /channels/{channel_id}/messages"
    LIST_MESSAGES = "GET /channels/{channel_id}/messages"
    GET_MESSAGE = "GET /channels/{channel_id}/messages/{message_id}"
    EDIT_MESSAGE = "PATCH /channels/{channel_id}/messages/{message_id}"
    DELETE_MESSAGE = "DELETE /channels/{channel_id}/messages/{message_id}"
    CREATE_DM = "POST /users/@me/channels"
    GET_CHANNEL = "GET /channels/{channel_id}"
    SYNC_GLOBAL_COMMANDS = "PUT /applications/{application_id}/commands"
    SYNC_GUILD_COMMANDS = "PUT /applications/{application_id}/guilds/{guild_id}/commands"
    GET_ME = "GET /users/@me"
    GET_APPLICATION = "GET /oauth2/applications/@me"


# ---------------------------------------------------------------------------------------------- records


@dataclass
class RecordedFile:
    field: str  # the multipart field name, e.g. "files[0]"
    index: int  # n of files[n]
    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedRequest:
    """One REST request as the stand-in saw it. `time` is `time.perf_counter()` at arrival."""

    index: int
    method: str
    path: str  # below the API base, e.g. /channels/123/messages
    route: str | None  # the spec's template, e.g. /channels/{channel_id}/messages; None if no such route
    params: dict[str, str]
    query: dict[str, str]
    headers: dict[str, str]
    time: float
    json: Any = None  # the JSON body, or the multipart payload_json
    files: list[RecordedFile] = field(default_factory=list)
    form: dict[str, str] = field(default_factory=dict)  # other multipart text fields
    status: int | None = None
    response: Any = None
    finished: float | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)  # schema errors (400 / 50035)
    injected: bool = False  # answered by a fault hook
    reset: str | None = None  # its connection was dropped by `reset_next` ("before"/"after" processing)
    refused: bool = False  # a 4xx from the stand-in's own rules (not a fault hook)
    rate_limited: bool = False  # a 429 from the rate limits the test set (`DiscordStandIn(rate_limits=...)`)
    ratelimit_headers: dict[str, str] = field(default_factory=dict)
    deduplicated: bool = False  # a repeated `nonce` with `enforce_nonce`: answered with the first message

    @property
    def key(self) -> str:
        return f"{self.method} {self.route}"

    @property
    def body(self) -> Any:
        return self.json

    @property
    def done(self) -> bool:
        return self.status is not None

    def describe(self) -> str:
        extra = f" errors={[(e['path'], e['code']) for e in self.errors]}" if self.errors else ""
        return (
            f"#{self.index} {self.method} {self.path} -> {self.status}{' (injected)' if self.injected else ''}{extra}"
        )


@dataclass
class Fault:
    """A fault hook: the next `count` requests it matches get `status` (after `delay` seconds). See
    `DiscordStandIn.fail_next`, `rate_limit_next`, `delay_next`."""

    matcher: Callable[[RecordedRequest], bool]
    count: int | None
    status: int | None = None
    delay: float = 0.0
    retry_after: float = 0.05
    is_global: bool = False
    via: bool = True
    body: Any = None
    reset: str | None = None  # "before" / "after": drop the connection instead of answering (see reset_next)
    hits: list[RecordedRequest] = field(default_factory=list)
    cancelled: bool = False

    @property
    def remaining(self) -> int | None:
        return None if self.count is None else max(0, self.count - len(self.hits))

    @property
    def active(self) -> bool:
        return not self.cancelled and (self.count is None or len(self.hits) < self.count)

    def cancel(self) -> None:
        self.cancelled = True


class InteractionHandle:
    """An INTERACTION_CREATE the test dispatched, and what the bot did with it."""

    def __init__(self, standin: DiscordStandIn, payload: dict[str, Any], guild: StandInGuild | None) -> None:
        self.standin = standin
        self.payload = payload
        self.id = int(payload["id"])
        self.token: str = payload["token"]
        self.type: int = payload["type"]
        self.guild = guild
        self.channel_id = int(payload["channel_id"])
        self.user: dict[str, Any] = (payload.get("member") or {}).get("user") or payload.get("user") or {}
        self.dispatched_at: float | None = None
        self.acked_at: float | None = None
        self.response_type: int | None = None
        self.original_message_id: int | None = None
        self.followup_ids: list[int] = []
        self.expired = False
        self.missed_deadline = False
        self.autocomplete_choices: list[dict[str, Any]] | None = None
        self.modal: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<InteractionHandle id={self.id} type={self.type} response_type={self.response_type}>"

    @property
    def acked(self) -> bool:
        return self.response_type is not None

    @property
    def command_name(self) -> str | None:
        return (self.payload.get("data") or {}).get("name")

    @property
    def component_message(self) -> dict[str, Any] | None:
        return self.payload.get("message")

    def _mine(self, r: RecordedRequest) -> bool:
        if r.route == "/interactions/{interaction_id}/{interaction_token}/callback":
            return r.params.get("interaction_id") == str(self.id)
        return bool(r.route and r.route.startswith("/webhooks/{webhook_id}/{webhook_token}")) and (
            r.params.get("webhook_token") == self.token
        )

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every callback and webhook request on this interaction, in order."""
        return [r for r in self.standin.requests if self._mine(r)]

    @property
    def callbacks(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.route.startswith("/interactions/")]

    @property
    def ack_latency(self) -> float | None:
        """Seconds from writing INTERACTION_CREATE to the arrival of the first callback request."""
        cbs = self.callbacks
        if not cbs or self.dispatched_at is None:
            return None
        return cbs[0].time - self.dispatched_at

    @property
    def original_message(self) -> dict[str, Any] | None:
        return self.standin.messages.get(self.original_message_id) if self.original_message_id else None

    @property
    def followups(self) -> list[dict[str, Any]]:
        return [self.standin.messages[i] for i in self.followup_ids if i in self.standin.messages]

    async def wait_for(
        self, predicate: Callable[[RecordedRequest], bool] | str | None = None, *, timeout: float = 5.0
    ) -> RecordedRequest:
        """The first (already recorded or coming) request on this interaction matching `predicate`."""
        pred = _as_predicate(predicate)
        return await self.standin.wait_for(lambda r: self._mine(r) and pred(r), timeout=timeout)

    async def wait_callback(self, *, timeout: float = 5.0) -> RecordedRequest:
        return await self.wait_for(Routes.CALLBACK, timeout=timeout)

    async def wait_original_message(
        self, predicate: Callable[[dict[str, Any]], bool] | None = None, *, timeout: float = 5.0
    ) -> dict[str, Any]:
        """The original response message once `predicate(message)` holds (default: it is no longer loading)."""
        pred = predicate or (lambda m: not (m.get("flags", 0) & 128))
        deadline = time.perf_counter() + timeout
        since = 0
        while True:
            msg = self.original_message
            if msg is not None and pred(msg):
                return msg
            left = deadline - time.perf_counter()
            if left <= 0:
                raise AssertionError(f"original response of {self!r} never matched; it is {msg!r}")
            since = len(self.standin.requests)
            with contextlib.suppress(AssertionError):
                await self.standin.wait_for(self._mine, timeout=left, since=since)

    def expire(self) -> None:
        """Act as if 15 minutes had passed: callbacks answer 10062, webhook calls 10015 Unknown Webhook."""
        self.expired = True


def _as_predicate(p: Callable[[RecordedRequest], bool] | str | None) -> Callable[[RecordedRequest], bool]:
    if p is None:
        return lambda r: True
    if callable(p):
        return p
    if " " in p:
        method, route = p.split(" ", 1)
        return lambda r: r.method == method.upper() and r.route == route
    return lambda r: r.route == p


# ---------------------------------------------------------------------------------------------- server


class DiscordError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors


def _unknown_webhook() -> DiscordError:
    return DiscordError(404, 10015, "Unknown Webhook")


def _unknown_message() -> DiscordError:
    return DiscordError(404, 10008, "Unknown Message")


def _unknown_channel() -> DiscordError:
    return DiscordError(404, 10003, "Unknown Channel")


NONCE_WINDOW_S = 300.0  # how long a `nonce` with `enforce_nonce` dedups ("the past few minutes", Discord says)


def _nonce_of(body: dict[str, Any]) -> str | None:
    """A message's nonce as Discord compares it (an integer or a string of at most 25 characters), or None."""
    nonce = body.get("nonce")
    if nonce is None:
        return None
    if isinstance(nonce, bool) or not isinstance(nonce, (int, str)):
        raise _form_error(["nonce"], "BASE_TYPE_BAD_TYPE", "Must be an integer or a string.")
    if isinstance(nonce, str) and len(nonce) > 25:
        raise _form_error(["nonce"], "BASE_TYPE_BAD_LENGTH", "Must be 25 or fewer in length.")
    return str(nonce)


def _form_error(path: list[str], code: str, message: str) -> DiscordError:
    tree = discord_error_tree([{"path": path, "code": code, "message": message}])
    return DiscordError(400, 50035, "Invalid Form Body", tree)


def _json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    hdrs = {"Content-Type": "application/json"}
    if headers:
        hdrs.update(headers)
    return web.Response(status=status, body=json.dumps(body).encode(), headers=hdrs)


_HANDLERS: dict[tuple[str, str], str] = {}


def _handles(method: str, route: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _HANDLERS[(method, route)] = fn.__name__
        return fn

    return deco


GuildRef = StandInGuild | int | str | None
ChannelRef = StandInChannel | int | str | dict | None
UserRef = StandInUser | int | str | None


class DiscordStandIn:
    """A local Discord (REST v10 + gateway) for one bot.

    guilds: the guilds the bot is in (`StandInGuild`s, or names); default one guild "Test Guild" with a
        #general text channel and a member "tester".
    token: the bot token it accepts (REST `Authorization: Bot <token>`, IDENTIFY/RESUME); None accepts any.
    users: extra users that share no guild with the bot (for DMs).
    interaction_ack_deadline: seconds a bot has to answer an interaction callback (Discord: 3); None = no limit.
    validate: check request bodies against the OpenAPI spec (400 / 50035 when they do not conform).
    shards: the shard count GET /gateway/bot recommends (what discord.py's sharded client uses with "auto").
    rate_limits: enforce Discord's rate limits (see `ratelimits`): per-route bucket sizes ("METHOD template" ->
        `Bucket`, e.g. `ratelimits.DISCORD_LIKE`) plus the global limit of `global_rate_limit` requests/s
        (None: none); None (the default) enforces nothing. `rate_limit_clock`: the limiter's clock (a test may
        move it on instead of sleeping through a window).
    """

    def __init__(
        self,
        guilds: list[StandInGuild | str] | None = None,
        *,
        token: str | None = DEFAULT_TOKEN,
        bot_username: str = "sdbot",
        application_id: int | None = None,
        users: list[StandInUser] | None = None,
        heartbeat_interval_ms: int = 41250,
        interaction_ack_deadline: float | None = 3.0,
        validate: bool = True,
        spec_path: str | None = None,
        default_upload_limit: int = P.DEFAULT_UPLOAD_LIMIT,
        host: str = "127.0.0.1",
        port: int = 0,
        shards: int = 1,
        rate_limits: dict[str, Bucket] | None = None,
        global_rate_limit: int | None = GLOBAL_PER_S,
        rate_limit_clock: Callable[[], float] = time.monotonic,
        nonce_window_s: float = NONCE_WINDOW_S,
    ) -> None:
        if guilds is None:
            guilds = [StandInGuild()]
        self.guilds: list[StandInGuild] = [g if isinstance(g, StandInGuild) else StandInGuild(name=g) for g in guilds]
        self.token = token
        self.bot_user = StandInUser(bot_username, bot=True)
        self.application_id: int = application_id or self.bot_user.id
        self.application_flags = (1 << 19) | (1 << 23)  # GATEWAY_MESSAGE_CONTENT_LIMITED | APPLICATION_COMMAND_BADGE
        self.owner = StandInUser("owner")
        self.extra_users: list[StandInUser] = list(users or [])
        self.interaction_ack_deadline = interaction_ack_deadline
        self.validate = validate
        self.default_upload_limit = default_upload_limit
        self.host, self.port = host, port
        self.shards = shards
        self.spec = Spec.get(spec_path)
        self.gateway = Gateway(self, heartbeat_interval_ms)
        self.rate_limiter = (
            RateLimiter(rate_limits, global_rate_limit, rate_limit_clock) if rate_limits is not None else None
        )

        self.requests: list[RecordedRequest] = []
        self.internal_errors: list[str] = []
        self.faults: list[Fault] = []
        self.messages: dict[int, dict[str, Any]] = {}  # id -> message object, in creation order
        # `enforce_nonce`: (author id, nonce) -> (message id, time.monotonic() of its creation)
        self.nonce_window_s = nonce_window_s
        self._nonces: dict[tuple[int, str], tuple[int, float]] = {}
        self.attachments: dict[int, tuple[bytes, dict[str, Any]]] = {}  # id -> (bytes, attachment object)
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # guild id (None: global) -> commands
        self.interactions: dict[int, InteractionHandle] = {}
        self.blocked_dm_users: set[int] = set()
        self._by_token: dict[str, InteractionHandle] = {}
        self._modals: dict[str, InteractionHandle] = {}
        self._dm_channel_objects: dict[int, dict[str, Any]] = {}  # channel id -> DM channel object
        self._dm_channels: dict[int, int] = {}  # user id -> channel id
        self._waiters: list[tuple[Callable[[RecordedRequest], bool], int, asyncio.Future[RecordedRequest]]] = []
        self._runner: web.AppRunner | None = None
        self.http_url = ""

    # ------------------------------------------------------------------------------------------ lifecycle

    @property
    def api_base_url(self) -> str:
        return self.http_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return self.http_url.replace("http://", "ws://", 1) + "/gateway"

    @property
    def resume_gateway_url(self) -> str:
        return self.http_url.replace("http://", "ws://", 1) + "/gateway-resume"

    async def start(self) -> DiscordStandIn:
        app = web.Application(client_max_size=512 * 1024 * 1024)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/gateway-resume", self.gateway.handle)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._cdn)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.port = port
        self.http_url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.cancel()

    async def __aenter__(self) -> DiscordStandIn:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    @contextlib.asynccontextmanager
    async def run_client(self, client: Any, *, ready_timeout: float = 10.0) -> AsyncIterator[Any]:
        """Point discord.py at this stand-in, `client.start(token)`, wait for on_ready; on exit close the client
        and restore discord.py's endpoints. Give the client `guild_ready_timeout=0.1` or READY takes 2 s more."""
        from bot.discord_endpoints import discord_endpoints

        with discord_endpoints(self.api_base_url, self.gateway_url):
            task = asyncio.create_task(client.start(self.token or DEFAULT_TOKEN), name="standin-client")
            ready = asyncio.create_task(client.wait_until_ready())
            try:
                done, _ = await asyncio.wait({task, ready}, timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED)
                if task in done:
                    task.result()  # raises the client's error
                    raise AssertionError("the client stopped before it was ready")
                if ready not in done:
                    raise AssertionError(f"the client was not ready within {ready_timeout}s")
                yield client
            finally:
                ready.cancel()
                await client.close()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, 5.0)

    def _token_ok(self, token: str | None) -> bool:
        if self.token is None:
            return bool(token)
        if token is None:
            return False
        return token.removeprefix("Bot ") == self.token

    # ------------------------------------------------------------------------------------------ lookups

    @property
    def guild(self) -> StandInGuild:
        """The first guild."""
        return self.guilds[0]

    @property
    def channel(self) -> StandInChannel:
        """The first guild's first text channel."""
        return self.guild.text_channels[0]

    @property
    def user(self) -> StandInUser:
        """The default interaction user: the first guild's first member."""
        return self.guild.members[0]

    async def add_guild(self, guild: StandInGuild) -> StandInGuild:
        """The bot joins a guild: it is served from now on and the bot gets its GUILD_CREATE."""
        self.guilds.append(guild)
        if self.gateway.current is not None:
            await self.gateway.dispatch("GUILD_CREATE", guild.to_dict(bot=self.bot_user, full=True))
        return guild

    def _guild_by_id(self, guild_id: int) -> StandInGuild | None:
        return next((g for g in self.guilds if g.id == guild_id), None)

    def _resolve_guild(self, guild: GuildRef) -> StandInGuild:
        if isinstance(guild, StandInGuild):
            return guild
        if guild is None:
            return self.guild
        for g in self.guilds:
            if g.id == guild or g.name == guild:
                return g
        raise KeyError(f"no guild {guild!r}")

    def all_users(self) -> list[StandInUser]:
        seen: dict[int, StandInUser] = {}
        for g in self.guilds:
            for u in g.members:
                seen.setdefault(u.id, u)
        for u in self.extra_users + [self.owner, self.bot_user]:
            seen.setdefault(u.id, u)
        return list(seen.values())

    def _resolve_user(self, user: UserRef, guild: StandInGuild | None) -> StandInUser:
        if isinstance(user, StandInUser):
            return user
        if user is None:
            if guild is not None and guild.members:
                return guild.members[0]
            return self.all_users()[0]
        for u in self.all_users():
            if u.id == user or u.username == user:
                return u
        raise KeyError(f"no user {user!r}")

    def channel_dict(self, channel_id: int) -> dict[str, Any] | None:
        entry = self._channel_entry(channel_id)
        return entry[0] if entry else None

    def _channel_entry(self, channel_id: int) -> tuple[dict[str, Any], StandInGuild | None] | None:
        """(channel object, its guild or None for a DM), looked up live so channels added to a guild count."""
        dm = self._dm_channel_objects.get(channel_id)
        if dm is not None:
            return dm, None
        for g in self.guilds:
            for c in g.channels:
                if c.id == channel_id:
                    return c.to_dict(g.id), g
        return None

    def dm_channel(self, user: UserRef) -> dict[str, Any]:
        """The DM channel between the bot and `user` (created on first use, as POST /users/@me/channels does)."""
        u = self._resolve_user(user, None)
        cid = self._dm_channels.get(u.id)
        if cid is None:
            cid = snowflake()
            self._dm_channels[u.id] = cid
            ch = {"id": str(cid), "type": 1, "last_message_id": None, "flags": 0, "recipients": [u.to_dict()]}
            self._dm_channel_objects[cid] = ch
        return self._dm_channel_objects[cid]

    def block_dms(self, user: UserRef) -> None:
        """Messages to this user's DM channel answer 403 / 50007 "Cannot send messages to this user"."""
        self.blocked_dm_users.add(self._resolve_user(user, None).id)

    def registered_commands(self, guild: GuildRef | bool = False) -> list[dict[str, Any]]:
        """Commands the bot registered: global ones (default) or those of a guild."""
        if guild is False:
            return list(self.commands.get(None, []))
        return list(self.commands.get(self._resolve_guild(guild).id, []))

    def find_command(self, name: str, guild: StandInGuild | None, command_type: int = 1) -> dict[str, Any] | None:
        for key in ([guild.id] if guild else []) + [None]:
            for cmd in self.commands.get(key, []):
                if cmd["name"] == name and cmd.get("type", 1) == command_type:
                    return cmd
        return None

    def messages_in(self, channel: ChannelRef = None, *, include_ephemeral: bool = True) -> list[dict[str, Any]]:
        """Messages in a channel (default: the first guild's first text channel), oldest first."""
        cid = self._channel_id(channel)
        return [
            m
            for m in self.messages.values()
            if int(m["channel_id"]) == cid and (include_ephemeral or not m.get("flags", 0) & 64)
        ]

    def message(self, message_id: int | str) -> dict[str, Any]:
        return self.messages[int(message_id)]

    def attachment_bytes(self, attachment: dict[str, Any] | str | int) -> bytes:
        """The bytes of an uploaded file: by attachment object, its id, or its URL."""
        if isinstance(attachment, dict):
            aid = int(attachment["id"])
        elif isinstance(attachment, str) and "/" in attachment:
            aid = int(attachment.split("?")[0].rstrip("/").split("/")[-2])
        else:
            aid = int(attachment)
        return self.attachments[aid][0]

    def _channel_id(self, channel: ChannelRef, guild: StandInGuild | None = None) -> int:
        if isinstance(channel, StandInChannel):
            return channel.id
        if isinstance(channel, dict):
            return int(channel["id"])
        if isinstance(channel, int):
            return channel
        g = guild or self.guild
        if channel is None:
            return g.text_channels[0].id
        return g.channel(channel).id

    # ------------------------------------------------------------------------------------------ recording

    def mark(self) -> int:
        """The index the next request will get: pass it as `since=` to wait only for later requests."""
        return len(self.requests)

    def find_requests(self, predicate: Callable[[RecordedRequest], bool] | str | None = None) -> list[RecordedRequest]:
        pred = _as_predicate(predicate)
        return [r for r in self.requests if pred(r)]

    async def wait_for(
        self,
        predicate: Callable[[RecordedRequest], bool] | str | None = None,
        *,
        timeout: float = 5.0,
        since: int = 0,
    ) -> RecordedRequest:
        """The first answered request (index >= `since`) matching `predicate`, waiting up to `timeout` seconds.
        `predicate`: a function of `RecordedRequest`, or "METHOD /route/{template}" (see `Routes`)."""
        pred = _as_predicate(predicate)
        for r in self.requests[since:]:
            if r.done and pred(r):
                return r
        fut: asyncio.Future[RecordedRequest] = asyncio.get_running_loop().create_future()
        entry = (pred, since, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            tail = "\n".join("  " + r.describe() for r in self.requests[max(since, len(self.requests) - 20) :])
            raise AssertionError(f"no matching request within {timeout}s; requests since #{since}:\n{tail}") from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def _notify(self, rec: RecordedRequest) -> None:
        for pred, since, fut in list(self._waiters):
            if fut.done() or rec.index < since:
                continue
            try:
                ok = pred(rec)
            except Exception as exc:
                fut.set_exception(exc)
                continue
            if ok:
                fut.set_result(rec)

    @property
    def invalid_requests(self) -> list[RecordedRequest]:
        """Requests whose body did not conform to Discord's schema (answered 400 / 50035)."""
        return [r for r in self.requests if r.errors]

    @property
    def refused_requests(self) -> list[RecordedRequest]:
        """Requests the stand-in answered 4xx by Discord's rules (schema, unknown ids, expired tokens...)."""
        return [r for r in self.requests if r.refused]

    @property
    def rate_limited_requests(self) -> list[RecordedRequest]:
        """Requests answered 429 by the rate limits the test set (not by `rate_limit_next`)."""
        return [r for r in self.requests if r.rate_limited]

    def assert_no_invalid_requests(self) -> None:
        bad = self.invalid_requests
        if bad or self.internal_errors:
            lines = [r.describe() + "\n    " + json.dumps(r.errors)[:2000] for r in bad]
            lines += ["stand-in error: " + e for e in self.internal_errors]
            raise AssertionError("Discord would have refused:\n" + "\n".join(lines))

    def assert_no_refused_requests(self) -> None:
        bad = self.refused_requests
        if bad or self.internal_errors:
            lines = [r.describe() + " " + json.dumps(r.response)[:500] for r in bad]
            lines += ["stand-in error: " + e for e in self.internal_errors]
            raise AssertionError("requests refused:\n" + "\n".join(lines))

    # ------------------------------------------------------------------------------------------ faults

    def _fault_matcher(
        self, route: Callable[[RecordedRequest], bool] | str | None
    ) -> Callable[[RecordedRequest], bool]:
        return _as_predicate(route)

    def fail_next(
        self,
        route: Callable[[RecordedRequest], bool] | str | None = None,
        status: int = 500,
        *,
        count: int | None = 1,
        delay: float = 0.0,
        body: Any = None,
    ) -> Fault:
        """The next `count` requests matching `route` ("METHOD /template", a template, a predicate, or None for
        any) answer `status` (500/502/503/...), after `delay` seconds. count=None: until `fault.cancel()`."""
        fault = Fault(self._fault_matcher(route), count, status=status, delay=delay, body=body)
        self.faults.append(fault)
        return fault

    def rate_limit_next(
        self,
        route: Callable[[RecordedRequest], bool] | str | None = None,
        *,
        count: int | None = 1,
        retry_after: float = 0.05,
        is_global: bool = False,
        via: bool = True,
    ) -> Fault:
        """The next `count` matching requests answer 429 with `retry_after` (and `Via`, so discord.py retries;
        via=False imitates a Cloudflare ban, which discord.py raises)."""
        fault = Fault(
            self._fault_matcher(route), count, status=429, retry_after=retry_after, is_global=is_global, via=via
        )
        self.faults.append(fault)
        return fault

    def delay_next(
        self,
        route: Callable[[RecordedRequest], bool] | str | None = None,
        seconds: float = 1.0,
        *,
        count: int | None = 1,
    ) -> Fault:
        """The next `count` matching requests are answered normally, but only after `seconds`."""
        fault = Fault(self._fault_matcher(route), count, status=None, delay=seconds)
        self.faults.append(fault)
        return fault

    def reset_next(
        self,
        route: Callable[[RecordedRequest], bool] | str | None = None,
        *,
        count: int | None = 1,
        after_processing: bool = False,
    ) -> Fault:
        """The next `count` matching requests get their TCP connection dropped with no answer (the client sees
        a connection reset / server disconnect). `after_processing=True`: the request takes effect first (the
        message is created), only the answer is lost, the case where a retry would post twice."""
        fault = Fault(self._fault_matcher(route), count, reset="after" if after_processing else "before")
        self.faults.append(fault)
        return fault

    def set_upload_limit(self, guild: GuildRef, limit_bytes: int) -> None:
        self._resolve_guild(guild).upload_limit = limit_bytes

    async def drop_gateway(self, code: int = RESUMABLE_CLOSE, *, abort: bool = False) -> None:
        """Close the bot's gateway connection with `code` (4000: discord.py resumes), or drop TCP (`abort`)."""
        await self.gateway.drop(code, abort=abort)

    async def send_reconnect(self) -> None:
        """Op 7 RECONNECT: the bot closes and resumes."""
        await self.gateway.send_op(OP_RECONNECT, None)

    async def invalidate_session(self, resumable: bool = False) -> None:
        """Op 9 INVALID_SESSION; with resumable=False the session is gone and the bot must IDENTIFY again."""
        if not resumable and self.gateway.current is not None:
            self.gateway.current.invalidated = True
        await self.gateway.send_op(OP_INVALID_SESSION, resumable)

    @property
    def gateway_frames(self) -> list[GatewayFrame]:
        return self.gateway.frames

    async def wait_for_gateway(
        self,
        predicate: Callable[[GatewayFrame], bool] | None = None,
        *,
        op: int | None = None,
        t: str | None = None,
        direction: str | None = None,
        since: int = 0,
        timeout: float = 5.0,
    ) -> GatewayFrame:
        """The first gateway frame (index >= since) with this op / event name / direction ("sent"/"received")."""

        def pred(f: GatewayFrame) -> bool:
            return (
                (op is None or f.op == op)
                and (t is None or f.t == t)
                and (direction is None or f.direction == direction)
                and (predicate is None or predicate(f))
            )

        return await self.gateway.wait_for_frame(pred, since=since, timeout=timeout)

    def gateway_mark(self) -> int:
        return len(self.gateway.frames)

    # ------------------------------------------------------------------------------------------ interactions

    def _where(
        self, guild: GuildRef, channel: ChannelRef, user: UserRef, dm: bool
    ) -> tuple[StandInGuild | None, dict[str, Any], StandInUser]:
        if dm:
            u = self._resolve_user(user, None)
            return None, self.dm_channel(u), u
        g = self._resolve_guild(guild)
        u = self._resolve_user(user, g)
        if isinstance(channel, dict):
            ch = channel
        else:
            ch = self.channel_dict(self._channel_id(channel, g))
            if ch is None:
                raise KeyError(f"no channel {channel!r}")
        return g, ch, u

    def slash(
        self,
        name: str,
        options: dict[str, Any] | list[dict[str, Any]] | None = None,
        *,
        user: UserRef = None,
        guild: GuildRef = None,
        channel: ChannelRef = None,
        dm: bool = False,
        locale: str | None = None,
        command_type: int = 1,
    ) -> dict[str, Any]:
        """An application-command INTERACTION_CREATE payload. `name` may be "cmd sub" or "cmd group sub".
        Options: {name: value} (types from the registered command, else from the value: str, int, float, bool,
        StandInUser/Channel/Role, or an attachment object from `standin.upload_attachment`), or raw options."""
        return self._command_payload(
            P.APPLICATION_COMMAND,
            name,
            options,
            user=user,
            guild=guild,
            channel=channel,
            dm=dm,
            locale=locale,
            focused=None,
            command_type=command_type,
        )

    def message_command(
        self,
        name: str,
        message: dict[str, Any] | int | str,
        *,
        user: UserRef = None,
        locale: str | None = None,
    ) -> dict[str, Any]:
        """A message context-menu INTERACTION_CREATE ("Apps > `name`" on `message`, a stored message object or
        id): type 2 with data.type 3, `target_id` and the message in `resolved.messages`, in its own channel."""
        msg = copy.deepcopy(message if isinstance(message, dict) else self.messages[int(message)])
        ch, g = self._channel_entry(int(msg["channel_id"])) or (None, None)
        if ch is None:
            raise KeyError(f"message {msg['id']} is in unknown channel {msg['channel_id']}")
        u = self._resolve_user(user, g)
        command = self.find_command(name, g, P.COMMAND_MESSAGE)
        data = P.command_data(
            name, [], command=command, resolved={"messages": {msg["id"]: msg}}, command_type=P.COMMAND_MESSAGE
        )
        data["target_id"] = msg["id"]
        return P.interaction_payload(
            type=P.APPLICATION_COMMAND,
            data=data,
            application_id=self.application_id,
            bot_user_id=self.bot_user.id,
            user=u,
            guild=g,
            channel=ch,
            locale=locale,
        )

    def autocomplete(
        self,
        name: str,
        options: dict[str, Any] | list[dict[str, Any]] | None = None,
        *,
        focused: str | None = None,
        user: UserRef = None,
        guild: GuildRef = None,
        channel: ChannelRef = None,
        dm: bool = False,
        locale: str | None = None,
    ) -> dict[str, Any]:
        """An autocomplete INTERACTION_CREATE: like `slash`, with the option `focused` (default: the last one)
        marked `focused: true` and its value sent as typed (a string)."""
        if focused is None and isinstance(options, dict) and options:
            focused = list(options)[-1]
        return self._command_payload(
            P.APPLICATION_COMMAND_AUTOCOMPLETE,
            name,
            options,
            user=user,
            guild=guild,
            channel=channel,
            dm=dm,
            locale=locale,
            focused=focused,
            command_type=1,
        )

    def _command_payload(
        self,
        itype: int,
        name: str,
        options: Any,
        *,
        user: UserRef,
        guild: GuildRef,
        channel: ChannelRef,
        dm: bool,
        locale: str | None,
        focused: str | None,
        command_type: int,
    ) -> dict[str, Any]:
        g, ch, u = self._where(guild, channel, user, dm)
        root, *path = name.split()
        command = self.find_command(root, g, command_type)
        resolved: dict[str, Any] = {}
        leaf = P.build_options(
            options, P.declared_leaf_options(command, path), guild=g, focused=focused, resolved=resolved
        )
        opts = P.nest_subcommands(path, leaf, command)
        data = P.command_data(root, opts, command=command, resolved=resolved, command_type=command_type)
        return P.interaction_payload(
            type=itype,
            data=data,
            application_id=self.application_id,
            bot_user_id=self.bot_user.id,
            user=u,
            guild=g,
            channel=ch,
            locale=locale,
        )

    def _message_with_component(self, custom_id: str) -> dict[str, Any] | None:
        for msg in reversed(list(self.messages.values())):
            if P.find_component(msg.get("components") or [], custom_id) is not None:
                return msg
        return None

    def button(
        self,
        custom_id: str,
        message: dict[str, Any] | int | str | None = None,
        *,
        user: UserRef = None,
        values: list[str] | None = None,
        component_type: int | None = None,
        locale: str | None = None,
    ) -> dict[str, Any]:
        """A message-component INTERACTION_CREATE (a button press, or a select with `values`). `message`: the
        message object or id the component is on; default: the latest stored message that has `custom_id`."""
        if message is None:
            msg = self._message_with_component(custom_id)
            if msg is None:
                raise KeyError(f"no stored message has a component with custom_id {custom_id!r}")
        elif isinstance(message, dict):
            msg = message
        else:
            msg = self.messages[int(message)]
        msg = copy.deepcopy(msg)
        comp = P.find_component(msg.get("components") or [], custom_id)
        ctype = component_type or (comp or {}).get("type") or (3 if values is not None else 2)
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": ctype}
        if ctype in (3, 5, 6, 7, 8):
            data["values"] = list(values or [])
            if ctype != 3:
                data["resolved"] = {}
        cid = int(msg["channel_id"])
        ch, g = self._channel_entry(cid) or (None, None)
        if ch is None:
            raise KeyError(f"message {msg['id']} is in unknown channel {cid}")
        u = self._resolve_user(user, g)
        return P.interaction_payload(
            type=P.MESSAGE_COMPONENT,
            data=data,
            application_id=self.application_id,
            bot_user_id=self.bot_user.id,
            user=u,
            guild=g,
            channel=ch,
            message=msg,
            locale=locale,
        )

    def select(
        self, custom_id: str, values: list[str], message: dict[str, Any] | int | str | None = None, **kw: Any
    ) -> dict[str, Any]:
        return self.button(custom_id, message, values=values, **kw)

    def modal_submit(
        self,
        custom_id: str,
        fields: dict[str, Any],
        *,
        message: dict[str, Any] | None = None,
        user: UserRef = None,
        guild: GuildRef = None,
        channel: ChannelRef = None,
        dm: bool = False,
        locale: str | None = None,
    ) -> dict[str, Any]:
        """A modal-submit INTERACTION_CREATE. `fields`: {text input custom_id: value} ({select id: [values]};
        {file upload id: an attachment from `upload_attachment`, or a list of them}, sent as ids with the
        attachments in `resolved`). When the bot opened this modal (a type-9 callback with this custom_id), its
        layout, user, channel and (if it came from a component) message are mirrored."""
        opener = self._modals.get(custom_id)
        template = opener.modal.get("components") if opener and opener.modal else None
        if opener is not None and user is None and guild is None and channel is None and not dm:
            g = opener.guild
            ch = opener.payload["channel"]
            u = self._resolve_user(int(opener.user["id"]), g)
            if message is None:
                message = opener.payload.get("message")
        else:
            g, ch, u = self._where(guild, channel, user, dm)
        uploads: dict[str, dict[str, Any]] = {}
        values: dict[str, Any] = {}
        for key, value in fields.items():
            items = value if isinstance(value, list) else [value]
            if items and all(isinstance(v, dict) and "url" in v for v in items):
                uploads.update({str(v["id"]): v for v in items})
                value = [str(v["id"]) for v in items]
            values[key] = value
        data: dict[str, Any] = {"custom_id": custom_id, "components": P.modal_submit_components(values, template)}
        if uploads:
            data["resolved"] = {"attachments": uploads}
        return P.interaction_payload(
            type=P.MODAL_SUBMIT,
            data=data,
            application_id=self.application_id,
            bot_user_id=self.bot_user.id,
            user=u,
            guild=g,
            channel=ch,
            message=copy.deepcopy(message) if message else None,
            locale=locale,
        )

    def upload_attachment(
        self, filename: str, data: bytes, *, channel: ChannelRef = None, content_type: str | None = None
    ) -> dict[str, Any]:
        """Store a file as if a user had uploaded it (for attachment options); returns the attachment object."""
        cid = self._channel_id(channel)
        rf = RecordedFile(field="files[0]", index=0, filename=filename, content_type=content_type or "", data=data)
        att = self._store_attachment(rf, cid, filename=filename, description=None, ephemeral=True)
        return att

    async def send_interaction(self, payload: dict[str, Any]) -> InteractionHandle:
        """Dispatch INTERACTION_CREATE to the bot; the handle records `dispatched_at` when it hits the socket."""
        handle = self.register_interaction(payload)
        handle.dispatched_at = None

        def sent(when: float) -> None:
            handle.dispatched_at = when

        await self.gateway.dispatch("INTERACTION_CREATE", payload, on_sent=sent)
        return handle

    dispatch_interaction = send_interaction

    def register_interaction(self, payload: dict[str, Any]) -> InteractionHandle:
        """Make an interaction known (its token valid) without dispatching it to the bot: for raw requests."""
        gid = payload.get("guild_id")
        handle = InteractionHandle(self, payload, self._guild_by_id(int(gid)) if gid else None)
        handle.dispatched_at = time.perf_counter()
        self.interactions[handle.id] = handle
        self._by_token[handle.token] = handle
        return handle

    async def dispatch(self, event: str, data: Any) -> None:
        """Send any other dispatch event (e.g. MESSAGE_CREATE, GUILD_MEMBER_ADD) to the bot."""
        await self.gateway.dispatch(event, data)

    def interaction(self, interaction_id: int | str) -> InteractionHandle:
        return self.interactions[int(interaction_id)]

    def expire_interaction(self, interaction: InteractionHandle | int | str) -> None:
        """Expire an interaction's token, as Discord does after 15 minutes."""
        if isinstance(interaction, InteractionHandle):
            interaction.expire()
        elif isinstance(interaction, str) and interaction in self._by_token:
            self._by_token[interaction].expire()
        else:
            self.interactions[int(interaction)].expire()

    def interaction_responses(self, interaction_id: int | str) -> list[RecordedRequest]:
        """Every callback/webhook request the bot made for an interaction, in order."""
        return self.interactions[int(interaction_id)].requests

    # ------------------------------------------------------------------------------------------ HTTP plumbing

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        try:
            data, att = self.attachments[int(request.match_info["attachment_id"])]
        except (KeyError, ValueError):
            return web.Response(status=404, text="Not Found")
        return web.Response(body=data, headers={"Content-Type": att.get("content_type") or "application/octet-stream"})

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        arrived = time.perf_counter()
        sub = "/" + request.match_info["tail"]
        method = request.method.upper()
        matched = self.spec.match(sub, method)
        template, params = matched if matched else (None, {})
        rec = RecordedRequest(
            index=len(self.requests),
            method=method,
            path=sub,
            route=template,
            params=params,
            query=dict(request.query),
            headers={k: v for k, v in request.headers.items() if k.lower() not in ("authorization",)},
            time=arrived,
        )
        self.requests.append(rec)
        try:
            response = await self._answer(rec, request)
            if rec.reset is not None:
                return await self._reset(rec, request)
        except DiscordError as e:
            body = {"message": e.message, "code": e.code}
            if e.errors is not None:
                body["errors"] = e.errors
            rec.refused = 400 <= e.status < 500
            response = _json_response(e.status, body)
        except Exception:
            self.internal_errors.append(f"{method} {sub}: {traceback.format_exc()}")
            response = _json_response(500, {"message": "500: Internal Server Error", "code": 0})
        for name, value in rec.ratelimit_headers.items():
            response.headers.setdefault(name, value)
        rec.status = response.status
        if isinstance(response, web.Response) and response.body and response.content_type == "application/json":
            with contextlib.suppress(ValueError, TypeError):
                rec.response = json.loads(response.body)
        rec.finished = time.perf_counter()
        self._notify(rec)
        return response

    async def _reset(self, rec: RecordedRequest, request: web.Request) -> web.StreamResponse:
        """Drop the connection without an answer (a `reset_next` fault)."""
        rec.status, rec.injected, rec.finished = 0, True, time.perf_counter()
        if request.transport is not None:
            request.transport.abort()
        self._notify(rec)
        raise asyncio.CancelledError()

    async def _read_body(self, rec: RecordedRequest, request: web.Request) -> None:
        ctype = request.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                name = part.name or ""
                data = await part.read(decode=False)
                if name == "payload_json":
                    try:
                        rec.json = json.loads(data)
                    except ValueError:
                        raise DiscordError(400, 50109, "The request body contains invalid JSON.") from None
                elif part.filename is not None or name.startswith("files["):
                    m = re.fullmatch(r"files\[(\d+)\]", name)
                    index = int(m.group(1)) if m else 0
                    rec.files.append(
                        RecordedFile(
                            field=name,
                            index=index,
                            filename=part.filename or f"file{index}",
                            content_type=part.headers.get("Content-Type", ""),
                            data=bytes(data),
                        )
                    )
                else:
                    rec.form[name] = bytes(data).decode("utf-8", "replace")
        else:
            raw = await request.read()
            if raw:
                try:
                    rec.json = json.loads(raw)
                except ValueError:
                    raise DiscordError(400, 50109, "The request body contains invalid JSON.") from None

    def _apply_faults(self, rec: RecordedRequest) -> Fault | None:
        for fault in self.faults:
            if fault.active and fault.matcher(rec):
                fault.hits.append(rec)
                return fault
        return None

    def _fault_response(self, fault: Fault) -> web.Response:
        if fault.status == 429:
            body = fault.body or {
                "message": "You are being rate limited.",
                "retry_after": fault.retry_after,
                "global": fault.is_global,
                "code": 0,
            }
            headers = {
                "Retry-After": str(max(1, int(fault.retry_after + 0.999))),
                "X-RateLimit-Scope": "global" if fault.is_global else "user",
            }
            if fault.is_global:
                headers["X-RateLimit-Global"] = "true"
            if fault.via:
                headers["Via"] = "1.1 google"
            return _json_response(429, body, headers)
        status = fault.status or 500
        body = fault.body
        if body is None:
            reason = {
                500: "Internal Server Error",
                502: "Bad Gateway",
                503: "Service Unavailable",
                504: "Gateway Timeout",
            }
            body = {"message": f"{status}: {reason.get(status, 'Error')}", "code": 0}
        return _json_response(status, body)

    def _needs_auth(self, template: str) -> bool:
        return not (
            template.startswith("/webhooks/{webhook_id}/{webhook_token}") or template.startswith("/interactions/")
        )

    async def _answer(self, rec: RecordedRequest, request: web.Request) -> web.StreamResponse:
        fault = self._apply_faults(rec)
        if fault is not None and fault.reset is not None:
            rec.reset = fault.reset
            if fault.reset == "before":
                with contextlib.suppress(Exception):
                    await self._read_body(rec, request)
                return web.Response(status=204)  # never sent: `_rest` drops the connection instead
            fault = None  # "after": answer normally, then drop the connection
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                rec.injected = True
                with contextlib.suppress(Exception):
                    await self._read_body(rec, request)
                return self._fault_response(fault)
        if rec.route is None:
            await self._read_body(rec, request)
            raise DiscordError(404, 0, "404: Not Found")
        if self._needs_auth(rec.route) and not self._token_ok(request.headers.get("Authorization")):
            await self._read_body(rec, request)
            raise DiscordError(401, 0, "401: Unauthorized")
        if self.rate_limiter is not None:
            verdict = self.rate_limiter.check(rec.key, rec.params, interaction=not self._needs_auth(rec.route))
            rec.ratelimit_headers = verdict.headers
            if verdict.limited:
                rec.rate_limited = True
                await self._read_body(rec, request)
                return _json_response(429, verdict.body(), verdict.headers)
        await self._read_body(rec, request)
        limit = self._upload_limit_for(rec)
        if rec.files and sum(len(f.data) for f in rec.files) > limit:
            raise DiscordError(413, 40005, "Request entity too large")
        if self.validate and rec.json is not None and self.spec.has_request_body(rec.route, rec.method):
            errors = self.spec.validate(rec.route, rec.method, rec.json)
            if errors:
                rec.errors = errors
                raise DiscordError(400, 50035, "Invalid Form Body", discord_error_tree(errors))
        name = _HANDLERS.get((rec.method, rec.route))
        if name is None:
            raise DiscordError(404, 0, "404: Not Found")
        return await getattr(self, name)(rec)

    def _upload_limit_for(self, rec: RecordedRequest) -> int:
        guild: StandInGuild | None = None
        if "channel_id" in rec.params:
            with contextlib.suppress(ValueError):
                guild = (self._channel_entry(int(rec.params["channel_id"])) or (None, None))[1]
        elif "webhook_token" in rec.params:
            ix = self._by_token.get(rec.params["webhook_token"])
            guild = ix.guild if ix else None
        elif "interaction_id" in rec.params:
            with contextlib.suppress(ValueError):
                ix = self.interactions.get(int(rec.params["interaction_id"]))
                guild = ix.guild if ix else None
        return guild.upload_limit if guild is not None else self.default_upload_limit

    # ------------------------------------------------------------------------------------------ users, apps, gateway

    def _me(self) -> dict[str, Any]:
        return {**self.bot_user.to_dict(), "verified": True, "mfa_enabled": False, "email": None, "locale": "en-US"}

    def application_object(self) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": self.bot_user.username,
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "hook": True,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": secrets.token_hex(32),
            "flags": self.application_flags,
            "owner": self.owner.to_dict(),
            "team": None,
            "bot": self.bot_user.to_dict(),
            "rpc_origins": [],
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "event_webhooks_url": None,
            "event_webhooks_status": 1,
            "tags": [],
            "install_params": {"scopes": ["bot", "applications.commands"], "permissions": str(P.BOT_ROLE_PERMISSIONS)},
            "integration_types_config": {"0": {"oauth2_install_params": None}},
            "approximate_guild_count": len(self.guilds),
            "approximate_user_install_count": 0,
            "is_monetized": False,
            "is_verified": False,
            "is_discoverable": False,
        }

    @_handles("GET", "/users/@me")
    async def _get_me(self, rec: RecordedRequest) -> web.Response:
        return _json_response(200, self._me())

    @_handles("GET", "/users/{user_id}")
    async def _get_user(self, rec: RecordedRequest) -> web.Response:
        uid = int(rec.params["user_id"])
        for u in self.all_users():
            if u.id == uid:
                return _json_response(200, u.to_dict())
        raise DiscordError(404, 10013, "Unknown User")

    @_handles("GET", "/oauth2/applications/@me")
    async def _get_oauth_app(self, rec: RecordedRequest) -> web.Response:
        return _json_response(200, self.application_object())

    @_handles("GET", "/applications/@me")
    async def _get_app(self, rec: RecordedRequest) -> web.Response:
        return _json_response(200, self.application_object())

    @_handles("GET", "/gateway")
    async def _get_gateway(self, rec: RecordedRequest) -> web.Response:
        return _json_response(200, {"url": self.gateway_url})

    @_handles("GET", "/gateway/bot")
    async def _get_gateway_bot(self, rec: RecordedRequest) -> web.Response:
        return _json_response(
            200,
            {
                "url": self.gateway_url,
                "shards": self.shards,
                "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1},
            },
        )

    # ------------------------------------------------------------------------------------------ commands

    def _check_app(self, rec: RecordedRequest) -> None:
        if rec.params.get("application_id") != str(self.application_id):
            raise DiscordError(403, 50001, "Missing Access")

    def _command_scope(self, rec: RecordedRequest) -> int | None:
        self._check_app(rec)
        if "guild_id" not in rec.params:
            return None
        try:
            gid = int(rec.params["guild_id"])
        except ValueError:
            raise DiscordError(404, 10004, "Unknown Guild") from None
        if self._guild_by_id(gid) is None:
            raise DiscordError(403, 50001, "Missing Access")
        return gid

    def _command_object(
        self, body: dict[str, Any], scope: int | None, existing: list[dict[str, Any]]
    ) -> dict[str, Any]:
        ctype = body.get("type", 1)
        old = next((c for c in existing if c["name"] == body["name"] and c.get("type", 1) == ctype), None)
        cmd = {
            "id": old["id"] if old else str(snowflake()),
            "application_id": str(self.application_id),
            "version": str(snowflake()),
            "default_member_permissions": body.get("default_member_permissions"),
            "type": ctype,
            "name": body["name"],
            "name_localizations": body.get("name_localizations"),
            "description": body.get("description", "") if ctype == 1 else "",
            "description_localizations": body.get("description_localizations"),
            "dm_permission": body.get("dm_permission", True),
            "contexts": body.get("contexts"),
            "integration_types": body.get("integration_types") or [0],
            "nsfw": body.get("nsfw", False),
        }
        if body.get("options"):
            cmd["options"] = copy.deepcopy(body["options"])
        if scope is not None:
            cmd["guild_id"] = str(scope)
        return cmd

    @_handles("PUT", "/applications/{application_id}/commands")
    @_handles("PUT", "/applications/{application_id}/guilds/{guild_id}/commands")
    async def _put_commands(self, rec: RecordedRequest) -> web.Response:
        scope = self._command_scope(rec)
        existing = self.commands.get(scope, [])
        new = [self._command_object(b, scope, existing) for b in rec.json or []]
        seen = set()
        for c in new:
            key = (c["name"], c["type"])
            if key in seen:
                raise _form_error(
                    [], "APPLICATION_COMMANDS_DUPLICATE_NAME", f"Application command names must be unique: {c['name']}"
                )
            seen.add(key)
        self.commands[scope] = new
        return _json_response(200, new)

    @_handles("POST", "/applications/{application_id}/commands")
    @_handles("POST", "/applications/{application_id}/guilds/{guild_id}/commands")
    async def _post_command(self, rec: RecordedRequest) -> web.Response:
        scope = self._command_scope(rec)
        existing = self.commands.setdefault(scope, [])
        cmd = self._command_object(rec.json, scope, existing)
        created = not any(c["id"] == cmd["id"] for c in existing)
        self.commands[scope] = [c for c in existing if c["id"] != cmd["id"]] + [cmd]
        return _json_response(201 if created else 200, cmd)

    @_handles("GET", "/applications/{application_id}/commands")
    @_handles("GET", "/applications/{application_id}/guilds/{guild_id}/commands")
    async def _get_commands(self, rec: RecordedRequest) -> web.Response:
        return _json_response(200, self.commands.get(self._command_scope(rec), []))

    def _command_by_id(self, rec: RecordedRequest) -> tuple[int | None, dict[str, Any]]:
        scope = self._command_scope(rec)
        for c in self.commands.get(scope, []):
            if c["id"] == rec.params["command_id"]:
                return scope, c
        raise DiscordError(404, 10063, "Unknown application command")

    @_handles("GET", "/applications/{application_id}/commands/{command_id}")
    @_handles("GET", "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}")
    async def _get_command(self, rec: RecordedRequest) -> web.Response:
        return _json_response(200, self._command_by_id(rec)[1])

    @_handles("DELETE", "/applications/{application_id}/commands/{command_id}")
    @_handles("DELETE", "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}")
    async def _delete_command(self, rec: RecordedRequest) -> web.Response:
        scope, cmd = self._command_by_id(rec)
        self.commands[scope] = [c for c in self.commands[scope] if c is not cmd]
        return web.Response(status=204)

    # ------------------------------------------------------------------------------------------ messages

    def _store_attachment(
        self, f: RecordedFile, channel_id: int, *, filename: str | None, description: str | None, ephemeral: bool
    ) -> dict[str, Any]:
        aid = snowflake()
        name = re.sub(r"[^A-Za-z0-9._-]", "_", filename or f.filename) or "unknown"
        ctype = f.content_type if f.content_type and f.content_type != "application/octet-stream" else ""
        size = P.image_size(f.data)
        if not ctype:
            if f.data[:8] == b"\x89PNG\r\n\x1a\n":
                ctype = "image/png"
            else:
                ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        sig = f"ex={int(time.time()) + 86400:x}&is={int(time.time()):x}&hm={secrets.token_hex(32)}&"
        url = f"{self.http_url}/attachments/{channel_id}/{aid}/{name}?{sig}"
        att: dict[str, Any] = {
            "id": str(aid),
            "filename": name,
            "size": len(f.data),
            "url": url,
            "proxy_url": url,
            "content_type": ctype,
            "content_scan_version": 0,
        }
        if size is not None:
            att["width"], att["height"] = size
        if description:
            att["description"] = description
        if ephemeral:
            att["ephemeral"] = True
        self.attachments[aid] = (f.data, att)
        return att

    def _attachments(
        self,
        body: dict[str, Any],
        files: list[RecordedFile],
        channel_id: int,
        ephemeral: bool,
        existing: list[dict[str, Any]] | None,
    ) -> list[dict[str, Any]]:
        by_index = {f.index: f for f in files}
        used: set[int] = set()
        out: list[dict[str, Any]] = []
        if body.get("attachments") is not None:
            ex = {a["id"]: a for a in existing or []}
            for i, a in enumerate(body["attachments"]):
                aid = str(a.get("id"))
                if aid in ex:
                    out.append(ex[aid])
                    continue
                f = by_index.get(int(aid)) if aid.isdigit() else None
                if f is None:
                    raise _form_error(["attachments", str(i)], "ATTACHMENT_NOT_FOUND", "Attachment data not found")
                used.add(f.index)
                out.append(
                    self._store_attachment(
                        f, channel_id, filename=a.get("filename"), description=a.get("description"), ephemeral=ephemeral
                    )
                )
            for f in files:
                if f.index not in used:
                    out.append(
                        self._store_attachment(f, channel_id, filename=None, description=None, ephemeral=ephemeral)
                    )
        else:
            out = list(existing or []) + [
                self._store_attachment(f, channel_id, filename=None, description=None, ephemeral=ephemeral)
                for f in files
            ]
        if len(out) > MAX_ATTACHMENTS:
            raise _form_error(["attachments"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_ATTACHMENTS} or fewer in length.")
        return out

    @staticmethod
    def _embeds(embeds: list[dict[str, Any]], attachments: list[dict[str, Any]]) -> list[dict[str, Any]]:
        by_name = {a["filename"]: a for a in attachments}
        out = []
        for e in embeds or []:
            e = copy.deepcopy(e)
            e.setdefault("type", "rich")
            for key in ("image", "thumbnail"):
                media = e.get(key)
                if isinstance(media, dict) and str(media.get("url", "")).startswith("attachment://"):
                    att = by_name.get(media["url"][len("attachment://") :])
                    if att is not None:
                        media.update(
                            url=att["url"],
                            proxy_url=att["proxy_url"],
                            width=att.get("width"),
                            height=att.get("height"),
                            content_type=att["content_type"],
                        )
            out.append(e)
        return out

    def _message_fields(
        self,
        body: dict[str, Any],
        files: list[RecordedFile],
        channel_id: int,
        *,
        ephemeral: bool,
        existing: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The parts of a message a create/edit body sets (edits keep what the body leaves out)."""
        fields: dict[str, Any] = {}
        if "content" in body or existing is None:
            fields["content"] = body.get("content") or ""
        attachments_touched = body.get("attachments") is not None or files or existing is None
        if attachments_touched:
            fields["attachments"] = self._attachments(
                body, files, channel_id, ephemeral, existing.get("attachments") if existing else None
            )
        atts = fields.get("attachments", existing.get("attachments", []) if existing else [])
        if "embeds" in body or "embed" in body or existing is None:
            embeds = body.get("embeds")
            if embeds is None and body.get("embed"):
                embeds = [body["embed"]]
            fields["embeds"] = self._embeds(embeds or [], atts)
        if "components" in body or existing is None:
            fields["components"] = P.number_components(body.get("components") or [])
        if "tts" in body and existing is None:
            fields["tts"] = bool(body["tts"])
        return fields

    @staticmethod
    def _check_not_empty(msg: dict[str, Any], body: dict[str, Any]) -> None:
        if not (
            msg.get("content")
            or msg.get("embeds")
            or msg.get("attachments")
            or msg.get("components")
            or body.get("sticker_ids")
            or body.get("poll")
        ):
            raise DiscordError(400, 50006, "Cannot send an empty message")

    def _new_message(
        self,
        body: dict[str, Any],
        files: list[RecordedFile],
        channel_id: int,
        *,
        ix: InteractionHandle | None = None,
        flags_allowed: int = 4 | 4096 | 32768,
        loading: bool = False,
        extra_flags: int = 0,
    ) -> dict[str, Any]:
        flags = (int(body.get("flags") or 0) & flags_allowed) | extra_flags
        ephemeral = bool(flags & 64)
        fields = self._message_fields(body, files, channel_id, ephemeral=ephemeral)
        if loading:
            flags |= 128
        else:
            self._check_not_empty(fields, body)
        guild = (self._channel_entry(channel_id) or (None, None))[1]
        kwargs: dict[str, Any] = {}
        mtype = 0
        if ix is not None:
            meta: dict[str, Any] = {
                "id": str(ix.id),
                "type": ix.type,
                "user": ix.user,
                "authorizing_integration_owners": ix.payload.get("authorizing_integration_owners", {}),
            }
            if ix.type == P.APPLICATION_COMMAND:
                meta["name"] = ix.command_name or ""
                meta["command_type"] = (ix.payload.get("data") or {}).get("type", 1)
                mtype = 20 if meta["command_type"] == 1 else 23
            if ix.type == P.MESSAGE_COMPONENT and ix.component_message:
                meta["interacted_message_id"] = ix.component_message["id"]
            if ix.original_message_id is not None:
                meta["original_response_message_id"] = str(ix.original_message_id)
            kwargs.update(webhook_id=self.application_id, application_id=self.application_id, interaction_metadata=meta)
        if body.get("message_reference"):
            kwargs["message_reference"] = body["message_reference"]
            mtype = mtype or 19
        msg = P.message_object(
            id=snowflake(),
            channel_id=channel_id,
            author=self.bot_user.to_dict(),
            flags=flags,
            type=mtype,
            guild_id=guild.id if guild else None,
            nonce=body.get("nonce"),
            **fields,
            **kwargs,
        )
        self.messages[int(msg["id"])] = msg
        return msg

    def _edit_message(self, msg: dict[str, Any], body: dict[str, Any], files: list[RecordedFile]) -> dict[str, Any]:
        was_loading = bool(msg.get("flags", 0) & 128)
        ephemeral = bool(msg.get("flags", 0) & 64)
        fields = self._message_fields(body, files, int(msg["channel_id"]), ephemeral=ephemeral, existing=msg)
        new = {**msg, **fields}
        flags = msg.get("flags", 0) & ~128
        if "flags" in body and body["flags"] is not None:
            flags = (flags & ~(4 | 32768)) | (int(body["flags"]) & (4 | 32768))
        new["flags"] = flags
        self._check_not_empty(new, body)
        if not was_loading:
            new["edited_timestamp"] = P.now_iso()
        self.messages[int(msg["id"])] = new
        return new

    def _channel_for_bot(self, rec: RecordedRequest) -> tuple[int, dict[str, Any], StandInGuild | None]:
        try:
            cid = int(rec.params["channel_id"])
        except ValueError:
            raise _unknown_channel() from None
        entry = self._channel_entry(cid)
        if entry is None:
            raise _unknown_channel()
        return cid, entry[0], entry[1]

    def _channel_message(self, rec: RecordedRequest) -> dict[str, Any]:
        cid, _, _ = self._channel_for_bot(rec)
        try:
            msg = self.messages.get(int(rec.params["message_id"]))
        except ValueError:
            msg = None
        if msg is None or int(msg["channel_id"]) != cid or msg.get("flags", 0) & 64:
            raise _unknown_message()
        return msg

    @_handles("POST", "/channels/{channel_id}/messages")
    async def _create_message(self, rec: RecordedRequest) -> web.Response:
        cid, ch, guild = self._channel_for_bot(rec)
        if ch["type"] == 1 and int(ch["recipients"][0]["id"]) in self.blocked_dm_users:
            raise DiscordError(403, 50007, "Cannot send messages to this user")
        if guild is not None and not guild.permissions_of(self.bot_user.id) & P.SEND_MESSAGES:
            raise DiscordError(403, 50013, "Missing Permissions")
        body = rec.json or {}
        nonce = _nonce_of(body)
        if nonce is not None and body.get("enforce_nonce"):
            # Discord: "If true and nonce is present, it will be checked for uniqueness in the past few minutes.
            # If another message was created by the same author with the same nonce, that message will be
            # returned and no new message will be created."
            seen = self._nonces.get((self.bot_user.id, nonce))
            if seen is not None and time.monotonic() - seen[1] < self.nonce_window_s and seen[0] in self.messages:
                rec.deduplicated = True
                return _json_response(200, self.messages[seen[0]])
        msg = self._new_message(body, rec.files, cid)
        if nonce is not None:
            self._nonces[(self.bot_user.id, nonce)] = (int(msg["id"]), time.monotonic())
        return _json_response(200, msg)

    @_handles("GET", "/channels/{channel_id}/messages")
    async def _list_messages(self, rec: RecordedRequest) -> web.Response:
        cid, _, _ = self._channel_for_bot(rec)
        msgs = [m for m in self.messages.values() if int(m["channel_id"]) == cid and not m.get("flags", 0) & 64]
        q = rec.query
        try:
            limit = max(1, min(100, int(q.get("limit", 50))))
            if "before" in q:
                msgs = [m for m in msgs if int(m["id"]) < int(q["before"])]
            if "after" in q:
                msgs = [m for m in msgs if int(m["id"]) > int(q["after"])]
                msgs = msgs[:limit]
        except ValueError:
            raise _form_error(["limit"], "NUMBER_TYPE_COERCE", "Value is not int.") from None
        if "around" in q:
            around = int(q["around"])
            older = [m for m in msgs if int(m["id"]) <= around][-(limit // 2 + limit % 2) :]
            newer = [m for m in msgs if int(m["id"]) > around][: limit // 2]
            msgs = older + newer
        msgs = list(reversed(msgs))[:limit]
        return _json_response(200, msgs)

    @_handles("GET", "/channels/{channel_id}/messages/{message_id}")
    async def _get_message(self, rec: RecordedRequest) -> web.Response:
        return _json_response(200, self._channel_message(rec))

    @_handles("PATCH", "/channels/{channel_id}/messages/{message_id}")
    async def _patch_message(self, rec: RecordedRequest) -> web.Response:
        msg = self._channel_message(rec)
        if msg["author"]["id"] != str(self.bot_user.id):
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        return _json_response(200, self._edit_message(msg, rec.json or {}, rec.files))

    @_handles("DELETE", "/channels/{channel_id}/messages/{message_id}")
    async def _delete_message(self, rec: RecordedRequest) -> web.Response:
        msg = self._channel_message(rec)
        del self.messages[int(msg["id"])]
        return web.Response(status=204)

    @_handles("GET", "/channels/{channel_id}")
    async def _get_channel(self, rec: RecordedRequest) -> web.Response:
        return _json_response(200, self._channel_for_bot(rec)[1])

    @_handles("POST", "/users/@me/channels")
    async def _create_dm(self, rec: RecordedRequest) -> web.Response:
        uid = int((rec.json or {}).get("recipient_id", 0))
        if not any(u.id == uid for u in self.all_users()) or uid == self.bot_user.id:
            raise DiscordError(400, 50033, "Invalid Recipient(s)")
        return _json_response(200, self.dm_channel(uid))

    # ------------------------------------------------------------------------------------------ guilds

    def _guild_param(self, rec: RecordedRequest) -> StandInGuild:
        try:
            g = self._guild_by_id(int(rec.params["guild_id"]))
        except ValueError:
            g = None
        if g is None:
            raise DiscordError(404, 10004, "Unknown Guild")
        return g

    @_handles("GET", "/guilds/{guild_id}")
    async def _get_guild(self, rec: RecordedRequest) -> web.Response:
        g = self._guild_param(rec)
        body = g.to_dict()
        if rec.query.get("with_counts") in ("true", "True", "1"):
            body.update(approximate_member_count=len(g.members) + 1, approximate_presence_count=1)
        return _json_response(200, body)

    @_handles("GET", "/guilds/{guild_id}/channels")
    async def _get_guild_channels(self, rec: RecordedRequest) -> web.Response:
        g = self._guild_param(rec)
        return _json_response(200, [c.to_dict(g.id) for c in g.channels])

    @_handles("GET", "/guilds/{guild_id}/roles")
    async def _get_guild_roles(self, rec: RecordedRequest) -> web.Response:
        return _json_response(200, self._guild_param(rec).role_dicts())

    def _guild_members(self, g: StandInGuild) -> list[StandInUser]:
        return list(g.members) + [self.bot_user]

    @_handles("GET", "/guilds/{guild_id}/members/{user_id}")
    async def _get_member(self, rec: RecordedRequest) -> web.Response:
        g = self._guild_param(rec)
        for u in self._guild_members(g):
            if str(u.id) == rec.params["user_id"]:
                return _json_response(200, g.member_dict(u))
        raise DiscordError(404, 10007, "Unknown Member")

    @_handles("GET", "/guilds/{guild_id}/members")
    async def _list_members(self, rec: RecordedRequest) -> web.Response:
        g = self._guild_param(rec)
        limit = int(rec.query.get("limit", 1))
        after = int(rec.query.get("after", 0))
        members = sorted((u for u in self._guild_members(g) if u.id > after), key=lambda u: u.id)[:limit]
        return _json_response(200, [g.member_dict(u) for u in members])

    # ------------------------------------------------------------------------------------------ interactions

    @_handles("POST", "/interactions/{interaction_id}/{interaction_token}/callback")
    async def _callback(self, rec: RecordedRequest) -> web.Response:
        try:
            ix = self.interactions.get(int(rec.params["interaction_id"]))
        except ValueError:
            ix = None
        if ix is None or ix.token != rec.params["interaction_token"] or ix.expired:
            raise DiscordError(404, 10062, "Unknown interaction")
        if (
            self.interaction_ack_deadline is not None
            and ix.dispatched_at is not None
            and not ix.acked
            and rec.time - ix.dispatched_at > self.interaction_ack_deadline
        ):
            ix.missed_deadline = True
            raise DiscordError(404, 10062, "Unknown interaction")
        if ix.acked:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        body = rec.json or {}
        rtype = body.get("type")
        data = body.get("data") or {}
        allowed = {
            P.PING: {1},
            P.APPLICATION_COMMAND: {4, 5, 9, 12},
            P.MESSAGE_COMPONENT: {4, 5, 6, 7, 9, 12},
            P.APPLICATION_COMMAND_AUTOCOMPLETE: {8},
            P.MODAL_SUBMIT: {4, 5} | ({6, 7} if ix.component_message else set()),
        }[ix.type]
        if rtype not in allowed:
            raise _form_error(["type"], "INTERACTION_RESPONSE_TYPE_INVALID", "Invalid interaction response type")
        message: dict[str, Any] | None = None
        if rtype == 4:
            message = self._new_message(data, rec.files, ix.channel_id, ix=ix, flags_allowed=4 | 64 | 4096 | 32768)
            ix.original_message_id = int(message["id"])
        elif rtype == 5:
            message = self._new_message(
                {}, [], ix.channel_id, ix=ix, loading=True, extra_flags=int(data.get("flags") or 0) & 64
            )
            ix.original_message_id = int(message["id"])
        elif rtype in (6, 7):
            comp_msg = ix.component_message
            mid = int(comp_msg["id"])
            if mid not in self.messages:
                self.messages[mid] = copy.deepcopy(comp_msg)
            ix.original_message_id = mid
            if rtype == 7:
                message = self._edit_message(self.messages[mid], data, rec.files)
        elif rtype == 8:
            ix.autocomplete_choices = data.get("choices", [])
        elif rtype == 9:
            ix.modal = data
            self._modals[data.get("custom_id", "")] = ix
        ix.response_type = rtype
        ix.acked_at = rec.time
        if rec.query.get("with_response") not in ("true", "True", "1"):
            return web.Response(status=204)
        interaction: dict[str, Any] = {"id": str(ix.id), "type": ix.type}
        resp: dict[str, Any] = {"interaction": interaction}
        if message is not None:
            interaction.update(
                response_message_id=message["id"],
                response_message_loading=bool(message["flags"] & 128),
                response_message_ephemeral=bool(message["flags"] & 64),
            )
            resp["resource"] = {"type": rtype, "message": message}
        elif rtype in (8, 9):
            resp["resource"] = {"type": rtype}
        return _json_response(200, resp)

    def _webhook_interaction(self, rec: RecordedRequest) -> InteractionHandle:
        ix = self._by_token.get(rec.params.get("webhook_token", ""))
        if (
            ix is None
            or ix.expired
            or rec.params.get("webhook_id") != str(self.application_id)
            or not ix.acked
            or ix.type == P.APPLICATION_COMMAND_AUTOCOMPLETE
        ):
            raise _unknown_webhook()
        return ix

    def _webhook_message(self, rec: RecordedRequest, ix: InteractionHandle) -> dict[str, Any]:
        mid_param = rec.params.get("message_id", "@original")
        if mid_param == "@original" or "message_id" not in rec.params:
            mid = ix.original_message_id
        else:
            try:
                mid = int(mid_param)
            except ValueError:
                raise _unknown_message() from None
            if mid != ix.original_message_id and mid not in ix.followup_ids:
                raise _unknown_message()
        if mid is None or mid not in self.messages:
            raise _unknown_message()
        return self.messages[mid]

    @_handles("POST", "/webhooks/{webhook_id}/{webhook_token}")
    async def _followup(self, rec: RecordedRequest) -> web.Response:
        ix = self._webhook_interaction(rec)
        body = rec.json or {}
        original = ix.original_message
        if ix.response_type == 5 and original is not None and original.get("flags", 0) & 128:
            msg = self._edit_message(original, body, rec.files)  # the first follow-up replaces "thinking..."
        else:
            msg = self._new_message(body, rec.files, ix.channel_id, ix=ix, flags_allowed=4 | 64 | 4096 | 32768)
            ix.followup_ids.append(int(msg["id"]))
        if rec.query.get("wait") in ("true", "True", "1"):
            return _json_response(200, msg)
        return web.Response(status=204)

    @_handles("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/@original")
    @_handles("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}")
    async def _get_webhook_message(self, rec: RecordedRequest) -> web.Response:
        ix = self._webhook_interaction(rec)
        return _json_response(200, self._webhook_message(rec, ix))

    @_handles("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original")
    @_handles("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}")
    async def _edit_webhook_message(self, rec: RecordedRequest) -> web.Response:
        ix = self._webhook_interaction(rec)
        msg = self._webhook_message(rec, ix)
        return _json_response(200, self._edit_message(msg, rec.json or {}, rec.files))

    @_handles("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/@original")
    @_handles("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}")
    async def _delete_webhook_message(self, rec: RecordedRequest) -> web.Response:
        ix = self._webhook_interaction(rec)
        msg = self._webhook_message(rec, ix)
        del self.messages[int(msg["id"])]
        return web.Response(status=204)
