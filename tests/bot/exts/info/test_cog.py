"""/queue, /models, /info and the "Image info" message menu end to end, against the Discord stand-in."""

from __future__ import annotations

import re

from tests.bot.harness import FAST, running_bot
from tests.discord_standin import snowflake
from tests.discord_standin.payloads import message_object


def ephemeral(ix) -> dict:
    """The data of an interaction's immediate ephemeral reply (callback type 4, flags 64)."""
    body = ix.callbacks[0].json
    assert body["type"] == 4 and body["data"]["flags"] & 64, body
    return body["data"]


async def reply(s, payload: dict) -> dict:
    """A command's private answer: commands defer ephemerally at once, then the answer replaces "thinking…"."""
    ix = await s.send_interaction(payload)
    await ix.wait_callback()
    body = ix.callbacks[0].json
    if body["type"] == 4:
        return ephemeral(ix)
    assert body["type"] == 5 and body["data"]["flags"] & 64, body
    message = await ix.wait_original_message(timeout=10)
    assert message["flags"] & 64
    return message


def job_id_in(content: str) -> int:
    return int(re.search(r"Job #(\d+)", content).group(1))


def edited_to(text: str):
    return lambda r: r.method == "PATCH" and text in (r.json or {}).get("content", "")


async def test_queue_lists_jobs_with_cancel_buttons_that_cancel_them(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15, step_s=0.2) as h:  # 150 steps: 30 s at least
        s = h.standin
        assert (await reply(s, s.slash("queue")))["content"] == "you have no jobs waiting or running"
        slow = await s.send_interaction(s.slash("imagine", {"prompt": "a slow cat --steps 150 --size 64x64"}))
        started = await slow.wait_for(edited_to("rendering"), timeout=30)
        slow_id = job_id_in(started.json["content"])
        waiting = await s.send_interaction(s.slash("imagine", {"prompt": f"a waiting dog {FAST}"}))
        queued = await waiting.wait_for(edited_to("queued"), timeout=10)
        waiting_id = job_id_in(queued.json["content"])

        data = await reply(s, s.slash("queue"))
        assert data["content"].splitlines() == [
            f"#{waiting_id} · position 1 · a waiting dog",
            f"#{slow_id} · rendering · a slow cat",
        ]
        buttons = [c for row in data["components"] for c in row["components"]]
        assert [b["custom_id"] for b in buttons] == [f"sdbot:cancel:{waiting_id}", f"sdbot:cancel:{slow_id}"]
        assert buttons[0]["label"] == f"Cancel #{waiting_id}"
        message = data

        refused = await reply(s, s.button(f"sdbot:cancel:{waiting_id}", message=message, user="alice"))
        assert "only the job's owner or a moderator can cancel it" in refused["content"]
        done = await reply(s, s.button(f"sdbot:cancel:{waiting_id}", message=message))
        assert done["content"] == f"✖️ job #{waiting_id} cancelled"
        await waiting.wait_original_message(lambda m: "was cancelled" in m["content"], timeout=10)
        again = await reply(s, s.button(f"sdbot:cancel:{waiting_id}", message=message))
        assert again["content"] == f"job #{waiting_id} is no longer waiting or running"

        # The running job stops at its next step (150 paced steps: 30 s at least, far from done when pressed).
        done = await reply(s, s.button(f"sdbot:cancel:{slow_id}", message=message))
        assert done["content"] == f"✖️ job #{slow_id} cancelled"
        final = await slow.wait_original_message(lambda m: "was cancelled" in m["content"], timeout=30)
        assert not final["attachments"]
        assert (await reply(s, s.slash("queue")))["content"] == "you have no jobs waiting or running"
        assert (await h.services.jobs.get(slow_id)).status == "cancelled"
        s.assert_no_invalid_requests()


async def test_a_banned_member_cannot_press_cancel(tmp_path, tiny_sd15):
    """The cancel button checks bans as every other button does: the ban's message, and the job goes on."""
    async with running_bot(tmp_path, tiny_sd15, step_s=0.2) as h:  # 150 steps: 30 s at least
        s = h.standin
        slow = await s.send_interaction(s.slash("imagine", {"prompt": "a slow cat --steps 150 --size 64x64"}))
        started = await slow.wait_for(edited_to("rendering"), timeout=30)
        slow_id = job_id_in(started.json["content"])
        message = await reply(s, s.slash("queue"))
        h.services.bans.global_bans = frozenset({s.user.id})
        refused = await reply(s, s.button(f"sdbot:cancel:{slow_id}", message=message))
        assert "global ban list" in refused["content"]
        assert (await h.services.jobs.get(slow_id)).status == "running"
        h.services.bans.global_bans = frozenset()
        done = await reply(s, s.button(f"sdbot:cancel:{slow_id}", message=message))
        assert done["content"] == f"✖️ job #{slow_id} cancelled"
        s.assert_no_invalid_requests()


LORAS = "LoRAs: <lora:NAME:WEIGHT> or --lora NAME:WEIGHT"


async def test_models_lists_the_installed_checkpoint(harness):
    s = harness.standin
    data = await reply(s, s.slash("models"))
    fields = {f["name"]: f["value"] for f in data["embeds"][0]["fields"]}
    assert fields["Checkpoints"] == "tiny-sd15"
    assert fields["VAEs"].splitlines()[:2] == ["auto", "none"]
    assert "Euler a" in fields["Samplers"] and "Automatic" in fields["Schedule types"]

    lora = harness.services.config.models_dir / "Lora" / "detail.safetensors"
    lora.parent.mkdir(parents=True, exist_ok=True)
    lora.write_bytes(b"")
    data = await reply(s, s.slash("models", {"refresh": True}))  # else the catalog's scan (tests/bot/services)
    assert {f["name"]: f["value"] for f in data["embeds"][0]["fields"]}[LORAS].startswith("detail [")
    assert "Refused files" not in {f["name"] for f in data["embeds"][0]["fields"]}

    (lora.parent / "old.pt").write_bytes(b"a pickle: never opened while allow_pickle is off")
    data = await reply(s, s.slash("models", {"refresh": True}))
    fields = {f["name"]: f["value"] for f in data["embeds"][0]["fields"]}
    assert fields["Refused files"] == "refused: old.pt (pickle format; set [engine] allow_pickle = true to allow it)"
    assert "old" not in fields[LORAS]
    s.assert_no_invalid_requests()


async def test_models_lists_controlnets_with_their_family(harness, tiny_controlnets):
    import shutil

    folder = harness.services.config.models_dir / "ControlNet"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_controlnets["sd15-file"], folder / "control_tiny_sd15_canny.safetensors")
    shutil.copytree(tiny_controlnets["sdxl-union"], folder / "xl" / "tiny-union")
    (folder / "notes.safetensors").write_bytes(b"")
    s = harness.standin
    data = await reply(s, s.slash("models", {"refresh": True}))
    fields = {f["name"]: f["value"] for f in data["embeds"][0]["fields"]}
    controlnets = next(value for name, value in fields.items() if name.startswith("ControlNets"))
    assert controlnets.splitlines() == [
        "control_tiny_sd15_canny [SD 1.x]",
        "notes (cannot be used: not a readable safetensors file)",
        "tiny-union [SDXL, union]",
    ]
    assert fields["ControlNet preprocessors"].startswith("none, canny, invert")
    s.assert_no_invalid_requests()


async def test_info_by_job_number_message_id_and_the_image_info_menu(harness):
    s = harness.standin
    ix = await s.send_interaction(s.slash("imagine", {"prompt": f"a cat --seed 3 {FAST}"}))
    result = await ix.wait_original_message(lambda m: m.get("attachments"), timeout=30)
    job_id = job_id_in(result["content"])

    def check(data: dict) -> None:
        assert data["content"].startswith("```\na cat\n") and "Seed: 3" in data["content"]
        embed = data["embeds"][0]
        assert embed["title"] == f"Job #{job_id}" and embed["description"] == "a cat"

    check(await reply(s, s.slash("info", {"id": f"#{job_id}"})))
    check(await reply(s, s.slash("info", {"id": str(job_id)}, user="alice")))  # anyone may ask
    check(await reply(s, s.slash("info", {"id": result["id"]})))
    check(await reply(s, s.message_command("Image info", result)))
    check(await reply(s, s.message_command("Image info", result, user="alice")))

    assert "give a job number such as 12" in (await reply(s, s.slash("info", {"id": "abc"})))["content"]
    assert "there is no job #999" in (await reply(s, s.slash("info", {"id": "999"})))["content"]
    assert (
        "no sdbot image has that message id" in (await reply(s, s.slash("info", {"id": str(snowflake())})))["content"]
    )
    models = await s.send_interaction(s.slash("models"))
    await models.wait_callback()
    data = await reply(s, s.message_command("Image info", models.original_message))
    assert "that message is not an sdbot image" in data["content"]
    # Someone else's message that merely mentions a job is not that job's image.
    alice = s.guild.member("alice")
    fake = message_object(
        id=snowflake(),
        channel_id=s.channel.id,
        author=alice.to_dict(),
        guild_id=s.guild.id,
        content=f"✅ Job #{job_id}: your image is ready",
    )
    data = await reply(s, s.message_command("Image info", fake))
    assert "that message is not an sdbot image" in data["content"]
    s.assert_no_invalid_requests()
