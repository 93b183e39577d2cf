"""`Engine.render`: one request (or a batch of compatible ones) through diffusers, in numbered stages.

The stages follow diffusers' own pipelines: (1) seeds, (2) checkpoint and VAE, (3) prompts with the job's CLIP
skip, (4) a fresh scheduler, (5) A1111 "CPU" noise from the seed, (6) denoise with a step callback, (7) decode with
the job's VAE (re-decoding in fp32 on NaN, as A1111 does), (7b) safety scores from the image classifier, batched
over the call's images, when one is configured (engine/render/classifier.py), (8) images with their infotext.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property

import torch
from PIL import Image

from engine import __version__
from engine.config import EngineConfig
from engine.control.stage import ControlStage
from engine.errors import EngineError, JobCancelled
from engine.infotext import infotext_for_request, network_hashes, png_bytes
from engine.models.loader import LoadedCheckpoint, ModelCache, ModelFile, file_hash
from engine.networks.embeddings import EmbeddingStore
from engine.networks.library import NetworkLibrary
from engine.networks.lora import LoraMerger, UsedNetwork
from engine.networks.tags import tags_of
from engine.render import dynamic_prompts, hires, img2img, inpaint
from engine.render.classifier import Scores, ScoringStage
from engine.render.control_units import prepared_control
from engine.render.exact_batch import one_image_at_a_time
from engine.render.noise import initial_noise
from engine.render.prompts import PromptEncoder
from engine.render.refusals import render_notes
from engine.render.upscalers import UpscalerLibrary
from engine.request import GenerationRequest
from engine.samplers import make_scheduler

log = logging.getLogger(__name__)

# on_step(step, total, latents): called after each denoising step, from the rendering thread.
StepCallback = Callable[[int, int, torch.Tensor], None]


@dataclass(frozen=True)
class RenderedImage:
    image: Image.Image
    seed: int
    infotext: str
    scores: Scores | None = None  # the image classifier's {label: probability}; None: not scored

    @cached_property
    def png_data(self) -> bytes:
        """The PNG, encoded once (by the bot, in a thread: neither the engine nor the event loop waits for it)."""
        return png_bytes(self.image, self.infotext)

    def png(self) -> bytes:
        return self.png_data


@dataclass(frozen=True)
class RenderResult:
    request: GenerationRequest  # with the seed actually used
    images: list[RenderedImage]
    model: str
    vae: str | None  # None: the checkpoint's own VAE
    seconds: float
    notes: tuple[str, ...] = field(default=())

    @property
    def seed(self) -> int:
        return self.request.seed


class Engine:
    """Owns the model caches; not thread-safe on purpose: the worker calls it from one thread."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        if config.threads:
            torch.set_num_threads(config.threads)
        self.models = ModelCache(config)
        self.networks = NetworkLibrary(config)
        self.loras = LoraMerger(self.networks, config.allow_pickle)
        self.embeddings = EmbeddingStore(self.networks, config.allow_pickle)
        self.upscalers = UpscalerLibrary(config.models_dir, allow_pickle=config.allow_pickle, device=self.models.device)
        self.scorer = ScoringStage(config.image_classifier, self.models.device)
        self.controls = ControlStage(
            config, self.models.device, self.models.dtype, config.controlnet_cache_size, config.control_annotators
        )
        self.dynamic = dynamic_prompts.DynamicPrompts(config.models_dir / dynamic_prompts.WILDCARDS_DIR)

    def prompt_encoder(self, ckpt: LoadedCheckpoint) -> PromptEncoder:
        """The checkpoint's prompt encoder with the embeddings it can use (the worker counts chunks with it)."""
        return PromptEncoder.for_pipeline(ckpt.pipe, self.embeddings)

    def render(
        self,
        request: GenerationRequest,
        on_step: StepCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> RenderResult:
        return self.render_batch([request], on_step, should_stop)[0]

    def render_batch(
        self,
        requests: Sequence[GenerationRequest],
        on_step: StepCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[RenderResult]:
        """Render compatible requests (equal `batch_key`), image i of a job with seed + i, one call per prompt chunk
        count; a dynamic prompt is drawn per image seed (engine/render/dynamic_prompts.py), pixel-equal to alone."""
        started = time.perf_counter()
        # 1. seeds, then each image's prompts when they are dynamic; calls by settings and chunk count
        requests = [r.with_seed() for r in requests]
        encoder = self.prompt_encoder(self.models.checkpoint(requests[0].model))
        return dynamic_prompts.render_in_parts(
            requests,
            self.dynamic,
            lambda r: (r.batch_key(), encoder.pair_chunks(r.prompt, r.negative_prompt)),
            lambda group: self._render_call(group, on_step, should_stop, started),
        )

    def _render_call(
        self,
        parts: Sequence[dynamic_prompts.Part],
        on_step: StepCallback | None,
        should_stop: Callable[[], bool] | None,
        started: float,
    ) -> list[RenderResult]:
        """One diffusers call for parts with equal settings (stages 2 to 8)."""
        requests = [p.request for p in parts]
        first = requests[0]
        if any(r.batch_key() != first.batch_key() for r in requests):
            raise EngineError("internal: only requests with equal settings can be batched")
        # 2. checkpoint and VAE
        ckpt = self.models.checkpoint(first.model)
        vae, vae_file = self.models.vae(first.vae, ckpt)
        pipe = ckpt.pipe
        # 3. LoRAs merged into the weights (batched jobs share one set), then prompts with embeddings
        loras = self.loras.activate(pipe, ckpt.family, tags_of(first.prompt, first.negative_prompt))
        encoder = self.prompt_encoder(ckpt)
        encoder.check_clip_skip(first.clip_skip)
        conds = [encoder.encode_pair(r.prompt, r.negative_prompt, r.clip_skip) for r in requests]
        if len({c.chunks for c, _ in conds}) > 1:
            raise EngineError("internal: batched prompts must have the same number of 75-token chunks")
        expand = [n for r in requests for n in [r.batch_size]]
        prompt_embeds = _stack([c.embeds for c, _ in conds], expand)
        negative_embeds = _stack([n.embeds for _, n in conds], expand)
        # 4. scheduler (schedulers hold state: a new one per call)
        pipe.scheduler = make_scheduler(first.sampler, first.schedule, ckpt.pipe.scheduler.config)
        # 5. latents
        factor = pipe.vae_scale_factor
        first.check_latent_grid(factor)
        seeds = [s for r in requests for s in r.seeds()]
        noise, generators = initial_noise(seeds, first.width, first.height, vae.config.latent_channels, factor)
        masked = None
        if first.is_inpaint:  # the start latents and the latent mask (engine.render.inpaint)
            upscale = img2img.image_upscaler(first, self.upscalers)
            masked = inpaint.start(vae, pipe.unet, first, noise, upscale)
        # 5b. ControlNet units: their ControlNets (warm per checkpoint) and maps; no hook when none can steer
        control = prepared_control(self.controls, first, ckpt, self.models.loaded(), masked)
        hook = control.hook
        # 6. denoise: txt2img from noise, or img2img from a start image (with a mask: inpainting); then Hires' pass
        interrupted = False
        progress = {"offset": 0, "total": None}  # Hires reports both passes as one run of steps

        def step_end(p, index, timestep, kwargs):
            nonlocal interrupted
            if hook is not None:
                hook.step_done()
            if on_step is not None:
                on_step(progress["offset"] + index + 1, progress["total"] or p.num_timesteps, kwargs["latents"])
            if should_stop is not None and should_stop():
                p._interrupt = True
                interrupted = True
            return kwargs

        extra = {}
        if ckpt.family == "sdxl":
            extra = dict(
                pooled_prompt_embeds=_stack([c.pooled for c, _ in conds], expand),
                negative_pooled_prompt_embeds=_stack([n.pooled for _, n in conds], expand),
            )
        dtype = pipe.unet.dtype
        exact = self.config.batch_mode == "exact"
        call = dict(
            prompt_embeds=prompt_embeds.to(dtype),
            negative_prompt_embeds=negative_embeds.to(dtype),
            guidance_scale=first.cfg_scale,
            **extra,
        )
        final_w, final_h = first.final_size
        # The ControlNet hook goes on first, so the per-image split of the UNet call (exact batching) and an
        # inpainting UNet's conditioning wrap it: it sees one image's rows, and an inpainting UNet's 9 channels.
        steered = hook.installed(pipe.unet) if hook is not None else nullcontext()
        with (
            torch.inference_mode(),
            steered,
            one_image_at_a_time(pipe.unet, len(seeds), exact),
            inpaint.conditioned(pipe.unet, vae, masked),
        ):
            if first.is_img2img:
                strength = first.denoising_strength
                assert strength is not None  # img2img: A1111's default strength applies when none was typed
                if masked is not None:
                    start, each_step = masked.latents, masked.keeping_mask(pipe, generators, step_end)
                else:
                    start, each_step = img2img.start_latents(vae, first, len(seeds), self.upscalers), step_end
                if hook is not None:
                    hook.begin_pass(img2img.img2img_pipeline(pipe), first.width, first.height)
                latents = img2img.run_last(
                    pipe,
                    img2img.StepPlan.img2img(first.steps, strength),
                    start,
                    generators,
                    step_end=each_step,
                    **call,
                )
            else:
                if first.hires_enabled:
                    progress["total"] = first.steps + (first.hires_steps or first.steps)
                if hook is not None:
                    hook.begin_pass(pipe, first.width, first.height)
                latents = pipe(
                    num_inference_steps=first.steps,
                    width=first.width,
                    height=first.height,
                    latents=noise.to(pipe.device, dtype),
                    generator=generators,
                    output_type="latent",
                    callback_on_step_end=step_end,
                    **call,
                ).images
            if first.hires_enabled and not interrupted:
                progress["offset"] = first.steps
                if hook is not None:  # the extension controls the second pass too, with the map at its size
                    hook.begin_pass(img2img.img2img_pipeline(pipe), final_w, final_h, hires_pass=True)
                latents = hires.second_pass(
                    pipe,
                    vae,
                    first,
                    latents,
                    seeds,
                    upscalers=self.upscalers,
                    decode=lambda v, lat: self._decode(pipe, v, lat, exact)[0],
                    step_end=step_end,
                    call=call,
                )
            if interrupted:
                raise JobCancelled("the job was cancelled")
            # 7. decode
            with hires.decode_tiled_if_large(vae, final_w, final_h):
                images, notes = self._decode(pipe, vae, latents, exact)
        if masked is not None:
            images = masked.finish(images)  # the original over each image, outside the blurred mask exactly
        # 7b. safety scores (None: no classifier)
        scores = self.scorer(images)
        # 8. images with infotext, and notes on what each job left out because its file is refused
        seconds = time.perf_counter() - started
        used = [(loras, c.embeddings + n.embeddings) for c, n in conds]
        notes_of = [notes + self._refused(r, ckpt) for r in requests]
        return self._results(parts, images, ckpt, vae_file, seconds, notes_of, used, scores, control.params)

    def _refused(self, request: GenerationRequest, ckpt: LoadedCheckpoint) -> tuple[str, ...]:
        sidecars = self.models.library.sidecar_vaes(ckpt.file)
        texts = (request.prompt, request.negative_prompt)
        return render_notes(self.config, self.networks.embeddings(), sidecars, request.vae, *texts)

    def _decode(self, pipe, vae, latents: torch.Tensor, exact: bool) -> tuple[list[Image.Image], tuple[str, ...]]:
        notes: tuple[str, ...] = ()
        decoded = _vae_decode(vae, latents, exact)
        if torch.isnan(decoded).any():
            if vae.dtype == torch.float32:
                raise EngineError("the image came out as NaN (not a number) even in 32-bit; try another VAE")
            log.warning("VAE produced NaN in %s: reverting the VAE to 32-bit floats and decoding again", vae.dtype)
            vae.to(torch.float32)
            decoded = _vae_decode(vae, latents.float(), exact)
            notes = ("VAE reverted to 32-bit floats after a NaN decode",)
            if torch.isnan(decoded).any():
                raise EngineError("the image came out as NaN (not a number) even in 32-bit; try another VAE")
        return pipe.image_processor.postprocess(decoded.float(), output_type="pil"), notes

    def _results(
        self,
        parts: Sequence[dynamic_prompts.Part],
        images,
        ckpt: LoadedCheckpoint,
        vae_file: ModelFile | None,
        seconds: float,
        notes_of: list[tuple[str, ...]],
        used: list[tuple[list[UsedNetwork], tuple[str, ...]]],
        scores: list[Scores] | None = None,
        control_params: dict[str, str] | None = None,
    ) -> list[RenderResult]:
        vae_name = vae_file.name if vae_file else None
        vae_hash = file_hash(vae_file.path) if vae_file else None
        results, i = [], 0
        for part, (loras, embeddings), notes in zip(parts, used, notes_of):
            r, rendered = part.request, []
            extra = {**(control_params or {}), **network_hashes(loras, self.embeddings.hashes(embeddings))}
            if inpaint.is_inpainting_unet(ckpt.pipe.unet):
                extra["Conditional mask weight"] = inpaint.CONDITIONAL_MASK_WEIGHT
            extra |= part.template  # a dynamic prompt's Template / Negative Template
            for seed in r.seeds():
                text = infotext_for_request(
                    r,
                    seed=seed,
                    model_name=ckpt.file.name,
                    model_hash=ckpt.hash,
                    vae_name=vae_name,
                    vae_hash=vae_hash,
                    version=f"sdbot {__version__}",
                    extra=extra,
                )
                rendered.append(RenderedImage(images[i], seed, text, scores[i] if scores else None))
                i += 1
            results.append(
                RenderResult(
                    r.replace(model=r.model or ckpt.file.name), rendered, ckpt.file.name, vae_name, seconds, notes
                )
            )
        return results


def _stack(tensors: list[torch.Tensor | None], repeats: list[int]) -> torch.Tensor:
    """One batch of each job's conditioning, repeated for its images (SDXL's pooled embeddings: never None there)."""
    present = [t for t in tensors if t is not None]
    if len(present) != len(tensors):
        raise EngineError("a prompt was encoded without the pooled embedding this model needs")
    return torch.cat([t.expand(n, *t.shape[1:]) for t, n in zip(present, repeats)])


def _vae_decode(vae, latents: torch.Tensor, exact: bool = True) -> torch.Tensor:
    if exact and latents.shape[0] > 1:
        return torch.cat([_vae_decode(vae, latents[i : i + 1]) for i in range(latents.shape[0])])
    config = vae.config
    latents = latents.to(vae.device, vae.dtype)
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        shape = (1, len(mean), 1, 1)
        latents = latents * torch.tensor(std).view(shape).to(latents) / config.scaling_factor + torch.tensor(mean).view(
            shape
        ).to(latents)
    else:
        latents = latents / config.scaling_factor
        if getattr(config, "shift_factor", None):
            latents = latents + config.shift_factor
    return vae.decode(latents, return_dict=False)[0]
