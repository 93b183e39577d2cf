"""Moderation end to end: the real bot against the Discord stand-in, in a guild with a review channel, a
moderator role ("alice"), a member with Manage Messages ("carol"), plain members ("tester", "bob") and the
owner ("guild-owner", every permission)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from typing import Any

from bot.store import jobs as job_store
from bot.store import moderation as mod_store
from bot.store.db import transaction
from tests.bot.exts.helpers import ephemeral_text
from tests.bot.harness import FAST, RunningBot, write_config
from tests.discord_standin import DiscordStandIn, StandInGuild, StandInUser
from tests.discord_standin.payloads import StandInChannel, StandInRole

MANAGE_GUILD, MANAGE_MESSAGES = 1 << 5, 1 << 13


@contextlib.asynccontextmanager
async def mod_bot(tmp_path, tiny_sd15, **moderation: Any):
    models = tmp_path / "models"
    if not models.exists():
        models.mkdir()
        shutil.copytree(tiny_sd15, models / "tiny-sd15")
    mods, helpers = StandInRole("mods"), StandInRole("helpers", permissions=MANAGE_MESSAGES)
    tester, alice, carol, bob = (StandInUser(n) for n in ("tester", "alice", "carol", "bob"))
    guild = StandInGuild(
        channels=[StandInChannel("general"), StandInChannel("review")],
        roles=[mods, helpers],
        members=[tester, alice, carol, bob],
        member_roles={alice.id: [mods.id], carol.id: [helpers.id]},
    )
    async with DiscordStandIn([guild]) as standin:
        running = RunningBot(standin, write_config(tmp_path, models, standin, moderation=moderation))
        await running.start()
        running.roles = {"mods": mods, "helpers": helpers}
        try:
            yield running
        finally:
            await running.stop()


@contextlib.asynccontextmanager
async def moderated(tmp_path, tiny_sd15, mode: str):
    """`mod_bot` in a guild whose moderation is set to `mode`: yields (the running bot, the stand-in)."""
    async with mod_bot(tmp_path, tiny_sd15) as h:
        await setup_guild(h, mode=mode)
        yield h, h.standin


async def setup_guild(h, **changes: Any) -> None:
    """The guild's moderation settings, as the owner would set them with /config moderation."""
    s = h.standin
    options = {"review_channel": s.guild.channel("review"), "moderator_role": h.roles["mods"], **changes}
    ix = await s.send_interaction(s.slash("config moderation", options, user="guild-owner"))
    text = await ephemeral_text(ix)
    assert "Moderation mode" in text, text


async def imagine_error(ix) -> str:
    """/imagine's ephemeral error: after the public "thinking…" is deleted, a private follow-up."""
    await ix.wait_callback()
    assert ix.callbacks[0].json["type"] == 5
    await ix.wait_for(lambda r: r.method == "DELETE", timeout=20)
    followup = await ix.wait_for(lambda r: r.method == "POST" and r.route.startswith("/webhooks/"), timeout=20)
    assert followup.json["flags"] & 64, followup.json
    return followup.json["content"]


async def held(s, prompt: str, user: str = "tester"):
    """Send /imagine and wait until it says it waits for review; returns (interaction, review message)."""
    since = s.mark()
    ix = await s.send_interaction(s.slash("imagine", {"prompt": f"{prompt} {FAST}"}, user=user))
    await ix.wait_original_message(lambda m: "waits for a moderator" in m.get("content", ""), timeout=30)
    return ix, await review_message(s, since)


async def review_message(s, since: int, timeout: float = 30) -> dict:
    """The next item the bot posts to the review channel (request index >= `since`)."""
    posted = await s.wait_for(
        lambda r: (
            r.method == "POST"
            and r.route == "/channels/{channel_id}/messages"
            and int(r.params["channel_id"]) == s.guild.channel("review").id
        ),
        timeout=timeout,
        since=since,
    )
    return s.message(posted.response["id"])


def item_of(message: dict) -> int:
    return int(message["components"][0]["components"][0]["custom_id"].split(":")[2])


async def press(s, message: dict, action: str, user: str):
    return await s.send_interaction(s.button(f"sdbot:mod:{item_of(message)}:{action}", message=message, user=user))


async def responded(ix) -> dict:
    """The bot's first response to an interaction (its JSON)."""
    await ix.wait_callback()
    return ix.callbacks[0].json


async def modal_id(s, message: dict, action: str, user: str) -> str:
    """Press a review button that opens a modal (reject, ban); returns the modal's custom id."""
    return (await responded(await press(s, message, action, user)))["data"]["custom_id"]


async def audit(h, action: str | None = None):
    return await transaction(h.services.sessions, mod_store.audit_log, h.standin.guild.id, action=action)


# --- configuration -------------------------------------------------------------------------------------------


async def test_admin_commands_are_hidden_and_checked_in_code(tmp_path, tiny_sd15):
    """/config needs Manage Server and /mod Manage Messages by default; a member who calls them anyway is refused."""
    async with mod_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        registered = {c["name"]: c for c in s.registered_commands(s.guild)}
        assert int(registered["config"]["default_member_permissions"]) == MANAGE_GUILD
        assert int(registered["mod"]["default_member_permissions"]) == MANAGE_MESSAGES
        assert registered["imagine"].get("default_member_permissions") is None
        ix = await s.send_interaction(s.slash("config moderation", {"mode": "prompts"}))
        assert "only members with the Manage Server permission" in await ephemeral_text(ix)
        ix = await s.send_interaction(s.slash("mod queue"))
        assert "only moderators can do that" in await ephemeral_text(ix)
        assert (await h.services.moderation.settings(s.guild.id)).moderation_mode == "off"
        assert [e.details["attempted"] for e in await audit(h, "denied")] == ["queue", "config"]
        await setup_guild(h, mode="flagged", notify="channel")
        settings = await h.services.moderation.settings(s.guild.id)
        assert (
            settings.moderation_mode,
            settings.review_channel_id,
            settings.moderator_role_id,
            settings.notify_by,
        ) == ("flagged", s.guild.channel("review").id, h.roles["mods"].id, "channel")
        ix = await s.send_interaction(
            s.slash(
                "config words", {"action": "add", "list": "banned", "words": "Cat, bad word, nud*"}, user="guild-owner"
            )
        )
        assert "`cat`, `bad word`, `nud*` added to the banned words" in await ephemeral_text(ix)
        ix = await s.send_interaction(s.slash("config caps", {"prompt_chars": 40, "steps": 10}, user="guild-owner"))
        assert "steps 10" in await ephemeral_text(ix)
        assert [e.action for e in await audit(h)][:3] == ["config", "words", "config"]
        s.assert_no_invalid_requests()


async def test_banned_words_refuse_at_once_and_name_the_rule(tmp_path, tiny_sd15):
    """In `off` mode only banned words (however spelled) and the prompt cap apply; other prompts run at once."""
    async with mod_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        owner = _owner(h)
        await h.services.moderation.edit_words(owner, "banned", ["cat"], add=True)
        await h.services.moderation.configure(owner, max_prompt_chars=60)
        for prompt in ("a photo of a C.A.T", "a ｃａｔ on a mat", "a сat"):  # the last one's "с" is Cyrillic
            ix = await s.send_interaction(s.slash("imagine", {"prompt": f"{prompt} {FAST}"}))
            assert "this server bans the word “cat”" in await imagine_error(ix)
        ix = await s.send_interaction(s.slash("imagine", {"prompt": "x" * 70}))
        assert "prompts of up to 60 characters; yours has 70" in await imagine_error(ix)
        ok = await s.send_interaction(s.slash("imagine", {"prompt": f"a concatenated dog {FAST}"}))
        await ok.wait_original_message(lambda m: m.get("attachments"), timeout=30)
        rows = await transaction(h.services.sessions, job_store.list_for_user, s.user.id, None)
        assert [j.request["prompt"] for j in rows] == ["a concatenated dog"]
        s.assert_no_invalid_requests()


# --- the review queue ------------------------------------------------------------------------------------------


async def test_flagged_prompt_waits_and_approval_runs_it(tmp_path, tiny_sd15):
    """`flagged`: a flagged prompt goes to the review channel; a moderator (by role) approves, the job runs and
    the user is told; an unflagged prompt runs at once."""
    async with moderated(tmp_path, tiny_sd15, "flagged") as (h, s):
        await h.services.moderation.edit_words(_owner(h), "flagged", ["swimsuit"], add=True)
        clean = await s.send_interaction(s.slash("imagine", {"prompt": f"a dog {FAST}"}))
        await clean.wait_original_message(lambda m: m.get("attachments"), timeout=30)
        ix, review = await held(s, "a S-W-I-M-S-U-I-T photo")
        embed = review["embeds"][0]
        assert "a S-W-I-M-S-U-I-T photo" in embed["description"]
        fields = {f["name"]: f["value"] for f in embed["fields"]}
        assert fields["Asked by"] == f"<@{s.user.id}>" and fields["Where"] == f"<#{s.channel.id}>"
        assert fields["Held because"] == "flagged: swimsuit"
        [sent] = s.find_requests(lambda r: r.method == "POST" and (r.response or {}).get("id") == review["id"])
        assert sent.json["allowed_mentions"]["parse"] == []  # nobody is pinged in the review channel
        labels = [c["label"] for c in review["components"][0]["components"]]
        assert labels == ["Approve", "Reject", "Reject and ban"]
        press_ix = await press(s, review, "approve", "alice")
        assert "approved review" in await ephemeral_text(press_ix)
        result = await ix.wait_original_message(lambda m: m.get("attachments"), timeout=30)
        assert result["attachments"][0]["filename"].endswith(".png")
        told = await ix.wait_for(lambda r: r.method == "POST" and "approved" in (r.json or {}).get("content", ""))
        assert told.json["flags"] & 64
        decided = s.message(review["id"])
        assert decided["components"] == []
        assert "Approved by <@" in decided["embeds"][0]["fields"][-1]["value"]
        [entry] = await audit(h, "approve")
        assert entry.target_user_id == s.user.id and entry.actor_id == s.guild.member("alice").id
        s.assert_no_invalid_requests()


async def test_prompts_mode_rejection_tells_the_user_why(tmp_path, tiny_sd15):
    """`prompts`: every prompt waits; a member with Manage Messages rejects it with a reason from the modal."""
    async with moderated(tmp_path, tiny_sd15, "prompts") as (h, s):
        ix, review = await held(s, "a harmless teapot")
        modal = await responded(await press(s, review, "reject", "carol"))
        assert modal["type"] == 9
        submit = await s.send_interaction(s.modal_submit(modal["data"]["custom_id"], {"reason": "no teapots"}))
        assert "rejected review" in await ephemeral_text(submit)
        told = await ix.wait_for(lambda r: r.method == "POST" and "rejected" in (r.json or {}).get("content", ""))
        assert told.json["flags"] & 64 and "no teapots" in told.json["content"]
        await ix.wait_original_message(lambda m: "was rejected by a moderator" in m["content"])
        job = (await transaction(h.services.sessions, job_store.list_for_user, s.user.id, None))[0]
        assert job.status == "rejected"
        [entry] = await audit(h, "reject")
        assert entry.reason == "no teapots" and entry.actor_id == s.guild.member("carol").id
        assert "Rejected by" in s.message(review["id"])["embeds"][0]["fields"][-1]["value"]
        s.assert_no_invalid_requests()


async def test_images_mode_holds_results_until_approved(tmp_path, tiny_sd15):
    """`images`: the prompt runs, the images go to review as spoilers; approved, they are posted publicly;
    rejected, they are deleted (files and review attachments)."""
    async with moderated(tmp_path, tiny_sd15, "images") as (h, s):
        since = s.mark()
        ix = await s.send_interaction(s.slash("imagine", {"prompt": f"a lighthouse {FAST}"}))
        await ix.wait_original_message(lambda m: "waits for a moderator" in m.get("content", ""), timeout=30)
        review = await review_message(s, since)
        assert review["attachments"] and all(a["filename"].startswith("SPOILER_") for a in review["attachments"])
        assert not [m for m in s.messages_in("general") if m.get("attachments")]
        await press(s, review, "approve", "guild-owner")
        posted = await ix.wait_original_message(lambda m: m.get("attachments"), timeout=30)
        assert not posted["attachments"][0]["filename"].startswith("SPOILER_")

        since = s.mark()
        second = await s.send_interaction(s.slash("imagine", {"prompt": f"a second lighthouse {FAST}"}))
        await second.wait_original_message(lambda m: "waits for a moderator" in m.get("content", ""), timeout=30)
        review2 = await review_message(s, since)
        job = (await transaction(h.services.sessions, job_store.list_for_user, s.user.id, None))[0]
        files = h.services.jobs.files_of(job)
        assert files
        custom_id = await modal_id(s, review2, "reject", "alice")
        submit = await s.send_interaction(s.modal_submit(custom_id, {"reason": "too bright"}))
        await ephemeral_text(submit)
        assert not any(f.exists() for f in files)
        assert s.message(review2["id"])["attachments"] == []
        await second.wait_original_message(lambda m: "rejected" in m["content"])
        s.assert_no_invalid_requests()


async def test_a_non_moderator_pressing_approve_is_refused_and_audited(tmp_path, tiny_sd15):
    """Seeing the button is no permission: the press is checked server-side, refused privately and logged."""
    async with moderated(tmp_path, tiny_sd15, "prompts") as (h, s):
        _, review = await held(s, "a kite")
        for user, action in (("tester", "approve"), ("bob", "reject")):
            refused = await press(s, review, action, user)
            assert "only moderators can do that" in await ephemeral_text(refused)
        item = await transaction(h.services.sessions, mod_store.get_item, item_of(review))
        assert item.status == "pending"
        denied = await audit(h, "denied")
        assert [(e.actor_id, e.details["attempted"]) for e in denied] == [
            (s.guild.member("bob").id, "reject"),
            (s.user.id, "approve"),
        ]
        assert s.message(review["id"])["components"]  # still pending, buttons still there
        s.assert_no_invalid_requests()


async def test_two_moderators_at_once_make_one_decision(tmp_path, tiny_sd15):
    async with moderated(tmp_path, tiny_sd15, "prompts") as (h, s):
        ix, review = await held(s, "a lantern")
        a, b = await asyncio.gather(press(s, review, "approve", "alice"), press(s, review, "approve", "guild-owner"))
        texts = sorted([await ephemeral_text(a), await ephemeral_text(b)])
        assert "already approved" in texts[0] and texts[1].startswith("✅ approved review")
        assert len(await audit(h, "approve")) == 1
        await ix.wait_original_message(lambda m: m.get("attachments"), timeout=30)
        s.assert_no_invalid_requests()


async def test_pending_items_survive_a_restart(tmp_path, tiny_sd15):
    """After a restart the review message's buttons still work; the result goes to the channel with a mention
    and the user is told by DM (the command's token is gone with the old process)."""
    async with moderated(tmp_path, tiny_sd15, "prompts") as (h, s):
        _, review = await held(s, "a windmill")
        await h.restart()
        approve = await press(s, review, "approve", "alice")
        assert "approved review" in await ephemeral_text(approve)
        posted = await s.wait_for(
            lambda r: r.method == "POST" and r.route == "/channels/{channel_id}/messages" and bool(r.files), timeout=30
        )
        assert posted.json["content"].startswith(f"<@{s.user.id}>")
        dm = s.dm_channel("tester")
        await s.wait_for(lambda r: r.method == "POST" and r.params.get("channel_id") == dm["id"], timeout=10)
        assert "approved" in s.messages_in(dm)[-1]["content"]
        s.assert_no_invalid_requests()


async def test_mod_queue_lists_pending_items_with_working_buttons(tmp_path, tiny_sd15):
    async with moderated(tmp_path, tiny_sd15, "prompts") as (h, s):
        await held(s, "a red barn")
        ix = await s.send_interaction(s.slash("mod queue", user="alice"))
        text = await ephemeral_text(ix)
        assert "1 waiting for review" in text and "a red barn" in text
        listing = ix.original_message
        approve = await press(s, listing, "approve", "alice")
        assert "approved review" in await ephemeral_text(approve)
        ix = await s.send_interaction(s.slash("mod queue", user="alice"))
        assert "Nothing is waiting" in await ephemeral_text(ix)
        s.assert_no_invalid_requests()


# --- abuse controls ---------------------------------------------------------------------------------------------


async def test_reject_and_ban_then_every_command_gets_one_clear_message(tmp_path, tiny_sd15):
    async with moderated(tmp_path, tiny_sd15, "prompts") as (h, s):
        ix, review = await held(s, "a spam prompt")
        custom_id = await modal_id(s, review, "ban", "alice")
        bad = await s.send_interaction(s.modal_submit(custom_id, {"reason": "spam", "duration": "soon"}))
        assert "a ban lasts e.g. 30m" in await ephemeral_text(bad)
        submit = await s.send_interaction(s.modal_submit(custom_id, {"reason": "spam", "duration": "2h"}))
        assert "and banned" in await ephemeral_text(submit)
        told = await ix.wait_for(lambda r: r.method == "POST" and "banned" in (r.json or {}).get("content", ""))
        assert "until <t:" in told.json["content"]
        for payload in (
            s.slash("imagine", {"prompt": "a cat"}),
            s.slash("preset list"),
            s.button(f"sdbot:mod:{item_of(review)}:approve", message=review),
        ):
            body = await responded(await s.send_interaction(payload))
            assert body["type"] == 4 and body["data"]["flags"] & 64
            assert body["data"]["content"].startswith("🚫 you are banned from using this bot on this server until")
        history = await s.send_interaction(s.slash("mod history user", {"user": s.user}, user="alice"))
        await ephemeral_text(history)
        embed = history.original_message["embeds"][0]
        assert "banned here until" in embed["fields"][0]["value"] and "rejected" in embed["fields"][1]["value"]
        unban = await s.send_interaction(s.slash("mod unban", {"user": s.user}, user="alice"))
        assert "may use the bot again" in await ephemeral_text(unban)
        assert "banned" not in str(await responded(await s.send_interaction(s.slash("preset list"))))
        s.assert_no_invalid_requests()


async def test_mod_ban_command_and_global_ban_list(tmp_path, tiny_sd15):
    async with mod_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        bob = s.guild.member("bob")
        ix = await s.send_interaction(
            s.slash("mod ban", {"user": bob, "duration": "forever", "reason": "x"}, user="carol")
        )
        assert "is banned from the bot here for good" in await ephemeral_text(ix)
        blocked = await responded(await s.send_interaction(s.slash("imagine", {"prompt": "a cat"}, user="bob")))
        assert "banned from using this bot on this server for good" in blocked["data"]["content"]
        h.services.bans.global_bans = frozenset({s.user.id})
        blocked = await responded(await s.send_interaction(s.slash("imagine", {"prompt": "a cat"})))
        assert "global ban list" in blocked["data"]["content"]
        s.assert_no_invalid_requests()


async def test_rate_limits_per_user_and_per_guild(tmp_path, tiny_sd15):
    async with mod_bot(
        tmp_path, tiny_sd15, user_rate=2, user_period_s=60.0, guild_rate=3, guild_period_s=60.0, rate_wait_s=0.05
    ) as h:
        s = h.standin
        for _ in range(2):
            ok = await s.send_interaction(s.slash("imagine", {"prompt": f"a cat {FAST}"}))
            await ok.wait_original_message(
                lambda m: "Job #" in m.get("content", "") or m.get("attachments"), timeout=30
            )
        third = await s.send_interaction(s.slash("imagine", {"prompt": f"a cat {FAST}"}))
        assert "you're going fast: the limit is 2 image requests per 60 s" in await imagine_error(third)
        other = await s.send_interaction(s.slash("imagine", {"prompt": f"a cat {FAST}"}, user="bob"))
        assert "this server is asking for a lot of images right now" in await imagine_error(other)
        s.assert_no_invalid_requests()


async def test_a_moderator_may_delete_anyones_images(tmp_path, tiny_sd15):
    async with mod_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        ix = await s.send_interaction(s.slash("imagine", {"prompt": f"a cat {FAST}"}))
        message = await ix.wait_original_message(lambda m: m.get("attachments"), timeout=30)
        job_id = int(message["components"][0]["components"][0]["custom_id"].split(":")[2])
        files = h.services.jobs.files_of(await h.services.jobs.get(job_id))
        await h.services.moderation.configure(_owner(h), moderator_role_id=h.roles["mods"].id)
        delete = await s.send_interaction(s.button(f"sdbot:job:{job_id}:delete", message=message, user="alice"))
        await delete.wait_for(lambda r: r.route.startswith("/webhooks/"), timeout=10)
        assert not any(f.exists() for f in files)
        [entry] = await audit(h, "delete")
        assert entry.job_id == job_id and entry.target_user_id == s.user.id
        s.assert_no_invalid_requests()


def _owner(h):
    from bot.services.moderation import Actor

    s = h.standin
    return Actor(user_id=s.guild.owner_id, guild_id=s.guild.id, manage_messages=True, manage_guild=True)
