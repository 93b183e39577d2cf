"""/preset end to end: the real bot (`sdbot run`'s code path) against the Discord stand-in."""

from __future__ import annotations

import io
import json

from PIL import Image

from engine.infotext import parse_infotext, read_png_infotext
from tests.bot.exts.helpers import ephemeral_text
from tests.bot.harness import FAST, running_bot

INFOTEXT = (
    "a castle on a hill\nNegative prompt: ugly\n"
    'Steps: 4, Sampler: Euler a, CFG scale: 6, Seed: 9, Size: 64x64, Hires upscale: 2, Lora hashes: "x: ab"'
)


async def say(s, name: str, options: dict | None = None, *, user: str | None = None) -> str:
    """Run a slash command: it is acknowledged privately at once (deferred, ephemeral), then answered."""
    return await deferred(s, name, options or {}, user=user)


async def imagine_error(s, options: dict) -> str:
    """/imagine's ephemeral error: its first answer, or (after a public defer) the ephemeral follow-up that
    replaces the deleted "thinking…" message."""
    ix = await s.send_interaction(s.slash("imagine", options))
    await ix.wait_callback()
    if ix.callbacks[0].json["type"] == 4:
        return await ephemeral_text(ix)
    await ix.wait_for(lambda r: r.method == "DELETE", timeout=10)
    followup = await ix.wait_for(lambda r: r.method == "POST" and r.route.startswith("/webhooks/"), timeout=10)
    assert followup.json["flags"] & 64, followup.json
    return followup.json["content"]


async def deferred(s, name: str, options: dict, *, user: str | None = None) -> str:
    """Run a slash command that defers ephemerally (/preset import); the text that replaces "thinking…"."""
    ix = await s.send_interaction(s.slash(name, options, user=user))
    await ix.wait_callback()
    assert ix.callbacks[0].json["type"] == 5 and ix.callbacks[0].json["data"]["flags"] & 64
    message = await ix.wait_original_message(timeout=10)
    assert message["flags"] & 64
    return message["content"]


async def imagine_params(s, options: dict) -> tuple[dict, dict]:
    """/imagine and wait for its image: (the PNG's infotext parameters + prompts, the result message)."""
    ix = await s.send_interaction(s.slash("imagine", options))
    message = await ix.wait_original_message(
        lambda m: m.get("attachments") or "failed" in m.get("content", ""), timeout=30
    )
    assert message.get("attachments"), message["content"]
    info = parse_infotext(read_png_infotext(s.attachment_bytes(message["attachments"][0])))
    return {**info.params, "prompt": info.prompt, "negative": info.negative_prompt}, message


def button_ids(message: dict) -> list[str]:
    return [c["custom_id"] for row in message["components"] for c in row["components"]]


async def test_save_list_show_rename_delete(harness):
    s = harness.standin
    text = await say(s, "preset save", {"name": "portrait", "steps": 7, "cfg": 6.5, "size": "64x64"})
    assert "preset **portrait** created" in text
    assert "--size 64x64" in text and "--steps 7" in text and "--cfg 6.5" in text
    text = await say(s, "preset save", {"name": "Portrait", "options": "steps 9 --no blurry"})
    assert "preset **Portrait** updated" in text  # names compare case-insensitively; options are replaced
    assert "--steps 9" in text and "no: “blurry”" in text and "--cfg" not in text
    text = await say(s, "preset save", {"name": "wide", "options": "--ar 3:2"})
    assert "created" in text and "--size 624x416" in text  # a ratio is stored as a size

    listing = await say(s, "preset list")
    assert listing.startswith("your presets (2):")
    assert "**Portrait**: no: “blurry” --steps 9" in listing and "**wide**: --size 624x416" in listing
    assert await say(s, "preset show", {"name": "portrait"}) == "**Portrait**: no: “blurry” --steps 9"

    assert "preset **portrait** is now **face**" in await say(s, "preset rename", {"old": "portrait", "new": "face"})
    assert "you have no preset named 'portrait'" in await say(s, "preset show", {"name": "portrait"})
    assert "you already have a preset named 'wide'" in await say(s, "preset rename", {"old": "face", "new": "WIDE"})

    ask = await s.send_interaction(s.slash("preset delete", {"name": "face"}))
    await ask.wait_callback()
    assert "delete preset **face**" in await ephemeral_text(ask)
    prompt = await ask.wait_original_message(lambda m: m.get("components"), timeout=10)
    delete_id, keep_id = button_ids(prompt)
    other = await s.send_interaction(s.button(delete_id, message=prompt, user="alice"))
    await other.wait_callback()
    assert "only the preset's owner" in await ephemeral_text(other)
    assert "**face**" in await say(s, "preset list")  # still there
    keep = await s.send_interaction(s.button(keep_id, message=prompt))
    await keep.wait_callback()
    assert keep.callbacks[0].json["type"] == 7 and "kept" in keep.callbacks[0].json["data"]["content"]

    ask = await s.send_interaction(s.slash("preset delete", {"name": "FACE"}))
    prompt = await ask.wait_original_message(lambda m: m.get("components"), timeout=10)
    press = await s.send_interaction(s.button(button_ids(prompt)[0], message=prompt))
    await press.wait_callback()
    body = press.callbacks[0].json
    assert body["type"] == 7 and "preset **face** deleted" in body["data"]["content"]
    assert body["data"]["components"] == []  # the buttons go away
    listing = await say(s, "preset list")
    assert listing.startswith("your presets (1):") and "face" not in listing
    assert await say(s, "preset list", user="alice") == "you have no presets yet: /preset save"
    s.assert_no_invalid_requests()


async def test_errors_are_ephemeral_and_name_the_problem(harness):
    s = harness.standin
    assert "preset name 'bad name!' contains ' '" in await say(s, "preset save", {"name": "bad name!", "steps": 5})
    assert "give at least one option to save" in await say(s, "preset save", {"name": "empty"})
    assert "options can't name a preset (--fast)" in await say(s, "preset save", {"name": "x", "options": "--fast"})
    assert "--steps takes a whole number" in await say(s, "preset save", {"name": "x", "options": "--steps many"})
    text = await say(s, "preset save", {"name": "x", "sampler": "Nope"})
    assert "sampler" in text and "unknown sampler 'Nope'" in text
    assert "you have no preset named 'nosuch'" in await say(s, "preset show", {"name": "nosuch"})
    assert "you have no preset named 'nosuch'" in await say(s, "preset default", {"name": "nosuch"})
    assert "you have no preset named 'nosuch'" in await say(s, "preset delete", {"name": "nosuch"})
    assert "you had no default preset" in await say(s, "preset default", {"name": "clear"})
    assert "you have no preset named 'nosuch'" in await imagine_error(s, {"prompt": "a cat --nosuch"})
    assert "you have no preset named 'nosuch'" in await imagine_error(s, {"prompt": "a cat", "preset": "nosuch"})
    assert "you have no image yet" in await say(s, "preset save", {"name": "last", "from_last": True})
    # Long prompt parts still give messages Discord accepts (at most 2000 characters).
    text = await say(
        s, "preset save", {"name": "long", "prefix": "p" * 1000, "suffix": "s" * 1000, "negative": "n" * 2000}
    )
    assert "preset **long** created" in text and len(text) <= 2000
    assert len(await say(s, "preset show", {"name": "long"})) <= 2000
    assert len(await say(s, "preset list")) <= 2000
    ask = await s.send_interaction(s.slash("preset delete", {"name": "long"}))
    await ask.wait_callback()
    assert "delete preset **long**" in await ephemeral_text(ask)
    s.assert_no_invalid_requests()


async def test_name_autocomplete_matches_prefixes_and_offers_at_most_25(harness):
    s = harness.standin
    for i in range(27):
        await harness.services.presets.save(s.user.id, f"p{i:02d}", {"steps": 5})
    await harness.services.presets.save(s.user.id, "Other", {"steps": 5})
    for command, option in (
        ("preset show", "name"),
        ("preset rename", "old"),
        ("preset delete", "name"),
        ("preset default", "name"),
        ("imagine", "preset"),
    ):
        extra = {"prompt": "x"} if command == "imagine" else {}
        ix = await s.send_interaction(s.autocomplete(command, {**extra, option: "p"}))
        await ix.wait_callback()
        choices = [c["name"] for c in ix.callbacks[0].json["data"]["choices"]]
        assert choices == [f"p{i:02d}" for i in range(25)], command
    ix = await s.send_interaction(s.autocomplete("preset show", {"name": "P1"}))
    await ix.wait_callback()
    assert [c["value"] for c in ix.callbacks[0].json["data"]["choices"]] == [f"p{i}" for i in range(10, 20)]
    ix = await s.send_interaction(s.autocomplete("preset show", {"name": "oth"}))
    await ix.wait_callback()
    assert [c["value"] for c in ix.callbacks[0].json["data"]["choices"]] == ["Other"]
    ix = await s.send_interaction(s.autocomplete("preset show", {"name": "p"}, user="alice"))
    await ix.wait_callback()
    assert ix.callbacks[0].json["data"]["choices"] == []  # only your own presets
    s.assert_no_invalid_requests()


async def test_import_infotext_and_export_then_import_the_file(harness):
    s = harness.standin
    text = await deferred(s, "preset import", {"name": "castle", "text": INFOTEXT})
    assert "preset **castle** created" in text
    assert "prompt: “a castle on a hill”" in text and "no: “ugly”" in text and "--steps 4" in text
    assert "--hires 2" in text  # Hires. fix is a setting
    assert "missing LoRA x (hash ab)" in text  # LoRAs travel in the prompt; their hashes are looked up here
    assert "not imported" not in text  # both Hires and the LoRA hashes are understood
    assert "left out on purpose: seed" in text
    assert "updated" in await deferred(s, "preset import", {"name": "Castle", "text": INFOTEXT})
    assert "give the new preset a name" in await deferred(s, "preset import", {"text": INFOTEXT})
    assert "no A1111 parameter line found" in await deferred(s, "preset import", {"name": "x", "text": "hello"})
    assert "give an infotext as text" in await deferred(s, "preset import", {"name": "x"})
    await say(s, "preset save", {"name": "fast", "options": FAST})
    await say(s, "preset default", {"name": "fast"})

    ix = await s.send_interaction(s.slash("preset export"))
    await ix.wait_callback()
    assert "your presets" in await ephemeral_text(ix)
    attachment = ix.original_message["attachments"][0]
    assert attachment["filename"] == "sdbot-presets.json"
    data = s.attachment_bytes(attachment)
    doc = json.loads(data)
    assert [(p["name"], p["default"]) for p in doc["presets"]] == [("Castle", False), ("fast", True)]

    upload = s.upload_attachment("sdbot-presets.json", data)
    text = await deferred(s, "preset import", {"file": upload}, user="alice")
    assert "created Castle, fast" in text and "⭐ default: fast" in text
    listing = await say(s, "preset list", user="alice")
    assert "**fast** ⭐ default: --size 64x64 --steps 2" in listing and "**Castle**" in listing
    assert "updated Castle, fast" in await deferred(s, "preset import", {"file": upload})

    junk = s.upload_attachment("presets.json", b"{not json")
    assert "the preset file is not valid JSON" in await deferred(s, "preset import", {"file": junk})
    plain = io.BytesIO()
    Image.new("RGB", (8, 8)).save(plain, format="PNG")
    bare_png = s.upload_attachment("plain.png", plain.getvalue())
    assert "that PNG carries no A1111 infotext" in await deferred(s, "preset import", {"name": "x", "file": bare_png})
    broken = s.upload_attachment("broken.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    assert "not a PNG image, or a damaged one" in await deferred(s, "preset import", {"name": "x", "file": broken})
    s.assert_no_invalid_requests()


async def test_presets_shape_imagine(harness):
    s = harness.standin
    await say(s, "preset save", {"name": "base", "options": f"{FAST} --cfg 5 --no ugly"})
    text = await say(s, "preset default", {"name": "BASE"})
    assert "**base** now applies to every /imagine" in text
    assert "**base** ⭐ default" in await say(s, "preset list")

    params, message = await imagine_params(s, {"prompt": "a cat --seed 1"})
    assert params["Steps"] == "2" and params["CFG scale"] == "5" and params["Size"] == "64x64"
    assert params["negative"] == "ugly" and params["prompt"] == "a cat"
    steps = next(f for f in message["embeds"][0]["fields"] if f["name"] == "Steps")
    assert "preset default:base" in steps["value"]

    params, _ = await imagine_params(s, {"prompt": "a cat --seed 1 --cfg 6", "cfg": 8.0})
    assert params["CFG scale"] == "8" and params["Steps"] == "2"  # typed wins over inline and the default

    await say(s, "preset save", {"name": "three", "steps": 3, "cfg": 4.0})
    params, _ = await imagine_params(s, {"prompt": "a cat --three --seed 2"})
    assert params["Steps"] == "3" and params["CFG scale"] == "4" and params["Size"] == "64x64"
    assert params["prompt"] == "a cat"
    params, _ = await imagine_params(s, {"prompt": "a dog", "preset": "three", "steps": 2})
    assert params["Steps"] == "2" and params["CFG scale"] == "4" and params["prompt"] == "a dog"

    assert await say(s, "preset default", {"name": "clear"}) == "default preset cleared"
    params, last = await imagine_params(s, {"prompt": f"a bird {FAST} --seed 4"})
    assert params["CFG scale"] == "7" and not params["negative"]

    text = await say(s, "preset save", {"name": "again", "from_last": True})
    assert "preset **again** created" in text and "--size 64x64" in text and "--steps 2" in text
    assert "--seed" not in text and "a bird" not in text

    png = s.upload_attachment("bird.png", s.attachment_bytes(last["attachments"][0]), content_type="image/png")
    text = await deferred(s, "preset import", {"name": "bird", "file": png})
    assert "preset **bird** created" in text and "prompt: “a bird”" in text and "--steps 2" in text
    assert "left out on purpose: seed" in text and "not imported" not in text  # sdbot reads its own PNGs fully
    s.assert_no_invalid_requests()


async def test_preset_limit_is_enforced_with_a_clear_message(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15, database={"max_presets_per_user": 2}) as h:
        s = h.standin
        await say(s, "preset save", {"name": "a", "steps": 5})
        await say(s, "preset save", {"name": "b", "steps": 5})
        text = await say(s, "preset save", {"name": "c", "steps": 5})
        assert "you already have 2 presets, the limit is 2" in text
        assert "updated" in await say(s, "preset save", {"name": "A", "steps": 6})  # saving over one still works
        assert "the limit is 2" in await deferred(s, "preset import", {"name": "c", "text": INFOTEXT})
        doc = {
            "format": "sdbot-presets",
            "version": 1,
            "presets": [{"name": n, "options": {"steps": 5}} for n in ("a", "c", "d")],
        }
        upload = s.upload_attachment("p.json", json.dumps(doc).encode())
        text = await deferred(s, "preset import", {"file": upload})
        assert "importing 2 new presets would give you 4; the limit is 2" in text
        empty = s.upload_attachment("none.json", json.dumps({**doc, "presets": []}).encode())
        assert "the file holds no presets" in await deferred(s, "preset import", {"file": empty})
        assert (await say(s, "preset list")).startswith("your presets (2):")
        s.assert_no_invalid_requests()


async def test_ar_is_applied_the_same_by_imagine_and_preset_save(harness):
    """--ar keeps the area of the size it replaces, and a size given with it wins: in /imagine and /preset save."""
    s = harness.standin
    await say(s, "preset save", {"name": "square", "options": "--size 128x128 --steps 2"})
    params, _ = await imagine_params(s, {"prompt": "a cat --square --ar 1:2 --seed 1"})
    assert params["Size"] == "88x184"  # 128x128's area at 1:2
    text = await say(s, "preset save", {"name": "tall", "from_last": True, "options": "--size 128x128 --ar 1:2"})
    assert "--size 128x128" in text  # the size given with it wins, as in /imagine:
    params, _ = await imagine_params(s, {"prompt": "a cat --square --ar 1:2 --size 128x128 --seed 1"})
    assert params["Size"] == "128x128"

    await imagine_params(s, {"prompt": "a cat --size 128x128 --steps 2 --seed 1"})
    text = await say(s, "preset save", {"name": "tall", "from_last": True, "options": "--ar 1:2"})
    assert "--size 88x184" in text  # the last image's area, as /imagine with a 128x128 preset
    s.assert_no_invalid_requests()
