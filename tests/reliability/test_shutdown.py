"""A graceful stop (what SIGTERM does in `sdbot run`), in process: the running job finishes and is posted
within the shutdown timeout, commands during the stop hear "restarting", the queued job stays queued and runs,
once, after the restart. (The real process, its exit status and a timeout that cuts a render short are in
test_crash_restart.py.)"""

from __future__ import annotations

import asyncio
import sqlite3

from bot.services.jobs import RESTARTING
from tests.bot.harness import running_bot
from tests.reliability._helpers import DISCORD, ENGINE, FAST, assert_delivered_once, marker_of, recovered, wait_until


async def test_a_graceful_stop_finishes_the_running_job_and_keeps_the_queue(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15, engine=ENGINE, discord={**DISCORD, "shutdown_timeout_s": 60}) as h:
        s = h.standin
        db = h.config_path.parent / "sdbot.db"
        await recovered(h)
        running = await s.send_interaction(s.slash("imagine", {"prompt": "a cat --size 192x192 --steps 20"}))
        await running.wait_for(
            lambda r: r.method == "PATCH" and "rendering: " in (r.json or {}).get("content", ""), timeout=30
        )
        queued = await s.send_interaction(s.slash("imagine", {"prompt": f"a dog {FAST}"}, user="alice"))
        await queued.wait_for(
            lambda r: r.method == "PATCH" and "queued" in (r.json or {}).get("content", ""), timeout=30
        )
        stopping = asyncio.create_task(h.stop())
        await wait_until(lambda: h.services.jobs._stopping, 10, "the stop to begin")
        late = await s.send_interaction(s.slash("imagine", {"prompt": f"a bird {FAST}"}))
        followup = await late.wait_for(lambda r: r.method == "POST" and r.route.startswith("/webhooks/"), timeout=10)
        assert RESTARTING in followup.json["content"] and followup.json["flags"] & 64
        await stopping
        finished = running.original_message
        assert finished["attachments"], finished  # finished and posted before the bot went away
        first = marker_of(finished)
        with sqlite3.connect(db) as conn:
            rows = dict(conn.execute("SELECT id, status FROM jobs"))
        assert rows[first] == "posted" and sorted(rows.values()) == ["posted", "queued"]
        second = next(j for j, status in rows.items() if status == "queued")
        assert "will resume" in queued.original_message["content"]  # told before the bot went away

        await h.start()  # the next run picks the queued job up
        await wait_until(lambda: final_of(s, second), 60, "the queued job after the restart")
        assert_delivered_once(s, first)
        assert "resumed after a restart" in assert_delivered_once(s, second)["content"]
        s.assert_no_invalid_requests()


def final_of(s, job_id: int):
    return [m for m in s.messages.values() if marker_of(m) == job_id]
