"""Crash and restart of a real `sdbot run` process (`python -m bot run`) against the stand-in in this process.

Process A gets jobs into every state, then is killed with SIGKILL: one job posted on Discord but not yet
recorded (its answer was lost and the check that would find it hangs), one rendered but not posted (its post
hangs), one rendering, one queued; an `awaiting_review` job is added to the database. Process B must deliver
every job exactly once (the rendered ones from their saved files, without rendering them again), tell the users
their jobs resumed, and leave the held job alone. Then B gets SIGTERM while rendering a long job: it refuses new
commands, puts the running and the queued job back in the queue, and exits 0 within its shutdown timeout (that
re-queued jobs run after a restart is shown above and, for a graceful stop, in test_shutdown.py). Last, a kill
right after a command's deferral (its job not yet saved) loses nothing: the command journal replays it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import sys
from pathlib import Path

from bot.services.jobs import RESTARTING
from tests.bot.harness import write_config
from tests.discord_standin import DiscordStandIn, StandInGuild, StandInUser
from tests.reliability._helpers import (
    DISCORD,
    FAST,
    assert_delivered_once,
    final_edit,
    final_messages,
    settled,
    uploads,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
SLOW = "--size 384x384 --steps 30"  # a few seconds on one CPU thread: long enough to be stopped mid-render
SHUTDOWN_TIMEOUT = 1.5


class BotProcess:
    """`python -m bot run --config F` with the stand-in's token; its log goes to a file we can wait on."""

    def __init__(self, config: Path, standin: DiscordStandIn, name: str) -> None:
        self.config, self.standin = config, standin
        self.log = config.parent / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> BotProcess:
        env = {**os.environ, "DISCORD_TOKEN": self.standin.token, "PYTHONUNBUFFERED": "1"}
        with open(self.log, "wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "run",
                "--config",
                str(self.config),
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        await self.wait_log("connected as", 90)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_log(self, needle: str, timeout: float) -> None:
        def seen() -> bool:
            if self.proc.returncode is not None:
                raise AssertionError(f"the bot exited ({self.proc.returncode}):\n{self.text()[-3000:]}")
            return needle in self.text()

        await wait_until(seen, timeout, f"{needle!r} in the bot's log", interval=0.1)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@contextlib.asynccontextmanager
async def bot_processes():
    """The list to put started `BotProcess`es in: their logs are shown if the test fails, and all are killed."""
    processes: list[BotProcess] = []
    try:
        yield processes
    except BaseException:
        for p in processes:
            if p.log.exists():
                print(f"--- {p.log.name} ---\n{p.text()[-4000:]}")
        raise
    finally:
        for p in processes:
            await p.kill()


def statuses(db: Path) -> dict[int, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT id, status FROM jobs"))


def job_of(db: Path, ix) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT id FROM jobs WHERE interaction_id = ?", (ix.id,)).fetchone()[0]


def content(r) -> str:
    return (r.json.get("content") or "") if isinstance(r.json, dict) else ""


def history(r) -> bool:
    """Any look for an earlier post: the job's message by id, or the channel's history."""
    return r.method == "GET" and r.route in (
        "/channels/{channel_id}/messages",
        "/channels/{channel_id}/messages/{message_id}",
    )


def progress(ix, text: str):
    return lambda r: ix._mine(r) and r.method == "PATCH" and text in content(r)


async def seed_awaiting_review(url: str, user_id: int, guild_id: int, channel_id: int) -> int:
    from bot.store import jobs as job_store
    from bot.store.db import make_engine, make_sessions, transaction
    from bot.store.models import JobStatus

    db = make_engine(url)
    try:
        job = await transaction(
            make_sessions(db),
            job_store.create,
            user_id=user_id,
            request={"prompt": "held", "width": 64, "height": 64, "steps": 2},
            guild_id=guild_id,
            channel_id=channel_id,
            status=JobStatus.AWAITING_REVIEW,
        )
        return job.id
    finally:
        await db.dispose()


async def test_sigkill_then_restart_delivers_every_job_once(tmp_path, tiny_sd15):
    models = tmp_path / "models"
    shutil.copytree(tiny_sd15, models / "tiny-sd15")
    guild = StandInGuild(members=[StandInUser("tester"), StandInUser("alice")])
    async with DiscordStandIn([guild]) as s:
        config = write_config(
            tmp_path, models, s, engine={"threads": 1}, discord={**DISCORD, "shutdown_timeout_s": SHUTDOWN_TIMEOUT}
        )
        db = tmp_path / "sdbot.db"
        async with bot_processes() as processes:
            # --- process A: every state, then SIGKILL -----------------------------------------------------
            a = await BotProcess(config, s, "a").start()
            processes.append(a)
            lost_answer = s.reset_next(final_edit, after_processing=True)  # job 1's post lands, its answer doesn't
            hang_check = s.fail_next(history, 503, delay=300)  # ... and the check that would find it hangs
            first = await s.send_interaction(s.slash("imagine", {"prompt": f"posted {FAST}"}))
            await wait_until(lambda: lost_answer.hits and hang_check.hits, 60, "job 1's lost answer")
            hang_post = s.fail_next(final_edit, 503, delay=300)  # job 2 is rendered, its post hangs
            second = await s.send_interaction(s.slash("imagine", {"prompt": f"rendered {FAST}"}))
            await wait_until(lambda: hang_post.hits, 60, "job 2's post")
            third = await s.send_interaction(s.slash("imagine", {"prompt": f"rendering {SLOW}"}))
            await third.wait_for(progress(third, "rendering: "), timeout=60)
            fourth = await s.send_interaction(s.slash("imagine", {"prompt": f"queued {FAST} --seed 4"}, user="alice"))
            await fourth.wait_for(progress(fourth, "queued"), timeout=30)
            a.signal(signal.SIGKILL)
            assert await a.wait(10) == -signal.SIGKILL
            for fault in (hang_check, hang_post):
                fault.cancel()

            jobs = [job_of(db, ix) for ix in (first, second, third, fourth)]
            assert [statuses(db)[j] for j in jobs] == ["done", "done", "running", "queued"]
            held = await seed_awaiting_review(f"sqlite+aiosqlite:///{db}", s.user.id, s.guild.id, s.channel.id)
            saved = sorted((tmp_path / "outputs" / str(jobs[1])).glob("*.png"))
            assert saved
            restart = s.mark()

            # --- process B: recovery ---------------------------------------------------------------------
            b = await BotProcess(config, s, "b").start()
            processes.append(b)
            await settled(
                s, lambda: all(statuses(db)[j] == "posted" for j in jobs), 90, "every job posted", since=restart
            )
            for job_id in jobs:
                assert_delivered_once(s, job_id)
            after = s.requests[restart:]
            # job 1 was found, not posted again; job 2 was posted from its saved file, not rendered again
            assert not [r for r in after if r.files and f"Job #{jobs[0]}:" in content(r)]
            posted = uploads(s, jobs[1])[0]
            assert posted.index >= restart and posted.files[0].data == saved[0].read_bytes()
            assert not [r for r in after if f"Job #{jobs[1]} rendering" in content(r)]
            # the users hear that their jobs resumed
            for job_id in jobs[1:]:
                assert "resumed after a restart" in final_messages(s, job_id)[0]["content"]
            for job_id in jobs[2:]:
                assert [
                    r
                    for r in after
                    if "resumed after a restart" in content(r) and f"Job #{job_id} queued" in content(r)
                ]
            # the held job is neither run nor posted
            assert statuses(db)[held] == "awaiting_review"
            assert not [r for r in after if f"Job #{held}" in content(r)]
            s.assert_no_invalid_requests()

            # --- SIGTERM while rendering: refuse new work, re-queue, exit 0 in time ------------------------
            long = await s.send_interaction(s.slash("imagine", {"prompt": f"long {SLOW}"}))
            await long.wait_for(progress(long, "rendering: "), timeout=60)
            waiting = await s.send_interaction(s.slash("imagine", {"prompt": f"waiting {FAST} --seed 6"}, user="alice"))
            await waiting.wait_for(progress(waiting, "queued"), timeout=30)
            b.signal(signal.SIGTERM)
            await b.wait_log("shutting down", 10)
            late = await s.send_interaction(s.slash("imagine", {"prompt": f"late {FAST}"}))
            followup = await late.wait_for(
                lambda r: r.method == "POST" and r.route.startswith("/webhooks/"), timeout=10
            )
            assert RESTARTING in followup.json["content"] and followup.json["flags"] & 64
            assert await b.wait(SHUTDOWN_TIMEOUT + 15) == 0  # in time: a bound, not a measured figure
            interrupted = [job_of(db, long), job_of(db, waiting)]
            assert [statuses(db)[j] for j in interrupted] == ["queued", "queued"]
            with sqlite3.connect(db) as conn:
                assert conn.execute("SELECT count(*) FROM jobs WHERE interaction_id = ?", (late.id,)).fetchone() == (0,)
            for job_id in jobs:  # nothing was posted again on the way out
                assert_delivered_once(s, job_id)
            s.assert_no_invalid_requests()


async def test_a_kill_right_after_the_deferral_loses_nothing(tmp_path, tiny_sd15):
    """The command is journaled before the deferral: killed while its job waits to be saved (another process
    holds the database's write lock), it is run by the next start, its "thinking…" becomes the result."""
    models = tmp_path / "models"
    shutil.copytree(tiny_sd15, models / "tiny-sd15")
    async with DiscordStandIn([StandInGuild(members=[StandInUser("tester")])]) as s:
        config = write_config(tmp_path, models, s, engine={"threads": 1}, discord=DISCORD)
        db = tmp_path / "sdbot.db"
        async with bot_processes() as processes:
            a = await BotProcess(config, s, "a").start()
            processes.append(a)
            locker = sqlite3.connect(db, isolation_level=None, timeout=30)
            locker.execute("BEGIN EXCLUSIVE")  # the job row cannot be written: the command hangs after its ack
            try:
                ix = await s.send_interaction(s.slash("imagine", {"prompt": f"kept {FAST} --seed 3"}))
                await wait_until(lambda: ix.acked, 30, "the deferral")
                a.signal(signal.SIGKILL)
                assert await a.wait(10) == -signal.SIGKILL
            finally:
                locker.rollback()
                locker.close()
            with sqlite3.connect(db) as conn:
                assert conn.execute("SELECT count(*) FROM jobs WHERE interaction_id = ?", (ix.id,)).fetchone() == (0,)
            with sqlite3.connect(tmp_path / "sdbot-journal.db") as conn:
                assert conn.execute("SELECT interaction_id FROM acks").fetchall() == [(ix.id,)]

            restart = s.mark()
            b = await BotProcess(config, s, "b").start()
            processes.append(b)
            await settled(
                s,
                lambda: job_of_or_none(db, ix) and statuses(db)[job_of(db, ix)] == "posted",
                90,
                "the journaled command's job posted",
                since=restart,
            )
            job_id = job_of(db, ix)
            final = assert_delivered_once(s, job_id)
            assert int(final["id"]) == ix.original_message_id  # the "thinking…" message became the result
            assert "resumed after a restart" in final["content"]
            with sqlite3.connect(tmp_path / "sdbot-journal.db") as conn:
                assert conn.execute("SELECT count(*) FROM acks").fetchone() == (0,)
            s.assert_no_invalid_requests()


def job_of_or_none(db: Path, ix) -> int | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT id FROM jobs WHERE interaction_id = ?", (ix.id,)).fetchone()
        return row[0] if row else None
