"""Property tests for importing an A1111 infotext into a preset: any text gives valid options or our error."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.store import presets
from bot.store.errors import StoreError
from bot.store.options import OPTION_KEYS, validate_options
from engine.infotext import format_infotext
from engine.samplers import sampler_labels

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
        result = presets.infotext_options(text)
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
        result = presets.infotext_options(text)
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
    options, unknown, dropped = presets.infotext_options(format_infotext(prompt, "", params), keep_seed=keep_seed)
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
            result = await presets.import_infotext(s, user, "imported", text)
        except StoreError:
            assert await presets.count(s, user) == 0
            return
        assert (await presets.get(s, user, "imported")).options == result.preset.options


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
    options, unknown, _ = presets.infotext_options(text)
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
