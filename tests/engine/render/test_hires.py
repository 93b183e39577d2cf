"""Hires. fix on the tiny model: output size, every latent mode, image upscalers, a tiny ESRGAN found and used,
the fixed-steps second pass, infotext both ways, and the limits on the final size. The upscalers on their own:
test_upscalers.py."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import Limits
from engine.errors import EngineError
from engine.infotext import parse_infotext, request_options
from engine.render.upscalers import LATENT_MODES, UpscalerLibrary, load_model
from engine.request import GenerationRequest
from engine.tiny.models import write_tiny_esrgan
from tests.engine.render._helpers import count_unet_calls, engine, module_models, vae2_engine  # noqa: F401 - fixtures


def req(**kw) -> GenerationRequest:
    base = dict(prompt="a photo of a cat", seed=3, width=64, height=64, steps=3, sampler="Euler", hires=2.0)
    return GenerationRequest(**{**base, **kw})


@pytest.mark.parametrize("mode", list(LATENT_MODES))
def test_every_latent_mode_gives_the_final_size(engine, mode):
    result = engine.render(req(hires_upscaler=mode, hires_steps=1))
    assert result.images[0].image.size == (128, 128)


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_a_vae_that_scales_by_2_gives_the_final_size(vae2_engine, upscaler):
    result = vae2_engine.render(req(hires_upscaler=upscaler, hires_steps=1))
    assert result.images[0].image.size == (128, 128)
    assert "Size: 64x64" in result.images[0].infotext and "Hires upscale: 2" in result.images[0].infotext


def test_latent_modes_differ(engine):
    a = engine.render(req(hires_upscaler="Latent (nearest)", hires_steps=1))
    b = engine.render(req(hires_upscaler="Latent (bicubic antialiased)", hires_steps=1))
    assert not np.array_equal(np.asarray(a.images[0].image), np.asarray(b.images[0].image))


def test_second_pass_runs_exactly_hires_steps(engine):
    calls, progress, _ = count_unet_calls(engine, req(steps=3, hires_steps=2, strength=0.4))
    assert calls == 3 + 2
    assert progress[-1] == (5, 5)  # both passes reported as one run


def test_hires_steps_zero_means_the_same_steps(engine):
    calls, _, _ = count_unet_calls(engine, req(steps=3, hires_steps=0))
    assert calls == 6


def test_non_square_scale_and_determinism(engine):
    a = engine.render(req(width=64, height=96, hires=1.5, hires_upscaler="Lanczos", hires_steps=1))
    b = engine.render(req(width=64, height=96, hires=1.5, hires_upscaler="Lanczos", hires_steps=1))
    assert a.images[0].image.size == (96, 144)
    assert np.array_equal(np.asarray(a.images[0].image), np.asarray(b.images[0].image))


def test_nearest_image_upscaler(engine):
    result = engine.render(req(hires_upscaler="nearest", hires_steps=1))
    assert result.images[0].image.size == (128, 128)
    assert "Hires upscaler: Nearest" in result.images[0].infotext


def test_infotext_written_as_a1111_and_read_back(engine):
    result = engine.render(req(hires_steps=2, strength=0.6, hires_upscaler="Latent (nearest-exact)"))
    text = result.images[0].infotext
    assert "Size: 64x64" in text  # the first pass's size, as A1111 writes it
    assert "Denoising strength: 0.6" in text
    assert "Hires upscale: 2, Hires steps: 2, Hires upscaler: Latent (nearest-exact)" in text
    options, unused = request_options(parse_infotext(text))
    assert (options["hires"], options["hires_steps"], options["hires_upscaler"]) == (2.0, 2, "Latent (nearest-exact)")
    assert options["strength"] == 0.6 and unused == []
    again = GenerationRequest(**options)
    assert again.final_size == (128, 128)


def test_hires_resize_form_is_read_as_a_scale():
    text = "a cat\nSteps: 3, Sampler: Euler, Size: 64x96, Denoising strength: 0.5, Hires resize: 128x192"
    options, unused = request_options(parse_infotext(text))
    assert options["hires"] == 2.0 and unused == []


def test_plain_render_has_no_hires_keys(engine):
    text = engine.render(req(hires=0)).images[0].infotext
    assert "Hires" not in text and "Denoising strength" not in text


def test_final_size_is_limited():
    with pytest.raises(EngineError, match=r"Hires ×2 makes 1024x1024 = 1048576 pixels; the limit is 262144"):
        req(width=512, height=512, limits=Limits(max_pixels=512 * 512))


def test_hires_needs_a_strength_and_no_start_image(tmp_path):
    with pytest.raises(EngineError, match="strength above 0"):
        req(strength=0.0)
    with pytest.raises(EngineError, match="Hires. fix is for prompts without a start image"):
        req(init_image=str(tmp_path / "x.png"))


def test_unknown_upscaler_lists_the_valid_ones(engine):
    with pytest.raises(EngineError, match="unknown upscaler 'Foo'; valid: Latent, .*Lanczos, Nearest"):
        engine.render(req(hires_upscaler="Foo"))


# --- model upscalers ------------------------------------------------------------------------------------------


def test_tiny_esrgan_is_found_detected_and_used(engine, module_models):
    write_tiny_esrgan(module_models / "ESRGAN" / "tiny-x2.safetensors", scale=2)
    library = UpscalerLibrary(module_models)
    assert "tiny-x2" in library.names()
    assert (
        load_model(
            module_models / "ESRGAN" / "tiny-x2.safetensors", allow_pickle=False, device=engine.models.device
        ).architecture.name
        == "ESRGAN"
    )
    result = engine.render(req(hires_upscaler="tiny-x2", hires_steps=1))
    assert result.images[0].image.size == (128, 128)
    assert "Hires upscaler: tiny-x2" in result.images[0].infotext
    lanczos = engine.render(req(hires_upscaler="Lanczos", hires_steps=1))
    assert not np.array_equal(np.asarray(result.images[0].image), np.asarray(lanczos.images[0].image))
