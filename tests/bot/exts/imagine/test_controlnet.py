"""ControlNet through Discord: /imagine's control options (autocompleted), inline `--cn` with an attached image, the
"Use as control" message menu, a command cut off by a restart; the real bot against the Discord stand-in."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.bot.exts.helpers import with_images
from tests.bot.exts.imagine.test_img2img import field, jobs_of, params_of, png, refusal
from tests.bot.harness import running_bot

FAST = "--steps 2 --seed 3"


@pytest.fixture
def with_controlnets(tmp_path: Path, tiny_sd15: Path, tiny_controlnets: dict[str, Path]) -> Path:
    """The harness's models dir, made beforehand with the tiny ControlNets beside the tiny checkpoint."""
    models = tmp_path / "models"
    shutil.copytree(tiny_sd15, models / "tiny-sd15")
    shutil.copy(tiny_controlnets["sd15-file"], models / "ControlNet" / "control_tiny_sd15_canny.safetensors")
    shutil.copy(tiny_controlnets["sdxl-file"], models / "ControlNet" / "tiny_xl_canny.safetensors")
    return models


@pytest.fixture(autouse=True)
def _controlnet_folder(tmp_path: Path) -> None:
    (tmp_path / "models" / "ControlNet").mkdir(parents=True)


def controlnet_of(s, message) -> str:
    return params_of(s, message)["ControlNet 0"]


async def test_imagine_with_a_control_image_and_its_settings(tmp_path, tiny_sd15, with_controlnets):
    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        ix = await s.send_interaction(s.autocomplete("imagine", {"prompt": "x", "control_model": "can"}))
        await ix.wait_callback()
        assert [c["value"] for c in ix.callbacks[0].json["data"]["choices"]] == [
            "control_tiny_sd15_canny",
            "tiny_xl_canny",
        ]
        ix = await s.send_interaction(s.autocomplete("imagine", {"prompt": "x", "control_module": "in"}))
        await ix.wait_callback()
        assert "invert" in [c["value"] for c in ix.callbacks[0].json["data"]["choices"]]

        pose = s.upload_attachment("pose.png", png(96, 64, (230, 200, 40)), content_type="image/png")
        options = {
            "prompt": f"a dancer {FAST}",
            "control_image": pose,
            "control_model": "control_tiny_sd15_canny",
            "control_module": "canny",
            "control_weight": 0.7,
        }
        message = await with_images(s, s.slash("imagine", options))
        unit = controlnet_of(s, message)
        assert unit.startswith("Module: canny, Model: control_tiny_sd15_canny [") and "Weight: 0.7," in unit
        assert params_of(s, message)["Size"] == "96x64"  # sized by the control image, as by a start image
        assert field(message, "ControlNet") == "canny · control_tiny_sd15_canny · weight 0.7\n-# attachment pose.png"
        assert "Start image" not in [f["name"] for f in message["embeds"][0]["fields"]]
        s.assert_no_invalid_requests()


async def test_inline_cn_makes_the_attached_image_the_control(tmp_path, tiny_sd15, with_controlnets):
    """`--cn canny:0.5` with the `image` attachment: the image steers (no img2img), the model picked by module."""
    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        lines = s.upload_attachment("lines.png", png(64, 64, (10, 10, 10)), content_type="image/png")
        message = await with_images(s, s.slash("imagine", {"prompt": f"a cat --cn canny:0.5 {FAST}", "image": lines}))
        params = params_of(s, message)
        assert "Denoising strength" not in params  # not img2img
        assert params["ControlNet 0"].startswith("Module: canny, Model: control_tiny_sd15_canny [")
        assert "Weight: 0.5," in params["ControlNet 0"]
        s.assert_no_invalid_requests()


async def test_use_as_control_menu(tmp_path, tiny_sd15, with_controlnets):
    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        original = await with_images(s, s.slash("imagine", {"prompt": f"a red fox --size 64x96 {FAST}"}))
        menu = await s.send_interaction(s.message_command("Use as control", original))
        await menu.wait_callback()
        modal = menu.callbacks[0].json
        assert modal["type"] == 9
        texts = [c for row in modal["data"]["components"] for c in row["components"]]
        assert [t["custom_id"] for t in texts] == ["prompt", "model", "module"] and texts[2]["value"] == "canny"
        answer = {"prompt": f"a blue fox {FAST}", "model": "", "module": "invert"}
        steered = await with_images(s, s.modal_submit(modal["data"]["custom_id"], answer))
        unit = controlnet_of(s, steered)
        assert unit.startswith("Module: invert (from white bg & black line), Model: control_tiny_sd15_canny [")
        assert params_of(s, steered)["Size"] == "64x96"
        assert field(steered, "ControlNet").endswith(f"-# attachment {original['attachments'][0]['filename']}")

        plain = await s.send_interaction(s.slash("imagine", {"prompt": "a cat --steps abc"}))
        await refusal(plain)
        text_only = next(m for m in s.messages.values() if not m.get("attachments"))
        refused = await s.send_interaction(s.message_command("Use as control", text_only))
        assert "has no image to use as control" in await refusal(refused)
        s.assert_no_invalid_requests()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"control_model": "control_v11p_sd15_openpose"}, "ControlNet model 'control_v11p_sd15_openpose' not found"),
        ({"control_model": "tiny_xl_canny"}, "ControlNet tiny_xl_canny is for SDXL; the checkpoint tiny-sd15 is"),
    ],
)
async def test_unusable_controls_are_one_line(tmp_path, tiny_sd15, with_controlnets, options, message):
    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        pose = s.upload_attachment("pose.png", png(64, 64), content_type="image/png")
        ix = await s.send_interaction(s.slash("imagine", {"prompt": f"a cat {FAST}", "control_image": pose, **options}))
        await ix.wait_callback()
        final = await ix.wait_original_message(lambda m: message in m.get("content", ""), timeout=30)
        assert "\n" not in final["content"].split("⚠️")[-1].strip()
        s.assert_no_invalid_requests()


async def test_a_bad_module_is_refused_before_any_job(tmp_path, tiny_sd15, with_controlnets):
    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        pose = s.upload_attachment("pose.png", png(64, 64), content_type="image/png")
        ix = await s.send_interaction(s.slash("imagine", {"prompt": "a cat --cn sobel", "image": pose}))
        assert "unknown ControlNet preprocessor 'sobel'; valid: none, canny" in await refusal(ix)
        assert await jobs_of(h, s.user.id) == []
        s.assert_no_invalid_requests()


async def test_a_control_command_cut_off_by_a_restart_runs_after_it(tmp_path, tiny_sd15, with_controlnets, monkeypatch):
    import asyncio
    import importlib

    hang = asyncio.Event()

    async def never_downloads(*args, **kwargs):
        await hang.wait()

    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        monkeypatch.setattr(importlib.import_module("bot.exts.imagine._inputs"), "save_attachment", never_downloads)
        pose = s.upload_attachment("pose.png", png(96, 64), content_type="image/png")
        ix = await s.send_interaction(
            s.slash("imagine", {"prompt": f"a cat {FAST}", "control_image": pose, "control_module": "canny"})
        )
        await ix.wait_callback()
        assert await jobs_of(h, s.user.id) == []
        await h.restart()
        message = await ix.wait_original_message(lambda m: m.get("attachments"), timeout=60)
        assert controlnet_of(s, message).startswith("Module: canny, Model: control_tiny_sd15_canny [")
        assert params_of(s, message)["Size"] == "96x64"
        s.assert_no_invalid_requests()


A1111 = (
    "a knight\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64, "
    'ControlNet 0: "Module: canny, Model: control_tiny_sd15_canny [0badc0de], Weight: 0.6, Resize Mode: Just Resize, '
    "Processor Res: 512, Threshold A: 50.0, Threshold B: 150.0, Guidance Start: 0.0, Guidance End: 0.8, "
    'Pixel Perfect: False, Control Mode: My prompt is more important", '
    'ControlNet 1: "Module: invert (from white bg & black line), Model: control_v11f1p_sd15_depth [cfd03158], '
    "Weight: 1.0, Resize Mode: "
    "Crop and Resize, Processor Res: 512, Threshold A: 0.5, Threshold B: 0.5, Guidance Start: 0.0, Guidance End: "
    '1.0, Pixel Perfect: True, Control Mode: Balanced", Version: v1.10.1'
)


async def test_an_imported_infotext_restores_the_units_and_an_image_completes_them(
    tmp_path, tiny_sd15, with_controlnets
):
    from tests.bot.exts.presets.test_cog import deferred

    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        reply = await deferred(s, "preset import", {"name": "knight", "text": A1111})
        assert (
            "ControlNet: canny · control_tiny_sd15_canny [0badc0de] · weight 0.6 · steps 0-0.8 · prompt first;" in reply
        )
        assert "ControlNet: 2 unit(s) imported" in reply and "never holds the control image" in reply
        assert "missing ControlNet model control_v11f1p_sd15_depth [cfd03158] (ControlNet 1;" in reply
        assert "ControlNet 0: control_tiny_sd15_canny [" in reply and "another file than" in reply

        ix = await s.send_interaction(s.slash("imagine", {"prompt": f"a knight {FAST}", "preset": "knight"}))
        assert "ControlNet unit 1 (canny, control_tiny_sd15_canny [0badc0de]) has no control image" in await refusal(ix)

        pose = s.upload_attachment("pose.png", png(64, 64, (200, 200, 200)), content_type="image/png")
        one = {"prompt": f"a knight {FAST} --cn canny", "preset": "knight", "image": pose}
        ix = await s.send_interaction(s.slash("imagine", one))
        final = await ix.wait_original_message(lambda m: "failed" in m.get("content", ""), timeout=60)
        assert "ControlNet model 'control_v11f1p_sd15_depth' not found" in final["content"]  # unit 2 got the image

        (h.services.config.models_dir / "ControlNet" / "depth").mkdir()
        shutil.copy(
            h.services.config.models_dir / "ControlNet" / "control_tiny_sd15_canny.safetensors",
            h.services.config.models_dir / "ControlNet" / "depth" / "control_v11f1p_sd15_depth.safetensors",
        )
        pose = s.upload_attachment("pose.png", png(64, 64, (200, 200, 200)), content_type="image/png")
        message = await with_images(s, s.slash("imagine", {**one, "image": pose}))
        params = params_of(s, message)
        assert "Weight: 0.6, Resize Mode: Just Resize" in params["ControlNet 0"]
        assert "Threshold A: 50.0" in params["ControlNet 0"] and "Guidance End: 0.8" in params["ControlNet 0"]
        assert params["ControlNet 1"].startswith("Module: invert (from white bg & black line), Model: control_v11f1p")
        s.assert_no_invalid_requests()


async def test_edit_keeps_the_units_and_save_keeps_their_settings(tmp_path, tiny_sd15, with_controlnets):
    from tests.bot.exts.helpers import job_id_of

    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        pose = s.upload_attachment("pose.png", png(64, 64, (220, 30, 30)), content_type="image/png")
        message = await with_images(s, s.slash("imagine", {"prompt": f"a cat {FAST} --cn canny:0.9", "image": pose}))
        job_id = job_id_of(message)
        press = await s.send_interaction(s.button(f"sdbot:job:{job_id}:edit", message=message))
        await press.wait_callback()
        modal = press.callbacks[0].json["data"]
        texts = {c["components"][0]["custom_id"]: c["components"][0].get("value") for c in modal["components"]}
        answer = {"prompt": texts["prompt"], "negative": "", "options": texts["options"]}
        again = await with_images(s, s.modal_submit(modal["custom_id"], answer))
        assert s.attachment_bytes(again["attachments"][0]) == s.attachment_bytes(message["attachments"][0])
        assert "Weight: 0.9," in controlnet_of(s, again)

        press = await s.send_interaction(s.button(f"sdbot:job:{job_id}:save", message=message))
        await press.wait_callback()
        saved = await s.send_interaction(s.modal_submit(press.callbacks[0].json["data"]["custom_id"], {"name": "cn"}))
        await saved.wait_callback()
        assert "preset **cn** created" in saved.callbacks[0].json["data"]["content"], saved.callbacks[0].json
        preset = await h.services.presets.get(s.user.id, "cn")
        assert [(u["module"], u["weight"], u["image"]) for u in preset.options["controls"]] == [("canny", 0.9, "")]
        s.assert_no_invalid_requests()


async def test_moderators_see_the_control_image_with_the_prompt(tmp_path, tiny_sd15, with_controlnets):
    from tests.bot.exts.moderation.test_cog import mod_bot, review_message, setup_guild

    async with mod_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        await setup_guild(h, mode="prompts")
        pose = s.upload_attachment("pose.png", png(64, 64), content_type="image/png")
        since = s.mark()
        ix = await s.send_interaction(s.slash("imagine", {"prompt": "a lighthouse --cn canny", "image": pose}))
        await ix.wait_original_message(lambda m: "waits for a moderator" in m.get("content", ""), timeout=30)
        review = await review_message(s, since)
        assert [a["filename"] for a in review["attachments"]] == ["SPOILER_control-image-1.png"]
        fields = {f["name"]: f["value"] for f in review["embeds"][0]["fields"]}
        assert fields["ControlNet images"] == "attached as control-image-1.png (they steer the image)"
        s.assert_no_invalid_requests()
