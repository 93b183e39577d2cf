"""Axis types: `TYPE: VALUES` parsing, what each type changes in a cell, and its cell labels as the script writes
them."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import UserError
from bot.services.xyz.axes import (
    CFG,
    CHECKPOINT,
    CLIP_SKIP,
    DENOISING,
    HIRES_STEPS,
    HIRES_UPSCALER,
    LORA_WEIGHT,
    NO_AXIS,
    PROMPT_SR,
    SAMPLER,
    SEED,
    STEPS,
    VAE,
    parse_axis,
)
from engine.errors import EngineError
from engine.request import GenerationRequest

BASE = GenerationRequest(prompt="a cat on a mat", negative_prompt="blurry cat").options()


def cell(axis_text: str, index: int, base: dict | None = None) -> dict:
    axis = parse_axis(axis_text).bound(base or BASE)
    settings = dict(base or BASE)
    axis.apply(settings, axis.values[index])
    return settings


@pytest.mark.parametrize(
    ("text", "type_", "values", "labels"),
    [
        ("Steps: 10,20,30", STEPS, (10, 20, 30), ["Steps: 10", "Steps: 20", "Steps: 30"]),
        ("steps : 1-3", STEPS, (1, 2, 3), ["Steps: 1", "Steps: 2", "Steps: 3"]),
        ("CFG Scale: 5-9 (+2)", CFG, (5.0, 7.0, 9.0), ["CFG Scale: 5.0", "CFG Scale: 7.0", "CFG Scale: 9.0"]),
        ("cfg: 0.1-0.3 [3]", CFG, (0.1, 0.2, 0.3), ["CFG Scale: 0.1", "CFG Scale: 0.2", "CFG Scale: 0.3"]),
        ("Seed: 5, 9", SEED, (5, 9), ["Seed: 5", "Seed: 9"]),
        ("Sampler: Euler, DPM++ 2M Karras", SAMPLER, ("Euler", "DPM++ 2M Karras"), ["Euler", "DPM++ 2M Karras"]),
        ("Checkpoint name: sd/a.safetensors, b", CHECKPOINT, ("sd/a.safetensors", "b"), ["a.safetensors", "b"]),
        ("model: b", CHECKPOINT, ("b",), ["b"]),
        ("VAE: auto, anime", VAE, ("auto", "anime"), ["VAE: auto", "VAE: anime"]),
        ("Clip skip: 1-2", CLIP_SKIP, (1, 2), ["Clip skip: 1", "Clip skip: 2"]),
        ("Denoising: 0.3, 0.6", DENOISING, (0.3, 0.6), ["Denoising: 0.3", "Denoising: 0.6"]),
        ("Hires steps: 5", HIRES_STEPS, (5,), ["Hires steps: 5"]),
        (
            "Hires upscaler: Latent, Lanczos",
            HIRES_UPSCALER,
            ("Latent", "Lanczos"),
            ["Hires upscaler: Latent", "Hires upscaler: Lanczos"],
        ),
        ("Prompt S/R: cat, dog", PROMPT_SR, ("cat", "dog"), ["cat", "dog"]),
        ('Prompt S/R: cat,"dog, big"', PROMPT_SR, ("cat", "dog, big"), ["cat", "dog, big"]),
        ("LoRA weight detail: 0-1 [3]", LORA_WEIGHT, (0.0, 0.5, 1.0), ["detail: 0.0", "detail: 0.5", "detail: 1.0"]),
    ],
)
def test_parse_axis(text, type_, values, labels):
    axis = parse_axis(text)
    assert (axis.type, axis.values, axis.labels()) == (type_, values, labels)
    assert axis.text == text.partition(":")[2].strip()


def test_float_labels_are_rounded_to_8_places():
    axis = parse_axis("CFG Scale: 1-1.3 (+0.1)")
    assert axis.values[2] != 1.2  # 1.2000000000000002: numpy's arange, as the script gets it
    # arange(1, 1.3 + 0.1, 0.1) overshoots to 1.4 in floating point; the script shows the same five cells
    assert axis.labels() == ["CFG Scale: 1.0", "CFG Scale: 1.1", "CFG Scale: 1.2", "CFG Scale: 1.3", "CFG Scale: 1.4"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Steps 10", "an axis looks like `Steps: 10, 20, 30`"),
        ("Colour: red", "unknown axis type 'Colour'; the types are Seed, Steps, CFG Scale, Prompt S/R, Sampler"),
        ("Nothing: 1", "unknown axis type 'Nothing'"),
        ("Steps:", "Steps: no values"),
        ("Steps: 5-1", "gives no values"),
        ("Steps: ten", "Steps: 'ten' is not a whole number"),
        ("Steps: 1-1000", "an axis takes at most 100"),
    ],
)
def test_bad_axes(text, message):
    with pytest.raises(UserError) as err:
        parse_axis(text)
    assert message in str(err.value)


def test_unknown_sampler_is_refused_before_anything_runs():
    with pytest.raises(EngineError, match="unknown sampler 'Eular'"):
        parse_axis("Sampler: Euler, Eular")


@pytest.mark.parametrize(
    ("text", "index", "changes"),
    [
        ("Steps: 10, 30", 1, {"steps": 30}),
        ("CFG Scale: 4, 9", 1, {"cfg_scale": 9.0}),
        ("Seed: 7", 0, {"seed": 7}),
        ("Clip skip: 2", 0, {"clip_skip": 2}),
        ("Denoising: 0.4", 0, {"strength": 0.4}),
        ("Hires steps: 4", 0, {"hires_steps": 4}),
        ("Hires upscaler: Lanczos", 0, {"hires_upscaler": "Lanczos"}),
        ("Checkpoint name: other", 0, {"model": "other"}),
        ("VAE: Automatic", 0, {"vae": "auto"}),
        ("VAE: None", 0, {"vae": "None"}),
        ("VAE: anime", 0, {"vae": "anime"}),
        ("Sampler: Euler", 0, {"sampler": "Euler", "schedule": "Automatic"}),
        ("Sampler: Euler, DPM++ 2M Karras", 1, {"sampler": "DPM++ 2M", "schedule": "Karras"}),
        ("Prompt S/R: cat, dog", 1, {"prompt": "a dog on a mat", "negative_prompt": "blurry dog"}),
        ("Prompt S/R: cat, dog", 0, {}),
        ("Prompt S/R: mat, rug", 1, {"prompt": "a cat on a rug"}),
        # the values are stripped and every "a" is replaced, inside words too, as the script's str.replace does
        ("Prompt S/R: a , the ", 1, {"prompt": "the cthet on the mthet", "negative_prompt": "blurry cthet"}),
    ],
)
def test_what_a_value_changes(text, index, changes):
    assert cell(text, index) == BASE | changes


def test_prompt_sr_must_find_its_first_value():
    with pytest.raises(UserError, match="^Prompt S/R did not find dog in prompt or negative prompt.$"):
        cell("Prompt S/R: dog, cat", 0)


def test_prompt_sr_searches_the_negative_prompt_too():
    assert cell("Prompt S/R: blurry, sharp", 1)["negative_prompt"] == "sharp cat"


LORA_BASE = BASE | {"prompt": "a cat <lora:detail:0.8> <LYCO:style:1:0.5:8>", "negative_prompt": "<lora:detail:1>"}


@pytest.mark.parametrize(
    ("text", "index", "prompt", "negative"),
    [
        ("LoRA weight detail: 0, 0.25", 1, "a cat <lora:detail:0.25> <LYCO:style:1:0.5:8>", "<lora:detail:0.25>"),
        ("LoRA weight style: 0.5", 0, "a cat <lora:detail:0.8> <LYCO:style:0.5:0.5:8>", "<lora:detail:1>"),
        ("LoRA weight new one: 1", 0, "a cat <lora:detail:0.8> <LYCO:style:1:0.5:8> <lora:new one:1>", None),
        ("lora DETAIL: 0.1-0.3 (+0.1)", 2, "a cat <lora:detail:0.3> <LYCO:style:1:0.5:8>", "<lora:detail:0.3>"),
    ],
)
def test_lora_weight(text, index, prompt, negative):
    settings = cell(text, index, LORA_BASE)
    assert settings["prompt"] == prompt
    assert settings["negative_prompt"] == (negative or LORA_BASE["negative_prompt"])


def test_an_unnamed_lora_axis_takes_the_prompts_only_lora():
    base = BASE | {"prompt": "a cat <lora:detail:0.8>"}
    axis = parse_axis("LoRA weight: 0, 1").bound(base)
    assert axis.labels() == ["detail: 0.0", "detail: 1.0"]
    assert cell("LoRA weight: 0, 1", 0, base)["prompt"] == "a cat <lora:detail:0>"


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a cat", "the prompt has no <lora:…> tag; name the LoRA: `LoRA weight NAME: 0, 0.5, 1`"),
        ("<lora:a:1> <lora:b:1>", "the prompt has 2 LoRAs (a, b); name the LoRA"),
    ],
)
def test_an_unnamed_lora_axis_needs_exactly_one_lora(prompt, message):
    with pytest.raises(UserError) as err:
        parse_axis("LoRA weight: 1").bound(BASE | {"prompt": prompt})
    assert message in str(err.value)


def test_a_cells_settings_make_a_valid_request():
    for text in ("Steps: 3", "Sampler: Euler a", "LoRA weight x: 0.3-0.9 [4]", "Prompt S/R: cat, dog"):
        axis = parse_axis(text).bound(BASE)
        for value in axis.values:
            settings = dict(BASE)
            axis.apply(settings, value)
            GenerationRequest(**settings)


def test_seed_axis_draws_each_minus_one():
    axis = parse_axis("Seed: -1, 5, -1").with_fixed_seeds(random.Random(3))
    expected = random.Random(3)
    assert axis.values == (expected.randrange(4294967294), 5, expected.randrange(4294967294))
    assert parse_axis("Steps: 1").with_fixed_seeds(random.Random(3)) == parse_axis("Steps: 1")


def test_no_axis_is_one_unlabelled_value():
    settings = dict(BASE)
    NO_AXIS.apply(settings, NO_AXIS.values[0])
    assert (settings, NO_AXIS.labels()) == (BASE, [""])


@given(
    name=st.sampled_from(["Steps", "CFG Scale", "Seed", "Clip skip", "Denoising", "Prompt S/R", "VAE"]),
    rest=st.text(max_size=30),
)
def test_any_axis_text_parses_or_says_why(name, rest):
    try:
        axis = parse_axis(f"{name}:{rest}")
    except UserError:
        return
    assert len(axis.values) >= 1
    assert len(axis.labels()) == len(axis.values)
