"""The gateway side of the stand-in: one websocket per connection, sessions that outlive connections.

Plain JSON text frames (discord.py asks for zlib-stream but only inflates binary frames). HELLO, then IDENTIFY
-> READY + one GUILD_CREATE per guild, or RESUME -> the events the client missed, then RESUMED. Heartbeats are
ACKed. Dispatches go to the current session; while it has no connection they wait in its log and are replayed
on RESUME, as Discord does.

Sharding: an IDENTIFY with `shard: [shard_id, shard_count]` gets only the guilds of that shard, Discord's
`(guild_id >> 22) % shard_count` (direct messages come on shard 0), and a dispatch about a guild goes to the
newest session whose shard holds it, so several shards (in one process or several) each see their own guilds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from .server import DiscordStandIn

OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_PRESENCE, OP_VOICE_STATE = 0, 1, 2, 3, 4
OP_RESUME, OP_RECONNECT, OP_REQUEST_MEMBERS, OP_INVALID_SESSION, OP_HELLO, OP_HEARTBEAT_ACK = 6, 7, 8, 9, 10, 11

# close codes after which discord.py reconnects and resumes (4000 = "unknown error, reconnect")
RESUMABLE_CLOSE = 4000


@dataclass
class GatewayFrame:
    """One frame on the gateway, as recorded: `direction` is "sent" (stand-in -> bot) or "received"."""

    index: int
    direction: str
    connection: int
    op: int | None
    t: str | None
    s: int | None
    d: Any
    time: float


@dataclass
class GatewayEvent:
    """A dispatch in a session's log; `sent_at` is when it was first written to a connection (None: not yet)."""

    seq: int
    t: str
    d: Any
    sent_at: float | None = None
    on_sent: list[Callable[[float], None]] = field(default_factory=list)

    def mark_sent(self, when: float) -> None:
        if self.sent_at is None:
            self.sent_at = when
            for cb in self.on_sent:
                cb(when)


@dataclass
class GatewayConnection:
    id: int
    path: str
    query: dict[str, str]
    opened_at: float
    ws: web.WebSocketResponse
    request: web.Request
    closed_at: float | None = None
    close_code: int | None = None
    session_id: str | None = None
    resumed: bool = False


class GatewaySession:
    def __init__(self, session_id: str, identify: dict[str, Any]) -> None:
        self.session_id = session_id
        self.identify = identify
        self.seq = 0
        self.events: list[GatewayEvent] = []
        self.connection: GatewayConnection | None = None
        self.invalidated = False
        self.resumes = 0
        self.lock = asyncio.Lock()

    @property
    def intents(self) -> int:
        return int(self.identify.get("intents", 0))

    @property
    def shard(self) -> tuple[int, int]:
        """(shard_id, shard_count) from IDENTIFY; (0, 1) for an unsharded client."""
        shard_id, count = self.identify.get("shard") or (0, 1)
        return int(shard_id), int(count)

    def holds(self, guild_id: int | None) -> bool:
        """Whether events about this guild (None: a direct message) belong on this session's shard."""
        shard_id, count = self.shard
        return shard_of(guild_id, count) == shard_id


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """Discord's rule: a guild's events come on shard (guild_id >> 22) % shard_count; DMs on shard 0."""
    return 0 if guild_id is None else (int(guild_id) >> 22) % shard_count


class Gateway:
    def __init__(self, standin: DiscordStandIn, heartbeat_interval_ms: int) -> None:
        self.standin = standin
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.ack_heartbeats = True
        self.sessions: dict[str, GatewaySession] = {}
        self.current: GatewaySession | None = None
        self.connections: list[GatewayConnection] = []
        self.frames: list[GatewayFrame] = []
        self.presences: list[dict[str, Any]] = []
        self._conn_ids = itertools.count(1)
        self._waiters: list[tuple[Callable[[GatewayFrame], bool], asyncio.Future[GatewayFrame]]] = []

    # ------------------------------------------------------------------------------------------ recording

    def _record(self, direction: str, conn: GatewayConnection, frame: dict[str, Any]) -> None:
        rec = GatewayFrame(
            index=len(self.frames),
            direction=direction,
            connection=conn.id,
            op=frame.get("op"),
            t=frame.get("t"),
            s=frame.get("s"),
            d=frame.get("d"),
            time=time.perf_counter(),
        )
        self.frames.append(rec)
        for pred, fut in list(self._waiters):
            if fut.done():
                continue
            try:
                ok = pred(rec)
            except Exception as exc:  # a broken predicate fails the waiting test, not the gateway
                fut.set_exception(exc)
                continue
            if ok:
                fut.set_result(rec)

    async def wait_for_frame(self, pred: Callable[[GatewayFrame], bool], *, since: int, timeout: float) -> GatewayFrame:
        for rec in self.frames[since:]:
            if pred(rec):
                return rec
        fut: asyncio.Future[GatewayFrame] = asyncio.get_running_loop().create_future()
        entry = (pred, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            tail = "\n".join(
                f"  #{f.index} {f.direction} op={f.op} t={f.t} s={f.s}"
                for f in self.frames[max(since, len(self.frames) - 15) :]
            )
            raise AssertionError(f"no matching gateway frame within {timeout}s; last frames:\n{tail}") from None
        finally:
            self._waiters.remove(entry)

    async def _send(self, conn: GatewayConnection, frame: dict[str, Any]) -> float:
        await conn.ws.send_str(json.dumps(frame))
        when = time.perf_counter()
        self._record("sent", conn, frame)
        return when

    async def _send_event(self, conn: GatewayConnection, ev: GatewayEvent) -> None:
        when = await self._send(conn, {"op": OP_DISPATCH, "t": ev.t, "s": ev.seq, "d": ev.d})
        ev.mark_sent(when)

    # ------------------------------------------------------------------------------------------ websocket

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        conn = GatewayConnection(
            id=next(self._conn_ids),
            path=request.path,
            query=dict(request.query),
            opened_at=time.perf_counter(),
            ws=ws,
            request=request,
        )
        self.connections.append(conn)
        session: GatewaySession | None = None
        try:
            await self._send(
                conn,
                {
                    "op": OP_HELLO,
                    "d": {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["stand-in"]},
                    "s": None,
                    "t": None,
                },
            )
            async for msg in ws:
                if msg.type is WSMsgType.BINARY:
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                if msg.type is not WSMsgType.TEXT:
                    continue
                try:
                    frame = json.loads(msg.data)
                    op = frame["op"]
                except (ValueError, KeyError, TypeError):
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                self._record("received", conn, frame)
                d = frame.get("d")
                if op == OP_HEARTBEAT:
                    if self.ack_heartbeats:
                        await self._send(conn, {"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None})
                elif op == OP_IDENTIFY:
                    if session is not None:
                        await ws.close(code=4005, message=b"Already authenticated.")
                        break
                    if not self.standin._token_ok((d or {}).get("token")):
                        await ws.close(code=4004, message=b"Authentication failed.")
                        break
                    session = await self._identify(conn, d)
                elif op == OP_RESUME:
                    if session is not None:
                        await ws.close(code=4005, message=b"Already authenticated.")
                        break
                    session = await self._resume(conn, d or {})
                elif session is None:
                    await ws.close(code=4003, message=b"Not authenticated.")
                    break
                elif op == OP_PRESENCE:
                    self.presences.append(d)
                elif op == OP_REQUEST_MEMBERS:
                    await self._members_chunk(session, d or {})
        finally:
            conn.closed_at = time.perf_counter()
            conn.close_code = ws.close_code
            if session is not None and session.connection is conn:
                session.connection = None
        return ws

    async def _identify(self, conn: GatewayConnection, d: dict[str, Any]) -> GatewaySession:
        st = self.standin
        session = GatewaySession(secrets.token_hex(16), d)
        self.sessions[session.session_id] = session
        self.current = session
        conn.session_id = session.session_id
        ready = {
            "v": 10,
            "user": {**st.bot_user.to_dict(), "verified": True, "mfa_enabled": False, "email": None},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in st.guilds if session.holds(g.id)],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": st.resume_gateway_url,
            "application": {"id": str(st.application_id), "flags": st.application_flags},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "user_settings": {},
            "geo_ordered_rtc_regions": ["local"],
            "auth_session_id_hash": secrets.token_urlsafe(32),
            "_trace": ["stand-in"],
        }
        shard = d.get("shard")
        if shard is not None:
            ready["shard"] = shard
        async with session.lock:
            await self._append_and_send(session, conn, "READY", ready)
            for g in st.guilds:
                if session.holds(g.id):
                    await self._append_and_send(session, conn, "GUILD_CREATE", g.to_dict(bot=st.bot_user, full=True))
            session.connection = conn
        return session

    async def _resume(self, conn: GatewayConnection, d: dict[str, Any]) -> GatewaySession | None:
        session = self.sessions.get(d.get("session_id") or "")
        seq = d.get("seq")
        if (
            session is None
            or session.invalidated
            or not self.standin._token_ok(d.get("token"))
            or not isinstance(seq, int)
            or seq > session.seq
        ):
            await self._send(conn, {"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
            return None
        async with session.lock:
            old = session.connection
            session.connection = None
            if old is not None and old is not conn and not old.ws.closed:
                await old.ws.close(code=RESUMABLE_CLOSE, message=b"Session resumed elsewhere.")
            for ev in session.events:
                if ev.seq > seq and ev.t not in ("READY", "RESUMED"):
                    await self._send_event(conn, ev)
            await self._append_and_send(session, conn, "RESUMED", {"_trace": ["stand-in"]})
            session.connection = conn
            session.resumes += 1
            conn.session_id = session.session_id
            conn.resumed = True
        return session

    async def _append_and_send(
        self, session: GatewaySession, conn: GatewayConnection | None, t: str, d: Any
    ) -> GatewayEvent:
        session.seq += 1
        ev = GatewayEvent(seq=session.seq, t=t, d=d)
        session.events.append(ev)
        if conn is not None and not conn.ws.closed:
            try:
                await self._send_event(conn, ev)
            except (ConnectionError, RuntimeError):
                pass  # the connection is going away; the event is replayed on RESUME
        return ev

    async def _members_chunk(self, session: GatewaySession, d: dict[str, Any]) -> None:
        st = self.standin
        guild = st._guild_by_id(int(d.get("guild_id", 0)))
        if guild is None:
            return
        members = list(guild.members) + [st.bot_user]
        ids = d.get("user_ids")
        if ids:
            wanted = {int(i) for i in (ids if isinstance(ids, list) else [ids])}
            members = [m for m in members if m.id in wanted]
        else:
            query = (d.get("query") or "").lower()
            members = [m for m in members if m.username.lower().startswith(query)]
            limit = d.get("limit") or 0
            if limit:
                members = members[:limit]
        chunk = {
            "guild_id": str(guild.id),
            "members": [guild.member_dict(m) for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if d.get("nonce") is not None:
            chunk["nonce"] = d["nonce"]
        if d.get("presences"):
            chunk["presences"] = []
        await self.dispatch("GUILD_MEMBERS_CHUNK", chunk, session=session)

    # ------------------------------------------------------------------------------------------ test hooks

    def _session_for(self, t: str, d: Any) -> GatewaySession:
        guild_id = None
        if isinstance(d, dict):
            guild_id = d.get("id") if t in ("GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE") else d.get("guild_id")
        guild_id = int(guild_id) if guild_id is not None else None
        if self.current is not None and self.current.holds(guild_id):
            return self.current  # unsharded: always the current session, as before sharding
        for session in reversed(list(self.sessions.values())):
            if not session.invalidated and session.holds(guild_id):
                return session
        return self._session(None)

    def _session(self, session: GatewaySession | None) -> GatewaySession:
        session = session or self.current
        if session is None:
            raise RuntimeError("no bot has identified on the stand-in's gateway yet")
        return session

    async def dispatch(
        self, t: str, d: Any, *, session: GatewaySession | None = None, on_sent: Callable[[float], None] | None = None
    ) -> GatewayEvent:
        """Send a dispatch event (or queue it for replay if the session has no connection right now).

        Without `session`: the current session if its shard holds the event's guild, else the newest that does."""
        session = session or self._session_for(t, d)
        async with session.lock:
            session.seq += 1
            ev = GatewayEvent(seq=session.seq, t=t, d=d)
            if on_sent is not None:
                ev.on_sent.append(on_sent)
            session.events.append(ev)
            conn = session.connection
            if conn is not None and not conn.ws.closed:
                try:
                    await self._send_event(conn, ev)
                except (ConnectionError, RuntimeError):
                    pass
        return ev

    async def drop(self, code: int = RESUMABLE_CLOSE, *, abort: bool = False) -> GatewayConnection | None:
        """Close the current session's connection (the session stays resumable)."""
        session = self._session(None)
        async with session.lock:
            conn = session.connection
            session.connection = None
        if conn is None:
            return None
        if abort:
            transport = conn.request.transport
            if transport is not None:
                transport.abort()
        else:
            await conn.ws.close(code=code, message=b"stand-in dropped the connection")
        return conn

    async def send_op(self, op: int, d: Any) -> None:
        session = self._session(None)
        conn = session.connection
        if conn is None:
            raise RuntimeError("the bot is not connected")
        await self._send(conn, {"op": op, "d": d, "s": None, "t": None})

    async def close_all(self, code: int = 1001) -> None:
        for conn in self.connections:
            if not conn.ws.closed:
                try:
                    await asyncio.wait_for(conn.ws.close(code=code, message=b"stand-in stopping"), 1.0)
                except (TimeoutError, ConnectionError, RuntimeError):
                    pass
