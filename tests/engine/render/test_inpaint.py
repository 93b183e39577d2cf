"""Inpainting and outpainting through the real diffusers pipeline on tiny SD 1.x and SDXL models (normal and
9-channel inpainting checkpoints): the original kept outside the blurred mask, the latent mask kept at every step,
each masked-content mode, "Only masked", outpainting, the infotext keys and their import, bad masks, batching."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config import EngineConfig, Limits
from engine.errors import EngineError
from engine.infotext import parse_infotext, read_png_infotext, request_options
from engine.render import inpaint
from engine.render.img2img import encode_pixels, image_pixels
from engine.render.masking import blur, latent_mask
from engine.render.pipeline import Engine
from engine.request import GenerationRequest
from engine.tiny.models import write_tiny_model
from tests.engine.render.test_input_image import png_header_only

SIZE = 64
MASK_BOX = (16, 20, 44, 48)


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_sd15: Path, tiny_sdxl: Path) -> Path:
    root = tmp_path_factory.mktemp("inpaint-models")
    shutil.copytree(tiny_sd15, root / "sd15")
    shutil.copytree(tiny_sdxl, root / "sdxl")
    write_tiny_model(root / "sd15-inpainting", inpainting=True)
    write_tiny_model(root / "sdxl-inpainting", family="sdxl", inpainting=True)
    return root


@pytest.fixture(scope="module")
def engine(models: Path) -> Engine:
    return Engine(EngineConfig(models_dir=models))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inpaint-files")
    rng = np.random.default_rng(7)
    init = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), "RGB")
    wide = Image.fromarray(rng.integers(0, 256, (SIZE, 96, 3), dtype=np.uint8), "RGB")
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, MASK_BOX)
    paths = {"init": root / "init.png", "wide": root / "wide.png", "mask": root / "mask.png"}
    init.save(paths["init"])
    wide.save(paths["wide"])
    mask.save(paths["mask"])
    mask.resize((32, 32), Image.Resampling.NEAREST).save(root / "small-mask.png")
    paths["small-mask"] = root / "small-mask.png"
    wide_mask = Image.new("L", (96, SIZE), 0)
    wide_mask.paste(255, (60, 10, 80, 30))
    wide_mask.save(root / "wide-mask.png")
    paths["wide-mask"] = root / "wide-mask.png"
    return paths


def request(files, **changes: Any) -> GenerationRequest:
    base: dict[str, Any] = dict(
        prompt="a photo of a cat",
        width=SIZE,
        height=SIZE,
        steps=4,
        sampler="Euler",
        seed=3,
        init_image=str(files["init"]),
        mask=str(files["mask"]),
        model="sd15",
    )
    return GenerationRequest(**(base | changes))


@contextmanager
def unet_inputs(engine: Engine, model: str) -> Iterator[list[torch.Tensor]]:
    """Every latent batch the model's UNet is called with, while open."""
    unet = engine.models.checkpoint(model).pipe.unet
    seen: list[torch.Tensor] = []
    forward = unet.forward

    def recording(sample, *args, **kwargs):
        seen.append(sample.clone())
        return forward(sample, *args, **kwargs)

    unet.forward = recording
    try:
        yield seen
    finally:
        del unet.forward


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def outside_blurred(mask_path: Path, sigma: int = 4) -> np.ndarray:
    return pixels(blur(Image.open(mask_path).convert("L"), sigma))[..., 0] == 0


@pytest.mark.parametrize(
    ("model", "sampler", "area"),
    [
        ("sd15", "Euler", "whole"),
        ("sd15", "DPM++ 2M Karras", "masked"),
        ("sdxl", "DDIM", "whole"),
        ("sdxl", "Euler a", "masked"),
        ("sd15-inpainting", "DDIM", "masked"),
        ("sdxl-inpainting", "Euler", "whole"),
    ],
)
def test_pixels_outside_the_blurred_mask_are_the_originals(engine, files, model, sampler, area):
    result = engine.render(request(files, model=model, sampler=sampler, inpaint_area=area))
    out, original = pixels(result.images[0].image), pixels(Image.open(files["init"]))
    keep = outside_blurred(files["mask"])
    assert out.shape == original.shape
    assert np.array_equal(out[keep], original[keep])
    assert (out[~keep] != original[~keep]).mean() > 0.5  # the masked part is redrawn


def test_the_latent_mask_is_kept_at_every_step(engine, files):
    """Whatever the prompt, the kept latents follow the start latents at every step and end on them exactly."""
    change = torch.from_numpy(latent_mask(blur(Image.open(files["mask"]).convert("L"), 4), 8, 8)) == 1
    keep = ~change
    seen: dict[str, list[torch.Tensor]] = {"a photo of a cat": [], "a blue sky at night": []}
    for prompt, steps in seen.items():
        engine.render(
            request(files, prompt=prompt, steps=6), on_step=lambda s, t, latents, into=steps: into.append(latents)
        )
    cat, sky = seen.values()
    assert len(cat) == 5  # A1111's img2img runs int(0.75 * 6) + 1 steps
    for a, b in zip(cat, sky):
        assert torch.equal(a[..., keep], b[..., keep])  # kept: the noised start latents, the prompt plays no part
        assert not torch.equal(a[..., change], b[..., change])
    start = inpaint.start(
        engine.models.vae("auto", engine.models.checkpoint("sd15"))[0],
        engine.models.checkpoint("sd15").pipe.unet,
        request(files),
        torch.zeros(1, 4, 8, 8),
    )
    assert torch.equal(cat[-1][..., keep], start.latents[..., keep].to(cat[-1]))


@pytest.mark.parametrize("content", ["original", "fill", "noise", "nothing"])
def test_each_masked_content_mode(engine, files, content):
    ckpt = engine.models.checkpoint("sd15")
    vae = engine.models.vae("auto", ckpt)[0]
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    job = inpaint.start(vae, ckpt.pipe.unet, request(files, masked_content=content), noise)
    plain = inpaint.start(vae, ckpt.pipe.unet, request(files, masked_content="original"), noise)
    filled = inpaint.start(vae, ckpt.pipe.unet, request(files, masked_content="fill"), noise)
    changed = job.change[0, 0] == 1
    assert changed.any() and (~changed).any()
    # Every mode but "original" fills the pixels first (A1111 does), which reaches the kept latents through the
    # encoder's receptive field: noise and nothing keep what fill keeps.
    reference = plain if content == "original" else filled
    assert torch.equal(job.latents[..., ~changed], reference.latents[..., ~changed])
    masked = job.latents[..., changed]
    if content == "original":
        assert torch.equal(job.latents, plain.latents)
    elif content == "nothing":
        assert not masked.any()  # latent nothing: zeros
    elif content == "noise":
        assert torch.equal(masked, noise[..., changed].to(masked))  # latent noise: the seed's noise
    else:  # fill: the masked pixels painted from their surroundings before encoding
        assert not torch.equal(masked, plain.latents[..., changed])
        keep = pixels(job.prepared.mask)[..., 0] == 0
        assert np.array_equal(pixels(job.prepared.image)[keep], pixels(plain.prepared.image)[keep])
    rendered = engine.render(request(files, masked_content=content)).images[0]
    assert ("Masked content" in rendered.infotext) == (content != "original")


def test_only_masked_renders_the_crop_at_the_jobs_size_and_delivers_the_originals(engine, files):
    with unet_inputs(engine, "sd15") as seen:
        result = engine.render(
            request(files, init_image=str(files["wide"]), mask=str(files["wide-mask"]), inpaint_area="masked")
        )
    assert {tuple(x.shape[-2:]) for x in seen} == {(8, 8)}  # the 64x64 job renders the crop
    out, original = pixels(result.images[0].image), pixels(Image.open(files["wide"]))
    assert out.shape == original.shape == (SIZE, 96, 3)
    keep = outside_blurred(files["wide-mask"])
    assert np.array_equal(out[keep], original[keep])
    assert "Inpaint area: Only masked, Masked area padding: 32" in result.images[0].infotext


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_an_inpainting_checkpoint_sees_the_mask_and_the_masked_image(engine, files, family):
    model = f"{family}-inpainting"
    unet = engine.models.checkpoint(model).pipe.unet
    with unet_inputs(engine, model) as inputs:
        result = engine.render(request(files, model=model, mask_blur=0))
        txt = engine.render(request(files, model=model, init_image="", mask="", steps=2))
    assert all(x.shape[1] == 9 for x in inputs)
    ckpt = engine.models.checkpoint(model)
    vae = engine.models.vae("auto", ckpt)[0]
    job = inpaint.start(vae, unet, request(files, model=model, mask_blur=0), torch.zeros(1, 4, 8, 8))
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., MASK_BOX[1] : MASK_BOX[3], MASK_BOX[0] : MASK_BOX[2]] = 1
    masked_latents = encode_pixels(vae, image_pixels(Image.open(files["init"])) * (1 - mask))
    small = torch.nn.functional.interpolate(mask, size=(8, 8))
    assert job.conditioning is not None
    assert torch.equal(job.conditioning[:, :1], small) and torch.allclose(job.conditioning[:, 1:], masked_latents)
    first = inputs[0]
    assert torch.equal(first[:, 4:], job.conditioning.expand(first.shape[0], -1, -1, -1).to(first))
    assert "Conditional mask weight: 1.0, " in result.images[0].infotext
    assert (inputs[-1][:, 4] == 1).all()  # txt2img: all masked
    assert "Conditional mask weight: 1.0" in txt.images[0].infotext
    keep = outside_blurred(files["mask"], 0)
    assert np.array_equal(pixels(result.images[0].image)[keep], pixels(Image.open(files["init"]))[keep])


@pytest.mark.parametrize("model", ["sd15", "sdxl"])
def test_outpainting_grows_the_canvas_and_keeps_the_original_beyond_the_blur(engine, files, model):
    job = request(files, model=model, mask="", outpaint="32,0,0,16", width=96, height=80, sampler="Euler a")
    result = engine.render(job)
    out = pixels(result.images[0].image)
    assert out.shape == (80, 96, 3)
    border = Image.new("L", (96, 80), 255)
    border.paste(0, (32, 0, 96, 64))
    keep = pixels(blur(border, 4))[..., 0] == 0
    canvas = np.zeros((80, 96, 3), dtype=np.uint8)
    canvas[0:64, 32:96] = pixels(Image.open(files["init"]))
    assert keep[:, 32:].any() and np.array_equal(out[keep], canvas[keep])
    assert out[:, :20].std() > 0  # the new border is painted, not left black
    assert "Mask blur: 4, Masked content: fill" in result.images[0].infotext


def test_infotext_keys_and_their_import(engine, files):
    job = request(files, mask_mode="unmasked", mask_blur=6, inpaint_area="masked", padding=24, masked_content="nothing")
    text = engine.render(job).images[0].infotext
    assert (
        "Denoising strength: 0.75, RNG: CPU, Mask mode: Inpaint not masked, Mask blur: 6, Inpaint area: Only masked, "
        "Masked area padding: 24, Masked content: latent nothing, Version:"
    ) in text
    options, unused = request_options(parse_infotext(text))
    assert unused == []
    assert {k: options[k] for k in ("mask_mode", "mask_blur", "inpaint_area", "padding", "masked_content")} == {
        "mask_mode": "unmasked",
        "mask_blur": 6,
        "inpaint_area": "masked",
        "padding": 24,
        "masked_content": "nothing",
    }
    assert "mask" not in options and "init_image" not in options  # the mask itself is never restored


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"this is not an image", "the mask m.png is not a PNG, JPEG or WebP image"),
        (png_header_only(5000, 5000), "the mask m.png is 5000x5000 = 25,000,000 pixels; the limit is 1,000,000"),
    ],
)
def test_bad_masks_are_refused_in_one_line_before_decoding(engine, files, tmp_path, monkeypatch, data, message):
    """Format and pixels, from the header, at render too (the file size is checked where the mask is sent: the
    command line, tests/bot/test_cli_inpaint.py, and the bot)."""
    path = tmp_path / "m.png"
    path.write_bytes(data)
    decoded = []
    real_load = Image.Image.load
    monkeypatch.setattr(
        Image.Image, "load", lambda self: decoded.append(self.size) if self.size[0] > 1000 else real_load(self)
    )
    limits = Limits(max_input_bytes=200_000, max_input_pixels=1000 * 1000)
    with pytest.raises(EngineError) as err:
        engine.render(request(files, mask=str(path), limits=limits))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert decoded == []


def test_a_mask_that_marks_nothing_is_refused(engine, files, tmp_path):
    black = tmp_path / "black.png"
    Image.new("L", (SIZE, SIZE), 0).save(black)
    with pytest.raises(EngineError, match="the mask marks nothing to change"):
        engine.render(request(files, mask=str(black)))


def test_a_mask_of_another_size_is_stretched_to_the_image(engine, files):
    small = engine.render(request(files, mask=str(files["small-mask"]))).images[0].image
    full = engine.render(request(files, mask=str(files["mask"]))).images[0].image
    assert np.array_equal(pixels(small), pixels(full))  # a 32x32 mask of the same box: the same job


def test_inpaint_jobs_batch_and_each_equals_its_solo_run(engine, files):
    jobs = [request(files, seed=5), request(files, seed=9, prompt="a photo of a dog")]
    batched = engine.render_batch(jobs)
    for job, result in zip(jobs, batched):
        solo = engine.render(job).images[0].image
        assert np.array_equal(pixels(result.images[0].image), pixels(solo))


def test_a_portable_request_carries_the_mask(engine, files):
    job = request(files).portable()
    assert job.mask_data == files["mask"].read_bytes() and "mask_data" not in job.options()
    moved = job.replace(mask="/elsewhere/mask.png", init_image="/elsewhere/init.png")
    assert np.array_equal(
        pixels(engine.render(moved).images[0].image), pixels(engine.render(request(files)).images[0].image)
    )


def test_png_of_an_inpainted_image_reads_back(engine, files):
    rendered = engine.render(request(files)).images[0]
    assert read_png_infotext(rendered.png()) == rendered.infotext
