"""A1111's Hires. fix: a txt2img first pass at the base size, an upscale, then an img2img second pass.

The upscale is either of the latents (A1111's `Latent …` modes) or of the decoded image (Lanczos, Nearest or a
model upscaler), re-encoded with the job's VAE. The second pass draws the same seeds' noise at the new shape and
runs exactly `hires_steps` steps (A1111's fixed-steps rule, `img2img.StepPlan.fixed`); `hires_steps` 0 means
the first pass's step count. `Size` in the infotext stays the first pass's size, as A1111 writes it; the limits
on pixels and sides apply to the final size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from engine.render.img2img import StepPlan, encode_images, run_last
from engine.render.noise import initial_noise
from engine.render.upscalers import LATENT_MODES, UpscalerLibrary, is_latent, upscale_latents

if TYPE_CHECKING:
    from engine.request import GenerationRequest

# Above this many output pixels the VAE decodes in tiles (diffusers' tiled decoding), so memory stays bounded.
TILED_DECODE_PIXELS = 1536 * 1536


def second_pass(
    pipe,
    vae,
    request: GenerationRequest,
    latents: torch.Tensor,
    seeds: list[int],
    *,
    upscalers: UpscalerLibrary,
    decode: Callable[[Any, torch.Tensor], list],
    step_end: Callable | None,
    call: dict[str, Any],
) -> torch.Tensor:
    """The Hires second pass on the first pass's `latents`; returns the final latents."""
    from engine.samplers import make_scheduler

    width, height = request.final_size
    name = (
        request.hires_upscaler if request.hires_upscaler in LATENT_MODES else upscalers.resolve(request.hires_upscaler)
    )
    factor = pipe.vae_scale_factor
    if is_latent(name):
        start = upscale_latents(latents.float(), width, height, name, factor)
    else:
        images = decode(vae, latents)
        start = encode_images(vae, [upscalers.upscale(im, width, height, name) for im in images])
    steps = request.hires_steps or request.steps
    strength = request.denoising_strength
    assert strength is not None  # Hires is on: A1111's default strength applies when none was typed
    plan = StepPlan.fixed(steps, strength)
    _, generators = initial_noise(seeds, width, height, start.shape[1], factor)  # fresh: the same seeds, new shape
    pipe.scheduler = make_scheduler(request.sampler, request.schedule, pipe.scheduler.config)  # schedulers hold state
    return run_last(pipe, plan, start, generators, step_end=step_end, **call)


def decode_tiled_if_large(vae, width: int, height: int):
    """A context that turns on diffusers' tiled VAE decoding for outputs above `TILED_DECODE_PIXELS`."""
    import contextlib

    @contextlib.contextmanager
    def tiled():
        if width * height <= TILED_DECODE_PIXELS or not hasattr(vae, "enable_tiling"):
            yield
            return
        vae.enable_tiling()
        try:
            yield
        finally:
            vae.disable_tiling()

    return tiled()
