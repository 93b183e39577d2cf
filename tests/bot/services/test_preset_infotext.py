"""Importing an A1111 infotext into a preset: what is kept and what is reported, and (property tests) any text
gives valid options or our error, never anything else."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.services.preset_infotext import import_infotext, infotext_options
from bot.store import presets
from bot.store.errors import InvalidImport, InvalidOptions, StoreError
from bot.store.options import OPTION_KEYS, validate_options
from engine.infotext import format_infotext
from engine.samplers import sampler_labels

ALICE = 111
_users = itertools.count(50_000)

KEYS = [
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Seed",
    "Size",
    "Model",
    "VAE",
    "Clip skip",
    "Model hash",
    "Hires upscale",
    "Denoising strength",
    "Lora hashes",
    "Version",
    "Mask blur",
    "Mask mode",
    "Masked content",
    "Inpaint area",
    "Masked area padding",
    "Conditional mask weight",
]
junk_values = st.one_of(
    st.integers(-10, 10_000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(sampler_labels() + ["DPM fast", "Karras", "", "512x512", "64x64", "7x8", "nan", "1e400"]),
    st.sampled_from(["Inpaint not masked", "Only masked", "Whole picture", "latent noise", "fill", "original"]),
    st.text(max_size=20),
)


def _check_result(result):
    options, unknown, dropped = result
    assert options and set(options) <= set(OPTION_KEYS)
    assert validate_options(options) == options  # what we store is valid and already normalized
    assert all(isinstance(k, str) for k in unknown) and set(dropped) <= {"seed"}


@given(st.text(max_size=300))
def test_any_text_gives_options_or_our_error(text):
    try:
        result = infotext_options(text)
    except StoreError as exc:
        assert str(exc).strip()  # a message fit to show
        return
    _check_result(result)


@given(
    prompt=st.text(max_size=40),
    negative=st.text(max_size=40),
    params=st.dictionaries(st.sampled_from(KEYS), junk_values, min_size=3, max_size=10),
)
def test_infotext_shaped_junk_gives_options_or_our_error(prompt, negative, params):
    text = format_infotext(prompt, negative, params)
    try:
        result = infotext_options(text)
    except StoreError:
        return
    _check_result(result)


valid_params = st.fixed_dictionaries(
    {
        "Steps": st.integers(1, 150),
        "Sampler": st.sampled_from(sampler_labels()),
        "CFG scale": st.sampled_from([1, 4.5, 7, 12.25, 30]),
        "Seed": st.integers(0, 2**32 - 1),
        "Size": st.tuples(st.integers(8, 128), st.integers(8, 128))
        .filter(lambda wh: wh[0] * wh[1] * 64 <= 1024 * 1024)
        .map(lambda wh: f"{wh[0] * 8}x{wh[1] * 8}"),
    },
    optional={
        "Clip skip": st.integers(2, 12),
        "Model": st.sampled_from(["sd15", "dreamshaper_8"]),
        "ENSD": st.just("31337"),
    },
)


@given(
    prompt=st.text(alphabet="abc (:1.2),", min_size=1, max_size=30).filter(lambda p: p.strip()),
    params=valid_params,
    keep_seed=st.booleans(),
)
def test_valid_infotexts_keep_their_settings(prompt, params, keep_seed):
    """Every setting of a well-formed infotext lands in the preset (the seed only when asked for)."""
    options, unknown, dropped = infotext_options(format_infotext(prompt, "", params), keep_seed=keep_seed)
    assert options["steps"] == params["Steps"]
    assert options["cfg_scale"] == float(params["CFG scale"])
    assert f"{options['width']}x{options['height']}" == params["Size"]
    assert options["clip_skip"] == params.get("Clip skip", 1)
    assert options.get("model") == params.get("Model")
    assert ("seed" in options) == keep_seed and ("seed" in dropped) != keep_seed
    assert unknown == (("ENSD",) if "ENSD" in params else ())
    assert "negative_prompt" not in options


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.one_of(
        st.text(max_size=120),
        st.builds(
            format_infotext,
            st.text(max_size=30),
            st.text(max_size=30),
            st.dictionaries(st.sampled_from(KEYS), junk_values, min_size=3, max_size=8),
        ),
    )
)
async def test_import_into_the_database_never_raises_anything_else(any_sessions, text):
    user = next(_users)
    async with any_sessions.begin() as s:
        try:
            result = await import_infotext(s, user, "imported", text)
        except StoreError:
            assert await presets.count(s, user) == 0
            return
        assert (await presets.get(s, user, "imported")).options == result.preset.options


INFOTEXT = (
    "a castle on a hill, (masterpiece:1.2)\n"
    "Negative prompt: lowres, blurry\n"
    "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 1234, Size: 512x768, Model hash: abcd, "
    "Model: dreamshaper, Clip skip: 2, Hires upscale: 2, Hires steps: 10, Version: v1.9.4"
)


async def test_import_infotext(any_sessions):
    """Settings and the negative prompt are kept, the prompt becomes the preset's prompt, the seed is dropped,
    and parameters sdbot cannot reproduce are reported."""
    async with any_sessions.begin() as s:
        result = await import_infotext(s, ALICE, "castle", INFOTEXT)
    assert result.created
    assert result.preset.options == {
        "prompt": "a castle on a hill, (masterpiece:1.2)",
        "negative_prompt": "lowres, blurry",
        "steps": 28,
        "sampler": "DPM++ 2M",
        "schedule": "Karras",
        "cfg_scale": 6.5,
        "width": 512,
        "height": 768,
        "model": "dreamshaper",
        "clip_skip": 2,
        "hires": 2.0,
        "hires_steps": 10,
    }
    assert result.unknown_keys == ()
    assert result.dropped == ("seed",)
    async with any_sessions.begin() as s:
        again = await import_infotext(s, ALICE, "CASTLE", INFOTEXT, keep_seed=True)
    assert not again.created and again.preset.options["seed"] == 1234 and again.dropped == ()


@pytest.mark.parametrize(
    "text, error, message",
    [
        ("just a prompt", InvalidImport, "no A1111 parameter line"),
        ("x\nSteps: many, Sampler: Euler, CFG scale: 7", InvalidImport, "the infotext's Steps is 'many'"),
        ("x\nSteps: 20, Sampler: Nope, CFG scale: 7", InvalidImport, "Sampler 'Nope' cannot be used"),
        ("x\nSteps: 9999, Sampler: Euler, CFG scale: 7", InvalidOptions, "invalid preset option steps"),
        ("x\nSteps: 20, Sampler: Euler, CFG scale: 7, Size: 100x100", InvalidOptions, "multiple of 8"),
    ],
)
async def test_import_infotext_errors(any_sessions, text, error, message):
    async with any_sessions.begin() as s:
        with pytest.raises(error) as info:
            await import_infotext(s, ALICE, "x", text)
    assert message in str(info.value)


def test_an_inpaint_infotext_restores_its_controls_not_the_mask():
    text = format_infotext(
        "a red door",
        "",
        {
            "Steps": 20,
            "Sampler": "Euler a",
            "CFG scale": 7,
            "Seed": 1,
            "Size": "512x512",
            "Denoising strength": 0.6,
            "Conditional mask weight": "1.0",
            "Mask mode": "Inpaint not masked",
            "Mask blur": 8,
            "Inpaint area": "Only masked",
            "Masked area padding": 48,
            "Masked content": "latent nothing",
        },
    )
    options, unknown, _ = infotext_options(text)
    assert unknown == ()
    assert {k: options[k] for k in ("strength", "mask_mode", "mask_blur", "inpaint_area", "padding")} == {
        "strength": 0.6,
        "mask_mode": "unmasked",
        "mask_blur": 8,
        "inpaint_area": "masked",
        "padding": 48,
    }
    assert options["masked_content"] == "nothing"
    assert not {"mask", "init_image", "outpaint"} & set(options)
