"""Commands a killed process acknowledged but never saved, replayed at the next start: the "thinking…" message
becomes the result while its token lives, the channel gets it with a mention after that, a command that cannot
run any more says so in the same place, and one that became a job before the kill is not run twice."""

from __future__ import annotations

import time

import aiohttp

from bot.config import load_config
from bot.store.journal import Ack, Journal
from tests.bot.exts.helpers import job_id_of
from tests.bot.harness import FAST, running_bot

DEFERRED = 5  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: "thinking…"


async def acknowledged_before_a_kill(h, options: dict, *, age_s: float = 0.0, payload: dict | None = None):
    """An /imagine the stopped bot had deferred and journaled, but not saved as a job; its stand-in handle."""
    s = h.standin
    ix = s.register_interaction(s.slash("imagine", options))
    async with aiohttp.ClientSession() as http:
        url = f"{s.api_base_url}/interactions/{ix.id}/{ix.token}/callback"
        async with http.post(url, json={"type": DEFERRED}) as response:
            assert response.status in (200, 204), await response.text()
    journal = Journal(load_config(h.config_path).journal_path)
    try:
        journal.append(
            Ack(
                ix.id,
                int(ix.payload["application_id"]),
                ix.token,
                s.user.id,
                s.guild.id,
                s.channel.id,
                payload if payload is not None else {"typed": options, "presets": []},
                created_at=time.time() - age_s,
            )
        )
    finally:
        journal.close()
    return ix


async def test_a_command_cut_off_by_a_kill_becomes_its_result_in_place(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15) as h:
        await h.stop()
        ix = await acknowledged_before_a_kill(h, {"prompt": f"a cat {FAST}"})
        await h.start()
        message = await ix.wait_original_message(lambda m: m.get("attachments"), timeout=60)
        assert "a cat" in message["embeds"][0]["description"]
        job_id = job_id_of(message)
        assert await h.services.jobs.interactions_with_jobs([ix.id]) == {ix.id}
        await h.stop()
        await h.start()  # replayed once: the entry was settled, so this start finds nothing to run
        assert (await h.services.jobs.last_for(h.standin.user.id)).id == job_id
        h.standin.assert_no_invalid_requests()


async def test_after_the_token_expired_the_result_goes_to_the_channel_with_a_mention(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15) as h:
        await h.stop()
        s = h.standin
        await acknowledged_before_a_kill(h, {"prompt": f"a dog {FAST}"}, age_s=3600)
        await h.start()
        posted = await s.wait_for(
            lambda r: r.method == "POST" and r.route == "/channels/{channel_id}/messages" and r.files, timeout=60
        )
        assert f"<@{s.user.id}>" in posted.json["content"]
        assert [str(u) for u in posted.json["allowed_mentions"]["users"]] == [str(s.user.id)]


async def test_a_command_that_cannot_run_any_more_says_so_in_place(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15) as h:
        await h.stop()
        ix = await acknowledged_before_a_kill(
            h, {"prompt": "a cat"}, payload={"typed": {"prompt": "a cat"}, "presets": ["deleted-meanwhile"]}
        )
        await h.start()
        told = await ix.wait_original_message(lambda m: "restarted" in m.get("content", ""), timeout=30)
        assert told["content"].startswith("⚠️ your command could not be run after the bot restarted: ")
        assert "deleted-meanwhile" in told["content"]


async def test_a_command_that_became_a_job_before_the_kill_is_not_run_again(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        first = await s.send_interaction(s.slash("imagine", {"prompt": f"a cat {FAST}"}))
        done = await first.wait_original_message(lambda m: m.get("attachments"), timeout=60)
        job_id = job_id_of(done)
        await h.stop()
        journal = Journal(load_config(h.config_path).journal_path)
        try:  # the kill came after the job's commit, before the entry was settled
            journal.append(
                Ack(
                    first.id,
                    int(first.payload["application_id"]),
                    first.token,
                    s.user.id,
                    s.guild.id,
                    s.channel.id,
                    {"typed": {"prompt": f"a cat {FAST}"}, "presets": []},
                )
            )
        finally:
            journal.close()
        await h.start()
        assert (await h.services.jobs.last_for(s.user.id)).id == job_id  # no second job
        journal = Journal(load_config(h.config_path).journal_path)
        try:
            assert journal.pending() == []  # settled all the same
        finally:
            journal.close()
