"""Option resolution: guild < default preset < named presets in order < command; caps and forced negative last."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.services.resolution import Caps, Resolved, fit_pixels, join_prompt, resolve
from engine.errors import EngineError
from engine.request import GenerationRequest

LAYERS = ("guild", "default", "first", "second", "command")
LABELS = {
    "guild": "guild",
    "default": "preset default:mine",
    "first": "preset first",
    "second": "preset second",
    "command": "command",
}
# Two distinct valid values per option, so that every layer can carry its own.
SAMPLE_VALUES = {
    "negative_prompt": ["lowres", "blurry"],
    "steps": [11, 12, 13, 14, 15],
    "cfg_scale": [3.0, 4.0, 5.0, 6.0, 8.0],
    "schedule": ["Karras", "Exponential", "Beta", "SGM Uniform", "Automatic"],
    "seed": [1, 2, 3, 4, 5],
    "width": [256, 320, 384, 448, 576],
    "height": [256, 320, 384, 448, 576],
    "batch_size": [1, 2, 3, 4, 2],
    "clip_skip": [1, 2, 3, 4, 5],
    "vae": ["auto", "none", "a.safetensors", "b.safetensors", "c"],
    "model": ["m1", "m2", "m3", "m4", "m5"],
    "prompt": ["p-guild", "p-default", "p-first", "p-second", "p-command"],
    "sampler": ["Euler", "Euler a", "DPM++ 2M", "UniPC", "Heun"],
    "prompt_prefix": ["x1", "x2", "x3", "x4", "x5"],
    "prompt_suffix": ["y1", "y2", "y3", "y4", "y5"],
}


def _resolve(layers: dict[str, dict], **kw) -> Resolved:
    return resolve(
        layers.get("guild"),
        ("mine", layers["default"]) if "default" in layers else None,
        [(name, layers[name]) for name in ("first", "second") if name in layers],
        layers.get("command"),
        **kw,
    )


def _subsets():
    for n in range(len(LAYERS) + 1):
        yield from itertools.combinations(LAYERS, n)


@pytest.mark.parametrize("key", sorted(SAMPLE_VALUES))
def test_every_layer_order_for_every_option(key):
    """For each option and each of the 32 sets of layers setting it, the highest layer wins and is named."""
    default = resolve(None, None, [], None)
    for subset in _subsets():
        layers = {layer: {key: SAMPLE_VALUES[key][LAYERS.index(layer) % len(SAMPLE_VALUES[key])]} for layer in subset}
        result = _resolve(layers)
        if not subset:
            assert dict(result.options) == dict(default.options)
            if key in result.sources:
                assert result.sources[key] == "default"
            continue
        winner = subset[-1]
        value = layers[winner][key]
        assert result.sources[key] == LABELS[winner], (key, subset)
        if key == "prompt_prefix" or key == "prompt_suffix":
            assert result.options["prompt"] == value
        else:
            assert result.options[key] == value, (key, subset)


def test_unset_options_come_from_the_request_defaults():
    result = resolve(None, None, [], {"prompt": "cat"})
    expected = GenerationRequest(prompt="cat").options()
    assert dict(result.options) == expected
    assert all(result.sources[k] == "default" for k in expected if k != "prompt")
    assert result.sources["prompt"] == "command"
    assert "prompt_prefix" not in result.sources


def test_none_means_not_set():
    result = resolve({"steps": 30}, None, [("a", {"steps": None})], {"steps": None, "prompt": "x"})
    assert result.options["steps"] == 30 and result.sources["steps"] == "guild"


def test_presets_apply_in_the_order_given():
    a, b = ("a", {"steps": 10, "cfg_scale": 4.0}), ("b", {"steps": 20})
    assert resolve(None, None, [a, b], {}).sources["steps"] == "preset b"
    assert resolve(None, None, [b, a], {}).sources["steps"] == "preset a"
    assert resolve(None, None, [b, a], {}).sources["cfg_scale"] == "preset a"


def test_default_preset_without_a_name():
    result = resolve(None, {"steps": 9}, [], {})
    assert result.sources["steps"] == "preset default"


@pytest.mark.parametrize(
    "prefix, prompt, suffix, expected",
    [
        ("masterpiece", "a cat", "8k", "masterpiece, a cat, 8k"),
        ("", "a cat", "", "a cat"),
        ("masterpiece, ", "a cat", ", 8k", "masterpiece, a cat, 8k"),
        ("  style  ", "", "  ", "style"),
        ("", "", "", ""),
        ("a", " , ", "b", "a, b"),
        ("(best:1.2)", "cat", "", "(best:1.2), cat"),
    ],
)
def test_prefix_and_suffix_wrap_the_prompt(prefix, prompt, suffix, expected):
    result = resolve(None, None, [("style", {"prompt_prefix": prefix, "prompt_suffix": suffix})], {"prompt": prompt})
    assert result.options["prompt"] == expected
    assert result.sources["prompt_prefix"] == result.sources["prompt_suffix"] == "preset style"
    assert "prompt_prefix" not in result.options and "prompt_suffix" not in result.options


def test_prefix_and_prompt_from_different_layers():
    result = resolve(
        {"prompt_suffix": "guild tail"},
        ("d", {"prompt_prefix": "d-head"}),
        [("p", {"prompt_prefix": "p-head"})],
        {"prompt": "a dog"},
    )
    assert result.options["prompt"] == "p-head, a dog, guild tail"
    assert result.sources["prompt_prefix"] == "preset p"
    assert result.sources["prompt_suffix"] == "guild"
    assert result.sources["prompt"] == "command"


def test_join_prompt():
    assert join_prompt("a", None, " ", "b,") == "a, b"


def test_a_sampler_resets_a_lower_schedule():
    """Typing a sampler means that sampler with its own schedule, not one left over from a preset."""
    result = resolve(None, ("d", {"sampler": "DPM++ 2M", "schedule": "Karras"}), [], {"sampler": "DDIM"})
    assert (result.options["sampler"], result.options["schedule"]) == ("DDIM", "Automatic")
    assert result.sources["schedule"] == "command"
    assert result.request().sampler_label == "DDIM"
    combined = resolve(None, ("d", {"schedule": "Exponential"}), [], {"sampler": "DPM++ 2M Karras"})
    assert combined.request().sampler_label == "DPM++ 2M Karras"
    kept = resolve(None, ("d", {"sampler": "Euler", "schedule": "Karras"}), [("p", {"schedule": "Beta"})], {})
    assert (kept.options["sampler"], kept.options["schedule"]) == ("Euler", "Beta")
    assert (kept.sources["sampler"], kept.sources["schedule"]) == ("preset default:d", "preset p")


def test_caps_clamp_and_say_so():
    caps = Caps(max_steps=30, max_pixels=512 * 512, max_batch=2)
    result = resolve(
        None, ("big", {"steps": 80, "width": 1024, "height": 768, "batch_size": 4}), [], {"prompt": "x"}, caps=caps
    )
    assert (result.options["steps"], result.options["batch_size"]) == (30, 2)
    assert result.options["width"] * result.options["height"] <= 512 * 512
    assert (result.options["width"], result.options["height"]) == (584, 440)
    for key in ("steps", "batch_size", "width", "height"):
        assert result.sources[key] == "guild cap"
    result.request()  # still a valid request


def test_values_within_the_caps_keep_their_source():
    caps = Caps(max_steps=30, max_pixels=512 * 512, max_batch=2)
    result = resolve(None, None, [], {"steps": 30, "width": 512, "height": 512, "batch_size": 2}, caps=caps)
    assert all(result.sources[k] == "command" for k in ("steps", "width", "height", "batch_size"))


def test_caps_apply_to_defaults_too():
    result = resolve(None, None, [], {}, caps=Caps(max_steps=10, max_pixels=256 * 256))
    assert (result.options["steps"], result.options["width"], result.options["height"]) == (10, 256, 256)
    assert result.sources["steps"] == "guild cap"


def test_caps_from_settings_like_objects():
    class Row:
        max_steps, max_pixels, max_batch, max_jobs_per_user = 5, None, 1, 3

    assert Caps.of(Row()) == Caps(max_steps=5, max_pixels=None, max_batch=1)


@given(st.integers(64, 4096), st.integers(64, 4096), st.integers(64 * 64, 2048 * 2048))
def test_fit_pixels(width, height, max_pixels):
    w, h = fit_pixels(width, height, max_pixels)
    assert w % 8 == 0 and h % 8 == 0 and w >= 64 and h >= 64
    assert w * h <= max_pixels
    if width * height > max_pixels and min(w, h) > 64:
        assert math.isclose(w / h, width / height, rel_tol=0.25)


@pytest.mark.parametrize(
    "negative, forced, expected, source",
    [
        pytest.param("lowres", "nsfw, gore", "lowres, nsfw, gore", "command + forced", id="appended"),
        pytest.param("", "nsfw", "nsfw", "forced", id="alone"),
        pytest.param("nsfw, lowres", "nsfw", "nsfw, lowres", "command", id="already-there"),
        pytest.param("lowres", "", "lowres", "command", id="none-forced"),
        pytest.param("lowres", "  ", "lowres", "command", id="blank-forced"),
    ],
)
def test_forced_negative_prompt_comes_last(negative, forced, expected, source):
    result = resolve(None, None, [], {"negative_prompt": negative}, forced_negative=forced)
    assert result.options["negative_prompt"] == expected
    assert result.sources["negative_prompt"] == source


def test_forced_negative_is_added_to_a_preset_value():
    result = resolve(None, ("d", {"negative_prompt": "blurry"}), [], {}, forced_negative="nsfw")
    assert result.options["negative_prompt"] == "blurry, nsfw"
    assert result.sources["negative_prompt"] == "preset default:d + forced"


def test_unknown_options_are_a_bug():
    with pytest.raises(ValueError, match="unknown option 'tiling' in preset x"):
        resolve(None, None, [("x", {"tiling": 2})], {})


def test_result_is_read_only():
    result = resolve(None, None, [], {"prompt": "x"})
    with pytest.raises(TypeError):
        result.options["steps"] = 1  # type: ignore[index]
    with pytest.raises(AttributeError):
        result.options = {}  # type: ignore[misc]


def test_invalid_merged_values_fail_as_engine_errors():
    with pytest.raises(EngineError, match="steps must be from 1 to 150"):
        resolve(None, None, [], {"steps": 500}).request()


option_values = st.fixed_dictionaries(
    {},
    optional={key: st.sampled_from(values) for key, values in SAMPLE_VALUES.items()},
)


@given(
    guild=option_values,
    default=st.one_of(st.none(), option_values),
    named=st.lists(option_values, max_size=3),
    typed=option_values,
)
def test_every_value_names_the_last_layer_that_set_it(guild, default, named, typed):
    """Whatever the layers hold, each option's source is the last layer that set it (no caps, no forced)."""
    named_presets = [(f"p{i}", opts) for i, opts in enumerate(named)]
    result = resolve(guild, ("d", default) if default is not None else None, named_presets, typed)
    layers = [("guild", guild)] + ([("preset default:d", default)] if default is not None else [])
    layers += [(f"preset {n}", o) for n, o in named_presets] + [("command", typed)]
    for key in SAMPLE_VALUES:
        setters = [label for label, opts in layers if key in opts]
        if key == "schedule":
            setters = [label for label, opts in layers if key in opts or "sampler" in opts]
        expected = setters[-1] if setters else "default"
        assert result.sources.get(key, "default") == expected, key
    result.request()  # sample values are valid and stay valid when merged


def test_controlnet_units_merge_unit_by_unit_and_share_the_attachment():
    """A preset's units (settings, no image) completed by the command's control image and module."""
    preset = {
        "controls": [{"model": "control_v11p_sd15_canny", "module": "canny", "weight": 0.8}, {"module": "invert"}]
    }
    command = {"controls": [{"image": "/in/pose.png", "module": "threshold"}]}
    result = _resolve({"first": preset, "command": command})
    assert result.options["controls"] == [
        {"model": "control_v11p_sd15_canny", "module": "threshold", "weight": 0.8, "image": "/in/pose.png"},
        {"module": "invert", "image": "/in/pose.png"},
    ]
    assert result.sources["controls"] == "command"
    assert _resolve({}).options["controls"] == []
    alone = _resolve({"first": preset}).options["controls"]  # no image anywhere: the request will say so
    assert [u.get("image") for u in alone] == [None, None]
