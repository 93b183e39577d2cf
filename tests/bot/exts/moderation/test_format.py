"""The review queue's card and list, /mod history and /config text: built from the services' plain records,
within Discord's limits, and safe with whatever a prompt holds."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.exts.moderation._format import (
    APPROVED_COLOUR,
    PENDING_COLOUR,
    history_embed,
    nsfw_text,
    queue_text,
    review_embed,
    settings_text,
    words_text,
)
from bot.services.moderation import History
from bot.services.records import AuditRecord, BanRecord, JobRecord, ReviewItemRecord, SettingsRecord

WHEN = datetime(2030, 1, 2, 3, 4, tzinfo=UTC)
STAMP = f"<t:{int(WHEN.timestamp())}:f>"


def job(**changes) -> JobRecord:
    values = dict(
        id=12,
        user_id=111,
        guild_id=900,
        channel_id=902,
        interaction_id=None,
        message_id=None,
        request={"prompt": "a cat", "negative_prompt": ""},
        sources={},
        status="awaiting_review",
        seed=5,
        result_paths=[],
        image_scores=None,
        notes=None,
        error=None,
        created_at=WHEN,
        updated_at=WHEN,
        started_at=None,
        finished_at=None,
        posted_at=None,
    )
    return JobRecord(**{**values, **changes})


def item(**changes) -> ReviewItemRecord:
    values = dict(
        id=3,
        job_id=12,
        guild_id=900,
        reason="flagged: cat",
        status="pending",
        review_message_id=None,
        decided_by=None,
        decision_reason=None,
    )
    return ReviewItemRecord(**{**values, **changes})


def settings(**changes) -> SettingsRecord:
    values = dict(
        guild_id=900,
        moderation_mode="flagged",
        review_channel_id=None,
        moderator_role_id=None,
        banned_words=["a", "b"],
        flagged_words=[],
        max_steps=None,
        max_pixels=262144,
        max_batch=None,
        max_jobs_per_user=None,
        notify_by="dm",
        max_prompt_chars=None,
        previews=False,
        nsfw_flag_above=None,
        nsfw_block_above=None,
    )
    return SettingsRecord(**{**values, **changes})


def fields(embed) -> dict[str, str]:
    return {field.name: field.value for field in embed.fields}


def test_a_pending_prompt_card():
    embed = review_embed(item(), job())
    assert embed.title == "Review #3: prompt of job #12" and embed.colour.value == PENDING_COLOUR
    assert embed.description == "```\na cat\n```"
    assert fields(embed) == {"Asked by": "<@111>", "Where": "<#902>", "Held because": "flagged: cat"}


def test_held_images_show_their_scores_and_the_decision():
    held = job(result_paths=["/x/0.png", "/x/1.png"], image_scores=[{"nsfw": 0.9, "normal": 0.1}, None])
    decided = item(status="approved", decided_by=100, decision_reason="fine")
    embed = review_embed(decided, held)
    assert embed.title == "Review #3: images of job #12" and embed.colour.value == APPROVED_COLOUR
    shown = fields(embed)
    assert shown["Image classifier"] == "image 1: nsfw 0.90 · normal 0.10\nimage 2: not scored"
    assert shown["Decision"] == "✅ Approved by <@100>: fine"


def test_backticks_in_a_prompt_cannot_end_the_code_block():
    embed = review_embed(item(), job(request={"prompt": "```\n@everyone"}))
    assert embed.description.count("```") == 2


def test_a_direct_message_job_and_an_empty_prompt():
    embed = review_embed(item(reason=""), job(channel_id=None, request={"prompt": ""}))
    assert embed.description == "(empty)" and fields(embed) == {"Asked by": "<@111>", "Where": "direct messages"}


def test_the_queue_lists_oldest_first_on_one_line_each():
    assert queue_text([]) == "Nothing is waiting for review."
    text = queue_text([(item(id=1), job(request={"prompt": "two\nlines"})), (item(id=2), job())])
    assert text.splitlines() == [
        "**2 waiting for review** (oldest first; buttons for the first five):",
        "• #1 · prompt · <@111> in <#902>: two lines",
        "• #2 · prompt · <@111> in <#902>: a cat",
    ]
    assert len(queue_text([(item(id=i), job(request={"prompt": "x" * 500})) for i in range(100)])) <= 2000


def test_the_history_lists_bans_and_decisions():
    history = History(
        entries=[AuditRecord(actor_id=100, action="reject", job_id=12, reason="no", created_at=WHEN)],
        bans=[
            BanRecord(guild_id=900, actor_id=100, reason="spam", created_at=WHEN, expires_at=None, lifted_at=WHEN),
            BanRecord(guild_id=None, actor_id=100, reason="", created_at=WHEN, expires_at=WHEN, lifted_at=None),
        ],
    )
    shown = fields(history_embed(111, history))
    assert shown["Decisions"] == f"{STAMP} <@100> ❌ rejected job #12: no"
    assert shown["Bans"].splitlines() == [
        f"{STAMP} banned here for good by <@100> (lifted {STAMP}): spam",
        f"{STAMP} banned everywhere until {STAMP} by <@100>",
    ]
    empty = fields(history_embed(111, History(entries=[], bans=[])))
    assert empty == {"Bans": "none", "Decisions": "none"}


def test_the_settings_text_names_every_setting():
    text = settings_text(settings(review_channel_id=5, notify_by="channel", previews=True))
    assert "**Moderation mode:** flagged" in text and "**Review channel:** <#5>" in text
    assert "a mention in the channel" in text and "**Live previews:** on" in text
    assert "**Banned words:** 2 · **flagged words:** 0" in text
    assert "steps engine limit · pixels 262144" in text


def test_word_lists_and_nsfw_thresholds_in_words():
    assert words_text("banned", []) == "The banned word list is empty."
    assert words_text("flagged", ["cat", "dog"]) == "**Flagged words (2):** `cat`, `dog`"
    assert nsfw_text(settings()) == "the same thresholds as other channels"
    assert nsfw_text(settings(nsfw_flag_above=1.0, nsfw_block_above=1.0)) == "nothing is held"
    assert nsfw_text(settings(nsfw_flag_above=0.8, nsfw_block_above=0.95)) == "held above 0.80, refused above 0.95"
