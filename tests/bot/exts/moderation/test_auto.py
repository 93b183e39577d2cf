"""`auto` moderation end to end: the real bot with a tiny image classifier (a ViT whose every image scores the
same, known `nsfw` value) against the Discord stand-in. Under `flag_above` images are posted, between the
thresholds they wait in the review queue (spoilered, with their score), above `block_above` they are refused and
kept for moderators; age-restricted channels use the guild's own thresholds; a held image survives a restart;
nothing is posted before the score is known."""

from __future__ import annotations

import contextlib
import shutil
from typing import Any

import pytest

from bot.store import jobs as job_store
from bot.store import moderation as mod_store
from bot.store.db import transaction
from engine.tiny.classifier import logit, write_tiny_classifier
from tests.bot.exts.helpers import ephemeral_text
from tests.bot.exts.moderation.test_cog import _owner, press, review_message, setup_guild
from tests.bot.harness import FAST, RunningBot, write_config
from tests.discord_standin import DiscordStandIn, StandInGuild, StandInUser
from tests.discord_standin.payloads import StandInChannel, StandInRole

HELD = "waits for a moderator"


@contextlib.asynccontextmanager
async def auto_bot(tmp_path, tiny_sd15, score: float, **moderation: Any):
    """The moderation test guild plus an age-restricted channel, and a classifier scoring every image `score`."""
    models = tmp_path / "models"
    if not models.exists():
        models.mkdir()
        shutil.copytree(tiny_sd15, models / "tiny-sd15")
    classifier = write_tiny_classifier(tmp_path / "classifier", nsfw_logit=logit(score))
    mods = StandInRole("mods")
    alice = StandInUser("alice")
    guild = StandInGuild(
        channels=[StandInChannel("general"), StandInChannel("review"), StandInChannel("after-dark", nsfw=True)],
        roles=[mods],
        members=[StandInUser("tester"), alice],
        member_roles={alice.id: [mods.id]},
    )
    settings = {"image_classifier": str(classifier), "flag_above": 0.5, "block_above": 0.9, **moderation}
    async with DiscordStandIn([guild]) as standin:
        running = RunningBot(standin, write_config(tmp_path, models, standin, moderation=settings))
        await running.start()
        running.roles = {"mods": mods}
        try:
            await setup_guild(running, mode="auto")
            yield running
        finally:
            await running.stop()


async def imagine(s, prompt: str, channel: str = "general"):
    return await s.send_interaction(
        s.slash("imagine", {"prompt": f"{prompt} {FAST}"}, channel=s.guild.channel(channel))
    )


async def last_job(h):
    return (await transaction(h.services.sessions, job_store.list_for_user, h.standin.user.id, None))[0]


def attachments_in(s, channel: str) -> list[dict]:
    return [a for m in s.messages_in(s.guild.channel(channel)) for a in m.get("attachments") or []]


@pytest.mark.parametrize("score, outcome", [(0.02, "posted"), (0.73, "held"), (0.98, "blocked")])
async def test_auto_mode_posts_holds_and_blocks_at_the_thresholds(tmp_path, tiny_sd15, score, outcome):
    async with auto_bot(tmp_path, tiny_sd15, score) as h:
        s = h.standin
        since = s.mark()
        ix = await imagine(s, "a lighthouse")
        if outcome == "posted":
            posted = await ix.wait_original_message(lambda m: m.get("attachments"), timeout=30)
            assert not posted["attachments"][0]["filename"].startswith("SPOILER_")
            assert (await last_job(h)).image_scores[0]["nsfw"] == pytest.approx(score, abs=1e-4)
            assert not s.messages_in(s.guild.channel("review"))
            s.assert_no_invalid_requests()
            return
        want = HELD if outcome == "held" else "were not posted"
        notice = await ix.wait_original_message(lambda m: want in m.get("content", ""), timeout=30)
        review = await review_message(s, since)
        embed = review["embeds"][0]
        fields = {f["name"]: f["value"] for f in embed["fields"]}
        limit = "0.50" if outcome == "held" else "0.90"
        assert fields["Held because"] == f"{outcome} by the image classifier: nsfw {score:.2f}, above {limit}"
        assert fields["Image classifier"] == f"image 1: nsfw {score:.2f} · normal {1 - score:.2f}"
        assert review["attachments"] and all(a["filename"].startswith("SPOILER_") for a in review["attachments"])
        assert not attachments_in(s, "general")  # nothing reached the channel
        job = await last_job(h)
        assert job.status == "done"
        if outcome == "blocked":
            assert notice["content"] == (
                f"🚫 Job #{job.id}'s images were not posted (blocked by the image "
                f"classifier: nsfw {score:.2f}, above 0.90); moderators can still review "
                "them"
            )
            queue = await s.send_interaction(s.slash("mod queue", user="alice"))
            assert "1 waiting for review" in await ephemeral_text(queue)
        # The moderators decide as in every mode: approved, the images are posted publicly; audited.
        assert "approved review" in await ephemeral_text(await press(s, review, "approve", "alice"))
        posted = await ix.wait_original_message(lambda m: m.get("attachments"), timeout=30)
        assert not posted["attachments"][0]["filename"].startswith("SPOILER_")
        [entry] = await transaction(h.services.sessions, mod_store.audit_log, s.guild.id, action="approve")
        assert entry.job_id == job.id and entry.actor_id == s.guild.member("alice").id
        s.assert_no_invalid_requests()


async def test_age_restricted_channels_use_their_own_thresholds(tmp_path, tiny_sd15):
    async with auto_bot(tmp_path, tiny_sd15, 0.73) as h:
        s = h.standin
        # No thresholds of its own yet: an age-restricted channel holds like any other.
        ix = await imagine(s, "a beach", channel="after-dark")
        await ix.wait_original_message(lambda m: HELD in m.get("content", ""), timeout=30)
        bad = await s.send_interaction(s.slash("config moderation", {"nsfw_channels": "0.9 0.8"}, user="guild-owner"))
        await bad.wait_callback()
        assert "must not be above the block score" in bad.callbacks[0].json["data"]["content"]
        config = await s.send_interaction(
            s.slash("config moderation", {"nsfw_channels": "0.8 0.95"}, user="guild-owner")
        )
        assert "held above 0.80, refused above 0.95" in await ephemeral_text(config)
        ix = await imagine(s, "a beach at night", channel="after-dark")
        await ix.wait_original_message(lambda m: m.get("attachments"), timeout=30)
        ix = await imagine(s, "a beach at noon")  # other channels keep the bot's thresholds
        await ix.wait_original_message(lambda m: HELD in m.get("content", ""), timeout=30)
        config = await s.send_interaction(
            s.slash("config moderation", {"nsfw_channels": "0.4 0.6"}, user="guild-owner")
        )
        await ephemeral_text(config)
        ix = await imagine(s, "a beach at dawn", channel="after-dark")
        await ix.wait_original_message(lambda m: "were not posted" in m.get("content", ""), timeout=30)
        settings = await h.services.moderation.settings(s.guild.id)
        assert (settings.nsfw_flag_above, settings.nsfw_block_above) == (0.4, 0.6)
        assert len(attachments_in(s, "after-dark")) == 1 and not attachments_in(s, "general")
        s.assert_no_invalid_requests()


async def test_a_held_image_survives_a_restart_in_the_queue(tmp_path, tiny_sd15):
    async with auto_bot(tmp_path, tiny_sd15, 0.73) as h:
        s = h.standin
        since = s.mark()
        ix = await imagine(s, "a windmill")
        await ix.wait_original_message(lambda m: HELD in m.get("content", ""), timeout=30)
        review = await review_message(s, since)
        job = await last_job(h)
        files = h.services.jobs.files_of(job)
        await h.restart()
        # Still held after the restart (the scores were saved with the files): not posted, still in the queue.
        assert (await last_job(h)).status == "done" and all(f.exists() for f in files)
        queue = await s.send_interaction(s.slash("mod queue", user="alice"))
        assert "1 waiting for review" in await ephemeral_text(queue)
        assert not attachments_in(s, "general")
        approve = await press(s, review, "approve", "alice")
        assert "approved review" in await ephemeral_text(approve)
        posted = await s.wait_for(
            lambda r: (
                r.method == "POST"
                and r.route == "/channels/{channel_id}/messages"
                and bool(r.files)
                and int(r.params["channel_id"]) == s.channel.id
            ),
            timeout=30,
        )
        assert posted.json["content"].startswith(f"<@{s.user.id}>")
        s.assert_no_invalid_requests()


async def test_nothing_is_posted_before_the_score_is_known(tmp_path, tiny_sd15):
    """No previews in auto mode (they would show the picture unscored), and an image the classifier could not
    score waits for a human."""
    async with auto_bot(tmp_path, tiny_sd15, 0.02) as h:
        s = h.standin
        await h.services.moderation.configure(_owner(h), previews=True)
        classifier = h.services.worker.engine.scorer.load()

        def broken(images):
            raise RuntimeError("the classifier fell over")

        classifier.score = broken
        since = s.mark()
        ix = await s.send_interaction(s.slash("imagine", {"prompt": "a cat --size 64x64 --steps 12"}))
        await ix.wait_original_message(lambda m: HELD in m.get("content", ""), timeout=60)
        review = await review_message(s, since)
        fields = {f["name"]: f["value"] for f in review["embeds"][0]["fields"]}
        assert fields["Held because"] == "the image classifier gave no score, so a moderator looks instead"
        assert (await last_job(h)).image_scores is None
        edits = s.find_requests(lambda r: r.method == "PATCH" and r.route.startswith("/webhooks/"))
        assert edits and not any(r.files for r in edits)  # progress without a single preview image
        assert not attachments_in(s, "general")
        s.assert_no_invalid_requests()


async def test_auto_mode_needs_a_classifier(tmp_path, tiny_sd15):
    from tests.bot.exts.moderation.test_cog import mod_bot

    async with mod_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        ix = await s.send_interaction(s.slash("config moderation", {"mode": "auto"}, user="guild-owner"))
        assert "`auto` mode needs an image classifier" in await ephemeral_text(ix)
        assert (await h.services.moderation.settings(s.guild.id)).moderation_mode == "off"
