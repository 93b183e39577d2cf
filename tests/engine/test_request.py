"""GenerationRequest validation: every invalid value is an EngineError naming what is allowed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.config import Limits
from engine.errors import EngineError
from engine.request import GenerationRequest, parse_size


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, "steps must be from 1 to 150"),
        ({"steps": 151}, "steps must be from 1 to 150"),
        ({"steps": "20"}, "steps must be a whole number from 1 to 150"),
        ({"cfg_scale": 0.5}, "CFG scale must be from 1 to 30"),
        ({"cfg_scale": float("nan")}, "CFG scale must be a number"),
        ({"seed": -2}, "seed must be from -1 to 4294967295"),
        ({"seed": 2**32}, "seed must be from -1 to 4294967295"),
        ({"width": 500}, "width must be a multiple of 8"),
        ({"height": 32}, "height must be from 64 to 2048"),
        ({"width": 2048, "height": 2048}, "the limit is 1048576 pixels"),
        ({"batch_size": 5}, "batch size must be from 1 to 4"),
        ({"clip_skip": 0}, "CLIP skip must be from 1 to 12"),
        ({"clip_skip": True}, "CLIP skip must be a whole number"),
        ({"sampler": "DPM fast"}, "has no diffusers equivalent; valid samplers: Euler a, "),
        ({"sampler": "Eulr"}, "unknown sampler 'Eulr'; valid samplers: Euler a, Euler, LMS"),
        ({"schedule": "Fancy"}, "unknown schedule type 'Fancy'; valid: Automatic, Karras"),
        ({"prompt": "x" * 4001}, "prompt is 4001 characters long; the limit is 4000"),
        ({"vae": " "}, "VAE must be 'auto', 'none', a VAE name or a path"),
    ],
)
def test_invalid_values_say_what_is_allowed(changes, message):
    with pytest.raises(EngineError) as err:
        GenerationRequest(**{"prompt": "cat", **changes})
    assert message in str(err.value)


def test_limits_come_from_the_config():
    limits = Limits(max_steps=30, max_batch=8)
    with pytest.raises(EngineError, match="steps must be from 1 to 30"):
        GenerationRequest(prompt="cat", steps=31, limits=limits)
    assert GenerationRequest(prompt="cat", batch_size=8, limits=limits).batch_size == 8


@pytest.mark.parametrize(
    ("sampler", "schedule", "expected"),
    [
        ("DPM++ 2M Karras", "Automatic", ("DPM++ 2M", "Karras")),
        ("DPM++ 2M", "Karras", ("DPM++ 2M", "Karras")),
        ("dpm++ 2m sde exponential", "automatic", ("DPM++ 2M SDE", "Exponential")),
        ("Euler a", "Automatic", ("Euler a", "Automatic")),
        ("DDIM", "SGM Uniform", ("DDIM", "SGM Uniform")),
    ],
)
def test_sampler_names_old_and_new_forms(sampler, schedule, expected):
    r = GenerationRequest(prompt="cat", sampler=sampler, schedule=schedule)
    assert (r.sampler, r.schedule) == expected


def test_request_is_immutable():
    r = GenerationRequest(prompt="cat")
    with pytest.raises(AttributeError):
        r.steps = 3  # type: ignore[misc]


def test_random_seed_resolution_and_batch_seeds():
    r = GenerationRequest(prompt="cat", seed=-1, batch_size=3).with_seed()
    assert 0 <= r.seed <= 2**32 - 2
    assert r.seeds() == [r.seed, r.seed + 1, r.seed + 2]
    fixed = GenerationRequest(prompt="cat", seed=9)
    assert fixed.with_seed() is fixed


@pytest.mark.parametrize(("text", "size"), [("512x768", (512, 768)), (" 64 X 128 ", (64, 128)), ("8×8", (8, 8))])
def test_parse_size(text, size):
    assert parse_size(text) == size


@given(st.text(max_size=20))
def test_parse_size_only_raises_engine_errors(text):
    try:
        w, h = parse_size(text)
    except EngineError as err:
        assert "WIDTHxHEIGHT" in str(err)
    else:
        assert isinstance(w, int) and isinstance(h, int)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mask_blur": -1}, "mask blur must be from 0 to 64"),
        ({"mask_blur": 65}, "mask blur must be from 0 to 64"),
        ({"padding": 257}, "masked area padding must be from 0 to 256"),
        ({"masked_content": "latent"}, "masked content must be fill, original, noise or nothing"),
        ({"inpaint_area": "all"}, "inpaint area must be whole or masked"),
        ({"mask_mode": "inverted"}, "mask mode must be masked or unmasked"),
        ({"outpaint": "0,0,0,0", "init_image": "a.png"}, "outpaint 0,0,0,0 adds nothing"),
        ({"outpaint": "64"}, "outpaint must be four whole numbers L,T,R,B"),
        ({"mask": "m.png"}, "a mask needs a start image (the image to change)"),
        ({"outpaint": "0,0,64,0"}, "outpaint needs a start image"),
        ({"mask": "m.png", "outpaint": "0,0,64,0", "init_image": "a.png"}, "a mask and outpaint cannot be combined"),
    ],
)
def test_invalid_inpaint_values_say_what_is_allowed(changes, message):
    with pytest.raises(EngineError) as err:
        GenerationRequest(**{"prompt": "cat", **changes})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_inpaint_controls_take_a1111s_words_and_outpaint_is_canonical():
    request = GenerationRequest(
        "cat",
        init_image="a.png",
        outpaint=" 0, 64 ,0,0",
        mask_mode="Inpaint not masked",
        masked_content="latent noise",
        inpaint_area="Only masked",
    )
    assert (request.outpaint, request.mask_mode, request.masked_content) == ("0,64,0,0", "unmasked", "noise")
    assert request.inpaint_area == "masked" and request.is_inpaint


@pytest.mark.parametrize(
    ("changes", "content"),
    [
        ({"mask": "m.png"}, "original"),
        ({"outpaint": "0,0,64,0"}, "fill"),
        ({"mask": "m.png", "masked_content": "nothing"}, "nothing"),
        ({"outpaint": "0,0,64,0", "masked_content": "original"}, "original"),
    ],
)
def test_masked_content_defaults_to_original_and_to_fill_for_outpaint(changes, content):
    assert GenerationRequest("cat", init_image="a.png", **changes).mask_settings.content == content


def test_inpaint_jobs_batch_only_with_the_same_mask_and_controls():
    base = GenerationRequest("cat", init_image="a.png", mask="m.png")
    assert base.batch_key() == base.replace(prompt="dog").batch_key()
    for changes in ({"mask": "n.png"}, {"mask_blur": 8}, {"inpaint_area": "masked"}, {"masked_content": "fill"}):
        assert base.replace(**changes).batch_key() != base.batch_key()
    plain = GenerationRequest("cat", init_image="a.png")
    assert plain.replace(mask_blur=8).batch_key() == plain.batch_key()  # controls without a mask change nothing
