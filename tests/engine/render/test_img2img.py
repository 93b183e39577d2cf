"""img2img on the tiny model: A1111's step rule (counted UNet calls), determinism, resize modes, infotext."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.config import EngineConfig
from engine.errors import EngineError
from engine.infotext import parse_infotext, request_options
from engine.render.img2img import StepPlan, fixed_steps_schedule, img2img_steps
from engine.render.pipeline import Engine
from engine.request import GenerationRequest
from tests.engine.render._helpers import count_unet_calls, engine, module_models, vae2_engine  # noqa: F401 - fixtures


def picture(width: int = 96, height: int = 64, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    """A smooth gradient picture (not noise), as bytes in `fmt`."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1)
    image = Image.fromarray(rgb.astype(np.uint8), "RGB").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def init_png(tmp_path: Path) -> Path:
    path = tmp_path / "start.png"
    path.write_bytes(picture())
    return path


def req(init: Path | str = "", **kw) -> GenerationRequest:
    base = dict(prompt="a photo of a cat", seed=7, width=64, height=64, steps=10, sampler="Euler", init_image=str(init))
    return GenerationRequest(**{**base, **kw})


@pytest.mark.parametrize(
    ("steps", "strength", "expected"),
    [
        (20, 0.75, 16),
        (10, 0.5, 6),
        (10, 0.3, 4),
        (7, 0.0, 1),
        (10, 1.0, 10),
        (20, 0.999, 20),
        (3, 0.34, 2),
    ],
)
def test_step_rule_is_a1111s(steps, strength, expected):
    assert img2img_steps(steps, strength) == expected
    plan = StepPlan.img2img(steps, strength)
    assert int(plan.scheduled * plan.diffusers_strength) == expected  # what diffusers will run


def test_diffusers_strength_survives_float_rounding():
    for scheduled in range(1, 200):
        for run in range(1, scheduled + 1):
            plan = StepPlan(scheduled, run)
            assert int(scheduled * plan.diffusers_strength) == run


def test_fixed_steps_rule_runs_exactly_the_hires_steps():
    assert fixed_steps_schedule(10, 0.7) == (14, 10)
    assert fixed_steps_schedule(15, 0.5) == (30, 15)
    assert fixed_steps_schedule(4, 1.0) == (4, 4)


@pytest.mark.parametrize(("steps", "strength"), [(10, 0.75), (8, 0.3), (5, 1.0), (6, 0.0)])
def test_denoising_steps_actually_run(engine, init_png, steps, strength):
    calls, progress, _ = count_unet_calls(engine, req(init_png, steps=steps, strength=strength))
    expected = int(min(strength, 0.999) * steps) + 1
    assert calls == expected
    assert progress[-1] == (expected, expected)


def test_step_count_with_a_second_order_sampler(engine, init_png):
    # Heun evaluates the UNet twice per step but the last: 4 steps of 6 are 2 * 4 - 1 evaluations.
    calls, _, _ = count_unet_calls(engine, req(init_png, steps=6, strength=0.5, sampler="Heun"))
    assert calls == 2 * 4 - 1


def test_same_inputs_same_pixels_and_strength_changes_them(engine, init_png):
    a = engine.render(req(init_png, strength=0.5))
    b = engine.render(req(init_png, strength=0.5))
    c = engine.render(req(init_png, strength=0.9))
    assert np.array_equal(np.asarray(a.images[0].image), np.asarray(b.images[0].image))
    assert not np.array_equal(np.asarray(a.images[0].image), np.asarray(c.images[0].image))


def test_start_image_matters(engine, tmp_path, init_png):
    other = tmp_path / "other.png"
    other.write_bytes(_flat_png())
    a = engine.render(req(init_png, strength=0.3))
    b = engine.render(req(other, strength=0.3))
    assert not np.array_equal(np.asarray(a.images[0].image), np.asarray(b.images[0].image))


def _flat_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_batched_img2img_image_equals_its_solo_run(engine, init_png):
    batch = engine.render(req(init_png, strength=0.6, batch_size=2))
    solo = engine.render(req(init_png, strength=0.6, seed=8))
    assert np.array_equal(np.asarray(batch.images[1].image), np.asarray(solo.images[0].image))


@pytest.mark.parametrize("mode", ["just", "crop", "fill"])
def test_resize_modes_give_the_requested_size(engine, init_png, mode):
    result = engine.render(req(init_png, width=64, height=96, resize_mode=mode, steps=2))
    assert result.images[0].image.size == (64, 96)


def test_a_vae_that_scales_by_2_gives_the_asked_size(vae2_engine, init_png):
    result = vae2_engine.render(req(init_png, width=64, height=96, strength=0.5))
    assert result.images[0].image.size == (64, 96)
    assert "Size: 64x96" in result.images[0].infotext


def test_resize_modes_differ(engine, init_png):
    outs = [
        np.asarray(
            engine.render(req(init_png, width=64, height=96, resize_mode=m, steps=2, strength=0.1)).images[0].image
        )
        for m in ("just", "crop", "fill")
    ]
    assert not np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[1], outs[2])


def test_infotext_written_and_read_back(engine, init_png):
    result = engine.render(req(init_png, strength=0.55, width=64, height=96))
    info = parse_infotext(result.images[0].infotext)
    assert info.params["Denoising strength"] == "0.55"
    assert info.params["Size"] == "64x96"
    options, unused = request_options(info)
    assert options["strength"] == 0.55 and (options["width"], options["height"]) == (64, 96)
    assert "Denoising strength" not in unused


def test_default_strength_is_a1111s(init_png):
    assert req(init_png).denoising_strength == 0.75
    assert req().denoising_strength is None


def test_txt2img_infotext_has_no_denoising_strength(engine):
    result = engine.render(req(steps=2))
    assert "Denoising strength" not in parse_infotext(result.images[0].infotext).params


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"strength": 1.5}, "strength must be from 0 to 1"),
        ({"resize_mode": "stretch"}, "resize mode must be one of just, crop, fill"),
    ],
)
def test_bad_fields_are_refused(init_png, kw, message):
    with pytest.raises(EngineError, match=message):
        req(init_png, **kw)


def test_resize_mode_accepts_a1111_names(init_png):
    assert req(init_png, resize_mode="Crop and resize").resize_mode == "crop"


def test_a_missing_start_image_is_a_clear_error(engine, tmp_path):
    with pytest.raises(EngineError, match="cannot read the init image"):
        engine.render(req(tmp_path / "nope.png"))


def test_sdxl_img2img_runs_the_same_step_rule(tiny_sdxl, tmp_path, init_png):
    import shutil

    shutil.copytree(tiny_sdxl, tmp_path / "models" / "tiny-sdxl")
    xl = Engine(EngineConfig(models_dir=tmp_path / "models"))
    calls, progress, _ = count_unet_calls(xl, req(init_png, steps=6, strength=0.5))
    assert calls == 4 and progress[-1] == (4, 4)


def test_a_portable_request_carries_the_start_image_and_renders_the_same(engine, init_png):
    """What another machine gets (the pickled request) holds the image's bytes, not just a path on this host."""
    import pickle

    request = req(init_png, strength=0.6)
    expected = engine.render(request)
    wire = pickle.dumps(request.portable())
    init_png.unlink()  # the path is meaningless over there
    received = pickle.loads(wire)
    assert received.init_image_data == picture() and received == request
    assert "init_image_data" not in received.options()  # never stored with the job
    got = engine.render(received)
    assert np.array_equal(np.asarray(got.images[0].image), np.asarray(expected.images[0].image))
    with pytest.raises(EngineError, match="cannot read the init image"):
        request.portable()


def test_damaged_image_bytes_in_a_request_are_refused_at_render(engine, init_png):
    with pytest.raises(EngineError, match="not a PNG, JPEG or WebP"):
        engine.render(req(init_png).replace(init_image_data=b"GIF89a..."))


def test_the_start_image_is_encoded_once_at_the_job_size(engine, init_png):
    """Nothing done twice: one VAE encode per job (shared by a batch's images), at the job's size."""
    vae = engine.models.vae("auto", engine.models.checkpoint(""))[0]
    shapes = []
    encode = vae.encode

    def counted(pixels, *args, **kwargs):
        shapes.append(tuple(pixels.shape))
        return encode(pixels, *args, **kwargs)

    vae.encode = counted
    try:
        engine.render(req(init_png, width=96, height=64, batch_size=3, strength=0.5))
    finally:
        del vae.encode
    assert shapes == [(1, 3, 64, 96)]
