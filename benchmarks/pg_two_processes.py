"""Two bot processes writing to one PostgreSQL at once: presets and jobs, with nothing lost and nothing doubled.

Each process is what a bot process does to the database, through the store's own functions and `transaction()`
(the bot's unit of work, retried when PostgreSQL reports a serialization failure or a deadlock), with `--tasks`
asyncio tasks at once, as interactions are:

    presets   every task saves its own presets, both processes bump one shared preset's seed (read-modify-write
              under `SELECT ... FOR UPDATE`) and both try to give one user twice the limit of 20 presets
    jobs      every task submits jobs; then both processes race to start every job of the other (queued -> running)

At the end the rows are counted: every save is there once, the shared counter counts every bump, the user at the
limit has exactly 20 presets, every job exists once, and every job was started by exactly one of the processes.

Run: .venv/bin/python benchmarks/pg_two_processes.py [--url postgresql+asyncpg://...] [--tasks 25] [--rounds 8]
Without --url (or SDBOT_TEST_PG_URL) it starts a throwaway server as the tests do (tests/postgres.py).
Prints `name: value` lines last; exits 1 when a row was lost or doubled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._common import arguments, print_figures  # noqa: E402

COUNTER_USER, LIMIT_USER, LIMIT = 1, 2, 20
PROCESSES = 2


async def worker(url: str, index: int, tasks: int, rounds: int) -> dict[str, float]:
    """One "bot process": its own engine and connection pool, `tasks` concurrent units of work."""
    from bot.store import db, jobs, presets
    from bot.store.errors import IllegalTransition, PresetLimit

    engine = db.make_engine(url)
    sessions = db.make_sessions(engine)

    async def bump(s) -> None:
        preset = await presets.get(s, COUNTER_USER, "counter", for_update=True)
        await presets.save(s, COUNTER_USER, "counter", {"seed": preset.options["seed"] + 1})

    async def preset_task(t: int) -> int:
        user = 1000 + index * tasks + t
        for r in range(rounds):
            await db.transaction(sessions, presets.save, user, f"p{r}", {"steps": r + 1})
            await db.transaction(sessions, bump)
        created = 0
        for k in range(t, LIMIT, tasks):  # each process tries LIMIT new names, so twice the limit in all
            try:
                await db.transaction(sessions, presets.save, LIMIT_USER, f"x{index}-{k}", {"steps": 2}, limit=LIMIT)
                created += 1
            except PresetLimit:
                pass
        return created

    async def job_task(t: int) -> list[int]:
        ids = []
        for r in range(rounds):
            job = await db.transaction(
                sessions,
                jobs.create,
                user_id=5000 + index * tasks + t,
                request={"prompt": f"process {index} task {t} round {r}"},
                guild_id=index,
            )
            ids.append(job.id)
        return ids

    start = time.perf_counter()
    created = sum(await asyncio.gather(*(preset_task(t) for t in range(tasks))))
    preset_s = time.perf_counter() - start

    start = time.perf_counter()
    made = [i for ids in await asyncio.gather(*(job_task(t) for t in range(tasks))) for i in ids]
    jobs_s = time.perf_counter() - start

    async def claim(job_id: int) -> bool:
        try:
            await db.transaction(sessions, jobs.transition, job_id, "running")
        except IllegalTransition:
            return False
        return True

    async with sessions.begin() as s:  # every queued job, the other process's included
        queued = [j.id for j in (await jobs.unfinished(s)).rerun]
    start = time.perf_counter()
    won: list[int] = []
    for chunk in range(0, len(queued), tasks):
        part = queued[chunk : chunk + tasks]
        won += [i for i, ok in zip(part, await asyncio.gather(*(claim(i) for i in part))) if ok]
    claim_s = time.perf_counter() - start
    await engine.dispose()
    return {
        "limit_created": created,
        "preset_s": preset_s,
        "jobs_made": made,
        "jobs_s": jobs_s,
        "won": won,
        "claim_s": claim_s,
    }


async def prepare(url: str) -> None:
    from bot.store import db, migrate, presets
    from tests.postgres import wiped

    engine = await wiped(url)
    await migrate.upgrade(engine)
    async with db.make_sessions(engine).begin() as s:
        await presets.save(s, COUNTER_USER, "counter", {"seed": 1})
    await engine.dispose()


async def count(url: str) -> dict[str, int]:
    from sqlalchemy import text

    from bot.store import db, presets

    engine = db.make_engine(url)
    async with db.make_sessions(engine).begin() as s:
        counter = (await presets.get(s, COUNTER_USER, "counter")).options["seed"]
        at_limit = await presets.count(s, LIMIT_USER)
        saved = (await s.execute(text("SELECT count(*) FROM presets WHERE user_id >= 1000"))).scalar_one()
        job_rows = (await s.execute(text("SELECT count(*) FROM jobs"))).scalar_one()
        running = (await s.execute(text("SELECT count(*) FROM jobs WHERE status = 'running'"))).scalar_one()
    await engine.dispose()
    return {"counter": counter, "at_limit": at_limit, "saved": saved, "job_rows": job_rows, "running": running}


def main() -> int:
    parser = arguments(
        __doc__,
        url="",
        tasks=(25, "concurrent units of work in each process"),
        rounds=(8, "presets and jobs each task writes"),
    )
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(asyncio.run(worker(args.url, args.worker, args.tasks, args.rounds))))
        return 0

    from tests import postgres

    url = args.url or postgres.start()
    asyncio.run(prepare(url))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                str(i),
                "--url",
                url,
                "--tasks",
                str(args.tasks),
                "--rounds",
                str(args.rounds),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(PROCESSES)
    ]
    outputs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        print("a worker process failed", file=sys.stderr)
        return 1
    results = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    rows = asyncio.run(count(url))

    bumps = PROCESSES * args.tasks * args.rounds
    made = [i for r in results for i in r["jobs_made"]]
    won = [i for r in results for i in r["won"]]
    figures = {
        "processes": PROCESSES,
        "tasks_per_process": args.tasks,
        "preset_writes_per_s": round(2 * bumps / max(r["preset_s"] for r in results), 1),
        "jobs_created_per_s": round(len(made) / max(r["jobs_s"] for r in results), 1),
        "job_starts_per_s": round(len(made) / max(r["claim_s"] for r in results), 1),
        "presets_lost": max(0, bumps - rows["saved"]),
        "presets_doubled": max(0, rows["saved"] - bumps),
        "counter_lost_updates": (1 + bumps) - rows["counter"],
        "limit_user_presets": f"{rows['at_limit']} (limit {LIMIT})",
        "jobs_lost": max(0, len(made) - rows["job_rows"]),
        "jobs_doubled": max(0, rows["job_rows"] - len(made)) + (len(made) - len(set(made))),
        "jobs_started_twice": len(won) - len(set(won)),
        "jobs_never_started": len(set(made) - set(won)),
    }
    print_figures(figures, digits=None)
    bad = (
        figures["presets_lost"]
        or figures["presets_doubled"]
        or figures["counter_lost_updates"]
        or rows["at_limit"] != LIMIT
        or figures["jobs_lost"]
        or figures["jobs_doubled"]
        or figures["jobs_started_twice"]
        or figures["jobs_never_started"]
        or rows["running"] != len(made)
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
