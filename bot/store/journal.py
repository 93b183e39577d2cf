"""The command journal: every command the bot acknowledges is on disk before Discord hears the acknowledgement.

Between the deferral ("thinking…") and the job row's commit lie database work that may wait (a busy database, a
preset lookup, moderation caps). A process killed there would lose the command, and Discord would show
"thinking…" until the token died. So the cog appends the interaction (id, token, member, channel, what was asked)
here first, then defers; once the command has its job row (or its answer: a refusal, an error), the entry is
settled (deleted). At start, `pending()` returns what a killed process left: each becomes a job, or a clear
"could not be run" reply (see `bot.exts.imagine._replay`).

It is a separate small SQLite database (not the main one, which may be PostgreSQL, or locked by a long writer),
written with the plain `sqlite3` module from the event loop thread: one INSERT in autocommit mode, WAL, with
`synchronous = NORMAL`, commits in tens of microseconds and survives `kill -9` and the OOM killer (the WAL is
in the OS's page cache once `write()` returns); only a power loss can take the last commits (`durable = true`
adds an fsync per command, about a millisecond on an SSD, for that case). The lock is held for microseconds:
nothing else writes this file.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS acks (
    interaction_id INTEGER PRIMARY KEY,
    application_id INTEGER NOT NULL,
    token TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    guild_id INTEGER,
    channel_id INTEGER,
    is_moderator INTEGER NOT NULL DEFAULT 0,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    run TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class Ack:
    """One acknowledged command: who, where, the token to answer with, and what was asked (`payload`, JSON)."""

    interaction_id: int
    application_id: int
    token: str
    user_id: int
    guild_id: int | None
    channel_id: int | None
    payload: dict[str, Any] = field(default_factory=dict)
    is_moderator: bool = False
    created_at: float = field(default_factory=time.time)  # time.time(): tokens live 15 minutes from here

    @property
    def age_s(self) -> float:
        return max(0.0, time.time() - self.created_at)


class Journal:
    """Append, settle, list; thread-safe (one connection behind a lock), cheap enough for the event loop."""

    def __init__(self, path: str | Path, *, durable: bool = False) -> None:
        self.path = Path(path)
        self.run = uuid.uuid4().hex  # this process's entries are its own business, never "left by a previous run"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._conn.execute(_SCHEMA)

    def append(self, ack: Ack) -> None:
        """Record the command (committed when this returns). A repeat of the same interaction is ignored."""
        row = (
            ack.interaction_id,
            ack.application_id,
            ack.token,
            ack.user_id,
            ack.guild_id,
            ack.channel_id,
            int(ack.is_moderator),
            json.dumps(ack.payload, separators=(",", ":")),
            ack.created_at,
            self.run,
        )
        with self._lock:
            self._conn.execute("INSERT OR IGNORE INTO acks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)

    def settle(self, interaction_id: int) -> None:
        """The command has its job row or its answer: nothing is left to recover for it."""
        with self._lock:
            self._conn.execute("DELETE FROM acks WHERE interaction_id = ?", (interaction_id,))

    def pending(self) -> list[Ack]:
        """Unsettled commands a previous process left (not those this one is still working on), oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT interaction_id, application_id, token, user_id, guild_id, channel_id, payload, "
                "is_moderator, created_at FROM acks WHERE run != ? ORDER BY created_at, interaction_id",
                (self.run,),
            ).fetchall()
        return [Ack(i, a, t, u, g, c, json.loads(p), bool(m), created) for i, a, t, u, g, c, p, m, created in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
