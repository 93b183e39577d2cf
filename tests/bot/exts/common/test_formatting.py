"""The parameters embed and the info message: what made an image, with where each value came from, within
Discord's limits (plain data in, so no Discord connection is needed)."""

from __future__ import annotations

from bot.exts.common.formatting import clip, info_message, loras_text, parameters_embed
from engine.request import GenerationRequest

OPTIONS = GenerationRequest(prompt="a cat <lora:detail:0.6>", negative_prompt="blurry", seed=5).options()


def fields(embed) -> dict[str, str]:
    return {field.name: field.value for field in embed.fields}


def test_clip_keeps_short_text_and_marks_a_cut():
    assert clip("abc", 3) == "abc"
    assert clip("abcd", 3) == "ab…" and len(clip("x" * 5000, 2000)) == 2000


def test_the_embed_shows_each_parameter_and_where_it_came_from_when_not_a_default():
    sources = {"steps": "preset portrait", "width": "guild", "height": "guild", "cfg_scale": "default"}
    embed = parameters_embed(7, OPTIONS, sources, seeds=[5], user="alice")
    shown = fields(embed)
    assert embed.title == "Job #7" and embed.description == "a cat <lora:detail:0.6>"
    assert shown["Negative prompt"] == "blurry"
    assert shown["LoRAs"] == "detail 0.6"
    assert shown["Steps"] == "20\n-# preset portrait"
    assert shown["Size"] == "512x512\n-# guild"
    assert shown["CFG scale"] == "7"  # a default says nothing of its source
    assert shown["Sampler"] == "DPM++ 2M (Karras)"
    assert shown["Seed"] == "5" and shown["Model"] == "default"
    assert "Batch" not in shown  # one image: no batch field
    assert embed.footer.text == "requested by alice"


def test_many_seeds_are_shown_as_a_range():
    embed = parameters_embed(1, {**OPTIONS, "batch_size": 4}, {}, seeds=[1, 2, 3, 4])
    assert fields(embed)["Seed"] == "1, 2, 3, 4" and fields(embed)["Batch"] == "4"
    embed = parameters_embed(1, {**OPTIONS, "batch_size": 8}, {}, seeds=list(range(1, 9)))
    assert fields(embed)["Seed"] == "1 … 8"


def test_the_second_pass_fields_say_the_strength_in_effect():
    img2img = {**OPTIONS, "init_image": "/x/start.png", "strength": None}
    shown = fields(parameters_embed(1, img2img, {"init_image": "Vary (subtle) of job #12, image 2"}))
    assert shown["Start image"] == "Vary (subtle) of job #12, image 2"
    assert shown["Strength"] == "0.75"  # A1111's img2img default when none was typed
    hires = fields(parameters_embed(1, {**OPTIONS, "hires": 2.0, "hires_steps": 0}, {}))
    assert hires["Strength"] == "0.7" and hires["Hires"] == "×2, Latent, 20 steps"
    assert "Strength" not in fields(parameters_embed(1, OPTIONS, {}))  # plain txt2img has none


def test_every_field_fits_discords_limits():
    huge = {**OPTIONS, "prompt": "p" * 10_000, "negative_prompt": "n" * 10_000, "model": "m" * 5000}
    embed = parameters_embed(1, huge, {"model": "s" * 5000}, user="u" * 5000)
    assert len(embed.description) <= 4096 and len(embed.footer.text) <= 2048
    assert all(len(field.value) <= 1024 for field in embed.fields)


def test_loras_text_names_a_different_unet_weight_and_ignores_broken_tags():
    assert loras_text("<lora:a:0.5:0.25> <lora:b:1>", "") == "a 0.5 (UNet 0.25), b 1"
    assert loras_text("<lora:a:notanumber>", "") == ""


def test_the_info_message_has_the_infotext_in_a_block_and_the_embed():
    message = info_message(3, OPTIONS, None, 5, "a cat\nSteps: 20, Seed: 5, Size: 512x512")
    assert message["content"] == "```\na cat\nSteps: 20, Seed: 5, Size: 512x512\n```"
    assert message["embed"].title == "Job #3"
    assert info_message(3, OPTIONS, None, None, None)["content"] == "(the image files are gone)"
