"""Soak: 1,000 jobs from 100 simulated users through the Discord stand-in, with faults injected at random.

The bot is a real `sdbot run` process (tiny model, one CPU thread, SQLite file); the stand-in and the 100 users
run in this process. Each user sends /imagine, waits for the job's images, then sends the next, as a person
would. Meanwhile, at random: 429s (with and without Via), 500/502/503s, connections dropped before or after the
request took effect, slow answers, gateway drops (resume, TCP abort, invalidated session), a database lock held
by another process, out-of-memory on 2% of renders (the worker retries smaller), and SIGKILLs of the bot at
random instants (`--kills`, then a restart each time). Before each kill another process holds the database's
write lock for a moment (`--hold-before-kill`), so commands are acknowledged ("thinking…") but not yet saved when
the kill lands: the window the command journal closes. The engine runs as configured by default, in a
child process (`--isolation`). Memory is the bot process's RSS, sampled every half second.

At the end every job a user got a job number for must have exactly one message with its images:

    submitted   jobs created (a job row for one of the users' commands)
    delivered   jobs with at least one message carrying their images and buttons
    duplicated  jobs with more than one such message, or more than one upload of their images that took effect,
                plus jobs beyond the first made for one command (a command run twice)
    lost        submitted - delivered (after the settle time)

and, beside them:

    acked_unsaved_at_kills  commands acknowledged by a killed process with no job row yet at the kill
    acked_lost              commands acknowledged (deferred) that never got a job nor an answer: goal 0

Run: .venv/bin/python benchmarks/soak.py [--jobs 1000] [--users 100] [--kills 3] [--isolation process] [--seed 1]
Prints `name: value` lines last: submitted, delivered, duplicated, lost, acked_lost, failed, peak_rss_mb,
rss_growth_mb_after_warmup, and what was injected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._common import arguments, print_figures  # noqa: E402

JOB = re.compile(r"Job #(\d+)")
CHANNELS = 10
WARMUP_JOBS = 100  # jobs delivered by a process before its memory counts as warmed up


# --- the bot process ---------------------------------------------------------------------------------------------


def oom_injector(oom_rate: float, seed: int):
    """Out of memory on `oom_rate` of first attempts."""
    import torch

    rng = random.Random(seed)

    def inject(attempt) -> None:
        if not attempt.retry and rng.random() < oom_rate:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by the soak)")

    return inject


def child_hook(worker):
    """The engine child's hook (`SDBOT_ENGINE_CHILD_HOOK`): the same out-of-memory faults, in the child."""
    rate, seed = os.environ["SDBOT_SOAK_OOM"].split(":")
    return oom_injector(float(rate), int(seed) * 1000 + os.getpid() % 1000)


def serve(config: str, oom_rate: float, seed: int) -> int:
    """`sdbot run --config CONFIG` with an engine fault injector: out of memory on `oom_rate` of first attempts."""
    import engine.backends.worker as worker
    from bot.cli import main

    inject = oom_injector(oom_rate, seed)
    init = worker.Worker.__init__

    def patched(self, *args, **kwargs) -> None:
        kwargs.setdefault("on_render", inject)  # with isolation = "thread"
        init(self, *args, **kwargs)

    worker.Worker.__init__ = patched
    os.environ["SDBOT_ENGINE_CHILD_HOOK"] = "benchmarks.soak:child_hook"  # with isolation = "process"
    os.environ["SDBOT_SOAK_OOM"] = f"{oom_rate}:{seed}"

    import bot.app as app

    original_serve = app.serve

    async def serve_with_task_dump(*args, **kwargs):  # SIGUSR1: every asyncio task's stack to the log
        def dump() -> None:
            for task in asyncio.all_tasks():
                print(f"--- {task.get_name()}", file=sys.stderr)
                task.print_stack(limit=8, file=sys.stderr)
            sys.stderr.flush()

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)
        return await original_serve(*args, **kwargs)

    app.serve = serve_with_task_dump
    return main(["run", "--config", config])


class Bot:
    def __init__(self, config: Path, token: str, oom_rate: float, seed: int) -> None:
        self.config, self.token, self.oom_rate, self.seed = config, token, oom_rate, seed
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        log = self.config.parent / f"bot-{self.starts}.log"
        env = {**os.environ, "DISCORD_TOKEN": self.token, "PYTHONUNBUFFERED": "1"}
        with open(log, "wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--serve",
                str(self.config),
                "--oom-rate",
                str(self.oom_rate),
                "--seed",
                str(self.seed + self.starts),
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while "connected as" not in log.read_text(errors="replace"):
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bot did not start:\n{log.read_text(errors='replace')[-3000:]}")
            await asyncio.sleep(0.2)

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> int:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), 60)
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()


# --- the soak ----------------------------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args, self.root = args, root
        self.rng = random.Random(args.seed)
        self.db = root / "sdbot.db"
        self.sent: list = []  # every /imagine interaction handle
        self.jobs: dict[int, int] = {}  # interaction id -> job id
        self.uploads: Counter[int] = Counter()  # job id -> uploads of its images that took effect
        self.indexed = 0
        self.submitted = 0
        self.injected: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()  # why commands got no job (then the user tried again)
        self.phase: dict[int, str] = {}  # user id -> what the user waits for (shown with --verbose)
        self.current: dict[int, object] = {}  # user id -> the user's last command
        self.killed_at: float | None = None
        self.restarted_at: float | None = None
        self.lost_at_crash = 0  # commands acknowledged by a killed process and still without a job after restart
        self.acked_unsaved: set[int] = set()  # commands acknowledged by a killed process, no job row at its kill
        self.memory: list[tuple[int, int, float]] = []  # (process start number, delivered then, rss MB)
        self.done = asyncio.Event()

    # -- users ------------------------------------------------------------------------------------------------
    async def user(self, s, member, channel, jobs: int) -> None:
        made = 0
        while made < jobs and self.submitted < self.args.jobs:
            prompt = (
                f"{self.rng.choice(['a cat', 'a castle', '(a dog:1.2)', 'a [blurry] bird'])} "
                f"--size 64x64 --steps 2 --seed {self.rng.randrange(2**32)}"
            )
            ix = await s.send_interaction(s.slash("imagine", {"prompt": prompt}, user=member, channel=channel))
            self.sent.append(ix)
            self.phase[member.id] = "waiting for a job number"
            self.current[member.id] = ix
            job_id = await self.job_of(ix)
            if job_id is None:  # refused (queue cap, "restarting") or lost before it was saved: try again
                await asyncio.sleep(1 + self.rng.random())
                continue
            self.submitted += 1
            made += 1
            checked = time.monotonic()
            self.phase[member.id] = f"waiting for job {job_id}'s images"
            while self.uploads[job_id] == 0:
                await asyncio.sleep(0.2)
                if time.monotonic() - checked > 10:  # a failed job gets no images: do not wait for ever
                    checked = time.monotonic()
                    if job_statuses(self.db, {job_id}).get(job_id) in ("failed", "cancelled"):
                        break

    async def job_of(self, ix) -> int | None:
        """The job number the command got, or None when it was refused (or never saved)."""
        sent = time.monotonic()
        deadline = sent + 90
        next_db_check = sent + 5
        while time.monotonic() < deadline:
            if (
                self.killed_at is not None
                and self.restarted_at is not None
                and sent < self.killed_at
                and time.monotonic() - self.restarted_at > 30
            ):
                # acknowledged by the killed process, still no job 30 s after the restart (the journal's replay
                # runs right after the start): the user gives up and sends it again
                job = job_for_interaction(self.db, ix.id)
                if job is None:
                    self.lost_at_crash += 1
                    self.refusals["acknowledged, then no job 30 s after the restart"] += 1
                else:
                    self.jobs[ix.id] = job
                return job
            if time.monotonic() - sent > 10 and not [r for r in ix.callbacks if r.status in (200, 204)]:
                self.refusals["never acknowledged (bot down)"] += 1
                return job_for_interaction(self.db, ix.id)  # never acknowledged (the bot was down): retry
            for r in ix.requests:
                body = r.json if isinstance(r.json, dict) else {}
                m = JOB.search(body.get("content") or "")
                if m:
                    self.jobs[ix.id] = int(m.group(1))
                    return int(m.group(1))
                if r.route.startswith("/webhooks/") and r.method == "POST" and body.get("flags", 0) & 64:
                    self.refusals[re.sub(r"\d+", "N", body.get("content") or "")[:60]] += 1
                    return None
            if time.monotonic() > next_db_check:
                next_db_check = time.monotonic() + 5
                job = job_for_interaction(self.db, ix.id)
                if job is not None:
                    self.jobs[ix.id] = job
                    return job
            await asyncio.sleep(0.1)
        return job_for_interaction(self.db, ix.id)

    # -- what Discord received ----------------------------------------------------------------------------------
    async def index(self, s) -> None:
        while True:
            self.scan(s)
            await asyncio.sleep(0.2)

    def scan(self, s) -> None:
        requests = s.requests
        while self.indexed < len(requests):
            r = requests[self.indexed]
            if r.status is None and r.reset is None and time.perf_counter() - r.time < 30:
                break  # not answered yet: look again later
            self.indexed += 1
            if r.files and not r.deduplicated and (r.status == 200 or r.reset == "after") and isinstance(r.json, dict):
                m = JOB.search(r.json.get("content") or "")
                if m and "✅" in r.json["content"]:
                    self.uploads[int(m.group(1))] += 1

    def delivered(self) -> int:
        return sum(1 for n in self.uploads.values() if n)

    # -- faults -------------------------------------------------------------------------------------------------
    async def rest_faults(self, s) -> None:
        from tests.reliability._helpers import channel_upload, final_edit

        def any_post(r) -> bool:
            return final_edit(r) or channel_upload(r)

        def any_request(r) -> bool:  # not the interaction callback: Discord's 3 s limit makes that the user's loss
            return r.route is not None and not r.route.startswith("/interactions/")

        kinds = [
            ("429 with Via", lambda: s.rate_limit_next(any_request, retry_after=self.rng.uniform(0.05, 0.5))),
            ("429 without Via", lambda: s.rate_limit_next(any_post, retry_after=0.2, via=False)),
            ("500 burst", lambda: s.fail_next(any_request, 500, count=self.rng.randint(1, 2))),
            ("502", lambda: s.fail_next(any_request, 502)),
            ("503 burst", lambda: s.fail_next(any_post, 503, count=self.rng.randint(1, 4))),
            ("reset before", lambda: s.reset_next(any_post)),
            ("reset after (answer lost)", lambda: s.reset_next(any_post, after_processing=True)),
            ("slow answer", lambda: s.delay_next(any_request, self.rng.uniform(0.5, 3))),
        ]
        while not self.done.is_set():  # one fault per `rest_fault_every` requests on average
            seen = len(s.requests)
            gap = self.rng.randint(1, 2 * self.args.rest_fault_every)
            while len(s.requests) - seen < gap and not self.done.is_set():
                await asyncio.sleep(0.1)
            name, arm = self.rng.choice(kinds)
            arm()
            self.injected[name] += 1
            if self.args.verbose:
                print(f"# {time.strftime('%H:%M:%S')} inject {name}", file=sys.stderr, flush=True)

    async def gateway_faults(self, s) -> None:
        while not self.done.is_set():
            await asyncio.sleep(self.rng.uniform(15, 40))
            kind = self.rng.choice(["gateway close 4000", "gateway TCP abort", "invalid session"])
            with contextlib.suppress(Exception):
                if kind == "gateway close 4000":
                    await s.drop_gateway()
                elif kind == "gateway TCP abort":
                    await s.drop_gateway(abort=True)
                else:
                    await s.invalidate_session()
                self.injected[kind] += 1
                if self.args.verbose:
                    print(f"# {time.strftime('%H:%M:%S')} inject {kind}", file=sys.stderr, flush=True)

    async def database_locks(self) -> None:
        while not self.done.is_set():
            await asyncio.sleep(self.rng.uniform(20, 60))
            hold = self.rng.uniform(0.5, 2.0)
            with contextlib.suppress(sqlite3.Error):
                await asyncio.to_thread(lock_database, self.db, hold)
                self.injected["database locked by another process"] += 1

    async def report(self, s, bot) -> None:
        quiet_since, last_count = time.monotonic(), 0
        while not self.done.is_set():
            await asyncio.sleep(10)
            if len(s.requests) != last_count:
                quiet_since, last_count = time.monotonic(), len(s.requests)
            elif time.monotonic() - quiet_since > 15 and bot.proc.returncode is None:
                print("# no requests for 15 s: asking the bot for its tasks (SIGUSR1, see its log)", file=sys.stderr)
                bot.proc.send_signal(signal.SIGUSR1)
                now = time.perf_counter()
                for f in s.gateway_frames[-12:]:
                    print(
                        f"#   frame {f.index} {f.direction} conn {f.connection} op {f.op} {f.t} s={f.s} "
                        f"{now - f.time:.1f} s ago",
                        file=sys.stderr,
                    )
                for c in s.gateway.connections[-3:]:
                    print(
                        f"#   conn {c.id} {c.path} closed={c.ws.closed} code={c.close_code} session={c.session_id}",
                        file=sys.stderr,
                    )
                for uid, ph in list(self.phase.items())[:40]:
                    if ph == "waiting for a job number":
                        ix = self.current[uid]
                        print(
                            f"#   user {uid} ix {ix.id} s? sent_at={ix.dispatched_at} requests "
                            f"{[(r.method, (r.route or '')[:14], r.status) for r in ix.requests]}",
                            file=sys.stderr,
                        )
                cur = s.gateway.current
                print(
                    f"#   current session {cur.session_id if cur else None} "
                    f"conn {cur.connection.id if cur and cur.connection else None}",
                    file=sys.stderr,
                    flush=True,
                )
            phases = Counter(v.split(" job ")[0] for v in self.phase.values())
            session = s.gateway.current
            unsent = sum(1 for e in session.events if e.sent_at is None) if session else 0
            last = s.gateway_frames[-1] if s.gateway_frames else None
            gateway = (
                f"gateway {'connected' if session and session.connection else 'DOWN'}, {unsent} unsent, "
                f"last frame {last.direction} op {last.op} {time.perf_counter() - last.time:.0f} s ago"
                if last
                else "gateway -"
            )
            print(
                f"# {time.strftime('%H:%M:%S')} submitted {self.submitted} delivered {self.delivered()} "
                f"requests {len(s.requests)} indexed {self.indexed} users {dict(phases)}; {gateway}; "
                f"injected {sum(self.injected.values())}",
                file=sys.stderr,
                flush=True,
            )

    async def watch_memory(self, bot: Bot) -> None:
        import psutil

        while not self.done.is_set():
            with contextlib.suppress(Exception):
                rss = psutil.Process(bot.proc.pid).memory_info().rss / 2**20
                self.memory.append((bot.starts, self.delivered(), rss))
            await asyncio.sleep(0.5)

    # -- the run ------------------------------------------------------------------------------------------------
    async def run(self) -> dict[str, float]:
        from engine.tiny.models import write_tiny_model
        from tests.bot.harness import write_config
        from tests.discord_standin import DiscordStandIn, StandInGuild, StandInUser
        from tests.discord_standin.payloads import StandInChannel

        write_tiny_model(self.root / "models" / "tiny-sd15")
        members = [StandInUser(f"user{i}") for i in range(self.args.users)]
        channels = [StandInChannel(f"art-{i}") for i in range(CHANNELS)]
        async with DiscordStandIn([StandInGuild(members=members, channels=channels)]) as s:
            self.standin = s
            config = write_config(
                self.root,
                self.root / "models",
                s,
                engine={"threads": 1, "max_queued_per_user": 5, "isolation": self.args.isolation},
                discord={
                    "edits_per_channel": 5,
                    "edit_period_s": 1.0,
                    "post_backoff_s": 0.5,
                    "shutdown_timeout_s": 10.0,
                },
                moderation={"user_rate": 10000, "guild_rate": 100000, "max_queued_per_guild": 100000},
            )
            bot = Bot(config, s.token, self.args.oom_rate, self.args.seed)
            await bot.start()
            started = time.monotonic()
            background = [
                asyncio.create_task(c)
                for c in (
                    self.index(s),
                    self.rest_faults(s),
                    self.gateway_faults(s),
                    self.database_locks(),
                    self.watch_memory(bot),
                )
            ] + ([asyncio.create_task(self.report(s, bot))] if self.args.verbose else [])
            per_user = -(-self.args.jobs // self.args.users)
            users = [
                asyncio.create_task(self.user(s, m, channels[i % CHANNELS], per_user)) for i, m in enumerate(members)
            ]
            kills = sorted(int(self.args.jobs * self.rng.uniform(0.1, 0.9)) for _ in range(self.args.kills))
            while not all(u.done() for u in users):
                if kills and self.delivered() >= kills[0]:
                    kills.pop(0)
                    await self.kill(bot)
                    self.injected["SIGKILL of the bot"] += 1
                    await bot.start()
                    self.restarted_at = time.monotonic()
                for u in users:
                    if u.done() and u.exception():
                        raise u.exception()
                await asyncio.sleep(0.5)
            self.done.set()
            # settle: every submitted job final in the database, nothing more arriving
            wanted = jobs_for_interactions(self.db, {ix.id for ix in self.sent})
            deadline = time.monotonic() + self.args.settle
            while time.monotonic() < deadline and active_jobs(self.db, wanted):
                await asyncio.sleep(0.5)
            await asyncio.sleep(3)
            self.scan(s)
            elapsed = time.monotonic() - started
            exit_status = await bot.stop()
            for task in background:
                task.cancel()
            finals = Counter()
            from tests.reliability._helpers import marker_of

            for message in s.messages.values():
                job = marker_of(message)
                if job is not None:
                    finals[job] += 1
            statuses = job_statuses(self.db, wanted)
            invalid = len(s.invalid_requests)
            acked_lost = self.acked_lost()
        delivered = {j for j in wanted if finals[j] or self.uploads[j]}
        duplicated = {j for j in wanted if finals[j] > 1 or self.uploads[j] > 1} | second_jobs(self.db, wanted)
        figures = {
            "users": self.args.users,
            "elapsed_s": round(elapsed, 1),
            "restarts": bot.starts - 1,
            "commands_sent": len(self.sent),
            "refused_or_retried_commands": len(self.sent) - len(wanted),
            "acked_unsaved_at_kills": len(self.acked_unsaved),
            "acked_then_no_job_30s_after_restart": self.lost_at_crash,
            "failed": sum(1 for st in statuses.values() if st == "failed"),
            "not_final_in_database": sum(1 for st in statuses.values() if st not in ("posted", "failed", "cancelled")),
            "requests_discord_would_refuse": invalid,
            "bot_exit_status": exit_status,
        }
        figures.update(
            {
                f"injected_{k.replace(' ', '_').replace('(', '').replace(')', '')}": v
                for k, v in sorted(self.injected.items())
            }
        )
        for reason, n in self.refusals.most_common():
            print(f"# refused {n}x: {reason}")
        figures.update(self.memory_figures())
        figures.update(
            {
                "submitted": len(wanted),
                "delivered": len(delivered),
                "duplicated": len(duplicated),
                "lost": len(wanted - delivered),
                "acked_lost": acked_lost,
            }
        )
        return figures

    async def kill(self, bot: Bot) -> None:
        """SIGKILL the bot while another process holds the database's write lock: the commands acknowledged
        meanwhile have no job row when the kill lands (only the journal knows them)."""
        conn = sqlite3.connect(self.db, isolation_level=None, timeout=30, check_same_thread=False)
        try:
            await asyncio.to_thread(conn.execute, "BEGIN EXCLUSIVE")
            await asyncio.sleep(self.args.hold_before_kill)
            self.killed_at = time.monotonic()
            await bot.kill()
            conn.rollback()
        finally:
            conn.close()
        settled = jobs_by_interaction(self.db) | self.answered_ids()
        self.acked_unsaved |= {ix.id for ix in self.sent if ix.acked and ix.id not in settled}

    def answered_ids(self) -> set[int]:
        """Interactions that got an answer of their own (an error or refusal through the interaction's webhook)."""
        by_token = {ix.token: ix.id for ix in self.sent}
        return {
            by_token[r.params["webhook_token"]]
            for r in self.standin.requests
            if r.route
            and r.route.startswith("/webhooks/")
            and r.status in (200, 204)
            and r.params.get("webhook_token") in by_token
        }

    def acked_lost(self) -> int:
        """Commands acknowledged (deferred) that never got a job nor any answer."""
        settled = jobs_by_interaction(self.db) | self.answered_ids()
        return sum(1 for ix in self.sent if ix.acked and ix.id not in settled)

    def memory_figures(self) -> dict[str, float]:
        if not self.memory:
            return {"peak_rss_mb": 0.0, "rss_growth_mb_after_warmup": 0.0}
        peak = max(rss for _, _, rss in self.memory)
        growth = 0.0
        for start in {n for n, _, _ in self.memory}:
            samples = [(d, rss) for n, d, rss in self.memory if n == start]
            first = samples[0][0]
            warm = [rss for d, rss in samples if d - first >= WARMUP_JOBS]
            if len(warm) >= 10:
                # median of the first and last tenth of the warmed-up samples (RSS jitters by a few MB)
                k = max(1, len(warm) // 10)
                growth = max(growth, sorted(warm[-k:])[k // 2] - sorted(warm[:k])[k // 2])
        return {"peak_rss_mb": round(peak, 1), "rss_growth_mb_after_warmup": round(growth, 1)}


def lock_database(path: Path, seconds: float) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        time.sleep(seconds)
        conn.rollback()
    finally:
        conn.close()


def second_jobs(db: Path, ids: set[int]) -> set[int]:
    """Jobs made for a command that already had a job (the command ran twice)."""
    with sqlite3.connect(db, timeout=30) as conn:
        rows = conn.execute("SELECT id, interaction_id FROM jobs WHERE interaction_id IS NOT NULL ORDER BY id")
        seen: set[int] = set()
        extra = set()
        for job, ix in rows:
            if ix in seen and job in ids:
                extra.add(job)
            seen.add(ix)
        return extra


def jobs_by_interaction(db: Path) -> set[int]:
    with sqlite3.connect(db, timeout=30) as conn:
        return {ix for (ix,) in conn.execute("SELECT interaction_id FROM jobs WHERE interaction_id IS NOT NULL")}


def job_for_interaction(db: Path, interaction_id: int) -> int | None:
    with contextlib.suppress(sqlite3.Error), sqlite3.connect(db, timeout=30) as conn:
        row = conn.execute("SELECT id FROM jobs WHERE interaction_id = ?", (interaction_id,)).fetchone()
        return row[0] if row else None
    return None


def jobs_for_interactions(db: Path, interactions: set[int]) -> set[int]:
    """Every job made for one of these commands, including commands a user gave up on (the bot was away and
    got them later) and so never heard of."""
    with sqlite3.connect(db, timeout=30) as conn:
        return {i for i, ix in conn.execute("SELECT id, interaction_id FROM jobs") if ix in interactions}


def job_statuses(db: Path, ids: set[int]) -> dict[int, str]:
    with sqlite3.connect(db, timeout=30) as conn:
        return {i: st for i, st in conn.execute("SELECT id, status FROM jobs") if i in ids}


def active_jobs(db: Path, ids: set[int]) -> list[int]:
    return [i for i, st in job_statuses(db, ids).items() if st in ("queued", "running", "done")]


def main() -> None:
    parser = arguments(__doc__, jobs=1000, users=100)
    parser.add_argument(
        "--kills", type=int, default=3, help="SIGKILLs of the bot at random instants (each then restarted)"
    )
    parser.add_argument(
        "--hold-before-kill",
        type=float,
        default=3.0,
        help="seconds another process holds the "
        "database's write lock before each kill (commands acknowledged meanwhile are not saved)",
    )
    parser.add_argument(
        "--isolation", choices=["process", "thread"], default="process", help="[engine] isolation of the bot under test"
    )
    parser.add_argument("--oom-rate", type=float, default=0.02)
    parser.add_argument(
        "--rest-fault-every", type=int, default=25, help="REST requests per injected fault (on average)"
    )
    parser.add_argument("--settle", type=float, default=300.0, help="seconds to wait for the last jobs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--verbose", action="store_true", help="progress lines on stderr every 10 s")
    parser.add_argument("--serve", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        sys.exit(serve(args.serve, args.oom_rate, args.seed))
    root = Path(tempfile.mkdtemp(prefix="sdbot-soak-"))
    figures = asyncio.run(Soak(args, root).run())
    print(f"# soak files (logs, database): {root}")
    print_figures(figures, digits=None)


if __name__ == "__main__":
    main()
