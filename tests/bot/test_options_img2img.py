"""The inline img2img and Hires options, exactly as the issue names them."""

from __future__ import annotations

import pytest

from bot.errors import UserError
from bot.exts.imagine._cog import options_text
from bot.options import parse_inline


def test_hires_options_inline():
    parsed = parse_inline('a castle --hires 2 --hires-steps 10 --hires-upscaler "Latent (nearest-exact)"')
    assert parsed.prompt == "a castle"
    assert parsed.options == {"hires": 2.0, "hires_steps": 10, "hires_upscaler": "Latent (nearest-exact)"}


def test_strength_and_resize_mode_inline():
    parsed = parse_inline("a cat --strength 0.4 --resize-mode crop --denoise 0.5")
    assert parsed.options == {"strength": 0.5, "resize_mode": "crop"}


def test_bad_values_name_the_option():
    with pytest.raises(UserError, match="--hires takes a number"):
        parse_inline("a cat --hires big")
    with pytest.raises(UserError, match="--hires-steps takes a whole number"):
        parse_inline("a cat --hires-steps 1.5")


def test_edit_modal_text_round_trips_hires_and_strength():
    options = dict(
        steps=3,
        cfg_scale=7.0,
        sampler="Euler",
        schedule="Automatic",
        width=64,
        height=64,
        clip_skip=1,
        vae="auto",
        batch_size=1,
        seed=3,
        hires=2.0,
        hires_steps=1,
        hires_upscaler="Latent (nearest-exact)",
        strength=0.5,
    )
    parsed = parse_inline("a cat " + options_text(options))
    assert {k: parsed.options[k] for k in ("hires", "hires_steps", "hires_upscaler", "strength")} == {
        "hires": 2.0,
        "hires_steps": 1,
        "hires_upscaler": "Latent (nearest-exact)",
        "strength": 0.5,
    }


def test_a_start_image_path_cannot_come_from_a_preset():
    from bot.services.resolution import resolve
    from bot.store.errors import InvalidOptions
    from bot.store.options import validate_options

    with pytest.raises(InvalidOptions, match="unknown preset option 'init_image'"):
        validate_options({"init_image": "/etc/passwd"}, what="preset option")
    with pytest.raises(ValueError, match="unknown option 'init_image' in preset x"):
        resolve(None, None, [("x", {"init_image": "/etc/passwd"})], {})
    resolved = resolve(None, None, [], {"prompt": "a cat", "init_image": "/srv/in.png"})  # the command's own
    assert resolved.options["init_image"] == "/srv/in.png"
