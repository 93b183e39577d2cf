"""Inpainting and outpainting in the pipeline: A1111's img2img with a mask, its latent half.

`engine.render.masking` prepares the pixels as A1111's img2img `init` does; here they become latents, and the
denoising keeps the mask (A1111's modules/processing.py and sd_samplers_cfg_denoiser.py):

- masked content "noise" puts the seeds' noise into the masked latents (A1111 draws it with the image seeds, the
  same first draw as the job's starting noise), "nothing" zeros them; "fill" and "original" are in the pixels;
- the latent mask is kept at every step: after each scheduler step the kept latents are set back to the start
  latents noised to the next step's level with the noise the job started from, and after the last step to the
  start latents themselves (A1111's blend after sampling). For deterministic samplers (Euler, DDIM, the DPM++
  multistep ones) this is what A1111's blend of each step's denoised prediction amounts to; for ancestral ones
  the kept latents carry the first noise instead of fresh noise. diffusers' own inpainting pipeline blends so too;
- an inpainting checkpoint (a UNet with 9 input channels, SD 1.x or SDXL) sees, after the noisy latents, the
  mask and the masked image's latents (A1111's `c_concat`, "Inpainting conditioning mask strength" 1.0); without
  a mask (txt2img, plain img2img, the Hires pass) a full mask and a blank image, as A1111 gives it.

The decoded images then get the original composited over them (`masking.Prepared.finish`), so every pixel outside
the blurred mask is the original's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from engine.render import img2img
from engine.render.input_image import checked_input_limits, open_input_image, read_input_bytes
from engine.render.masking import Prepared, Upscale, binary_mask, latent_mask, prepare
from engine.render.outpaint import canvas_and_mask, parse_margins

if TYPE_CHECKING:
    from PIL import Image

    from engine.config import Limits
    from engine.request import GenerationRequest

StepEnd = Callable[[Any, int, Any, dict], dict]

# A1111's "Inpainting conditioning mask strength" (its default), written as its infotext prints the float.
CONDITIONAL_MASK_WEIGHT = "1.0"
INPAINTING_CHANNELS = 9  # the latents (4), the mask (1) and the masked image's latents (4)


def is_inpainting_unet(unet) -> bool:
    return unet.config.in_channels == INPAINTING_CHANNELS


def source_and_mask(request: GenerationRequest) -> tuple[Image.Image, Image.Image]:
    """The image to inpaint and its binary mask (the image's size): the start image and the mask file, or for
    outpainting the grown canvas at the job's size and its new border."""
    image = img2img.start_image(request)
    if request.outpaint:
        return canvas_and_mask(image, parse_margins(request.outpaint), (request.width, request.height))
    return image, read_mask(request, image.size)


def read_mask(request: GenerationRequest, size: tuple[int, int]) -> Image.Image:
    """The job's mask, binary and stretched to `size`. The file is the one the bot saved (or the CLI checked with
    `open_mask`), read again with `checked_input_limits` as the start image is."""
    return binary_mask(open_mask(request.mask, checked_input_limits(request.limits), request.mask_data), size)


def open_mask(path: str, limits: Limits, data: bytes = b"") -> Image.Image:
    """The mask file at `path` (or its bytes, carried with the job), checked as a start image is: its size, its
    format by content and its pixels before decoding; alpha kept (it may be the mask)."""
    data = data or read_input_bytes(path, limits, "the mask")
    return open_input_image(data, limits, name=f"the mask {os.path.basename(path)}")


@dataclass(frozen=True)
class InpaintStart:
    """One inpaint job's start: its prepared pixels, start latents, latent mask and 9-channel conditioning."""

    prepared: Prepared
    latents: torch.Tensor  # (images, C, h, w): the start latents with the masked content applied
    change: torch.Tensor  # (1, 1, h, w): 1.0 where the latents change, 0.0 where they are kept
    conditioning: torch.Tensor | None  # (1, 5, h, w): the mask and the masked image's latents (9-channel UNets)
    upscale: Upscale | None = None

    def keeping_mask(self, pipe, generators: list, inner: StepEnd) -> StepEnd:
        """The step callback that keeps the latent mask after every step, then calls `inner`.

        Call it right before the denoising: it copies `generators` to know the noise the pipeline will draw.
        """
        device, dtype = pipe._execution_device, pipe.unet.dtype
        start = self.latents.to(device, dtype)
        noise = _drawn_noise(generators, tuple(start.shape), device, dtype)
        change = self.change.to(device, dtype)
        keep = 1 - change

        def step_end(p, index: int, timestep, kwargs: dict) -> dict:
            scheduler, run = p.scheduler, p.num_timesteps
            if index + 1 < run:
                following = scheduler.timesteps[len(scheduler.timesteps) - run + index + 1]
                target = scheduler.add_noise(start, noise, following.reshape(1))
            else:
                target = start
            kwargs["latents"] = kwargs["latents"] * change + target * keep
            return inner(p, index, timestep, kwargs)

        return step_end

    def finish(self, images: list[Image.Image]) -> list[Image.Image]:
        """The delivered images: the original composited over each decoded one."""
        return [self.prepared.finish(image, self.upscale) for image in images]


def start(vae, unet, request: GenerationRequest, noise: torch.Tensor, upscale: Upscale | None = None) -> InpaintStart:
    """Prepare an inpaint job for `noise.shape[0]` images (one start image and mask for all of them); the masked
    image is encoded only for an inpainting `unet`."""
    image, mask = source_and_mask(request)
    settings = request.mask_settings
    prepared = prepare(image, mask, settings, request.width, request.height, request.resize_mode, upscale)
    encoded = img2img.encode_images(vae, [prepared.image])
    change = torch.from_numpy(latent_mask(prepared.mask, encoded.shape[-1], encoded.shape[-2]))[None, None]
    change = change.to(encoded)
    latents = encoded.expand(noise.shape[0], -1, -1, -1)
    if settings.content == "noise":
        latents = latents * (1 - change) + noise.to(latents) * change
    elif settings.content == "nothing":
        latents = latents * (1 - change)
    conditioning = None
    if is_inpainting_unet(unet):
        pixels = img2img.image_pixels(prepared.image)
        conditioning = masked_image_conditioning(vae, pixels, _mask_tensor(prepared.mask))
    return InpaintStart(prepared, latents, change, conditioning, upscale)


def _mask_tensor(mask: Image.Image) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255)[None, None]


def masked_image_conditioning(vae, pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A1111's inpainting conditioning: the mask rounded to 0/1 (half to even), the image with the masked part
    blanked (lerp to the masked image at weight 1.0) encoded, the mask shrunk (nearest) to the latents' size;
    (1, 1 + C, h, w)."""
    rounded = torch.round(mask)
    latents = img2img.encode_pixels(vae, pixels * (1 - rounded))
    small = torch.nn.functional.interpolate(rounded, size=latents.shape[-2:])
    return torch.cat([small.to(latents), latents], dim=1)


def blank_conditioning(vae, width: int, height: int) -> torch.Tensor:
    """What an inpainting UNet sees without a mask: all masked, a blank (mid-grey) image (A1111's txt2img and
    img2img conditioning for inpainting models)."""
    return masked_image_conditioning(vae, torch.zeros(1, 3, height, width), torch.ones(1, 1, height, width))


@contextmanager
def conditioned(unet, vae, job: InpaintStart | None) -> Iterator[None]:
    """While open, an inpainting `unet` sees its conditioning after the latents on the channel axis: the job's
    mask and masked image, else a blank one of the call's size (the Hires pass has its own). Other UNets: nothing.

    Opened inside `exact_batch.one_image_at_a_time`, so the conditioning is joined before the rows are split per image.
    """
    if not is_inpainting_unet(unet):
        yield
        return
    own = "forward" in vars(unet)
    previous = unet.forward
    blanks: dict[tuple[int, int], torch.Tensor] = {}

    def extra(sample: torch.Tensor) -> torch.Tensor:
        height, width = sample.shape[-2:]
        if job is not None and job.conditioning is not None and tuple(job.conditioning.shape[-2:]) == (height, width):
            return job.conditioning
        if (height, width) not in blanks:
            scale = 2 ** (len(vae.config.block_out_channels) - 1)
            blanks[(height, width)] = blank_conditioning(vae, width * scale, height * scale)
        return blanks[(height, width)]

    def forward(sample, timestep, *args, **kwargs):
        more = extra(sample).to(sample).expand(sample.shape[0], -1, -1, -1)
        return previous(torch.cat([sample, more], dim=1), timestep, *args, **kwargs)

    unet.forward = forward
    try:
        yield
    finally:
        if own:
            unet.forward = previous
        else:
            del unet.forward


def _drawn_noise(generators: list, shape: tuple[int, ...], device, dtype) -> torch.Tensor:
    """The noise the img2img pipeline draws from `generators` for latents of `shape` (drawn from copies, so the
    generators are left as they are)."""
    from diffusers.utils.torch_utils import randn_tensor

    copies = []
    for generator in generators:
        copy = torch.Generator(generator.device)
        copy.set_state(generator.get_state())
        copies.append(copy)
    return randn_tensor(shape, generator=copies, device=device, dtype=dtype)
