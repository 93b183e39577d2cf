"""img2img as A1111 runs it: schedule N steps, run only the last ones, from the encoded image plus noise.

A1111's rule (`sd_samplers_common.setup_img2img_steps`): with `steps` N and denoising strength d it schedules N
steps and runs the last `t_enc + 1` of them, `t_enc = int(min(d, 0.999) * N)`, starting from the image's latents
plus the seed's noise at that step's sigma. Its Hires second pass uses the "fixed steps" branch of the same
function instead: it schedules `int(S / min(d, 0.999))` steps and runs the last S, so exactly `hires_steps` run.

diffusers' img2img pipelines run `int(N * strength)` steps, one fewer than A1111, so `strength` is never passed
through: `run_last` computes the diffusers strength that selects exactly the steps A1111 runs, and the steps are
counted in the tests. The VAE encodes with the distribution's mode (no sampling), so the same inputs always give
the same pixels and the seed's generator is left for the noise, as in txt2img.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import torch

from engine.errors import EngineError

if TYPE_CHECKING:
    from PIL import Image

    from engine.request import GenerationRequest

RESIZE_MODE_NAMES = {"just": "Just resize", "crop": "Crop and resize", "fill": "Resize and fill"}


def img2img_steps(steps: int, strength: float) -> int:
    """The denoising steps A1111's img2img runs out of `steps` scheduled ones."""
    return int(min(strength, 0.999) * steps) + 1


def fixed_steps_schedule(steps: int, strength: float) -> tuple[int, int]:
    """A1111's fixed-steps rule (used by its Hires second pass): (steps scheduled, steps run = `steps`)."""
    return int(steps / min(strength, 0.999)), steps


@dataclass(frozen=True)
class StepPlan:
    """Which part of a schedule runs: the last `run` of `scheduled` steps. Made by A1111's img2img rule or its
    fixed-steps rule (the Hires pass), then handed to diffusers as the strength that runs exactly those steps."""

    scheduled: int
    run: int

    @classmethod
    def img2img(cls, steps: int, strength: float) -> StepPlan:
        return cls(steps, img2img_steps(steps, strength))

    @classmethod
    def fixed(cls, steps: int, strength: float) -> StepPlan:
        return cls(*fixed_steps_schedule(steps, strength))

    @property
    def diffusers_strength(self) -> float:
        """The strength for which diffusers' `int(N * strength)` is exactly `run` (nudged past float rounding)."""
        if not 1 <= self.run <= self.scheduled:
            raise EngineError(f"internal: cannot run {self.run} of {self.scheduled} steps")
        value = self.run / self.scheduled
        while int(self.scheduled * value) < self.run:
            value = math.nextafter(value, 2.0)
        return min(value, 1.0)


# --- encoding ----------------------------------------------------------------------------------------------


def encode_images(vae, images: list[Image.Image]) -> torch.Tensor:
    """Images to scaled latents with `vae` (the job's VAE), one image at a time (pixel-exact batching)."""
    return torch.cat([encode_pixels(vae, image_pixels(image)) for image in images])


def image_pixels(image: Image.Image) -> torch.Tensor:
    """An image as the VAE takes it: (1, 3, H, W) floats in [-1, 1]."""
    import numpy as np

    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)[None]


def encode_pixels(vae, pixels: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) pixels in [-1, 1] to scaled latents: the distribution's mode, so the same input always gives
    the same latents and the seed's generator is left for the noise."""
    with torch.inference_mode():
        latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode()
    return scale_latents(vae.config, latents)


def scale_latents(config, latents: torch.Tensor) -> torch.Tensor:
    """The inverse of the decoder's unscaling (`pipeline._vae_decode`): VAE latents to the UNet's latent space."""
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        shape = (1, len(mean), 1, 1)
        return (
            (latents - torch.tensor(mean).view(shape).to(latents))
            * config.scaling_factor
            / torch.tensor(std).view(shape).to(latents)
        )
    if getattr(config, "shift_factor", None):
        latents = latents - config.shift_factor
    return latents * config.scaling_factor


# --- denoising ---------------------------------------------------------------------------------------------

_IMG2IMG_PIPES: WeakKeyDictionary = WeakKeyDictionary()


def img2img_pipeline(pipe):
    """The img2img pipeline sharing `pipe`'s modules (built once per loaded text-to-image pipeline)."""
    cached = _IMG2IMG_PIPES.get(pipe)
    if cached is None:
        from diffusers import AutoPipelineForImage2Image
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()
        cached = AutoPipelineForImage2Image.from_pipe(pipe)
        cached.set_progress_bar_config(disable=True)
        _IMG2IMG_PIPES[pipe] = cached
    return cached


def run_last(
    pipe, plan: StepPlan, init_latents: torch.Tensor, generators: list, *, step_end: Callable | None, **call: Any
) -> torch.Tensor:
    """Denoise `init_latents` (UNet space) over the last `plan.run` of `plan.scheduled` steps; returns latents.

    `pipe` is the text-to-image pipeline with the job's scheduler set; `call` holds the embeddings and guidance
    as for a txt2img call. The noise is drawn from `generators` (fresh ones, seeded with the images' seeds).
    """
    i2i = img2img_pipeline(pipe)
    i2i.scheduler = pipe.scheduler
    dtype = pipe.unet.dtype
    return i2i(
        image=init_latents.to(pipe.device, dtype),
        strength=plan.diffusers_strength,
        num_inference_steps=plan.scheduled,
        generator=generators,
        output_type="latent",
        callback_on_step_end=step_end,
        **call,
    ).images


def start_latents(vae, request: GenerationRequest, count: int, upscalers=None) -> torch.Tensor:
    """The job's start image, checked, resized to the job's size with its resize mode, encoded `count` times."""
    from engine.render.input_image import resize_image

    upscale = image_upscaler(request, upscalers)
    resized = resize_image(start_image(request), request.width, request.height, request.resize_mode, upscale)
    return encode_images(vae, [resized]).expand(count, -1, -1, -1)


def start_image(request: GenerationRequest) -> Image.Image:
    """The job's start image, checked and flattened (from the bytes it carries, else from its path).

    The file is the one the bot saved (or the CLI checked): it is read with `checked_input_limits`, since
    `max_input_bytes` applies to what the member sent.
    """
    import os

    from engine.render.input_image import checked_input_limits, load_input_image, read_input_image

    limits = checked_input_limits(request.limits)
    if request.init_image_data:  # carried with the job from the bot's host (`GenerationRequest.portable`)
        return load_input_image(request.init_image_data, limits, name=os.path.basename(request.init_image))
    return read_input_image(request.init_image, limits)


def image_upscaler(request: GenerationRequest, upscalers) -> Callable[[Image.Image, int, int], Image.Image] | None:
    """How a start image that must grow is enlarged: the image upscaler named in `hires_upscaler` (A1111's
    "Upscaler for img2img"); None (Lanczos) for a latent one or without upscalers."""
    from engine.render.upscalers import is_latent

    if upscalers is None or is_latent(request.hires_upscaler):
        return None
    name = upscalers.resolve(request.hires_upscaler)
    return lambda im, w, h: upscalers.upscale(im, w, h, name)
