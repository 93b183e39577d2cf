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
