"""Delivery in a busy channel: finals never wait behind progress, the defaults serve 50 members at
once, a member's quick prompts are all queued, and servers take turns in the queue."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import threading

import torch

from tests.bot.exts.helpers import with_images
from tests.bot.harness import FAST, RunningBot, write_config
from tests.discord_standin import DiscordStandIn, Routes, StandInGuild, StandInUser

PLACE = re.compile(r"queued: (?:next up|position (\d+))")


async def start_bot(tmp_path, tiny_sd15, standin: DiscordStandIn, **config) -> RunningBot:
    models = tmp_path / "models"
    shutil.copytree(tiny_sd15, models / "tiny-sd15")
    return await RunningBot(standin, write_config(tmp_path, models, standin, **config)).start()


def finals(standin: DiscordStandIn) -> list:
    return [r for r in standin.requests if r.key == Routes.EDIT_ORIGINAL and r.files and r.status == 200]


def status_edits(handle) -> list:
    """The edits of an interaction's message before its final: its place in the queue, then progress."""
    return [r for r in handle.requests if r.key == Routes.EDIT_ORIGINAL and not r.files and r.json]


def place(content: str) -> int | None:
    m = PLACE.search(content)
    return None if m is None else int(m.group(1) or 1)


async def test_a_final_is_not_delayed_by_a_storm_of_progress_edits(tmp_path, tiny_sd15):
    """One progress edit per hour in the channel, and four jobs making progress at every step: the channel's
    slot is taken at once, every later progress edit waits for the next one, and the finals go out regardless
    (had they waited for a slot, they would come in an hour: however slow the machine, the test tells)."""
    members = [StandInUser(f"m{i}") for i in range(4)]
    async with DiscordStandIn([StandInGuild(members=list(members))]) as standin:
        running = await start_bot(
            tmp_path, tiny_sd15, standin, engine={"threads": 1}, discord={"edits_per_channel": 1, "edit_period_s": 60.0}
        )
        running.bot.progress.channel(standin.channel.id).period_s = 3600.0  # beyond what the config allows
        try:
            handles = await asyncio.gather(
                *(
                    standin.send_interaction(
                        standin.slash("imagine", {"prompt": f"a cat --size 64x64 --steps 6 --seed {i}"}, user=m)
                    )
                    for i, m in enumerate(members)
                )
            )
            messages = await asyncio.gather(
                *(h.wait_original_message(lambda m: m.get("attachments"), timeout=300) for h in handles)
            )
            assert all(m["attachments"] and m["components"] for m in messages)
            # Each job's first edit tells its place at once; what follows is progress, paced by the channel.
            assert all(place(status_edits(h)[0].json["content"]) for h in handles)
            storm = [r for h in handles for r in status_edits(h)[1:]]
            assert len(storm) <= 1, [r.json["content"] for r in storm]  # the pace held for progress
            assert len(finals(standin)) == 4
            standin.assert_no_invalid_requests()
        finally:
            await running.stop()


async def test_fifty_members_at_once_are_all_served_under_the_defaults(tmp_path, tiny_sd15):
    members = [StandInUser(f"member{i}") for i in range(50)]
    async with DiscordStandIn([StandInGuild(members=list(members))]) as standin:
        running = await start_bot(tmp_path, tiny_sd15, standin, defaults=True, engine={"threads": 1})
        try:
            handles = await asyncio.gather(
                *(
                    standin.send_interaction(standin.slash("imagine", {"prompt": f"a cat {FAST}"}, user=m))
                    for m in members
                )
            )
            messages = await asyncio.gather(
                *(h.wait_original_message(lambda m: m.get("attachments"), timeout=600) for h in handles)
            )
            assert len(messages) == 50 and all(m["components"] for m in messages)
            assert not [r for r in standin.requests if r.key == Routes.FOLLOWUP]  # no refusal sent to anyone
            # Each member was told a place in the queue, and the places were 1..50 (or fewer ahead as jobs ran).
            told = [place(status_edits(h)[0].json["content"]) for h in handles]
            assert all(told) and max(told) > 1, told
            standin.assert_no_invalid_requests()
        finally:
            await running.stop()


async def test_three_prompts_in_three_seconds_are_three_jobs(tmp_path, tiny_sd15):
    async with DiscordStandIn([StandInGuild(members=[StandInUser("quick")])]) as standin:
        running = await start_bot(tmp_path, tiny_sd15, standin, defaults=True, engine={"threads": 1})
        try:
            handles = []
            for i in range(3):
                handles.append(
                    await standin.send_interaction(standin.slash("imagine", {"prompt": f"a cat {FAST} --seed {i}"}))
                )
            messages = await asyncio.gather(
                *(h.wait_original_message(lambda m: m.get("attachments"), timeout=120) for h in handles)
            )
            assert len({m["id"] for m in messages}) == 3
            assert not [r for r in standin.requests if r.key == Routes.FOLLOWUP]
        finally:
            await running.stop()


async def test_two_servers_sharing_the_bot_alternate_in_the_queue(tmp_path, tiny_sd15):
    busy = StandInGuild("Busy", members=[StandInUser(f"b{i}") for i in range(4)])
    quiet = StandInGuild("Quiet", members=[StandInUser("q0"), StandInUser("q1")])
    async with DiscordStandIn([busy, quiet]) as standin:
        running = await start_bot(
            tmp_path, tiny_sd15, standin, engine={"threads": 1}, discord={"guild_ids": [busy.id, quiet.id]}
        )
        try:
            worker = running.services.worker
            hold = threading.Event()
            held = worker.call(lambda engine: hold.wait(60))  # the engine is busy: everything queues
            try:
                sent = [(busy, m) for m in busy.members if m.username.startswith("b")]
                sent += [(quiet, m) for m in quiet.members if m.username.startswith("q")]
                handles = []
                for guild, member in sent:  # the busy server's four first, then the quiet one's two
                    handles.append(
                        await standin.send_interaction(
                            standin.slash("imagine", {"prompt": f"a cat {FAST}"}, user=member, guild=guild)
                        )
                    )
                await asyncio.gather(
                    *(
                        h.wait_original_message(lambda m: "queued" in m.get("content", "").lower(), timeout=60)
                        for h in handles
                    )
                )
                groups = [p.group for p in worker.queued()]
                assert groups == [str(busy.id), str(quiet.id)] * 2 + [str(busy.id)] * 2, groups
            finally:
                hold.set()
                await held
            await asyncio.gather(
                *(h.wait_original_message(lambda m: m.get("attachments"), timeout=120) for h in handles)
            )
        finally:
            await running.stop()


async def test_the_default_checkpoint_is_loaded_at_start_and_the_time_logged(tmp_path, tiny_sd15, caplog):
    caplog.set_level(logging.INFO, logger="bot.runner")
    async with DiscordStandIn() as standin:
        running = await start_bot(tmp_path, tiny_sd15, standin)
        try:
            models = running.services.worker.engine.models
            assert models.disk_loads >= 1  # before any command
            assert any(
                re.fullmatch(r"default checkpoint tiny-sd15 and its VAE loaded in \d+\.\d\d s", r.getMessage())
                for r in caplog.records
            ), [r.getMessage() for r in caplog.records]
            loads = models.disk_loads
            ix = await standin.send_interaction(standin.slash("imagine", {"prompt": f"a cat {FAST}"}))
            await ix.wait_original_message(lambda m: m.get("attachments"), timeout=120)
            assert models.disk_loads == loads  # the first job found it loaded
        finally:
            await running.stop()


async def test_a_refused_embedding_in_the_prompt_is_noted_with_the_images(harness):
    """The engine's note on the render is kept with the job and shown under its images."""
    s = harness.standin
    embeddings = harness.services.config.models_dir / "embeddings"
    embeddings.mkdir(parents=True, exist_ok=True)
    torch.save({"emb": torch.zeros(1, 32)}, embeddings / "EasyNegative.pt")
    message = await with_images(s, s.slash("imagine", {"prompt": f"a cat, EasyNegative {FAST}"}))
    note = (
        "embedding EasyNegative was not used (its name stayed plain words): EasyNegative.pt is refused "
        "(pickle format; set [engine] allow_pickle = true to allow it)"
    )
    assert message["content"].splitlines()[1:] == [f"-# ⚠️ {note}"]
    job_id = int(re.search(r"Job #(\d+)", message["content"]).group(1))
    assert (await harness.services.jobs.get(job_id)).notes == [note]
    plain = await with_images(s, s.slash("imagine", {"prompt": f"a cat {FAST}"}))
    assert "-#" not in plain["content"]
    s.assert_no_invalid_requests()
