"""Inpainting through Discord: /imagine `image:` + `mask:`, 🖌️ Vary (Region), 🔍 Zoom Out, ⬅️ ➡️ ⬆️ ⬇️ Pan (also after a
restart), Remix with a mask, moderators seeing the start image and the mask, a mask cut off by a restart; the real
bot against the Discord stand-in."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from engine.render.masking import blur
from engine.render.outpaint import canvas_and_mask, zoom_out_margins
from engine.render.regions import parse_region, region_mask
from tests.bot.exts.helpers import ephemeral_text, job_id_of, with_images
from tests.bot.exts.imagine.test_img2img import field, params_of, png, refusal
from tests.bot.exts.moderation.test_cog import mod_bot, review_message, setup_guild
from tests.bot.harness import running_bot


def noise_png(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def mask_png(width: int, height: int, box: tuple[int, int, int, int]) -> bytes:
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, box)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def image_of(s, message, index: int = 0) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(s.attachment_bytes(message["attachments"][index]))).convert("RGB"))


def kept(mask: Image.Image, sigma: int = 4) -> np.ndarray:
    """Where the original's pixels must be exactly: outside the blurred mask."""
    return np.asarray(blur(mask.convert("L"), sigma)) == 0


def custom_ids(message) -> list[list[str]]:
    return [[c["custom_id"] for c in row["components"]] for row in message["components"]]


async def test_imagine_with_a_mask_changes_only_the_white_part(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        start = s.upload_attachment("start.png", noise_png(64, 64), content_type="image/png")
        mask = s.upload_attachment("mask.png", mask_png(64, 64, (16, 16, 48, 40)), content_type="image/png")
        message = await with_images(s, s.slash("imagine", {"prompt": "a cat --steps 3", "image": start, "mask": mask}))
        params = params_of(s, message)
        assert params["Mask blur"] == "4" and params["Denoising strength"] == "0.75" and params["Size"] == "64x64"
        assert field(message, "Mask") == "attachment mask.png"
        out, original = image_of(s, message), np.asarray(Image.open(io.BytesIO(noise_png(64, 64))))
        keep = kept(Image.open(io.BytesIO(mask_png(64, 64, (16, 16, 48, 40)))))
        assert np.array_equal(out[keep], original[keep]) and (out[~keep] != original[~keep]).any()

        alone = await s.send_interaction(s.slash("imagine", {"prompt": "a cat", "mask": mask}))
        assert "a mask needs the image to change" in await ephemeral_text(alone)
        bad = s.upload_attachment("bad.png", b"GIF89a not an image", content_type="image/png")
        refused = await s.send_interaction(s.slash("imagine", {"prompt": "a cat", "image": start, "mask": bad}))
        assert "the mask bad.png is not a PNG, JPEG or WebP image" in await refusal(refused)
        s.assert_no_invalid_requests()


async def test_vary_region_zoom_out_and_pan_work_after_a_restart(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        message = await with_images(s, s.slash("imagine", {"prompt": "a red fox --size 128x128 --steps 2 --seed 3"}))
        job_id = job_id_of(message)
        rows = custom_ids(message)
        assert [r.rsplit(":", 1)[1] for r in rows[1] + rows[2]] == [
            "upscale", "subtle", "strong", "region", "zoom15", "zoom2", "left", "right", "up", "down"
        ]  # fmt: skip
        original = image_of(s, message)
        await h.restart()

        # 🖌️ Vary (Region): a modal for the region and the prompt (prefilled), then an inpaint of that region.
        press = await s.send_interaction(s.button(f"sdbot:img:{job_id}:0:region", message=message))
        await press.wait_callback()
        modal = press.callbacks[0].json["data"]
        prefilled = {c["components"][0]["custom_id"]: c["components"][0].get("value") for c in modal["components"]}
        assert prefilled["prompt"] == "a red fox"
        varied = await with_images(
            s, s.modal_submit(modal["custom_id"], {"region": "a1 b2", "prompt": "a red fox with a hat"})
        )
        params = params_of(s, varied)
        assert params["Mask blur"] == "4" and params["Size"] == "128x128" and params["Denoising strength"] == "0.75"
        assert field(varied, "Start image") == f"Vary (Region) of job #{job_id}, image 1"
        assert field(varied, "Mask") == "region a1 b2"
        keep = kept(region_mask(parse_region("a1 b2"), 128, 128))
        out = image_of(s, varied)
        assert np.array_equal(out[keep], original[keep]) and (out[~keep] != original[~keep]).any()

        # 🔍 Zoom Out 2×: the same size, the image shrunk into the middle, the frame painted.
        zoomed = await with_images(s, s.button(f"sdbot:img:{job_id}:0:zoom2", message=message))
        params = params_of(s, zoomed)
        assert params["Size"] == "128x128" and params["Masked content"] == "fill"
        assert field(zoomed, "Start image") == f"Zoom Out 2× of job #{job_id}, image 1"
        canvas, border = canvas_and_mask(Image.fromarray(original), zoom_out_margins(128, 128, 2.0), (128, 128))
        keep = kept(border)
        assert keep[54:74, 54:74].all() and np.array_equal(image_of(s, zoomed)[keep], np.asarray(canvas)[keep])

        # ➡️ Pan: the right side grown by half; 1.5× is there too.
        panned = await with_images(s, s.button(f"sdbot:img:{job_id}:0:right", message=message))
        assert params_of(s, panned)["Size"] == "192x128"
        assert np.array_equal(image_of(s, panned)[:, :100], original[:, :100])  # beyond the seam's blur
        wider = await with_images(s, s.button(f"sdbot:img:{job_id}:0:zoom15", message=message))
        assert params_of(s, wider)["Size"] == "128x128"
        s.assert_no_invalid_requests()


async def test_pan_stays_within_the_servers_pixel_cap(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        caps = await s.send_interaction(s.slash("config caps", {"pixels": 16384}, user="guild-owner"))
        await ephemeral_text(caps)
        message = await with_images(s, s.slash("imagine", {"prompt": "a cat --size 128x128 --steps 2"}))
        job_id = job_id_of(message)
        panned = await with_images(s, s.button(f"sdbot:img:{job_id}:0:up", message=message))
        width, height = (int(n) for n in params_of(s, panned)["Size"].split("x"))
        assert width * height <= 16384 and abs(width / height - 128 / 192) < 0.1  # 192 tall, shrunk to the cap
        assert field(panned, "Start image") == f"Pan up of job #{job_id}, image 1"
        s.assert_no_invalid_requests()


async def test_several_images_get_a_zoom_and_pan_button_each(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        message = await with_images(s, s.slash("imagine", {"prompt": "a cat --size 64x64 --steps 2 --batch 2"}))
        job_id = job_id_of(message)
        rows = custom_ids(message)
        assert [r[-1] for r in rows[1:]] == [f"sdbot:img:{job_id}:0:more", f"sdbot:img:{job_id}:1:more"]
        await h.restart()
        more = await s.send_interaction(s.button(f"sdbot:img:{job_id}:1:more", message=message))
        await more.wait_callback()
        panel = more.callbacks[0].json["data"]
        assert panel["flags"] & 64
        ids = [c["custom_id"] for row in panel["components"] for c in row["components"]]
        assert ids == [f"sdbot:img:{job_id}:1:{a}" for a in ("zoom15", "zoom2", "left", "right", "up", "down")]
        panel_message = await more.wait_original_message()
        down = await with_images(s, s.button(ids[-1], message=panel_message))
        assert params_of(s, down)["Size"] == "64x96"
        assert field(down, "Start image") == f"Pan down of job #{job_id}, image 2"
        s.assert_no_invalid_requests()


async def test_a_bad_region_is_refused_in_one_line(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        message = await with_images(s, s.slash("imagine", {"prompt": "a cat --size 64x64 --steps 2"}))
        press = await s.send_interaction(s.button(f"sdbot:img:{job_id_of(message)}:0:region", message=message))
        await press.wait_callback()
        modal = press.callbacks[0].json["data"]
        refused = await s.send_interaction(s.modal_submit(modal["custom_id"], {"region": "d4", "prompt": "a cat"}))
        text = await refusal(refused)
        assert "a region is cells of a 3x3 grid such as `a1 b2`" in text and "\n" not in text.strip()
        s.assert_no_invalid_requests()


async def test_remix_with_a_mask_inpaints(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        original = await with_images(s, s.slash("imagine", {"prompt": "a red fox --size 64x64 --steps 2"}))
        menu = await s.send_interaction(s.message_command("Remix", original))
        await menu.wait_callback()
        modal = menu.callbacks[0].json["data"]
        mask = s.upload_attachment("mask.png", mask_png(64, 64, (0, 0, 32, 64)), content_type="image/png")
        remixed = await with_images(
            s, s.modal_submit(modal["custom_id"], {"prompt": "a blue fox --steps 2", "strength": "0.6", "mask": mask})
        )
        params = params_of(s, remixed)
        assert params["Denoising strength"] == "0.6" and params["Mask blur"] == "4"
        assert field(remixed, "Mask") == "attachment mask.png"
        keep = kept(Image.open(io.BytesIO(mask_png(64, 64, (0, 0, 32, 64)))))
        assert np.array_equal(image_of(s, remixed)[keep], image_of(s, original)[keep])
        s.assert_no_invalid_requests()


async def test_moderators_see_the_start_image_and_the_mask(tmp_path, tiny_sd15):
    async with mod_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        await setup_guild(h, mode="prompts")
        start = s.upload_attachment("start.png", png(64, 64), content_type="image/png")
        mask = s.upload_attachment("mask.png", mask_png(64, 64, (8, 8, 32, 32)), content_type="image/png")
        since = s.mark()
        ix = await s.send_interaction(
            s.slash("imagine", {"prompt": "a lighthouse --steps 2", "image": start, "mask": mask})
        )
        await ix.wait_original_message(lambda m: "waits for a moderator" in m.get("content", ""), timeout=30)
        review = await review_message(s, since)
        assert [a["filename"] for a in review["attachments"]] == ["SPOILER_start-image.png", "SPOILER_mask.png"]
        names = [f["name"] for f in review["embeds"][0]["fields"]]
        assert "Start image" in names and "Mask" in names
        shown = Image.open(io.BytesIO(s.attachment_bytes(review["attachments"][1])))
        assert shown.getbbox() == (8, 8, 32, 32)  # the mask as the engine reads it: white = change
        s.assert_no_invalid_requests()


async def test_a_mask_cut_off_by_a_restart_is_downloaded_again(tmp_path, tiny_sd15, monkeypatch):
    import asyncio
    import importlib

    hang = asyncio.Event()

    async def never_downloads(*args, **kwargs):
        await hang.wait()

    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        inputs = importlib.import_module("bot.exts.imagine._inputs")
        monkeypatch.setattr(inputs, "save_mask_attachment", never_downloads)
        start = s.upload_attachment("start.png", noise_png(64, 64, 2), content_type="image/png")
        mask = s.upload_attachment("mask.png", mask_png(64, 64, (20, 20, 44, 44)), content_type="image/png")
        ix = await s.send_interaction(s.slash("imagine", {"prompt": "a cat --steps 2", "image": start, "mask": mask}))
        await ix.wait_callback()  # deferred, the mask not saved
        await h.restart()
        message = await ix.wait_original_message(lambda m: m.get("attachments"), timeout=60)
        assert params_of(s, message)["Mask blur"] == "4" and field(message, "Mask") == "attachment mask.png"
        s.assert_no_invalid_requests()
