"""The command journal: entries survive the process (even SIGKILL right after `append`), settle once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from bot.store.journal import Ack, Journal

ROOT = Path(__file__).resolve().parents[3]


def ack(interaction_id: int, **kw) -> Ack:
    return Ack(interaction_id, 99, f"token-{interaction_id}", 5, 6, 7, {"typed": {"prompt": "a cat"}}, **kw)


def test_append_pending_settle_and_reopen(tmp_path):
    path = tmp_path / "sdbot-journal.db"
    journal = Journal(path)
    journal.append(ack(2, created_at=200.0))
    journal.append(ack(1, created_at=100.0, is_moderator=True))
    journal.append(ack(1, created_at=300.0))  # a repeat of the same interaction is ignored
    journal.settle(3)  # unknown: nothing happens
    assert journal.pending() == []  # this process's own commands are in progress, not left over
    journal.close()

    journal = Journal(path)
    assert journal.pending() == [ack(1, created_at=100.0, is_moderator=True), ack(2, created_at=200.0)]
    journal.settle(1)
    assert [a.interaction_id for a in journal.pending()] == [2]
    journal.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_an_entry_survives_sigkill_right_after_append(tmp_path):
    path = tmp_path / "j.db"
    script = textwrap.dedent(f"""
        import os, signal
        from bot.store.journal import Ack, Journal
        j = Journal({str(path)!r})
        j.append(Ack(42, 99, "tok", 5, None, 7, {{"typed": {{"prompt": "kept"}}}}))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, timeout=60)
    assert done.returncode == -signal.SIGKILL
    [entry] = Journal(path).pending()
    assert (entry.interaction_id, entry.token, entry.guild_id, entry.payload) == (
        42,
        "tok",
        None,
        {"typed": {"prompt": "kept"}},
    )


def test_the_default_path_is_beside_the_sqlite_database(tmp_path):
    from bot.config import Config, Settings, parse_settings

    config = Config(Settings(), tmp_path, None)
    assert config.journal_path == tmp_path / "sdbot-journal.db"
    pg = Config(parse_settings({"database": {"url": "postgresql://u:p@h/db"}}, "t"), tmp_path, None)
    assert pg.journal_path == tmp_path / "sdbot-journal.db"
    other = Config(parse_settings({"database": {"url": f"sqlite:///{tmp_path / 'x' / 'bot.db'}"}}, "t"), tmp_path, None)
    assert other.journal_path == tmp_path / "x" / "bot-journal.db"
    shard = Config(
        parse_settings(
            {"database": {"url": "postgresql://u:p@h/db"}, "discord": {"shards": 4, "shard_ids": [2, 3]}}, "t"
        ),
        tmp_path,
        None,
    )
    assert shard.journal_path == tmp_path / "sdbot-journal-shards-2-3.db"  # one per process sharing the shards
    chosen = Config(parse_settings({"database": {"journal_path": "j/acks.db"}}, "t"), tmp_path, None)
    assert chosen.journal_path == tmp_path / "j" / "acks.db"
