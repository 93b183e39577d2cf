"""Two `sdbot run` processes, each running half the shards, sharing one real PostgreSQL: no job lost or doubled.

Process 0 runs shard 0 of 2 and process 1 shard 1, each with its own outputs folder and engine; the stand-in
sends each guild's events only to the process holding its shard. Both get a job rendering and one queued, then
both are killed (SIGKILL) and started again at the same moment: each must pick up its own guild's two jobs and
only those (a process taking the other's jobs would render and post them a second time), and every job is
delivered exactly once.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from bot.store import migrate
from tests.bot.harness import write_config
from tests.bot.test_sharding import guild_on
from tests.discord_standin import DiscordStandIn
from tests.postgres import wiped
from tests.reliability._helpers import (
    DISCORD,
    ENGINE,
    FAST,
    assert_delivered_once,
    job_id_in,
    settled,
)
from tests.reliability.test_crash_restart import BotProcess

SLOW = "--size 256x256 --steps 30"  # seconds on one CPU thread: still rendering at the kill


def job_edit(r) -> bool:
    return r.method == "PATCH" and "Job #" in (r.json or {}).get("content", "")


async def test_two_processes_each_half_the_shards_on_one_postgresql(tmp_path, models_dir, pg_server_url):
    engine = await wiped(pg_server_url)
    await migrate.upgrade(engine)
    guilds = [guild_on(0, 2, "even"), guild_on(1, 2, "odd")]
    async with DiscordStandIn(guilds, shards=2) as s:
        configs = []
        for shard in (0, 1):
            root = tmp_path / f"shard{shard}"
            root.mkdir()
            configs.append(
                write_config(
                    root,
                    models_dir,
                    s,
                    engine=ENGINE,
                    database={"url": pg_server_url},
                    discord={**DISCORD, "shards": 2, "shard_ids": [shard], "guild_ids": [g.id for g in guilds]},
                )
            )
        first = [BotProcess(c, s, "first") for c in configs]
        second = [BotProcess(c, s, "second") for c in configs]
        try:
            await asyncio.gather(*(p.start() for p in first))
            users = [guild.members[0] for guild in guilds]
            slow = [
                await s.send_interaction(s.slash("imagine", {"prompt": f"slow {SLOW}"}, guild=guild, user=user))
                for guild, user in zip(guilds, users)
            ]
            running = [
                await ix.wait_for(lambda r: job_edit(r) and "/30" in r.json["content"], timeout=120) for ix in slow
            ]
            queued = [
                await s.send_interaction(s.slash("imagine", {"prompt": f"queued {FAST}"}, guild=guild, user=user))
                for guild, user in zip(guilds, users)
            ]
            waiting = [await ix.wait_for(job_edit, timeout=30) for ix in queued]
            jobs = {
                shard: [job_id_in(running[shard].json["content"]), job_id_in(waiting[shard].json["content"])]
                for shard in (0, 1)
            }
            for process in first:
                await process.kill()

            restart = s.mark()
            await asyncio.gather(*(p.start() for p in second))
            for process in second:
                await process.wait_log("recovered", 60)
                assert "recovered 2 jobs to re-run and 0 to post" in process.text(), process.text()[-2000:]
            every = jobs[0] + jobs[1]

            async def posted() -> bool:
                async with engine.connect() as conn:
                    rows = (await conn.execute(text("SELECT status FROM jobs"))).scalars().all()
                return len(rows) == len(every) and all(status == "posted" for status in rows)

            await settled(s, posted, 240, "every job delivered and recorded as posted", since=restart)
            for job_id in every:
                message = assert_delivered_once(s, job_id)
                shard = 0 if job_id in jobs[0] else 1
                assert message["channel_id"] == str(guilds[shard].text_channels[0].id)
            async with engine.connect() as conn:
                rows = (await conn.execute(text("SELECT id, status FROM jobs ORDER BY id"))).all()
            assert [tuple(r) for r in rows] == [(j, "posted") for j in sorted(every)]
        finally:
            for process in first + second:
                await process.kill()
            await engine.dispose()
