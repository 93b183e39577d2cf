"""Inline options: Midjourney's syntax, typed values, clear errors (plain tables and hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import UserError
from bot.options import parse_inline, size_for_ratio


@pytest.mark.parametrize(
    ("text", "prompt", "options", "presets"),
    [
        ("a cat", "a cat", {}, ()),
        ("a cat --seed 5 --steps 30 --cfg 6", "a cat", {"seed": 5, "steps": 30, "cfg_scale": 6.0}, ()),
        ("a cat --ar 2:3", "a cat", {"aspect_ratio": (2, 3)}, ()),
        ("a cat --no text, blur", "a cat", {"negative_prompt": "text, blur"}, ()),
        ('x --sampler "DPM++ 2M Karras" --vae anime', "x", {"sampler": "DPM++ 2M Karras", "vae": "anime"}, ()),
        ("x --sampler DPM++ 2M Karras --clip-skip 2", "x", {"sampler": "DPM++ 2M Karras", "clip_skip": 2}, ()),
        ("x --preset portrait --anime", "x", {}, ("portrait", "anime")),
        ("x --size 512x768 --batch 2", "x", {"width": 512, "height": 768, "batch_size": 2}, ()),
        ("x —seed 9", "x", {"seed": 9}, ()),
        ("a--b c", "a--b c", {}, ()),
        ("--seed 1", "", {"seed": 1}, ()),
        ("x --seed 1 --seed 2", "x", {"seed": 2}, ()),
        ("x --SEED 3 --model sd15", "x", {"seed": 3, "model": "sd15"}, ()),
        ("{a|b} --combinatorial --batch 2", "{a|b}", {"combinatorial": True, "batch_size": 2}, ()),
        ("{a|b} --combinatorial off", "{a|b}", {"combinatorial": False}, ()),
    ],
)
def test_parse_inline(text, prompt, options, presets):
    parsed = parse_inline(text)
    assert (parsed.prompt, parsed.options, parsed.presets) == (prompt, options, presets)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x --seed abc", "--seed takes a whole number, e.g. --seed 30 (got 'abc')"),
        ("x --cfg lots", "--cfg takes a number"),
        ("x --cfg nan", "--cfg takes a number"),
        ("x --ar wide", "--ar takes an aspect ratio such as 2:3"),
        ("x --ar 9:1", "too extreme"),
        ("x --steps", "--steps needs a value"),
        ("x --bogus 3", "unknown option --bogus; options are --ar, --batch"),
        ("x --preset", "--preset needs a preset name"),
        ("x --size big", "size takes WIDTHxHEIGHT"),
        ("x --combinatorial maybe", "--combinatorial takes on or off, or nothing for on (got 'maybe')"),
    ],
)
def test_bad_options_say_what_is_allowed(text, message):
    with pytest.raises(UserError) as err:
        parse_inline(text)
    assert message in str(err.value)


@pytest.mark.parametrize(("ratio", "size"), [((1, 1), (512, 512)), ((2, 3), (416, 624)), ((16, 9), (680, 384))])
def test_aspect_ratio_keeps_the_area(ratio, size):
    assert size_for_ratio(ratio, 512 * 512) == size


@given(st.text(max_size=80))
def test_any_text_parses_or_gives_a_user_error(text):
    try:
        parsed = parse_inline(text)
    except UserError as err:
        assert str(err) and "\n" not in str(err)
    else:
        assert isinstance(parsed.prompt, str)
        assert parsed.prompt == parsed.prompt.strip()


@given(
    prompt=st.text(st.characters(blacklist_characters="-—\"'“”", blacklist_categories=["Cs"]), max_size=40),
    seed=st.integers(0, 2**32 - 1),
    steps=st.integers(1, 150),
    cfg=st.floats(1, 30),
    batch=st.integers(1, 4),
)
def test_options_round_trip(prompt, seed, steps, cfg, batch):
    parsed = parse_inline(f"{prompt} --seed {seed} --steps {steps} --cfg {cfg!r} --batch {batch}")
    assert parsed.prompt == prompt.strip()
    assert parsed.options == {"seed": seed, "steps": steps, "cfg_scale": cfg, "batch_size": batch}


@pytest.mark.parametrize(
    ("text", "prompt"),
    [
        ("a cat --lora add_detail:0.8", "a cat <lora:add_detail:0.8>"),
        ("a cat --lora add_detail --seed 5", "a cat <lora:add_detail:1>"),
        ("a cat --lora a:0.5, b:-1 --lora c", "a cat <lora:a:0.5> <lora:b:-1> <lora:c:1>"),
        ("a cat <lora:x:1> --lora my style:.25", "a cat <lora:x:1> <lora:my style:0.25>"),
    ],
)
def test_inline_lora_adds_a1111_tags_to_the_prompt(text, prompt):
    assert parse_inline(text).prompt == prompt


INVERT = "invert (from white bg & black line)"


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        ("a cat --cn canny", {"module": "canny"}),
        ("a cat --cn canny:0.8 --seed 5", {"module": "canny", "weight": 0.8}),
        ("a cat --cn invert (from white bg & black line):1.2", {"module": INVERT, "weight": 1.2}),
    ],
)
def test_inline_cn_is_a_controlnet_unit_of_the_attached_image(text, unit):
    """The module by name or by the extension's label (which may hold spaces), the weight when given."""
    parsed = parse_inline(text)
    assert parsed.prompt == "a cat" and parsed.options["controls"] == [unit]


@pytest.mark.parametrize("text", ["a --cn", "a --cn canny:lots", "a --cn :1"])
def test_bad_inline_cn_says_the_form(text):
    with pytest.raises(UserError, match=r"--cn (takes MODULE or MODULE:WEIGHT|needs)"):
        parse_inline(text)


@pytest.mark.parametrize("text", ["a --lora", "a --lora x:big", "a --lora :1", "a --lora <x>:1"])
def test_bad_inline_lora_says_the_form(text):
    with pytest.raises(UserError, match="--lora"):
        parse_inline(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a cat", "a cat <lora:x:1>"),
        ("a cat --seed 5 --no dogs", "a cat <lora:x:1> --seed 5 --no dogs"),
    ],
)
def test_the_lora_option_goes_before_inline_options(text, expected):
    from bot.options import append_to_prompt

    assert append_to_prompt(text, "<lora:x:1>") == expected
