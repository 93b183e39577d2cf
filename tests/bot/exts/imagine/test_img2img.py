"""img2img through Discord: the `image` attachment, refused inputs, Upscale / Vary after a restart, the Remix
menu and moderators seeing the start image; the real bot against the Discord stand-in."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from bot.store import jobs as job_store
from bot.store.db import transaction
from engine.infotext import parse_infotext, read_png_infotext
from tests.bot.exts.helpers import job_id_of, with_images
from tests.bot.exts.moderation.test_cog import mod_bot, setup_guild
from tests.bot.harness import running_bot


def png(width: int = 96, height: int = 64, colour=(40, 120, 220)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def params_of(standin, message, index: int = 0) -> dict[str, str]:
    return parse_infotext(read_png_infotext(standin.attachment_bytes(message["attachments"][index]))).params


def field(message, name: str) -> str:
    return next(f["value"] for f in message["embeds"][0]["fields"] if f["name"] == name)


async def jobs_of(h, user_id: int):
    return await transaction(h.services.sessions, job_store.list_for_user, user_id, None)


async def refusal(ix) -> str:
    """The ephemeral message a refused command gets (at once, or replacing the "thinking…" message)."""
    await ix.wait_callback()
    body = ix.callbacks[0].json
    if body["type"] == 4:
        return body["data"]["content"]
    followup = await ix.wait_for(lambda r: r.method == "POST" and r.route.startswith("/webhooks/"), timeout=30)
    assert followup.json["flags"] & 64
    return followup.json["content"]


async def test_imagine_from_an_attachment_then_upscale_and_vary_after_a_restart(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        start = s.upload_attachment("start.png", png(96, 64), content_type="image/png")
        message = await with_images(
            s, s.slash("imagine", {"prompt": "a cat --steps 3 --seed 4", "image": start, "strength": 0.5})
        )
        params = params_of(s, message)
        assert params["Size"] == "96x64" and params["Denoising strength"] == "0.5"  # the attachment's own size
        assert field(message, "Start image") == "attachment start.png"
        ids = [c["custom_id"] for row in message["components"] for c in row["components"]]
        job_id = ids[0].split(":")[2]
        assert f"sdbot:img:{job_id}:0:upscale" in ids and f"sdbot:img:{job_id}:0:strong" in ids

        await h.restart()
        upscaled = await with_images(s, s.button(f"sdbot:img:{job_id}:0:upscale", message=message))
        assert Image.open(io.BytesIO(s.attachment_bytes(upscaled["attachments"][0]))).size == (192, 128)
        up_params = params_of(s, upscaled)
        assert up_params["Denoising strength"] == "0.3" and up_params["Seed"] == "4"
        assert field(upscaled, "Start image") == f"Upscale ×2 of job #{job_id}, image 1"
        new_id = job_id_of(upscaled)
        info = await s.send_interaction(s.button(f"sdbot:job:{new_id}:info", message=upscaled))
        await info.wait_callback()
        embed = info.callbacks[0].json["data"]["embeds"][0]
        assert any(f["value"] == f"Upscale ×2 of job #{job_id}, image 1" for f in embed["fields"])  # lineage

        varied = await with_images(s, s.button(f"sdbot:img:{job_id}:0:subtle", message=message))
        v_params = params_of(s, varied)
        assert v_params["Denoising strength"] == "0.35" and v_params["Size"] == "96x64"
        assert v_params["Seed"] != "4"  # a new seed
        s.assert_no_invalid_requests()


async def test_batch_results_get_one_row_of_buttons_per_image(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        message = await with_images(s, s.slash("imagine", {"prompt": "a cat --size 64x64 --steps 2 --batch 3"}))
        rows = [[c["custom_id"] for c in row["components"]] for row in message["components"]]
        assert len(rows) == 4 and all(r[0].startswith("sdbot:img:") for r in rows[1:])
        assert [r[2].rsplit(":", 2)[1] for r in rows[1:]] == ["0", "1", "2"]
        s.assert_no_invalid_requests()


async def test_bad_attachments_are_refused_and_nothing_is_queued(tmp_path, tiny_sd15):
    def bomb() -> bytes:
        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 99))
            + chunk(b"IEND", b"")
        )

    async with running_bot(tmp_path, tiny_sd15, engine={"max_input_bytes": 40_000}) as h:
        s = h.standin
        cases = [
            (s.upload_attachment("bomb.png", bomb(), content_type="image/png"), "the limit is 16,777,216 pixels"),
            (
                s.upload_attachment("cat.png", b"GIF89a not really", content_type="image/png"),
                "not a PNG, JPEG or WebP image",
            ),
            (
                s.upload_attachment("big.png", b"\x89PNG\r\n\x1a\n" + bytes(50_000), content_type="image/png"),
                "the limit for a start image is",
            ),
        ]
        for attachment, message in cases:
            ix = await s.send_interaction(s.slash("imagine", {"prompt": "a cat --steps 2", "image": attachment}))
            assert message in await refusal(ix)
        assert await jobs_of(h, s.user.id) == []
        assert not [m for m in s.messages.values() if m.get("attachments")]
        s.assert_no_invalid_requests()


async def test_a_jpeg_within_the_limit_renders_though_its_cleaned_png_is_larger(tmp_path, tiny_sd15):
    noise = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=90)
    jpeg = buffer.getvalue()
    async with running_bot(tmp_path, tiny_sd15, engine={"max_input_bytes": len(jpeg) + 1024}) as h:
        s = h.standin
        start = s.upload_attachment("photo.jpg", jpeg, content_type="image/jpeg")
        message = await with_images(s, s.slash("imagine", {"prompt": "a cat --steps 2", "image": start}))
        assert params_of(s, message)["Size"] == "160x120"
        (kept,) = (tmp_path / "outputs" / "inputs").glob("*.png")
        assert kept.stat().st_size > len(jpeg) + 1024  # the cleaned PNG is over the limit the JPEG passed
        s.assert_no_invalid_requests()


async def test_remix_menu_starts_from_the_messages_image(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        original = await with_images(s, s.slash("imagine", {"prompt": "a red fox --size 64x96 --steps 2"}))
        menu = await s.send_interaction(s.message_command("Remix", original))
        await menu.wait_callback()
        modal = menu.callbacks[0].json
        assert modal["type"] == 9
        texts = [c for row in modal["data"]["components"] if row["type"] == 1 for c in row["components"]]
        assert texts[0]["value"] == "a red fox" and texts[1]["value"] == "0.75"
        remixed = await with_images(
            s, s.modal_submit(modal["data"]["custom_id"], {"prompt": "a blue fox --steps 2", "strength": "0.6"})
        )
        params = params_of(s, remixed)
        assert params["Denoising strength"] == "0.6" and params["Size"] == "64x96"
        assert field(remixed, "Start image") == f"attachment {original['attachments'][0]['filename']}"

        bad = await s.send_interaction(s.message_command("Remix", original))
        await bad.wait_callback()
        refused = await s.send_interaction(
            s.modal_submit(bad.callbacks[0].json["data"]["custom_id"], {"prompt": "x", "strength": "2"})
        )
        assert "strength takes a number from 0 to 1" in await refusal(refused)
        s.assert_no_invalid_requests()


async def test_remix_on_a_message_without_an_image(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        ix = await s.send_interaction(s.slash("imagine", {"prompt": "a cat --steps abc"}))
        await refusal(ix)
        plain = next(m for m in s.messages.values() if not m.get("attachments"))
        menu = await s.send_interaction(s.message_command("Remix", plain))
        assert "has no image to remix" in await refusal(menu)


async def test_moderators_see_the_start_image_with_the_prompt(tmp_path, tiny_sd15):
    async with mod_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        await setup_guild(h, mode="prompts")
        start = s.upload_attachment("start.png", png(64, 64), content_type="image/png")
        since = s.mark()
        ix = await s.send_interaction(s.slash("imagine", {"prompt": "a lighthouse --steps 2", "image": start}))
        await ix.wait_original_message(lambda m: "waits for a moderator" in m.get("content", ""), timeout=30)
        from tests.bot.exts.moderation.test_cog import review_message

        review = await review_message(s, since)
        assert [a["filename"] for a in review["attachments"]] == ["SPOILER_start-image.png"]
        assert any(f["name"] == "Start image" for f in review["embeds"][0]["fields"])
        assert "a lighthouse" in review["embeds"][0]["description"]
        s.assert_no_invalid_requests()


async def test_edit_of_an_img2img_result_starts_from_the_same_image(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        start = s.upload_attachment("start.png", png(96, 64, (200, 60, 30)), content_type="image/png")
        message = await with_images(
            s,
            s.slash(
                "imagine", {"prompt": "a cat --steps 3 --seed 4 --resize-mode crop", "image": start, "strength": 0.5}
            ),
        )
        job_id = job_id_of(message)
        press = await s.send_interaction(s.button(f"sdbot:job:{job_id}:edit", message=message))
        await press.wait_callback()
        modal = press.callbacks[0].json["data"]
        texts = {c["components"][0]["custom_id"]: c["components"][0].get("value") for c in modal["components"]}
        assert "--strength 0.5" in texts["options"] and "--resize-mode crop" in texts["options"]

        # Unchanged: the same pixels, so the edit ran img2img from the same image, not txt2img.
        again = await with_images(
            s,
            s.modal_submit(
                modal["custom_id"], {"prompt": texts["prompt"], "negative": "", "options": texts["options"]}
            ),
        )
        assert s.attachment_bytes(again["attachments"][0]) == s.attachment_bytes(message["attachments"][0])
        assert field(again, "Start image") == "attachment start.png"

        press = await s.send_interaction(s.button(f"sdbot:job:{job_id}:edit", message=message))
        await press.wait_callback()  # a modal answers once: a new one for the second edit
        edited = await with_images(
            s,
            s.modal_submit(
                press.callbacks[0].json["data"]["custom_id"],
                {
                    "prompt": "a dog",
                    "negative": "",
                    "options": texts["options"].replace("--strength 0.5", "--strength 0.6"),
                },
            ),
        )
        params = params_of(s, edited)
        assert params["Denoising strength"] == "0.6" and params["Size"] == "96x64"
        jobs = {j.id: j for j in await jobs_of(h, s.user.id)}
        first, last = jobs[job_id], jobs[max(jobs)]
        assert last.request["init_image"] == first.request["init_image"] and last.request["resize_mode"] == "crop"

        Path(first.request["init_image"]).unlink()  # the start image is gone: a clear answer, no txt2img instead
        press = await s.send_interaction(s.button(f"sdbot:job:{job_id}:edit", message=message))
        await press.wait_callback()
        gone = await s.send_interaction(
            s.modal_submit(
                press.callbacks[0].json["data"]["custom_id"],
                {"prompt": "a dog", "negative": "", "options": texts["options"]},
            )
        )
        assert "the start image (attachment start.png) is gone" in await refusal(gone)
        assert len(await jobs_of(h, s.user.id)) == len(jobs)
        s.assert_no_invalid_requests()


async def test_the_default_size_rounds_to_64_for_sdxl(tmp_path, tiny_sdxl):
    async with running_bot(tmp_path, tiny_sdxl) as h:
        s = h.standin
        start = s.upload_attachment("start.png", png(200, 136), content_type="image/png")
        message = await with_images(s, s.slash("imagine", {"prompt": "a cat --steps 2", "image": start}))
        assert params_of(s, message)["Size"] == "192x128"  # SD 1.x keeps 8: 96x64 in the first test
        s.assert_no_invalid_requests()


async def test_an_image_command_cut_off_by_a_restart_runs_after_it(tmp_path, tiny_sd15, monkeypatch):
    """Stopped between the acknowledgement and the download (as by a kill): the journal keeps the command with
    its attachment's URL, and the next start downloads the image again and runs it."""
    import asyncio
    import importlib

    hang = asyncio.Event()

    async def never_downloads(*args, **kwargs):
        await hang.wait()

    def cut_off_downloads() -> None:  # the running bot's module (a restart loads the extension afresh)
        monkeypatch.setattr(importlib.import_module("bot.exts.imagine._inputs"), "save_attachment", never_downloads)

    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        cut_off_downloads()
        start = s.upload_attachment("start.png", png(96, 64), content_type="image/png")
        ix = await s.send_interaction(
            s.slash("imagine", {"prompt": "a cat --steps 2", "image": start, "strength": 0.4})
        )
        await ix.wait_callback()  # deferred ("thinking…"), the attachment not saved
        assert await jobs_of(h, s.user.id) == []
        await h.restart()
        message = await ix.wait_original_message(lambda m: m.get("attachments"), timeout=60)
        params = params_of(s, message)
        assert params["Size"] == "96x64" and params["Denoising strength"] == "0.4"
        assert field(message, "Start image") == "attachment start.png"

        cut_off_downloads()
        gone = s.upload_attachment("gone.png", png(64, 64), content_type="image/png")
        ix = await s.send_interaction(s.slash("imagine", {"prompt": "a cat --steps 2", "image": gone}))
        await ix.wait_callback()
        del s.attachments[int(gone["id"])]  # Discord no longer has it when the bot is back
        await h.restart()
        told = await ix.wait_original_message(lambda m: "restarted" in m.get("content", ""), timeout=30)
        assert "its image (gone.png) could not be downloaded again after the restart; send it again" in told["content"]
        s.assert_no_invalid_requests()
