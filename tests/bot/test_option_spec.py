"""The option vocabulary: it matches the engine's request, and every option round-trips through the inline syntax
and storage (hypothesis), so a new option cannot be half added."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.errors import UserError
from bot.option_spec import (
    BOOL,
    BY_FLAG,
    BY_KEY,
    CONTROLS,
    FLOAT,
    INT,
    SIZE,
    STORED_KINDS,
    TEXT,
    VOCABULARY,
    inline_text,
)
from bot.options import from_slash, parse_inline, sized_by_ratio
from bot.store.options import COMMAND_ONLY, OPTION_KEYS, validate_options
from engine.infotext import infotext_for_request, parse_infotext, request_options
from engine.request import NOT_OPTIONS, GenerationRequest
from engine.samplers import normalize_sampler, sampler_labels, sampler_names

_WORD = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 ._()+-]{0,18}[A-Za-z0-9.)]", fullmatch=True).filter(
    lambda t: not re.search(r"\s(--|—)", t) and "  " not in t
)
_SIDE = st.integers(8, 64).map(lambda n: n * 8)

# A valid value for each stored option that has a flag. A vocabulary entry with a flag and no strategy here fails
# `test_every_flagged_option_has_a_strategy`: add one with the option.
VALUES = {
    "negative_prompt": _WORD,
    "steps": st.integers(1, 150),
    "cfg_scale": st.floats(1.0, 30.0),
    "sampler": st.sampled_from(sampler_names()),
    "schedule": st.sampled_from(["Automatic", "SGM Uniform"]),  # every sampler takes these; more: below
    "seed": st.integers(-1, 2**32 - 1),
    "clip_skip": st.integers(1, 12),
    "vae": st.one_of(st.sampled_from(["auto", "none"]), _WORD),
    "model": _WORD,
    "batch_size": st.integers(1, 4),
    "strength": st.floats(0.0, 1.0),
    "resize_mode": st.sampled_from(["just", "crop", "fill"]),
    "hires_steps": st.integers(0, 150),
    "hires_upscaler": st.sampled_from(["Latent", "Latent (nearest-exact)", "Lanczos", "Nearest"]),
    "hires": st.just(0.0),  # a scale above 1 is checked against the size: drawn with it, below
    "mask_blur": st.integers(0, 64),
    "mask_mode": st.sampled_from(["masked", "unmasked"]),
    "masked_content": st.sampled_from(["fill", "original", "noise", "nothing"]),
    "inpaint_area": st.sampled_from(["whole", "masked"]),
    "padding": st.integers(0, 256),
    "combinatorial": st.booleans(),
}
NOT_INLINE = {
    "aspect_ratio",
    "size",
    "preset",
    "lora",
    "control_net",
}  # not stored as themselves: tested one by one below


def test_stored_options_are_the_request_fields_and_prompt_parts():
    assert set(STORED_KINDS) == set(OPTION_KEYS) | set(COMMAND_ONLY)


@pytest.mark.parametrize(
    "field", [f for f in dataclasses.fields(GenerationRequest) if f.name not in NOT_OPTIONS], ids=lambda f: f.name
)
def test_stored_kinds_match_the_engine_request(field):
    kinds = {"str": TEXT, "int": INT, "float": FLOAT, "float | None": FLOAT, "str | None": TEXT, "bool": BOOL}
    python = {**kinds, "tuple[ControlUnit, ...]": CONTROLS}[str(field.type)]
    assert STORED_KINDS[field.name] == python


def test_every_flagged_option_has_a_strategy():
    flagged = {o.key for o in VOCABULARY if o.flags}
    assert flagged - NOT_INLINE == set(VALUES)


def test_flags_and_slash_parameters_are_unique():
    flags = [f for o in VOCABULARY for f in o.flags]
    assert len(flags) == len(set(flags)) and set(flags) == set(BY_FLAG)
    assert BY_KEY["negative_prompt"].slash_name == "negative" and BY_KEY["clip_skip"].slash_name == "clip_skip"


@st.composite
def option_sets(draw):
    keys = draw(st.sets(st.sampled_from(sorted(VALUES))))
    options = {key: draw(VALUES[key]) for key in keys}
    if "sampler" in options and "schedule" in options:  # a pair that fits, "DPM++ 2M" + "Karras"
        options["sampler"], options["schedule"] = normalize_sampler(draw(st.sampled_from(sampler_labels())))
    if draw(st.booleans()):
        options["width"], options["height"] = draw(_SIDE), draw(_SIDE)
        if options["width"] * options["height"] <= 256 * 256 and "strength" not in options:
            options["hires"] = draw(st.floats(1.5, 4.0))
    elif draw(st.booleans()):
        options["aspect_ratio"] = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    return options


@settings(deadline=None)  # the first example imports the engine
@given(prompt=_WORD, options=option_sets())
def test_every_option_round_trips_through_inline_parsing_and_storage(prompt, options):
    parsed = parse_inline(f"{prompt} {inline_text(options)}")
    assert parsed.prompt == prompt and parsed.presets == ()
    expected = {k: v for k, v in options.items() if k != "schedule" or "sampler" not in options}
    if "schedule" in options and "sampler" in options:  # said together: --sampler DPM++ 2M Karras
        expected["sampler"] = options["sampler"] + (
            "" if options["schedule"] == "Automatic" else f" {options['schedule']}"
        )
    assert parsed.options == expected

    stored = validate_options(sized_by_ratio(parsed.options, (512, 512)))
    original = validate_options(sized_by_ratio(options, (512, 512)))
    if original.get("schedule") == "Automatic" and "sampler" in original:
        del original["schedule"]  # the same: a sampler set without a schedule means Automatic (resolution)
    assert stored == original
    assert json.loads(json.dumps(stored)) == stored  # storage is JSON
    assert validate_options(stored) == stored
    GenerationRequest(prompt=prompt, **stored)  # and the engine takes it


def test_the_flags_that_are_not_stored_options():
    assert parse_inline("x --ar 3:2").options == {"aspect_ratio": (3, 2)}
    assert parse_inline("x --size 640x512").options == {"width": 640, "height": 512}
    assert parse_inline("x --preset anime").presets == ("anime",)
    assert parse_inline("x --lora detail:0.5").prompt == "x <lora:detail:0.5>"
    assert inline_text({"aspect_ratio": (3, 2), "width": 640, "height": 512}) == "--size 640x512 --ar 3:2"


def test_slash_parameters_map_to_stored_keys():
    assert from_slash(negative="ugly", cfg=6.5, clip_skip=2, batch=None, size="512x768") == {
        "negative_prompt": "ugly",
        "cfg_scale": 6.5,
        "clip_skip": 2,
        "width": 512,
        "height": 768,
    }
    with pytest.raises(UserError, match="size takes WIDTHxHEIGHT"):
        from_slash(size="big")
    assert all(BY_KEY[o.key].kind == SIZE for o in VOCABULARY if o.key == "size")


@pytest.mark.parametrize(
    ("options", "base", "size"),
    [
        ({"aspect_ratio": (2, 3)}, (512, 512), (416, 624)),
        ({"aspect_ratio": (2, 3)}, (768, 768), (624, 944)),  # the area of the size it replaces
        ({"aspect_ratio": (2, 3), "width": 512, "height": 512}, (768, 768), (512, 512)),  # a given size wins
        ({"width": 640}, (512, 512), None),
    ],
)
def test_aspect_ratio_is_one_rule(options, base, size):
    out = sized_by_ratio(options, base)
    assert "aspect_ratio" not in out
    assert ((out["width"], out["height"]) if "height" in out else None) == size


INFORMATIONAL = {"Model hash", "VAE hash", "RNG", "Version", "Lora hashes", "TI hashes"}


@settings(deadline=None)
@given(prompt=_WORD, options=option_sets(), seed=st.integers(0, 2**32 - 1))
def test_every_option_round_trips_through_an_a1111_infotext(prompt, options, seed):
    """What an image's infotext says reads back as the same options, under the vocabulary's infotext names."""
    request = GenerationRequest(prompt=prompt, **validate_options(sized_by_ratio(options, (512, 512))))
    vae = request.vae if request.vae not in ("auto", "none") else None
    text = infotext_for_request(
        request, seed=seed, model_name=request.model, model_hash=None, vae_name=vae, vae_hash=None, version=""
    )
    info = parse_infotext(text)
    read, unused = request_options(info)
    assert unused == []
    named = {o.infotext: o for o in VOCABULARY if o.infotext}
    assert set(info.params) - INFORMATIONAL <= set(named)  # every key written is a vocabulary option
    for name in set(info.params) - INFORMATIONAL:
        keys = ("width", "height") if named[name].kind == SIZE else (named[name].key,)
        for key in keys:
            expected = (
                seed if key == "seed" else request.denoising_strength if key == "strength" else getattr(request, key)
            )
            assert read[key] == expected, name


def test_every_infotext_name_is_one_engine_infotext_writes_and_reads():
    request = GenerationRequest(
        prompt="a cat",
        steps=9,
        cfg_scale=6.5,
        sampler="DPM++ 2M",
        schedule="Karras",
        width=64,
        height=64,
        clip_skip=2,
        vae="anime",
        model="m",
        strength=0.4,
        hires=2.0,
        hires_steps=3,
        hires_upscaler="Lanczos",
    )
    inpaint = GenerationRequest(
        prompt="a cat",
        init_image="a.png",
        mask="m.png",
        mask_mode="unmasked",
        masked_content="fill",
        inpaint_area="masked",
    )
    written: set[str] = set()
    for job in (request, inpaint):
        text = infotext_for_request(
            job, seed=5, model_name="m", model_hash=None, vae_name="anime", vae_hash=None, version=""
        )
        info = parse_infotext(text)
        assert request_options(info)[1] == []
        written |= set(info.params) - INFORMATIONAL
    assert written == {o.infotext for o in VOCABULARY if o.infotext}
