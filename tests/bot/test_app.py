"""Start-up: the command tree is pushed to Discord only when it changed (or on `sdbot sync`), and what a previous
run left is recovered in `setup_hook`, before the gateway connects and any command can arrive."""

from __future__ import annotations

from bot.app import SdBot, command_hash_path, sync_commands
from bot.config import load_config
from bot.store import jobs as job_store
from bot.store.db import transaction
from engine.request import GenerationRequest
from tests.bot.harness import running_bot


def syncs(standin) -> list:
    return [r for r in standin.requests if r.method == "PUT" and (r.route or "").endswith("/commands")]


async def test_commands_are_synced_when_the_tree_changed_or_when_asked(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15) as h:
        assert len(syncs(h.standin)) == 1  # a first start: nothing was ever synced
        names = {c["name"] for c in h.standin.registered_commands(h.standin.guild)}
        assert {"imagine", "preset", "queue", "mod", "config"} <= names
        await h.restart()
        assert len(syncs(h.standin)) == 1  # the same tree: nothing pushed
        command_hash_path(h.bot.config).write_text("a tree of an older version\n")
        await h.restart()
        assert len(syncs(h.standin)) == 2
        await sync_commands(load_config(h.config_path), h.standin.token)  # `sdbot sync`: whatever the hash says
        assert len(syncs(h.standin)) == 3


async def test_jobs_a_previous_run_left_are_recovered_before_the_gateway_connects(tmp_path, tiny_sd15, monkeypatch):
    async with running_bot(tmp_path, tiny_sd15) as h:
        await h.stop()
        request = GenerationRequest(prompt="a cat", width=64, height=64, steps=2)
        job = await transaction(
            h.services.sessions,
            job_store.create,
            user_id=h.standin.guild.members[0].id,
            request=request,
            guild_id=h.standin.guild.id,
            channel_id=h.standin.guild.channels[0].id,
        )
        order: list[str] = []
        original = SdBot.recover

        async def recover(bot) -> None:
            order.append("recover")
            await original(bot)

        async def connected(bot) -> None:
            order.append("ready")

        monkeypatch.setattr(SdBot, "recover", recover)
        monkeypatch.setattr(SdBot, "on_ready", connected)
        await h.start()
        assert order[:2] == ["recover", "ready"] and h.bot.recovered == (1, 0)
        assert (await h.services.jobs.get(job.id)).status in ("queued", "running", "done", "posted")
