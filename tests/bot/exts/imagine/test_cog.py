"""/imagine end to end: the real bot (`sdbot run`'s code path) against the Discord stand-in."""

from __future__ import annotations

import pytest

from engine.infotext import parse_infotext, read_png_infotext
from tests.bot.exts.helpers import job_id_of, with_images
from tests.bot.harness import FAST


def params_of(standin, message) -> dict[str, str]:
    data = standin.attachment_bytes(message["attachments"][0])
    return parse_infotext(read_png_infotext(data)).params


async def test_imagine_with_typed_and_inline_options(harness):
    s = harness.standin
    ix = await s.send_interaction(
        s.slash("imagine", {"prompt": f"a cat --seed 5 --cfg 6 {FAST}", "cfg": 8.0, "clip_skip": 2})
    )
    await ix.wait_callback()
    assert ix.callbacks[0].json["type"] == 5  # deferred: acknowledged at once
    message = await ix.wait_original_message(lambda m: m.get("attachments"))
    params = params_of(s, message)
    assert params["Seed"] == "5" and params["Size"] == "64x64" and params["Steps"] == "2"
    assert params["CFG scale"] == "8"  # typed wins over inline
    assert params["Clip skip"] == "2"
    embed = message["embeds"][0]
    cfg = next(f for f in embed["fields"] if f["name"] == "CFG scale")
    assert cfg["value"].startswith("8")
    assert [c["custom_id"] for row in message["components"] for c in row["components"]][0].startswith("sdbot:job:")
    s.assert_no_invalid_requests()


async def error_text(ix) -> str:
    """The ephemeral error a user sees: the first answer, or after a public defer, a follow-up that replaces
    the deleted "thinking…" message (nobody else sees the mistake)."""
    await ix.wait_callback()
    body = ix.callbacks[0].json
    if body["type"] == 4:
        assert body["data"]["flags"] & 64, body
        return body["data"]["content"]
    assert body["type"] == 5, body
    await ix.wait_for(lambda r: r.method == "DELETE", timeout=20)
    followup = await ix.wait_for(lambda r: r.method == "POST" and r.route.startswith("/webhooks/"), timeout=20)
    assert followup.json["flags"] & 64, followup.json
    return followup.json["content"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prompt": "a cat --steps abc"}, "--steps takes a whole number"),
        ({"prompt": "a cat", "size": "65x64"}, "width must be a multiple of 8"),
        ({"prompt": "a cat", "size": "huge"}, "size takes WIDTHxHEIGHT"),
        ({"prompt": "a cat", "sampler": "Nope"}, "unknown sampler 'Nope'; valid samplers: Euler a"),
        ({"prompt": "a cat --nosuch"}, "you have no preset named"),
        ({"prompt": "a cat --ar 20:1"}, "ratios from 1:4 to 4:1"),
        ({"prompt": "a cat", "steps": 151}, "steps must be from 1 to 150"),
    ],
)
async def test_invalid_options_get_an_ephemeral_message_naming_them(harness, options, message):
    s = harness.standin
    ix = await s.send_interaction(s.slash("imagine", options))
    assert message in await error_text(ix)
    assert not [m for m in s.messages.values() if m.get("attachments")]
    s.assert_no_invalid_requests()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prompt": f"a cat {FAST}", "clip_skip": 7}, "CLIP skip must be from 1 to 5 for this model"),
        ({"prompt": f"a cat {FAST}", "vae": "missing"}, "unknown VAE 'missing'; valid: auto, none"),
    ],
)
async def test_settings_checked_against_the_model_fail_the_job_with_a_message(harness, options, message):
    s = harness.standin
    ix = await s.send_interaction(s.slash("imagine", options))
    final = await ix.wait_original_message(lambda m: "failed" in m.get("content", ""), timeout=20)
    assert message in final["content"]
    s.assert_no_invalid_requests()


async def test_sampler_autocomplete_offers_at_most_25_matches(harness):
    s = harness.standin
    ix = await s.send_interaction(s.autocomplete("imagine", {"prompt": "x", "sampler": "dpm"}))
    await ix.wait_callback()
    choices = ix.callbacks[0].json["data"]["choices"]
    assert 0 < len(choices) <= 25
    assert all("dpm" in c["name"].lower() for c in choices)
    ix = await s.send_interaction(s.autocomplete("imagine", {"prompt": "x", "model": ""}))
    await ix.wait_callback()
    assert [c["name"] for c in ix.callbacks[0].json["data"]["choices"]] == ["tiny-sd15"]
    s.assert_no_invalid_requests()


async def test_progress_edits_respect_the_channel_rate(tmp_path, tiny_sd15):
    from tests.bot.harness import running_bot

    # 30 steps of at least 50 ms each: the render outlasts several edit periods on any machine.
    async with running_bot(
        tmp_path, tiny_sd15, step_s=0.05, discord={"edit_period_s": 0.3, "edits_per_channel": 1}
    ) as h:
        s = h.standin
        ix = await s.send_interaction(s.slash("imagine", {"prompt": "a cat --size 64x64 --steps 30"}))
        await ix.wait_original_message(lambda m: m.get("attachments"), timeout=60)
        # Progress edits keep the channel's rate; the first edit (the place in the queue, told at once) and the
        # final (with the images) take no turn (see test_delivery.py).
        edits = [r for r in s.requests if r.method == "PATCH" and "@original" in r.path and not r.files][1:]
        contents = [r.json.get("content", "") for r in edits if r.json]
        assert any("/30" in c for c in contents), contents
        assert len(edits) >= 2
        times = [r.time for r in edits]
        for a, b in zip(times, times[1:]):
            assert b - a >= 0.3 - 0.05, times
        steps = [int(c.split("/30")[0].rsplit(" ", 1)[1]) for c in contents if "/30" in c]
        assert steps == sorted(steps)
        s.assert_no_invalid_requests()


async def test_oversized_images_are_sent_smaller_and_say_so(harness):
    s = harness.standin
    ix = await s.send_interaction(s.slash("imagine", {"prompt": "a cat --size 256x256 --steps 2 --seed 1"}))
    png = await ix.wait_original_message(lambda m: m.get("attachments"))
    png_size = png["attachments"][0]["size"]
    assert png["attachments"][0]["filename"].endswith(".png")
    s.set_upload_limit(s.guild, 16 * 1024 + png_size // 2)
    small = await with_images(s, s.slash("imagine", {"prompt": "a cat --size 256x256 --steps 2 --seed 1"}))
    name = small["attachments"][0]["filename"]
    assert name.endswith((".webp", ".jpg"))
    assert ("WebP" if name.endswith(".webp") else "JPEG") in small["content"]
    s.assert_no_invalid_requests()


async def test_buttons_work_after_a_restart(harness):
    s = harness.standin
    message = await with_images(s, s.slash("imagine", {"prompt": f"a cat --seed 3 {FAST}"}))
    job_id = job_id_of(message)
    await harness.restart()
    info = await s.send_interaction(s.button(f"sdbot:job:{job_id}:info", message=message))
    await info.wait_callback()
    assert "Seed: 3" in info.callbacks[0].json["data"]["content"]
    again = await with_images(s, s.button(f"sdbot:job:{job_id}:reroll", message=message))
    params = params_of(s, again)
    assert params["Size"] == "64x64" and params["Seed"] != "3"
    s.assert_no_invalid_requests()


async def test_late_results_go_to_the_channel_with_a_mention(tmp_path, tiny_sd15):
    from tests.bot.harness import running_bot

    async with running_bot(tmp_path, tiny_sd15, step_s=0.1) as h:  # 40 steps: 4 s at least, still rendering
        s = h.standin
        ix = await s.send_interaction(s.slash("imagine", {"prompt": "a cat --size 64x64 --steps 40"}))
        await ix.wait_for(lambda r: r.method == "PATCH" and "/40" in (r.json or {}).get("content", ""))
        ix.expire()
        posted = await s.wait_for(
            lambda r: r.method == "POST" and r.route == "/channels/{channel_id}/messages" and r.files, timeout=60
        )
        assert f"<@{s.user.id}>" in posted.json["content"]
        assert [str(u) for u in posted.json["allowed_mentions"]["users"]] == [str(s.user.id)]
        s.assert_no_invalid_requests()


async def test_delete_is_for_the_owner_or_a_moderator(harness):
    s = harness.standin
    message = await with_images(s, s.slash("imagine", {"prompt": f"a cat {FAST}"}))
    job_id = job_id_of(message)
    files = harness.services.jobs.files_of(await harness.services.jobs.get(job_id))
    assert files
    other = await s.send_interaction(s.button(f"sdbot:job:{job_id}:delete", message=message, user="alice"))
    await other.wait_callback()
    assert "only the person who made this image or a moderator" in await error_text(other)
    assert all(f.exists() for f in files)
    mine = await s.send_interaction(s.button(f"sdbot:job:{job_id}:delete", message=message))
    await s.wait_for(lambda r: r.method == "DELETE" and r.route.startswith("/channels/"), timeout=10)
    await mine.wait_for(lambda r: r.route.startswith("/webhooks/"), timeout=10)
    assert not any(f.exists() for f in files)
    s.assert_no_invalid_requests()


async def test_edit_button_opens_a_prefilled_modal_that_runs_again(harness):
    s = harness.standin
    message = await with_images(s, s.slash("imagine", {"prompt": f"a cat --seed 8 {FAST}"}))
    job_id = job_id_of(message)
    press = await s.send_interaction(s.button(f"sdbot:job:{job_id}:edit", message=message))
    await press.wait_callback()
    modal = press.callbacks[0].json["data"]
    texts = {c["components"][0]["custom_id"]: c["components"][0].get("value") for c in modal["components"]}
    assert texts["prompt"] == "a cat" and "--seed 8" in texts["options"] and "--size 64x64" in texts["options"]
    submit = await s.send_interaction(
        s.modal_submit(
            modal["custom_id"],
            {"prompt": "a dog", "negative": "blurry", "options": texts["options"].replace("--seed 8", "--seed 9")},
        )
    )
    again = await submit.wait_original_message(lambda m: m.get("attachments"))
    data = read_png_infotext(s.attachment_bytes(again["attachments"][0]))
    info = parse_infotext(data)
    assert info.prompt == "a dog" and info.negative_prompt == "blurry" and info.params["Seed"] == "9"
    s.assert_no_invalid_requests()


async def test_queue_cap_says_how_many_jobs_are_queued(tmp_path, tiny_sd15):
    from tests.bot.harness import running_bot

    async with running_bot(tmp_path, tiny_sd15, step_s=0.1, engine={"max_queued_per_user": 1}) as h:
        s = h.standin  # 20 steps of at least 0.1 s: the first job is still active when the second comes
        first = await s.send_interaction(s.slash("imagine", {"prompt": "a cat --size 64x64 --steps 20"}))
        await first.wait_for(lambda r: r.method == "PATCH", timeout=20)  # the job is persisted and queued
        second = await s.send_interaction(s.slash("imagine", {"prompt": "a cat"}))
        assert "you have 1 jobs queued; the limit is 1" in await error_text(second)
        s.assert_no_invalid_requests()


async def test_live_previews_only_where_the_server_turned_them_on(tmp_path, tiny_sd15):
    from tests.bot.harness import running_bot

    async with running_bot(
        tmp_path,
        tiny_sd15,
        step_s=0.1,
        engine={"preview_every": 2},
        discord={"preview_period_s": 1.0, "edit_period_s": 0.2},
    ) as h:
        s = h.standin
        slow = {"prompt": "a cat --size 64x64 --steps 30"}  # 3 s at least: several preview periods

        def preview_edits(ix):
            return [r for r in ix.requests if r.method == "PATCH" and any(f.filename == "preview.png" for f in r.files)]

        off = await s.send_interaction(s.slash("imagine", slow))
        await off.wait_original_message(lambda m: m.get("attachments"), timeout=120)
        assert not preview_edits(off)

        turn_on = await s.send_interaction(s.slash("config previews", {"enabled": True}, user="guild-owner"))
        await turn_on.wait_original_message(lambda m: "Live previews:** on" in m.get("content", ""), timeout=10)
        on = await s.send_interaction(s.slash("imagine", slow))
        final = await on.wait_original_message(lambda m: m.get("attachments") and "ready" in m["content"], timeout=120)
        edits = preview_edits(on)
        assert edits, [r.describe() for r in on.requests]
        times = [r.time for r in edits]
        # previews are taken at most once a second (an edit may then wait for its slot in the channel's rate)
        assert len(times) <= (times[-1] - times[0]) / 1.0 + 2, times
        assert [a["filename"] for a in final["attachments"]][0].endswith(".png")
        assert all(a["filename"] != "preview.png" for a in final["attachments"]), final["attachments"]
        s.assert_no_invalid_requests()
