"""Preset text: each preset's options in the inline syntax users type (which reads back as the same options),
its prompt parts quoted and clipped, and a list that fits a message."""

from __future__ import annotations

from bot.exts.presets._format import PART_LIMIT, describe_options, preset_lines
from bot.options import parse_inline


def test_options_read_as_the_inline_syntax_and_parse_back():
    options = {"steps": 30, "cfg_scale": 6.5, "sampler": "DPM++ 2M", "schedule": "Karras", "width": 512, "height": 768}
    text = describe_options(options)
    assert text == "--sampler DPM++ 2M Karras --size 512x768 --steps 30 --cfg 6.5"
    parsed = parse_inline("a cat " + text)
    assert parsed.options == {"sampler": "DPM++ 2M Karras", "width": 512, "height": 768, "steps": 30, "cfg_scale": 6.5}
    assert describe_options(parsed.options) == text  # the same options, said the same way


def test_prompt_parts_are_quoted_and_long_ones_clipped():
    text = describe_options({"prompt_prefix": "photo of", "negative_prompt": "n" * 1000, "steps": 4})
    assert text.startswith("prefix: “photo of” no: “" + "n" * (PART_LIMIT - 1) + "…” ")
    assert text.endswith("--steps 4") and "--no" not in text  # the negative prompt is shown once, apart


def test_an_empty_preset_says_so():
    assert describe_options({}) == "(no options)"


def test_the_list_marks_the_default_in_any_case_and_fits_a_message():
    lines = preset_lines([("Portrait", {"steps": 30}), ("anime", {"steps": 20})], default="portrait")
    assert lines.splitlines() == ["**Portrait** ⭐ default: --steps 30", "**anime**: --steps 20"]
    many = [(f"p{i}", {"prompt": "x" * 250}) for i in range(40)]
    text = preset_lines(many, default=None)
    assert len(text) <= 1900 and text.endswith("… (use /preset export for all of them)")
    assert all(line.startswith(("**p", "…")) for line in text.splitlines())  # whole lines only
